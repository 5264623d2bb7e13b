"""Each nemesis alone and in combination, on word count and an inverted index over the books.

Every run is checked against zmqmr.run_serial by the chaos checker. The first
block (one seed per nemesis, a combination, an inverted index) is the bounded
selection that the default `pytest` and .ci/run include; the `slow` block
(several seeds of each, on both jobs) runs with `pytest -m chaos` or
ZMQMR_CHAOS_ALL=1.
"""

from __future__ import annotations

import pytest
from chaos_support import explain, scenario, slow

from zmqmr.chaos import TOLERATED, netns, run_scenario
from zmqmr.chaos.schedule import KILL_MASTER, PARTITION

pytestmark = pytest.mark.chaos

NETNS_OK, NETNS_WHY = netns.available()


def needs(kinds):
    if PARTITION in kinds and not NETNS_OK:
        pytest.skip(f"partition needs network namespaces: {NETNS_WHY}")


def check_run(kinds, seed, job="wordcount", **kw):
    needs(kinds)
    report = run_scenario(scenario(job_file=job, nemeses=list(kinds), seed=seed, **kw))
    assert report.ok, explain(report)
    injected = report.summary["faults"]
    assert injected, "no fault landed before the job ended" + explain(report)
    assert set(injected) <= set(kinds)
    if KILL_MASTER in injected:
        assert report.verdict.outcome == "failed clearly", explain(report)
    else:
        assert report.verdict.outcome == "succeeded", explain(report)
    return report


# -- the bounded selection ----------------------------------------------------------------


@pytest.mark.parametrize("kind", TOLERATED)
def test_the_answer_survives_each_nemesis_alone(kind):
    check_run([kind], seed=11)


def test_a_long_pause_gets_the_worker_declared_dead_and_fenced_and_the_answer_is_exact():
    # seed 5 draws a pause longer than worker_timeout
    report = check_run(["pause"], seed=5, faults=1)
    assert report.schedule[0].params["length"] == "long"


def test_killing_the_master_gives_a_clear_error_never_a_hang_or_a_wrong_answer():
    report = check_run([KILL_MASTER], seed=11)
    assert report.verdict.outcome == "failed clearly"


def test_the_answer_survives_every_tolerated_nemesis_at_once():
    check_run(TOLERATED, seed=12, workers=4)


def test_an_inverted_index_survives_kills_and_corruption():
    check_run(["kill", "corrupt"], seed=13, job="inverted_index")


# -- the long runs --------------------------------------------------------------------------

SEEDS = (1, 2, 3)
COMBINATIONS = (
    ("kill", "pause"),
    ("slow", "corrupt"),
    ("kill", "partition"),
    ("pause", "slow", "corrupt"),
    TOLERATED,
    ("kill", "pause", KILL_MASTER),
)


@slow
@pytest.mark.parametrize("job", ["wordcount", "inverted_index"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", [*TOLERATED, KILL_MASTER])
def test_each_nemesis_alone_over_seeds(kind, seed, job):
    check_run([kind], seed=seed, job=job)


@slow
@pytest.mark.parametrize("job", ["wordcount", "inverted_index"])
@pytest.mark.parametrize("seed", (21, 22, 23))
@pytest.mark.parametrize("kinds", COMBINATIONS, ids=lambda k: "+".join(k))
def test_nemeses_combined_over_seeds(kinds, seed, job):
    check_run(kinds, seed=seed, job=job, workers=4)


@slow
@pytest.mark.parametrize("seed", (31, 32))
def test_results_through_the_master_survive_every_tolerated_nemesis(seed):
    check_run(TOLERATED, seed=seed, output=False, workers=4)


@slow
@pytest.mark.parametrize("seed", (41, 42))
def test_two_slots_per_worker_survive_every_tolerated_nemesis(seed):
    check_run(TOLERATED, seed=seed, slots=2)
