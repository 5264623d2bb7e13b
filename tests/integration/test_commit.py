"""The output commit protocol on real clusters: every output dir against run_serial.

``diff_output_dir`` (the chaos checker's) demands exactly ``part-00000`` ..
``part-(R-1)`` holding the serial run's records, ``_SUCCESS``, and no
``_temporary`` nor other temporary file.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import count_words, wc_mapper, wc_reducer
from test_faults import FAST, slow_wc_mapper, wait_until

import zmqmr
from zmqmr.chaos.checker import diff_output_dir, snapshot

#: A word every book has, so its partition's reduce is the one the tests slow down.
WORD = "the"


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        yield c


def serial(job: zmqmr.Job) -> list:
    return list(zmqmr.run_serial(job).items())


def temporaries(out, job_id: str) -> list[str]:
    try:
        return os.listdir(os.path.join(out, "_temporary", job_id))
    except FileNotFoundError:
        return []


def failing_reducer(word, counts):
    if word == WORD:
        raise ValueError(f"no {WORD!r} today")
    return sum(counts)


def slow_reducer(word, counts):
    time.sleep(0.001)
    return sum(counts)


def test_a_dir_with_files_needs_overwrite_which_replaces_the_output_on_success(
    cluster, books, tmp_path
):
    out = tmp_path / "out"
    first = zmqmr.Job(
        wc_mapper, wc_reducer, inputs=books[:2], num_reducers=3, combiner=wc_reducer, output_dir=out
    )
    cluster.client().run(first)
    assert diff_output_dir(str(out), serial(first), 3) == []
    before = snapshot(str(out))
    second = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[2:4], num_reducers=2, output_dir=out)
    with pytest.raises(zmqmr.JobSubmitError, match="already holds files.*overwrite=True"):
        cluster.client().submit(second)
    assert snapshot(str(out)) == before
    second.overwrite = True
    result = cluster.client().run(second)
    assert diff_output_dir(str(out), serial(second), 2) == []  # part-00002 went too
    assert dict(result.items()) == count_words(books[2:4])


def test_a_failing_job_leaves_the_previous_output_as_it_was(cluster, books, tmp_path):
    out = tmp_path / "out"
    good = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1], num_reducers=2, output_dir=out)
    cluster.client().run(good)
    before = snapshot(str(out))
    bad = zmqmr.Job(
        wc_mapper,
        failing_reducer,
        inputs=books[:2],
        num_reducers=2,
        output_dir=out,
        overwrite=True,
        max_attempts=2,
    )
    with pytest.raises(zmqmr.JobFailed, match="today"):
        cluster.client().run(bad)
    assert snapshot(str(out)) == before  # no part file of its own, no _temporary
    assert diff_output_dir(str(out), serial(good), 2) == []
    fresh = tmp_path / "fresh"
    bad.output_dir, bad.overwrite = str(fresh), False
    with pytest.raises(zmqmr.JobFailed, match="today"):
        cluster.client().run(bad)
    assert os.listdir(fresh) == []


def test_a_job_cancelled_in_its_reduce_phase_leaves_nothing(cluster, books, tmp_path):
    out = tmp_path / "out"
    job = zmqmr.Job(wc_mapper, slow_reducer, inputs=books[:2], num_reducers=2, output_dir=out)
    handle = cluster.client().submit(job)
    wait_until(lambda: len(temporaries(out, handle.job_id)) == 2, timeout=60)  # reduces writing
    handle.cancel()
    with pytest.raises(zmqmr.JobCancelled):
        handle.wait(timeout=60)
    assert os.listdir(out) == []


def test_a_second_job_for_a_running_jobs_output_dir_fails_at_submit(cluster, books, tmp_path):
    out = tmp_path / "out"
    first = zmqmr.Job(slow_wc_mapper, wc_reducer, inputs=books[:1], num_reducers=2, output_dir=out)
    handle = cluster.client().submit(first)
    for overwrite in (False, True):  # with True, only the master can tell
        second = zmqmr.Job(
            wc_mapper, wc_reducer, inputs=books[1:2], output_dir=out, overwrite=overwrite
        )
        with pytest.raises(zmqmr.JobSubmitError, match="in use by job"):
            cluster.client().submit(second)
        assert os.listdir(out / "_temporary") == [handle.job_id]  # the loser's is gone
    result = handle.wait(timeout=120)
    assert diff_output_dir(str(out), serial(first), 2) == []
    assert dict(result.items()) == count_words(books[:1])


def _watch(out, seen: dict[str, set[bytes]], success_with: list[set[str]], stop) -> None:
    """Record every content each part file had, and which parts stood beside _SUCCESS."""
    while not stop.is_set():
        try:
            names = set(os.listdir(out))
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith("part-"):
                try:
                    with open(os.path.join(out, name), "rb") as f:
                        seen.setdefault(name, set()).add(f.read())
                except FileNotFoundError:
                    pass
        if "_SUCCESS" in names:
            success_with.append({n for n in names if n.startswith("part-")})
        time.sleep(0.005)


def test_a_worker_sigkilled_in_the_reduce_phase_leaves_every_part_whole(books, tmp_path):
    out = tmp_path / "out"
    job = zmqmr.Job(
        wc_mapper,
        slow_reducer,
        inputs=books[:3],
        num_reducers=3,
        output_dir=out,
        split_size=1 << 20,
    )
    seen: dict[str, set[bytes]] = {}
    success_with: list[set[str]] = []
    stop = threading.Event()
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        handle = c.client().submit(job)
        watcher = threading.Thread(target=_watch, args=(out, seen, success_with, stop))
        watcher.start()
        try:
            wait_until(lambda: len(temporaries(out, handle.job_id)) >= 2, timeout=60)
            os.kill(c.worker_pids[0], signal.SIGKILL)
            result = handle.wait(timeout=180)
        finally:
            stop.set()
            watcher.join()
    assert diff_output_dir(str(out), serial(job), 3) == []
    assert dict(result.items()) == count_words(books[:3])
    parts = {f"part-0000{i}" for i in range(3)}
    for name in parts:  # whole or absent: only the final content was ever seen
        with open(out / name, "rb") as f:
            assert seen.get(name, set()) <= {f.read()}
    assert all(names == parts for names in success_with)  # _SUCCESS only after every part
    assert result.stats["lost_attempts"] >= 1


def make_stalling_reducer(marks: str):
    """The first attempt to reduce WORD stalls until ``marks/release`` exists, then
    returns a wrong count: it must never reach the output. Others reduce normally."""

    def reducer(word, counts):
        total = sum(counts)
        if word != WORD:
            return total
        try:
            fd = os.open(os.path.join(marks, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return total
        os.write(fd, str(os.getppid()).encode())  # the worker that runs this executor
        os.close(fd)
        while not os.path.exists(os.path.join(marks, "release")):
            time.sleep(0.02)
        open(os.path.join(marks, "released"), "w").close()
        return total + 1_000_000

    return reducer


def test_a_paused_workers_reduce_that_finishes_after_the_commit_cannot_clobber(books, tmp_path):
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    job = zmqmr.Job(
        wc_mapper,
        make_stalling_reducer(str(marks)),
        inputs=books[:2],
        num_reducers=2,
        output_dir=out,
    )
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        handle = c.client().submit(job)
        claimed = marks / "claimed"
        wait_until(lambda: claimed.exists() and claimed.read_text(), timeout=60)
        victim = int(claimed.read_text())
        assert victim in c.worker_pids
        os.kill(victim, signal.SIGSTOP)  # its executor runs on, stalled in the reducer
        try:
            result = handle.wait(timeout=180)  # declared dead; the reduce reran elsewhere
            committed = snapshot(str(out))
            (marks / "release").touch()  # the stale attempt now finishes its part file
            wait_until(lambda: (marks / "released").exists(), timeout=30)
            time.sleep(1.0)  # the rest of its partition: a few thousand keys
        finally:
            os.kill(victim, signal.SIGCONT)
        wait_until(lambda: len(c.client().status()["workers"]) == 3, timeout=60)
        # one more job through the cluster: the stale DONE has been heard and fenced by now
        c.client().run(zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1]))
    assert snapshot(str(out)) == committed
    assert dict(result.items()) == count_words(books[:2])
    plain = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:2], num_reducers=2)
    assert diff_output_dir(str(out), serial(plain), 2) == []
