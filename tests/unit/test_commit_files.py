"""The output commit protocol's file steps (zmqmr.commit), on real files in a temp dir."""

from __future__ import annotations

import os

import pytest

from zmqmr import commit, layout
from zmqmr.commit import CommitError, abort_job, check_output_dir, commit_job, setup_job
from zmqmr.errors import JobSubmitError

JOB = "job1"


def attempt_file(out, partition: int, attempt: int, text: str) -> str:
    path = layout.attempt_part_path(str(out), JOB, partition, attempt)
    with open(path, "w") as f:
        f.write(text)
    return path


def read(path) -> str:
    with open(path) as f:
        return f.read()


def test_an_output_dir_holding_files_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    assert check_output_dir(str(out), overwrite=False) == str(out)  # not there yet: fine
    out.mkdir()
    (out / "_temporary").mkdir()  # left by a job that never ended: not output
    assert check_output_dir(str(out) + "/", overwrite=False) == str(out)
    (out / "part-00000").write_text("old\n")
    with pytest.raises(JobSubmitError, match="already holds files.*part-00000.*overwrite=True"):
        check_output_dir(str(out), overwrite=False)
    assert check_output_dir(str(out), overwrite=True) == str(out)
    (tmp_path / "file").write_text("")
    with pytest.raises(JobSubmitError, match="not writable: it is not a directory"):
        check_output_dir(str(tmp_path / "file"), overwrite=True)


def test_a_symlinked_output_dir_is_named_by_its_real_path(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert check_output_dir(str(tmp_path / "link"), overwrite=False) == str(tmp_path / "real")


def test_commit_moves_only_the_approved_attempts_and_writes_success_last(tmp_path, monkeypatch):
    out = tmp_path / "out"
    setup_job(str(out), JOB)
    attempt_file(out, 0, 3, "a\t1\n")
    attempt_file(out, 0, 7, "a\tSTALE\n")  # a fenced attempt of partition 0
    attempt_file(out, 1, 5, "b\t2\n")
    moves: list[str] = []
    real_replace = os.replace

    def recording(src, dst):
        moves.append(os.path.basename(dst))
        real_replace(src, dst)

    monkeypatch.setattr(commit.os, "replace", recording)
    commit_job(str(out), JOB, [3, 5])
    assert moves == ["part-00000", "part-00001", "_SUCCESS"]
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    assert read(out / "part-00000") == "a\t1\n"
    assert read(out / "_SUCCESS") == f"{JOB}\n"  # which job committed
    commit_job(str(out), JOB, [3, 5])  # again, as a restarted master may: nothing changes
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001"]
    with pytest.raises(CommitError, match="missing"):  # but no other job passes for it
        commit_job(str(out), "job2", [3, 5])


def test_commit_replaces_a_previous_output_whole_and_drops_its_extra_partitions(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(4):
        (out / f"part-{i:05d}").write_text(f"old {i}\n")
    (out / "_SUCCESS").write_text("")
    (out / "notes.txt").write_text("mine")  # not zmqmr's: stays
    setup_job(str(out), JOB)
    attempt_file(out, 0, 1, "new 0\n")
    attempt_file(out, 1, 2, "new 1\n")
    commit_job(str(out), JOB, [1, 2])
    assert sorted(os.listdir(out)) == ["_SUCCESS", "notes.txt", "part-00000", "part-00001"]
    assert [read(out / f"part-0000{i}") for i in range(2)] == ["new 0\n", "new 1\n"]


def test_a_commit_with_an_approved_file_missing_changes_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000").write_text("old\n")
    (out / "_SUCCESS").write_text("")
    setup_job(str(out), JOB)
    attempt_file(out, 0, 1, "new\n")
    with pytest.raises(CommitError, match="missing"):
        commit_job(str(out), JOB, [1, 9])
    assert read(out / "part-00000") == "old\n" and (out / "_SUCCESS").exists()


def test_a_commit_that_crashed_part_way_completes_when_run_again(tmp_path, monkeypatch):
    out = tmp_path / "out"
    setup_job(str(out), JOB)
    for p in range(3):
        attempt_file(out, p, 10 + p, f"k{p}\t{p}\n")
    real_replace = os.replace
    calls = []

    def crash_on_the_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("the machine went down")
        real_replace(src, dst)

    monkeypatch.setattr(commit.os, "replace", crash_on_the_second)
    with pytest.raises(OSError):
        commit_job(str(out), JOB, [10, 11, 12])
    assert not (out / "_SUCCESS").exists()  # no success claimed for a half commit
    monkeypatch.setattr(commit.os, "replace", real_replace)
    commit_job(str(out), JOB, [10, 11, 12])
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000", "part-00001", "part-00002"]
    assert [read(out / f"part-0000{p}") for p in range(3)] == ["k0\t0\n", "k1\t1\n", "k2\t2\n"]


def test_abort_removes_the_jobs_temporary_but_not_another_jobs(tmp_path):
    out = tmp_path / "out"
    setup_job(str(out), JOB)
    setup_job(str(out), "job2")
    attempt_file(out, 0, 1, "x\n")
    abort_job(str(out), JOB)
    assert os.listdir(out / "_temporary") == ["job2"]
    abort_job(str(out), "job2")
    assert os.listdir(out) == []


def test_the_committer_thread_reports_each_outcome(tmp_path):
    out = tmp_path / "out"
    setup_job(str(out), JOB)
    attempt_file(out, 0, 1, "x\n")
    c = commit.Committer()
    try:
        c.commit(JOB, str(out), [1], "s1")
        c.commit("job2", str(out), [1], "s2")  # never set up: fails
        c.abort(JOB, str(out), "s3")
        assert c.wait_idle(30)
        done = c.outcomes()
    finally:
        c.close()
    assert [(d.kind, d.job_id, d.stimulus, bool(d.error)) for d in done] == [
        ("commit", JOB, "s1", False),
        ("commit", "job2", "s2", True),
        ("abort", JOB, "s3", False),
    ]
    assert "missing" in done[1].error
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000"]
