"""order-policy: a policy-as-data decision service for lab-test order cancellation.

The pipeline, one module per stage::

    bundle (YAML files) -> bundle.load_bundle -> validate -> compile (durable_rules rulesets)
    snapshot (order JSON, appointment JSON, action, now) -> facts -> engine -> decide -> Decision

``engine`` is the only module that talks to durable_rules; ``registry`` holds
the loaded policies; ``api``, ``app`` and ``cli`` are the edges.
"""

from pathlib import Path

__all__ = ["__version__", "default_bundle"]

__version__ = "0.1.0"


def default_bundle() -> Path:
    """The bundle served and decided with when none is named: ``rules/cancellation``.

    An installed wheel carries it inside the package (``server/_bundle``, mapped there
    at build time); a checkout or an editable install uses the repository's own
    ``rules/cancellation``. When neither exists the packaged path is returned, so the
    error that follows names where the bundle was expected.
    """
    here = Path(__file__).resolve().parent
    packaged = here / "_bundle" / "cancellation"
    for candidate in (packaged, here.parent / "rules" / "cancellation"):
        if (candidate / "manifest.yaml").is_file():
            return candidate
    return packaged
