"""The kill-master nemesis against a master with a journal (``--state-dir``): the master
is always restarted, at times at the worst moments, and the job must finish exactly, the
maps the journal knew as done not run again. Checked against zmqmr.run_serial by the
chaos checker.
"""

from __future__ import annotations

import pytest
from chaos_support import explain, scenario

from zmqmr.chaos import run_scenario
from zmqmr.chaos.schedule import KILL_MASTER, MOMENTS, make_schedule

pytestmark = pytest.mark.chaos


def seed_for(moment: str) -> int:
    """The first seed whose one kill of a journaled master strikes at ``moment``."""
    for seed in range(1, 1000):
        (fault,) = make_schedule(seed, [KILL_MASTER], 3, window=2.5, count=1, restart_master=True)
        if fault.params["moment"] == moment:
            return seed
    raise AssertionError(moment)


def test_a_journaled_master_is_always_restarted_and_kills_reach_every_moment():
    seen = set()
    for seed in range(1, 60):
        (fault,) = make_schedule(seed, [KILL_MASTER], 3, count=1, restart_master=True)
        assert fault.duration is None and fault.params["restart"] > 0
        seen.add(fault.params["moment"])
    assert seen == set(MOMENTS)


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_master_with_a_journal_killed_at_each_moment_finishes_the_job_exactly(moment):
    sc = scenario(nemeses=[KILL_MASTER], seed=seed_for(moment), faults=1, state_dir=True)
    report = run_scenario(sc)
    assert report.ok, explain(report)
    assert report.verdict.outcome == "succeeded", explain(report)
    kills = [r for r in report.history if r["nemesis"] == KILL_MASTER and r["action"] == "kill"]
    assert len(kills) == 1 and kills[0]["was_running"], explain(report)
    restarts = [r for r in report.history if r["action"] == "restart"]
    assert len(restarts) == 1, explain(report)
    checks = {c.name: c for c in report.verdict.checks}
    assert checks["journaled maps reused"].ok, explain(report)
    if moment == "commit":  # the maps were all done and journaled before this kill
        assert kills[0]["maps_done"] == report.summary["maps"], explain(report)
        assert (
            report.summary["map_attempts"] - report.summary["backups"] <= kills[0]["map_attempts"]
        ), explain(report)


def test_without_a_journal_a_killed_master_still_fails_clearly():
    sc = scenario(nemeses=[KILL_MASTER], seed=11)
    report = run_scenario(sc)
    assert report.ok, explain(report)
    assert report.verdict.outcome == "failed clearly", explain(report)
