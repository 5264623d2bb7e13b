"""``python -m chaos``: see ``chaos.cli``."""

import sys

from .cli import main

sys.exit(main())
