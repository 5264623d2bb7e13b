"""Preparing a job: splits planned for the cluster, an explicit split_size obeyed, limits."""

from __future__ import annotations

import gzip
import os

import pytest

from zmqmr import inputs
from zmqmr import job as jobmod
from zmqmr.config import (
    MAPS_PER_SLOT,
    MAX_MAP_TASKS,
    MAX_SPLIT_SIZE,
    MIN_SPLIT_SIZE,
    MiB,
)
from zmqmr.errors import JobSubmitError
from zmqmr.inputs import WholeFiles
from zmqmr.job import Job, make_splits, prepare


def mapper(key, value):
    return []


def reducer(key, values):
    return 0


def sparse(tmp_path, name: str, size: int) -> str:
    """A file of ``size`` bytes that takes no disk space: planning reads sizes, not bytes."""
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def text_job(paths, **kw) -> Job:
    return Job(mapper, reducer, list(paths), **kw)


def assert_cover(splits, path, size):
    """The splits of ``path`` are contiguous and cover [0, size)."""
    ranges = [(d["start"], d["end"]) for d in splits if d["path"] == path]
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


# -- text --------------------------------------------------------------------------------


def test_a_20_mb_file_is_cut_for_the_clusters_slots(tmp_path):
    size = 20 * 1000 * 1000
    path = sparse(tmp_path, "big.txt", size)
    on_two = prepare(text_job([path]), slots=2).spec["splits"]
    assert len(on_two) == MAPS_PER_SLOT * 2  # 2.5 MB each
    assert_cover(on_two, path, size)
    # unknown cluster: the default slots; a big one: splits no smaller than MIN_SPLIT_SIZE
    assert len(prepare(text_job([path])).spec["splits"]) == -(-size // MIN_SPLIT_SIZE)
    on_many = prepare(text_job([path]), slots=500).spec["splits"]
    assert len(on_many) == -(-size // MIN_SPLIT_SIZE)
    assert_cover(on_many, path, size)


def test_planned_splits_are_no_larger_than_max_split_size(tmp_path):
    size = 10 * MAX_SPLIT_SIZE + 5
    path = sparse(tmp_path, "huge.txt", size)
    splits = prepare(text_job([path]), slots=1).spec["splits"]
    assert len(splits) == 11
    assert max(d["end"] - d["start"] for d in splits) == MAX_SPLIT_SIZE


def test_small_files_are_a_split_each(tmp_path):
    paths = [sparse(tmp_path, f"book{i}.txt", 300_000 + i) for i in range(8)]
    splits = prepare(text_job(paths), slots=2).spec["splits"]
    assert [(d["path"], d["start"], d["end"]) for d in splits] == [
        (p, 0, os.path.getsize(p)) for p in paths
    ]


def test_an_explicit_split_size_means_what_it_says(tmp_path):
    size = 20 * 1000 * 1000
    path = sparse(tmp_path, "big.txt", size)
    for slots in (None, 1, 2, 500):
        splits = prepare(text_job([path], split_size=8 * MiB), slots=slots).spec["splits"]
        assert [(d["start"], d["end"]) for d in splits] == [
            (0, 8 * MiB),
            (8 * MiB, 16 * MiB),
            (16 * MiB, size),
        ]


def test_compressed_files_are_one_split_each_and_leave_the_rest_to_the_plan(tmp_path):
    gz = str(tmp_path / "log.gz")
    with gzip.open(gz, "wb") as f:
        f.write(b"line\n" * 1000)
    plain = sparse(tmp_path, "big.txt", 8 * MiB)
    splits = prepare(text_job([gz, plain]), slots=1).spec["splits"]
    assert splits[0] == {"kind": "text", "path": gz, "start": 0, "end": os.path.getsize(gz)}
    assert len(splits) == 1 + MAPS_PER_SLOT  # the plain file alone sets the split size
    assert_cover(splits[1:], plain, 8 * MiB)


def test_a_plan_beyond_max_map_tasks_fails_at_submit_naming_split_size(tmp_path):
    path = sparse(tmp_path, "a.txt", 2 * MAX_MAP_TASKS)
    with pytest.raises(JobSubmitError, match=r"split_size=1 .*400,000 map tasks.*200,000"):
        prepare(text_job([path], split_size=1))
    # the limit is the master's: the serial oracle plans what it is asked
    assert inputs.count_text_splits([path], 1) == 2 * MAX_MAP_TASKS
    prepare(text_job([path], split_size=2))  # exactly the limit is accepted


def test_the_planner_grows_splits_to_stay_within_max_map_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_MAP_TASKS", 10)
    monkeypatch.setattr(jobmod, "MAX_MAP_TASKS", 10)
    paths = [sparse(tmp_path, "big.txt", 40 * MAX_SPLIT_SIZE), sparse(tmp_path, "b.txt", 3)]
    splits = prepare(text_job(paths), slots=1).spec["splits"]
    assert 2 <= len(splits) <= 10
    assert_cover(splits, paths[0], 40 * MAX_SPLIT_SIZE)


def test_more_files_than_max_map_tasks_fail_at_submit_and_say_why(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_MAP_TASKS", 3)
    monkeypatch.setattr(jobmod, "MAX_MAP_TASKS", 3)
    paths = [sparse(tmp_path, f"f{i}.txt", 10) for i in range(5)]
    with pytest.raises(JobSubmitError, match=r"5 files.*split_size.*WholeFiles"):
        prepare(text_job(paths))


@pytest.mark.parametrize("slots", [0, -1, True, 2.0])
def test_a_bad_slots_hint_is_refused(tmp_path, slots):
    with pytest.raises(JobSubmitError, match="slots"):
        prepare(text_job([sparse(tmp_path, "a.txt", 10)]), slots=slots)


# -- whole files -------------------------------------------------------------------------


def test_whole_files_are_one_task_each(tmp_path):
    paths = [sparse(tmp_path, f"book{i}.txt", 4 * MiB) for i in range(8)]
    splits = prepare(Job(mapper, reducer, WholeFiles(paths)), slots=2).spec["splits"]
    assert splits == [{"kind": "files", "paths": [p]} for p in paths]


def test_whole_files_beyond_the_task_cap_share_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(jobmod, "MAX_WHOLE_FILE_TASKS", 4)
    paths = [sparse(tmp_path, f"f{i:02d}.txt", 1) for i in range(10)]
    descs, _ = make_splits(Job(mapper, reducer, WholeFiles(paths)))
    assert len(descs) == 4
    assert [p for d in descs for p in d["paths"]] == paths


def test_whole_files_with_a_split_size_are_grouped_by_it(tmp_path):
    paths = [sparse(tmp_path, f"f{i}.txt", 100) for i in range(6)]
    descs, _ = make_splits(Job(mapper, reducer, WholeFiles(paths), split_size=300))
    assert [d["paths"] for d in descs] == [paths[:3], paths[3:]]


# -- in-memory records ---------------------------------------------------------------------


def test_records_are_cut_for_the_clusters_slots():
    records = [(i, "x") for i in range(100)]
    descs, blobs = make_splits(Job(mapper, reducer, records), slots=2)
    assert len(descs) == len(blobs) == MAPS_PER_SLOT * 2
    assert [d["blob"] for d in descs] == list(range(len(blobs)))
    assert [r for d in descs for r in inputs.open_split(d, blobs[d["blob"]])] == records
    few, _ = make_splits(Job(mapper, reducer, records[:3]), slots=2)
    assert len(few) == 3  # no more splits than records


def test_records_with_a_split_size_are_cut_by_bytes_only():
    records = [(i, "x") for i in range(100)]
    descs, _ = make_splits(Job(mapper, reducer, records, split_size=1 << 20), slots=64)
    assert len(descs) == 1


def test_records_beyond_max_map_tasks_fail_at_submit_naming_split_size(monkeypatch):
    monkeypatch.setattr(jobmod, "MAX_MAP_TASKS", 5)
    records = [(i, "x") for i in range(10)]
    with pytest.raises(JobSubmitError, match="split_size=1 .*10 map tasks"):
        prepare(Job(mapper, reducer, records, split_size=1))
