"""A Client shared by threads, a Client never closed, a worker that comes back with files
of an ended job, and the temp dirs of SIGKILLed workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil
from conftest import REPO, free_port, stop_processes, wc_mapper, wc_reducer

import zmqmr

FAST = dict(heartbeat_interval=0.2, worker_timeout=1.5, insecure=True)


NEVER_CLOSED = """
import gc, warnings, zmqmr
warnings.simplefilter("always")
with zmqmr.LocalCluster(workers=1, insecure=True) as c:
    client = zmqmr.Client(c.address, insecure=True)
    job = zmqmr.Job(lambda k, v: [(v, 1)], lambda k, vs: sum(vs), inputs=[(1, "a"), (2, "a")])
    assert dict(client.run(job, progress=False).items()) == {"a": 2}
    del client
    gc.collect()
    zmqmr.Client(c.address, insecure=True).status()  # never closed, still held at exit
print("done")
"""


def test_a_client_never_closed_is_closed_when_collected_or_at_exit():
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", NEVER_CLOSED],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr
    assert "ResourceWarning" not in out.stderr and "nclosed" not in out.stderr, out.stderr


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
    """Map output files and packs (which hold the small outputs) under ``data_dir``."""
    found = []
    for root, _, files in os.walk(data_dir):
        found += [os.path.join(root, f) for f in files if f.endswith((".out", ".pack"))]
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


def _temp_dirs(tmp) -> set[str]:
    return {n for n in os.listdir(tmp) if n.startswith("zmqmr-worker-")}


def _worker(tmp, port: int) -> subprocess.Popen:
    """A worker without --data-dir (so in a temp dir of its own) towards no master."""
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=REPO)
    cmd = [sys.executable, "-m", "zmqmr", "worker", "--insecure"]
    cmd += ["--master", f"tcp://127.0.0.1:{port}"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_dirs(tmp, n: int) -> set[str]:
    deadline = time.monotonic() + 60
    while len(_temp_dirs(tmp)) < n:
        assert time.monotonic() < deadline, f"temp dirs: {_temp_dirs(tmp)}"
        time.sleep(0.05)
    return _temp_dirs(tmp)


def test_a_worker_removes_the_temp_dirs_of_sigkilled_workers_and_no_live_ones(tmp_path):
    """A SIGKILLed worker cannot remove its temp dir; the next worker to start does,
    and leaves alone a live worker's and one that is not a worker's."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    foreign = tmp / "zmqmr-worker-notours"
    foreign.mkdir()
    (foreign / "keep").write_text("x")
    port = free_port()
    procs = []
    try:
        procs.append(_worker(tmp, port))
        (killed,) = _wait_dirs(tmp, 2) - {foreign.name}
        procs.append(_worker(tmp, port))
        (alive,) = _wait_dirs(tmp, 3) - {foreign.name, killed}
        family = psutil.Process(procs[0].pid).children(recursive=True)
        procs[0].kill()
        procs[0].wait(10)
        psutil.wait_procs(family, timeout=10)  # its executors die with it
        assert killed in _temp_dirs(tmp), "SIGKILL removed nothing"
        procs.append(_worker(tmp, port))
        deadline = time.monotonic() + 60
        while killed in _temp_dirs(tmp) or len(_temp_dirs(tmp)) < 3:
            assert time.monotonic() < deadline, f"temp dirs: {_temp_dirs(tmp)}"
            time.sleep(0.05)
        assert alive in _temp_dirs(tmp) and (foreign / "keep").exists()
    finally:
        stop_processes(procs)
    # Stopped gracefully, the two live workers removed their own dirs.
    assert _temp_dirs(tmp) == {foreign.name}
