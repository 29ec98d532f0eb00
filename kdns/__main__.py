"""``python -m kdns``: the same entry point as the ``kdns`` console script."""

import sys

from kdns.cli import main

sys.exit(main())
