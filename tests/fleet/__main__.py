"""``python -m tests.fleet [--ci]``: the fleet rehearsal (see :mod:`tests.fleet.rehearsal`)."""

import sys

from tests.fleet.rehearsal import main

sys.exit(main())
