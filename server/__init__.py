"""order-policy: a policy-as-data decision service for lab-test order cancellation.

The pipeline, one module per stage::

    bundle (YAML files) -> bundle.load_bundle -> validate -> compile (durable_rules rulesets)
    snapshot (order JSON, appointment JSON, action, now) -> facts -> engine -> decide -> Decision

``engine`` is the only module that talks to durable_rules; ``registry`` holds
the loaded policies; ``api``, ``app`` and ``cli`` are the edges.
"""

__version__ = "0.1.0"
