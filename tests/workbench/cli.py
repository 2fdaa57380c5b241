"""Running the real command line in a subprocess."""

from __future__ import annotations

import subprocess
import sys

from tests.support.bundles import ROOT


def cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, input=stdin, timeout=timeout)
