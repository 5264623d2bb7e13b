"""``python -m zmqmr``: the same as the ``zmqmr`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
