"""Helpers for the chaos suite: the sample books, scenarios, the ``slow`` gate.

Why no conftest.py here: conftest files outside packages all import as the
module ``conftest``, and pytest drops the previous one from ``sys.modules``
when it loads the next; tests/integration (collected after tests/chaos) does
``from conftest import ...`` and would get this directory's conftest instead.
The ``slow`` gate below is a ``skipif`` mark instead of a collection hook.
"""

from __future__ import annotations

import glob
import os

import pytest

from zmqmr.chaos import Report, Scenario
from zmqmr.chaos.workload import BOOKS_DIR

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

BOOKS = sorted(glob.glob(os.path.join(BOOKS_DIR, "*.txt")))
#: Four of the books (1.3 MB): a paced job of about five seconds on three workers.
FEW_BOOKS = [
    os.path.join(BOOKS_DIR, f"pg-{name}.txt")
    for name in ("being_ernest", "frankenstein", "grimm", "metamorphosis")
]

# Long chaos runs stay out of the default `pytest` (and so out of .ci/run): they
# run with `pytest -m chaos` (any -m naming chaos) or ZMQMR_CHAOS_ALL=1.
long_run = pytest.mark.skipif(
    "'chaos' not in config.getoption('markexpr') and os.environ.get('ZMQMR_CHAOS_ALL') != '1'",
    reason="long chaos run: select it with `pytest -m chaos` or ZMQMR_CHAOS_ALL=1 "
    "(the default run keeps tests/chaos within its 5-minute budget)",
)


def slow(fn):
    """A long chaos test: marked ``slow`` and skipped unless chaos is selected."""
    return pytest.mark.slow(long_run(pytest.mark.timeout(600)(fn)))


def scenario(**kw) -> Scenario:
    """A test scenario: word count over four books on three workers, faults early."""
    defaults = dict(
        job_file="wordcount",
        inputs=FEW_BOOKS,
        workers=3,
        reducers=3,
        window=2.5,
        deadline=90.0,
        baseline=False,  # these tests judge answers; the CLI's tests cover the no-fault run
    )
    defaults.update(kw)
    return Scenario(**defaults)


def explain(report: Report) -> str:
    return "\n" + report.text()
