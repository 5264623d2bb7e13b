"""Master recovery with real processes: SIGKILL the master (``python -m zmqmr master
--state-dir DIR``, started by LocalCluster) in the map phase and in the reduce phase, start
it again with the same flags, and the job finishes exactly, without re-running what the
journal knew as done, and the client never sees an error. Without a state dir the client
is told the job was lost.

What the journal knew at the kill is read from the journal file itself while the master
is dead (``zmqmr.journal.read_entries``), and compared with the attempt counts the job
reports at its end.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import serial_items, wc_mapper, wc_reducer

import zmqmr
from zmqmr.journal import read_entries

pytestmark = pytest.mark.timeout(300)

FAST = dict(
    heartbeat_interval=0.2,
    worker_timeout=3.0,
    fetch_timeout=0.5,
    fetch_retries=2,
    reconnect_initial=0.2,
    reconnect_max=1.0,
)


def slow_mapper(key, line):
    time.sleep(0.002)
    yield from wc_mapper(key, line)


def slow_reducer(word, counts):
    time.sleep(0.001)
    return sum(counts)


def wait_until(predicate, timeout=120.0, every=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def kill_master(c: zmqmr.LocalCluster) -> None:
    assert c.master_proc is not None
    os.kill(c.master_proc.pid, signal.SIGKILL)
    c.master_proc.wait()


def journaled(state_dir, job_id: str) -> dict[str, int]:
    """What the journal of a dead master holds for ``job_id``: entries by kind."""
    entries, _ = read_entries(os.path.join(state_dir, "journal"))
    counts: dict[str, int] = {}
    done: dict[str, set[int]] = {"map": set(), "reduce": set()}
    for e in entries:
        if e.fields.get("job") != job_id:
            continue
        if e.kind == "attempt":
            counts[f"{e.fields['kind']}_attempts"] = (
                counts.get(f"{e.fields['kind']}_attempts", 0) + 1
            )
        elif e.kind in done:
            done[e.kind].add(e.fields["task"])
        elif e.kind == "lost":
            done["map"].discard(e.fields["task"])
    counts["maps_done"] = len(done["map"])
    counts["reduces_done"] = len(done["reduce"])
    return counts


def test_master_killed_in_the_map_phase_resumes_and_reruns_no_journaled_map(books, tmp_path):
    state = tmp_path / "state"
    job = zmqmr.Job(
        slow_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books[:4],
        num_reducers=2,
        split_size=64 * 1024,
        speculative=False,
    )
    expected = serial_items(job, mapper=wc_mapper)
    with zmqmr.LocalCluster(workers=2, state_dir=str(state), **FAST) as c:
        handle = c.client(timeout=2.0).submit(job)
        maps = wait_until(lambda: (p := handle.progress())["maps_done"] >= 3 and p["maps"])
        kill_master(c)
        before = journaled(str(state), handle.job_id)
        assert before["maps_done"] >= 3
        assert before["maps_done"] < maps  # killed in the map phase
        time.sleep(1.0)
        c.restart_master()
        result = handle.wait(timeout=240)  # the client rode through: no error
    assert list(result.items()) == expected
    # every map the journal knew as done was reused: only the others ran after the restart
    after = result.stats["map_attempts"] - before["map_attempts"]
    assert after <= maps - before["maps_done"]
    assert result.stats["map_attempts"] >= maps


def test_master_killed_in_the_reduce_phase_keeps_committed_part_files(books, tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    job = zmqmr.Job(
        wc_mapper,
        slow_reducer,
        combiner=wc_reducer,
        inputs=books[:3],
        num_reducers=6,
        output_dir=str(out),
        speculative=False,
    )
    expected = serial_items(job, reducer=wc_reducer)
    with zmqmr.LocalCluster(workers=2, state_dir=str(state), **FAST) as c:
        handle = c.client(timeout=2.0).submit(job)
        wait_until(lambda: handle.progress()["reduces_done"] >= 2)
        kill_master(c)
        before = journaled(str(state), handle.job_id)
        assert before["reduces_done"] >= 2 and before["reduces_done"] < 6
        # done reduces' files wait in _temporary for the job's commit (zmqmr.commit)
        temp = out / "_temporary" / handle.job_id
        stamps = {os.stat(temp / p).st_ino for p in os.listdir(temp)}
        assert len(stamps) >= before["reduces_done"]
        time.sleep(1.0)
        c.restart_master()
        result = handle.wait(timeout=240)
    assert list(result.items()) == expected
    assert len(result.output_files) == 6
    # reduces done before the kill were not redone: the commit moved their very files
    moved = [p for p in result.output_files if os.stat(p).st_ino in stamps]
    assert len(moved) >= before["reduces_done"]
    assert sorted(os.listdir(out)) == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(6)]
    after = result.stats["reduce_attempts"] - before["reduce_attempts"]
    assert after <= 6 - before["reduces_done"]
    # every map was done before the kill; the reducers found every output on a live worker
    assert result.stats["map_attempts"] == before["map_attempts"]


def test_a_finished_result_waits_in_the_state_dir_for_its_client(books, tmp_path):
    state = tmp_path / "state"
    job = zmqmr.Job(wc_mapper, wc_reducer, combiner=wc_reducer, inputs=books[:1], num_reducers=2)
    with zmqmr.LocalCluster(workers=1, state_dir=str(state), **FAST) as c:
        handle = c.client(timeout=2.0).submit(job)
        wait_until(lambda: handle.client.status()["jobs"][0]["state"] == "succeeded")
        kill_master(c)  # the outcome was not collected yet
        c.restart_master()
        result = handle.wait(timeout=120)
        assert list(result.items()) == list(zmqmr.run_serial(job).items())
        # acknowledged: the master forgets it and its result file
        wait_until(lambda: not os.listdir(state / "results"))


def test_without_a_state_dir_the_client_is_told_the_job_was_lost(books):
    job = zmqmr.Job(slow_mapper, wc_reducer, inputs=books[:2], split_size=64 * 1024)
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        handle = c.client(timeout=2.0).submit(job)
        wait_until(lambda: handle.progress()["maps_done"] >= 1)
        kill_master(c)
        c.restart_master()
        with pytest.raises(zmqmr.JobLost, match=f"job {handle.job_id} was lost"):
            handle.wait(timeout=60)  # well before this: the first poll the new master answers


def test_a_second_master_on_the_same_state_dir_is_refused(tmp_path):
    state = tmp_path / "state"
    with zmqmr.LocalCluster(workers=0, state_dir=str(state), **FAST) as c:
        other = zmqmr.LocalCluster(workers=0, state_dir=str(state), startup_timeout=20, **FAST)
        with pytest.raises(zmqmr.ClusterError, match="held by another master"):
            other.start()
        assert c.client().status()["workers"] == []


def test_a_master_and_workers_from_the_command_line_resume_after_sigkill(books, tmp_path):
    # as a user runs them: zmqmr master --state-dir, zmqmr worker, a Python client
    from conftest import CommandLineCluster

    job = zmqmr.Job(
        slow_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books[:3],
        num_reducers=3,
        split_size=64 * 1024,
        speculative=False,
    )
    expected = serial_items(job, mapper=wc_mapper)
    state = tmp_path / "state"
    with CommandLineCluster(tmp_path, worker_timeout=3, state_dir=state) as lab:
        client = zmqmr.Client(lab.address, timeout=2.0)
        try:
            lab.start_master()
            lab.start_workers()
            wait_until(lab.registered)
            handle = client.submit(job)
            maps = wait_until(lambda: (p := handle.progress())["maps_done"] >= 3 and p["maps"])
            lab.kill_master()
            before = journaled(str(state), handle.job_id)
            assert 3 <= before["maps_done"] < maps
            lab.start_master()
            result = handle.wait(timeout=240)
            assert list(result.items()) == expected
            assert (
                result.stats["map_attempts"] - before["map_attempts"] <= maps - before["maps_done"]
            )
        finally:
            client.close()


def longest_error(key, value):
    raise ValueError("\U0001f600" * 300_000)  # past what an error carries, 12 bytes a char


def test_a_task_error_of_any_length_fails_its_job_and_nothing_else(tmp_path):
    # The master words the failure around the user's message: its messages (the job's
    # failure, status, job info) and its journal must all still be readable.
    state = str(tmp_path / "state")
    with zmqmr.LocalCluster(workers=1, state_dir=state, **FAST) as c:
        client = c.client(timeout=10)
        job = zmqmr.Job(longest_error, wc_reducer, inputs=[(0, "a")], max_attempts=1)
        handle = client.submit(job)
        with pytest.raises(zmqmr.JobFailed, match="map task 0 failed once") as failed:
            handle.wait(timeout=60, progress=False)
        assert "\U0001f600" * 1000 in failed.value.remote_message
        assert any(j["id"] == handle.job_id for j in client.status()["history"])
        detail = client.job_info(handle.job_id)
        assert detail["failures"] and "\U0001f600" in detail["failures"][0]["message"]
        kill_master(c)
        c.restart_master()  # its journal holds the job's end: replayed
        c.wait_for_workers(1, 30)
        client = c.client(timeout=10)
        assert any(j["id"] == handle.job_id for j in client.status()["history"])
        words = zmqmr.Job(wc_mapper, wc_reducer, inputs=[(0, "b a b")])
        assert dict(client.run(words, progress=False).items()) == {"a": 1, "b": 2}
