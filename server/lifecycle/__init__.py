"""Swappable bundles: sources, activation, the persisted last good revision, followers.

* A **source** (``sources``) is a bundle directory or archive on disk (watched with
  watchfiles) or an HTTP(S) URL polled with ``If-None-Match`` (the way OPA pulls
  bundles), each with its own loop; the state follower is one too. No loop dies: an
  exception is logged as one JSON line, counted as a refusal, shown in the status,
  and the loop goes on.
* **Activation** (``manager``): every source goes through one pipeline
  (``server.registry.build_decider``): a directory is read directly, an archive is
  verified once, signature first; then the bundle is validated, its own cases run
  and it is compiled beside the active one; only then is it persisted and swapped
  in. A lower signed serial than the active one, an expired bundle and a reused
  revision label are refused (an explicit rollback may go back). Any failure keeps
  the active revision and is recorded in ``status`` and the metrics.
* The **state directory** (``state``) holds the archives of recent revisions and
  ``active.json`` (written atomically: temp file, fsync, rename), so a restart,
  even after kill -9 during a swap, serves the last good revision without the
  source. A damaged record is logged and ignored; its paths never leave the
  directory.
* Several worker processes stay on one revision by **following** the state
  directory: whoever activates writes ``active.json`` and every worker loads
  what it names.
"""

from server.lifecycle.manager import BundleManager, LoadStatus
from server.lifecycle.sources import FetchOptions
from server.lifecycle.state import StateDir

__all__ = ["BundleManager", "FetchOptions", "LoadStatus", "StateDir"]
