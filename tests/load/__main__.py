"""``python -m tests.load [--ci]``: the load test (see :mod:`tests.load.harness`)."""

import sys

from tests.load.harness import main

sys.exit(main())
