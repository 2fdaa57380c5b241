"""Build hook: every wheel (and every editable install) carries the gRPC code generated from
``protos/`` and the native duplicate-key scan ``server._jsonkeys`` compiled from ``server/_jsonkeys.c``.

Hatchling runs this for ``pip install .``, ``pip install -e .``, ``python -m build`` and a
wheel built from the sdist. It runs the same generator as ``make gen``
(``server/_gen/__main__.py``, loaded by path so the build needs none of the runtime
dependencies): a wheel gets the generated modules from a temporary directory, an editable
install gets them written into ``server/_gen`` of the source tree, where the package is
imported from. grpcio-tools is a build requirement (``[build-system] requires``).

The C module is compiled with the building interpreter's own compiler and headers
(``sysconfig``; ``$CC`` names another compiler), into the wheel, which then is a platform
wheel, or for an editable install into ``server/`` of the source tree (git-ignored). When it
does not compile, the build prints a warning and goes on: ``server.facts`` then uses its
pure-Python check (slower, same answers). ``python hatch_build.py`` compiles it into
``server/`` for the running interpreter (``make`` does this when the C file changes).
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

NATIVE_SOURCE = Path("server") / "_jsonkeys.c"


def _generator(root: Path) -> Any:
    path = root / "server" / "_gen" / "__main__.py"
    spec = importlib.util.spec_from_file_location("_order_policy_gen", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the code generator `{path}`")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_native(root: Path, out_dir: Path, flags: tuple[str, ...] = ()) -> Path | None:
    """Compile ``server/_jsonkeys.c`` into ``out_dir`` (``flags`` added, as the tests do to build its
    portable variants); the module's path, or None (with a warning)."""
    source = root / NATIVE_SOURCE
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "")  # $CC wins, as with setuptools
    target = out_dir / f"_jsonkeys{suffix}"
    if not compiler or not suffix:
        _warn(f"this interpreter names no C compiler: `{source.name}` not compiled")
        return None
    command = [*compiler, "-O2", "-shared", "-fPIC", "-Wall", *flags, "-I", sysconfig.get_paths()["include"]]
    if sys.platform == "darwin":
        command += ["-undefined", "dynamic_lookup"]  # the interpreter supplies the Python symbols
    # Written under a temporary name and renamed: a running interpreter never maps a half-written file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        done = subprocess.run(
            [*command, str(source), "-o", str(partial)], capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        _warn(f"cannot run the C compiler `{compiler[0]}`: {exc}")
        return None
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        target.unlink(missing_ok=True)  # never leave an older build in use as if it were this source
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        _warn(f"`{shlex.join(command)}` failed on `{source.name}` (exit {done.returncode}):\n{tail}".rstrip())
        return None
    partial.replace(target)
    return target


def _warn(message: str) -> None:
    print(
        f"WARNING: {message}\nWARNING: server._jsonkeys is missing: the duplicate-key check of "
        "order JSON uses its pure-Python fallback (same answers, slower)",
        file=sys.stderr,
        flush=True,
    )


class GeneratedCodeHook(BuildHookInterface):
    """Generate ``server/_gen`` from ``protos/`` and compile ``server/_jsonkeys.c`` before the wheel is assembled."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        gen = _generator(root)
        protos = root / "protos"
        if version == "editable":
            gen.generate(root / "server" / "_gen", protos)
            build_native(root, root / "server")
            return
        self._tmp = tempfile.mkdtemp(prefix="order-policy-gen-")
        written = gen.generate(Path(self._tmp), protos)
        for rel in written:
            build_data["force_include"][str(Path(self._tmp) / rel)] = f"server/_gen/{rel.as_posix()}"
        native = build_native(root, Path(self._tmp))
        if native is not None:
            build_data["force_include"][str(native)] = f"server/{native.name}"
            build_data["pure_python"] = False  # a platform wheel: cp311-cp311-linux_x86_64 and the like
            build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if getattr(self, "_tmp", None):
            shutil.rmtree(self._tmp, ignore_errors=True)


if __name__ == "__main__":
    # A failure is a warning here as in a build: the package works without the module.
    _root = Path(__file__).resolve().parent
    build_native(_root, _root / "server")
