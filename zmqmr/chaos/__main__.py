"""``python -m zmqmr.chaos``, the same as ``zmqmr chaos``: see ``zmqmr.chaos.cli``."""

import sys

from .cli import main

sys.exit(main())
