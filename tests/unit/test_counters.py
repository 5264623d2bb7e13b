"""Counters' limits without sockets: a job's totals (``tables.add_counters``), what
they may hold on the wire (``parts.Summary``), and ``increment``'s checks."""

from __future__ import annotations

import pytest

import zmqmr
from zmqmr import userfn
from zmqmr.errors import ProtocolError
from zmqmr.parts import MAX_JOB_COUNTERS, Summary
from zmqmr.records import MAX_INT
from zmqmr.tables import LEFT_OUT, add_counters


def test_a_jobs_totals_keep_at_most_max_job_counters_names_and_count_the_rest():
    totals: dict[str, int] = {}
    add_counters(totals, {f"a{i}": 1 for i in range(MAX_JOB_COUNTERS - 2)}, 1)
    add_counters(totals, {"kept": 5, "past": 7, "past2": 1}, 1)
    assert len(totals) == MAX_JOB_COUNTERS and totals["kept"] == 5 and totals[LEFT_OUT] == 2
    assert "past" not in totals
    add_counters(totals, {"kept": 5, "past": 7, "past2": 1}, -1)  # the task re-executed
    assert totals["kept"] == 0 and totals[LEFT_OUT] == 0 and len(totals) == MAX_JOB_COUNTERS
    summary = Summary(totals, {}, [], True)
    assert Summary.from_json(summary.to_json(), "summary").counters == totals


def test_a_summarys_total_may_pass_64_bits_as_a_sum_of_tasks_can():
    big = Summary({"big": 2**65, "low": -(2**70)}, {}, [], True)
    assert Summary.from_json(big.to_json(), "summary").counters == big.counters
    with pytest.raises(ProtocolError, match="counters"):
        Summary.from_json(Summary({"big": 2**100}, {}, [], True).to_json(), "summary")


def test_increment_holds_a_task_to_what_one_attempt_may_report():
    counters: dict[str, int] = {}
    previous = userfn.counting(counters)
    try:
        zmqmr.increment("v", MAX_INT)
        with pytest.raises(ValueError, match="64 bits"):
            zmqmr.increment("v")
        assert counters["v"] == MAX_INT  # left as it was
        with pytest.raises(ValueError, match="1 to 200 characters"):
            zmqmr.increment("")
        for i in range(userfn.MAX_USER_COUNTERS - 1):
            zmqmr.increment(f"n{i}")
        with pytest.raises(ValueError, match="at most"):
            zmqmr.increment("one too many")
        zmqmr.increment("n0", 2)  # a name it has may still grow
        assert counters["n0"] == 3
    finally:
        userfn.counting(previous)
    whole_job: dict[str, int] = {}
    previous = userfn.counting(whole_job, per_task=False)  # run_serial's: a job's totals
    try:
        zmqmr.increment("v", MAX_INT)
        zmqmr.increment("v", MAX_INT)
        assert whole_job["v"] == 2 * MAX_INT
    finally:
        userfn.counting(previous)
