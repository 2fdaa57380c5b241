"""Fuzz tests' size: a short run in ``make test``, a long one in ``make fuzz``.

Fuzz tests carry the ``fuzz`` marker and take their example count from
:func:`examples`; ``make fuzz`` runs only them with ``FUZZ_EXAMPLES`` set high.
"""

from __future__ import annotations

import os

__all__ = ["examples"]


def examples(short: int) -> int:
    """Hypothesis examples per fuzz test: ``short`` by default, ``FUZZ_EXAMPLES`` when set."""
    value = os.environ.get("FUZZ_EXAMPLES", "")
    return int(value) if value.isdigit() and int(value) > 0 else short
