"""Watching files on disk: the one watch loop behind ``serve``'s bundle source and the console.

Built on watchfiles (a Rust notify backend): changes are debounced, and a single file
(an archive, a JSON lines file) is watched through its directory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from server.bundle.archive import is_archive

__all__ = ["watch_path"]


def watch_path(
    source: str | Path, stop: threading.Event, on_change: Callable[[], None], ready: threading.Event | None = None
) -> None:
    """Call ``on_change()`` after each change to a directory tree or a single file, until ``stop``.

    Only changes to the file itself count when ``source`` is a file. ``ready`` is set once
    changes are being watched. Blocks: run it in a thread; an exception from watching (the
    directory is gone) or from ``on_change`` propagates to the caller.
    """
    import watchfiles

    path = Path(source).resolve()
    single = path.is_file() or is_archive(path)
    target = path.parent if single else path
    for changes in watchfiles.watch(
        target, stop_event=stop, debounce=200, step=50, rust_timeout=500, yield_on_timeout=True
    ):
        if stop.is_set():
            return
        if ready is not None:
            ready.set()
        if not changes:
            continue
        if single and not any(Path(p).resolve() == path for _, p in changes):
            continue
        on_change()
