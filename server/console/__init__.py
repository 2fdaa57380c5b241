"""The policy console: a local, read-only web page over a bundle (``order-policy console``).

Pages: Matrix (what the bundle decides per action, method and status), Playground
(decide a sample or pasted JSON, explained), Bundle (manifest, ``check`` report,
cases) and Compare (a candidate's matrix difference and impact over samples). It
never decides by itself: every decision is ``Decider.decide``'s, the matrix, diff and
impact are ``server.workbench``'s.
"""

from server.console.app import ConsoleServer, is_loopback
from server.console.state import ConsoleState

__all__ = ["ConsoleServer", "ConsoleState", "is_loopback"]
