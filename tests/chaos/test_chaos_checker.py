"""The checker passes only exact answers: made-up outcomes, and wrong jobs on a real cluster."""

from __future__ import annotations

import os

import chaos_support
import pytest
from chaos_support import HERE, explain, scenario

import zmqmr
from zmqmr.chaos import Outcome, check, run_scenario
from zmqmr.chaos.checker import diff_output_dir, diff_records, snapshot

pytestmark = pytest.mark.chaos


def result(items, counters=None, output_files=(), stats=None):
    parts = [lambda: list(items)]
    return zmqmr.JobResult("j", parts, list(output_files), dict(counters or {}), stats or {})


EXPECTED_ITEMS = [("a", 3), ("b", 1), ("c", 2)]
COUNTERS = {
    "zmqmr.map_input_records": 3,
    "zmqmr.map_output_records": 6,
    "zmqmr.reduce_input_groups": 3,
    "zmqmr.reduce_output_records": 3,
    "mine": 2,
}
EXPECTED = result(EXPECTED_ITEMS, COUNTERS)


def verdict_for(items, counters=COUNTERS, **kw):
    outcome = Outcome(result(items, counters), seconds=kw.pop("seconds", 1.0))
    return check(EXPECTED, outcome, bound=kw.pop("bound", 60), **kw)


def test_the_exact_answer_passes():
    v = verdict_for(EXPECTED_ITEMS, {**COUNTERS, "zmqmr.spilled_runs": 7})
    assert v.ok, v.problems
    assert v.outcome == "succeeded"


@pytest.mark.parametrize(
    "items, complaint",
    [
        ([("a", 3), ("b", 1)], "1 key(s) missing"),
        ([("a", 3), ("b", 1), ("b", 1), ("c", 2)], "1 key(s) more than once"),
        ([("a", 3), ("b", 2), ("c", 2)], "1 value(s) differ"),
        ([("a", 3), ("b", 1), ("c", 2), ("d", 0)], "1 key(s) not in the serial run"),
        ([("b", 1), ("a", 3), ("c", 2)], "the right records in the wrong order"),
    ],
)
def test_a_wrong_answer_fails_and_says_what_is_wrong(items, complaint):
    v = verdict_for(items)
    assert not v.ok
    assert any(complaint in p for p in v.problems), v.problems


def test_counters_must_equal_the_serial_runs():
    v = verdict_for(EXPECTED_ITEMS, {**COUNTERS, "zmqmr.map_input_records": 4})
    assert not v.ok and "zmqmr.map_input_records = 4 (serial run: 3)" in v.problems[0]
    v = verdict_for(EXPECTED_ITEMS, {**COUNTERS, "theirs": 1})
    assert not v.ok and "theirs = 1 (serial run: None)" in v.problems[0]
    v = verdict_for(EXPECTED_ITEMS, {k: n for k, n in COUNTERS.items() if k != "mine"})
    assert not v.ok


def test_a_slow_job_a_hung_job_and_a_failed_job_fail():
    assert not verdict_for(EXPECTED_ITEMS, seconds=61, bound=60).ok
    hung = check(EXPECTED, Outcome(seconds=60, hung=True), bound=60)
    assert not hung.ok and hung.outcome == "hung"
    failed = check(EXPECTED, Outcome(error=zmqmr.JobFailed("boom"), seconds=2), bound=60)
    assert not failed.ok and "the job failed: JobFailed: boom" in failed.problems[0]


def test_a_clear_failure_passes_only_after_the_master_was_killed_and_only_soon_after():
    err = zmqmr.MasterUnavailable("no answer")
    assert not check(EXPECTED, Outcome(error=err, seconds=5), bound=60).ok
    v = check(EXPECTED, Outcome(error=err, seconds=5), bound=60, master_killed_at=1.0)
    assert v.ok and v.outcome == "failed clearly"
    late = check(
        EXPECTED, Outcome(error=err, seconds=30), bound=60, master_killed_at=1.0, failure_bound=10
    )
    assert not late.ok
    odd = check(EXPECTED, Outcome(error=ValueError("x"), seconds=5), bound=60, master_killed_at=1)
    assert not odd.ok
    # ... and a wrong answer is wrong whether or not the master died
    assert not verdict_for([("a", 4)], master_killed_at=0.5).ok


def write_parts(d, texts):
    d.mkdir(exist_ok=True)
    for i, text in enumerate(texts):
        (d / f"part-{i:05d}").write_text(text)
    (d / "_SUCCESS").write_text("")


def partition_by_name(key, n):
    return {"a": 0, "b": 1, "c": 1}[key]


def test_output_files_must_hold_each_partition_exactly_and_no_temporaries(tmp_path):
    out = tmp_path / "out"
    write_parts(out, ["a\t3\n", "b\t1\nc\t2\n"])
    assert diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name) == []
    (out / ".part-00001-a7.tmp").write_text("b\t1\n")
    assert (
        "temporary files left" in diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name)[0]
    )
    (out / ".part-00001-a7.tmp").unlink()
    write_parts(out, ["a\t3\n", "b\t1\n"])
    assert "1 key(s) missing" in diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name)[0]
    (out / "part-00001").unlink()
    assert (
        "part files missing" in diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name)[0]
    )


def test_output_dir_needs_success_and_no_temporary_dir(tmp_path):
    out = tmp_path / "out"
    write_parts(out, ["a\t3\n", "b\t1\nc\t2\n"])
    (out / "_temporary").mkdir()
    problems = diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name)
    assert problems == ["temporary files left: '_temporary'"]
    (out / "_temporary").rmdir()
    (out / "_SUCCESS").unlink()
    problems = diff_output_dir(str(out), EXPECTED_ITEMS, 2, partition_by_name)
    assert problems == ["part files missing: '_SUCCESS'"]


def test_a_part_file_written_after_the_job_ended_fails(tmp_path):
    out = tmp_path / "out"
    write_parts(out, ["a\t3\n", "b\t1\nc\t2\n"])
    before = snapshot(str(out))
    files = [str(out / "part-00000"), str(out / "part-00001")]
    outcome = Outcome(result(EXPECTED_ITEMS, COUNTERS, files), seconds=1)
    kw = dict(bound=60, num_reducers=2, partitioner=partition_by_name, output_dir=str(out))
    assert check(EXPECTED, outcome, late_snapshots=(before, snapshot(str(out))), **kw).ok
    (out / ".part-00000-a9.tmp").write_text("a\t3\n")
    v = check(EXPECTED, outcome, late_snapshots=(before, snapshot(str(out))), **kw)
    assert not v.ok and any("no late writes" in p and "appeared" in p for p in v.problems)


def test_diff_records_is_empty_only_for_equal_lists():
    assert diff_records(EXPECTED_ITEMS, list(EXPECTED_ITEMS)) == []
    assert diff_records(EXPECTED_ITEMS, []) != []


# -- on a real cluster ------------------------------------------------------------------


def test_a_job_that_is_wrong_on_the_cluster_is_reported_as_a_failure():
    sc = scenario(
        job_file=os.path.join(HERE, "wrong_wordcount.py"),
        inputs=chaos_support.BOOKS[:2],
        workers=2,
        nemeses=[],
        seed=1,
    )
    report = run_scenario(sc, keep_on_failure=False)
    assert not report.ok, explain(report)
    assert report.verdict.outcome == "succeeded"  # the job ran; its answer is wrong
    failed = {c.name for c in report.verdict.checks if not c.ok}
    assert failed == {"records", "counters", "output files"}, explain(report)
    text = report.text()
    assert "value(s) differ" in text and "sneaky" in text
    assert "verdict: FAIL  (seed 1)" in text and "replay: zmqmr chaos run" in text


def test_a_job_that_never_ends_is_reported_as_hung_within_its_deadline():
    sc = scenario(
        job_file=os.path.join(HERE, "hanging_wordcount.py"),
        inputs=chaos_support.BOOKS[:1],
        workers=1,
        nemeses=[],
        deadline=3.0,
        client_timeout=2.0,
        seed=2,
    )
    report = run_scenario(sc, keep_on_failure=False)
    assert not report.ok and report.verdict.outcome == "hung", explain(report)
    assert report.summary["wall_seconds"] < 3.0 + 2 * 2.0 + 1
