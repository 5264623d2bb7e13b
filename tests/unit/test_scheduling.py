"""The pure decisions of zmqmr.scheduling, on hand-built tables (no MasterState).

How placement, preemption and backups play out over events is tested through
``MasterState.handle`` in test_state.py; here are the small functions it uses.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest

from zmqmr import policy
from zmqmr.config import ClusterSettings
from zmqmr.protocol import JobSpec, Location, Segment, Split
from zmqmr.scheduling import location, may_queue, rerun_reason, task_spec, typical_time
from zmqmr.tables import BAD_RECORD_FAILURES, MAP, REDUCE, Attempt, Job, MapOutput, Task, Worker


def make_job(splits: list[Split], reducers: int = 2, **spec: Any) -> Job:
    fields: dict[str, Any] = dict(
        name="wc",
        num_reducers=reducers,
        splits=splits,
        output_dir=None,
        max_attempts=4,
        speculative=True,
        skip_bad_records=False,
        task_timeout=None,
        has_combiner=False,
    )
    fields.update(spec)
    maps = [Task(MAP, i) for i in range(len(splits))]
    reduces = [Task(REDUCE, r) for r in range(reducers)]
    job = Job("j1", b"c", JobSpec(**fields), b"code", [b"blob0", b"blob1"], maps, reduces, 0.0)
    job.idle = {MAP: deque(maps), REDUCE: deque(reduces)}
    job.durations = {MAP: policy.RunningMedian(), REDUCE: policy.RunningMedian()}
    job.segments = [{} for _ in reduces]
    return job


def text_splits(n: int) -> list[Split]:
    return [Split("text", f"/in/{i}.txt", 0, 10) for i in range(n)]


def finish_map(job: Job, index: int, attempt: int, segments: list[Segment]) -> None:
    """What the state does when a map attempt's output is accepted (attach_output)."""
    task = job.maps[index]
    task.output = MapOutput(b"W", attempt, f"tcp://w:{attempt}", segments)
    for seg in segments:
        job.segments[seg.partition][index] = seg


def test_a_location_carries_the_segments_size_or_zeros_without_one():
    job = make_job(text_splits(1))
    finish_map(job, 0, 7, [Segment(1, 300, 4)])
    assert location(job, job.maps[0], 1) == Location(0, 7, "tcp://w:7", 300, 4)
    assert location(job, job.maps[0], 0) == Location(0, 7, "tcp://w:7", 0, 0)


def test_a_reduce_spec_names_only_the_maps_with_data_for_its_partition():
    job = make_job(text_splits(3))
    finish_map(job, 0, 1, [Segment(0, 10, 1)])
    finish_map(job, 1, 2, [Segment(1, 20, 2)])
    finish_map(job, 2, 3, [Segment(0, 30, 3), Segment(1, 40, 4)])
    spec, records = task_spec(job, job.reduces[0], result_limit=99)
    assert records is None and spec.partition == 0 and spec.result_limit == 99
    assert [(loc.map_task, loc.size) for loc in spec.locations or []] == [(0, 10), (2, 30)]
    assert (spec.num_maps, spec.num_reducers) == (3, 2)


def test_a_records_map_spec_carries_its_blob_and_skips_records_that_failed_enough():
    splits = [Split("records", blob=1, count=5, first=0)]
    job = make_job(splits, skip_bad_records=True)
    task = job.maps[0]
    task.bad_records = {3: BAD_RECORD_FAILURES, 4: BAD_RECORD_FAILURES - 1}
    spec, records = task_spec(job, task, result_limit=1)
    assert records == b"blob1" and spec.split == splits[0]
    assert spec.track_records and spec.skip == [3]


def test_an_attempt_queues_only_while_idle_work_exceeds_free_slots_and_never_a_rerun():
    task = Task(MAP, 0)
    assert may_queue(task, idle=5, free_slots=2)
    assert not may_queue(task, idle=2, free_slots=2)
    task.lost_on = b"W"
    assert not may_queue(task, idle=5, free_slots=0)


def test_the_rerun_reason_says_retry_before_re_execution():
    task = Task(MAP, 0)
    assert rerun_reason(task) == "idle task"
    task.lost_on = b"W"
    assert rerun_reason(task) == "re-execution"
    task.failures = 1
    assert rerun_reason(task) == "retry"


def test_the_typical_time_is_the_finished_median_else_an_estimate_from_progress():
    job = make_job(text_splits(4))
    w = Worker(b"W", 4, "tcp://w", "h", 1, 0.0, 0.0)
    a = [Attempt(i, job, job.maps[i], w, 0.0, 0.0) for i in range(3)]
    a[0].progress, a[1].progress, a[2].progress = 0.5, 0.25, 0.0  # 20 s, 40 s, unknown
    running = [(att, 0.0) for att in a]
    assert typical_time(job, MAP, running, now=10.0) == 40.0  # the upper middle of two
    assert typical_time(job, MAP, running[2:], now=10.0) is None
    job.durations[MAP].add(3.0)
    assert typical_time(job, MAP, running, now=10.0) == 3.0


@pytest.mark.parametrize(("late_factor", "backup"), [(2.0, True), (4.0, False)])
def test_the_late_factor_from_cluster_settings_decides_a_backup(late_factor, backup):
    s = ClusterSettings(speculation_late_factor=late_factor)
    # typical 10 s; at 25 % after 12 s it needs about 36 s more: 3.6 typical times
    why = policy.straggler(
        now=12.0,
        start=0.0,
        progress=0.25,
        quiet_since=11.0,
        typical=10.0,
        stall_seconds=s.stall_seconds,
        min_seconds=s.speculation_min_seconds,
        quiet_factor=s.speculation_quiet_factor,
        late_factor=s.speculation_late_factor,
    )
    assert (why is not None) == backup


def test_the_speculation_factors_must_be_positive():
    with pytest.raises(ValueError, match="speculation_quiet_factor"):
        ClusterSettings(speculation_quiet_factor=0)
