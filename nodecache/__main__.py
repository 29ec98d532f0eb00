"""``python -m nodecache``: the same entry point as the ``nodecache`` console script."""

import sys

from nodecache.cli import main

sys.exit(main())
