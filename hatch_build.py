"""Build hook: every wheel (and every editable install) carries the gRPC code generated from ``protos/``.

Hatchling runs this for ``pip install .``, ``pip install -e .``, ``python -m build`` and a
wheel built from the sdist. It runs the same generator as ``make gen``
(``server/_gen/__main__.py``, loaded by path so the build needs none of the runtime
dependencies): a wheel gets the generated modules from a temporary directory, an editable
install gets them written into ``server/_gen`` of the source tree, where the package is
imported from. grpcio-tools is a build requirement (``[build-system] requires``).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _generator(root: Path) -> Any:
    path = root / "server" / "_gen" / "__main__.py"
    spec = importlib.util.spec_from_file_location("_order_policy_gen", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the code generator `{path}`")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class GeneratedCodeHook(BuildHookInterface):
    """Generate ``server/_gen`` from ``protos/`` before the wheel is assembled."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        gen = _generator(root)
        protos = root / "protos"
        if version == "editable":
            gen.generate(root / "server" / "_gen", protos)
            return
        self._tmp = tempfile.mkdtemp(prefix="order-policy-gen-")
        written = gen.generate(Path(self._tmp), protos)
        for rel in written:
            build_data["force_include"][str(Path(self._tmp) / rel)] = f"server/_gen/{rel.as_posix()}"

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)
