"""Build hook: generate ``order_policy_client/_gen`` from the repository's ``protos/``.

The generator is the one the server uses (``server/_gen/__main__.py``: grpcio-tools, with
imports rewritten into the package); it needs only the standard library and grpcio-tools,
so building the client never imports the server.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACKAGE = "order_policy_client._gen"


class BuildWithProtos(build_py):
    """``build_py`` plus the generated gRPC/protobuf modules of every proto of ``protos/``."""

    def run(self) -> None:
        super().run()
        generator = REPO / "server" / "_gen" / "__main__.py"
        protos = REPO / "protos"
        if not generator.exists() or not protos.is_dir():
            raise SystemExit(f"build the client from a checkout of the repository: no `{protos}`")
        out = Path(self.build_lib, *PACKAGE.split("."))
        out.mkdir(parents=True, exist_ok=True)
        (out / "__init__.py").write_text('"""Generated from protos/ at build time; never edited."""\n')
        runpy.run_path(str(generator))["generate"](out, protos, package=PACKAGE)


setup(cmdclass={"build_py": BuildWithProtos})
