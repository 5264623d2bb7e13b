"""The optional C loops (``zmqmr._speedups``), for the modules that have a faster path with them.

``load()`` gives the extension module, or None where it was not built (no C
compiler at install) or ``ZMQMR_NO_SPEEDUPS`` is set, to measure or debug the
pure-Python paths, which give the same results more slowly. Each user keeps
its own ``speedups`` attribute, so a test can turn one path off at a time.
"""

from __future__ import annotations

import os
from typing import Any


def load() -> Any:
    if os.environ.get("ZMQMR_NO_SPEEDUPS"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    return _speedups
