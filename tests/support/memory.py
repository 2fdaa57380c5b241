"""Resident memory of this process, for memory-flatness tests."""

from __future__ import annotations


def rss_kib() -> int:
    """Current resident set size in KiB (Linux /proc)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found")
