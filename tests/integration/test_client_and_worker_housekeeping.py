"""A Client shared by threads, and a worker that comes back with files of an ended job."""

from __future__ import annotations

import os
import signal
import threading
import time

from conftest import wc_mapper, wc_reducer

import zmqmr

FAST = dict(heartbeat_interval=0.2, worker_timeout=1.5, insecure=True)


def test_one_client_used_from_several_threads_gives_each_its_answer():
    jobs = {
        n: zmqmr.Job(
            wc_mapper, wc_reducer, inputs=[(i, f"{_word(n)} {_word(n)} x") for i in range(n)]
        )
        for n in (3, 5, 7, 9)
    }
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    with zmqmr.LocalCluster(workers=2, **FAST) as c, c.client() as client:

        def run(n: int) -> None:
            try:
                for _ in range(3):  # several requests each, interleaved with the others
                    results[n] = dict(client.run(jobs[n]).items())
                    client.status()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert errors == []
    assert results == {n: {_word(n): 2 * n, "x": n} for n in jobs}


def _word(n: int) -> str:
    return chr(ord("a") + n) * 3


def _outputs(data_dir: str) -> list[str]:
    found = []
    for root, _, files in os.walk(data_dir):
        found += [os.path.join(root, f) for f in files if f.endswith(".out")]
    return found


def test_a_worker_back_from_a_pause_deletes_the_map_outputs_of_ended_jobs():
    records = [(i, f"a b c{i % 3}") for i in range(40)]
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=records, num_reducers=2)
    job.split_size = 64  # several map tasks, on both workers
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        victim = c.worker_pids[0]
        data_dir = os.path.join(c.dir, "worker-0")
        result = c.client().run(job)
        assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
        # The job ended and its outputs were dropped; leave a second job's outputs on
        # the victim, then pause it past worker_timeout while that job runs on.
        slow = zmqmr.Job(_slow_mapper, wc_reducer, inputs=records, num_reducers=2)
        slow.split_size = 64
        handle = c.client().submit(slow)
        deadline = time.monotonic() + 60
        while not _outputs(data_dir):
            assert time.monotonic() < deadline, "the victim wrote no map output"
            time.sleep(0.05)
        os.kill(victim, signal.SIGSTOP)
        try:
            assert dict(handle.wait(timeout=120).items()) == dict(zmqmr.run_serial(slow).items())
            assert _outputs(data_dir), "the paused worker's outputs are still on disk"
        finally:
            os.kill(victim, signal.SIGCONT)
        # Back, it registers again with what it holds; the job has ended: files go.
        while _outputs(data_dir):
            assert time.monotonic() < deadline, f"left behind: {_outputs(data_dir)}"
            time.sleep(0.1)
        assert "holds files of ended jobs" in c.log("master")


def _slow_mapper(key, line):
    time.sleep(0.05)
    yield from wc_mapper(key, line)
