"""Generate ``server/_gen`` from ``protos/`` with grpcio-tools (``python -m server._gen``).

Usage: ``python -m server._gen [--out DIR] [--protos DIR]``. The output tree mirrors the
proto packages (``orderpolicy/v1/…``) with an ``__init__.py`` per package, and imports
between generated modules are rewritten from ``orderpolicy.v1`` to
``server._gen.orderpolicy.v1`` so the code lives inside the ``server`` package
(Temporal's ``gen_protos.py`` does the same).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent.parent
_PACKAGE = "server._gen"
_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _proto_files(protos: Path) -> list[Path]:
    return sorted(p.relative_to(protos) for p in protos.rglob("*.proto"))


def _rewrite_imports(text: str, top_packages: set[str], package: str = _PACKAGE) -> str:
    """Point imports of our own generated modules at ``package`` (``server._gen``)."""
    names = "|".join(sorted(re.escape(p) for p in top_packages))
    text = re.sub(rf"^from ({names})(\.|\s)", rf"from {package}.\1\2", text, flags=re.M)
    return re.sub(rf"^import ({names})\.", rf"import {package}.\1.", text, flags=re.M)


def generate(out: Path, protos: Path = _REPO / "protos", package: str = _PACKAGE) -> list[Path]:
    """Generate the Python code of every ``.proto`` under ``protos`` into ``out``.

    Returns the written files, relative to ``out``. Previously generated files in
    ``out`` are replaced; ``__init__.py``/``__main__.py`` at its top are kept.
    ``package`` is the dotted name ``out`` is imported as (the Python client builds its
    own copy with ``order_policy_client._gen``).
    """
    from grpc_tools import protoc  # dev dependency: imported only when generating

    files = _proto_files(protos)
    if not files:
        raise SystemExit(f"no .proto files under {protos}")
    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{protos}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(f) for f in files),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        top_packages = {f.parts[0] for f in files if len(f.parts) > 1}
        for top in top_packages:
            shutil.rmtree(out / top, ignore_errors=True)
        written: list[Path] = []
        for src in sorted(Path(tmp).rglob("*")):
            if not src.is_file() or not src.name.endswith(_SUFFIXES):
                continue
            rel = src.relative_to(tmp)
            dst = out / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(_rewrite_imports(src.read_text(), top_packages, package))
            written.append(rel)
            # Every directory between ``out`` and the module is a package.
            for parent in rel.parents:
                if parent == Path("."):
                    continue
                init = out / parent / "__init__.py"
                if not init.exists():
                    init.write_text("")
                    written.append(parent / "__init__.py")
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server._gen", description=__doc__)
    parser.add_argument("--out", type=Path, default=_HERE, help="output directory")
    parser.add_argument("--protos", type=Path, default=_REPO / "protos")
    args = parser.parse_args(argv)
    written = generate(args.out, args.protos)
    print(f"generated {len(written)} files into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
