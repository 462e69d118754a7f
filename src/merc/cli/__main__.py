"""``python -m merc.cli``: the ``merc`` command."""

import sys

from merc.cli import main

sys.exit(main())
