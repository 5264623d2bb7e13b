"""Fault tolerance with real processes and real signals, every answer checked against run_serial."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid

import pytest
from conftest import (
    CommandLineCluster,
    count_words,
    serial_items,
    wc_mapper,
    wc_reducer,
)

import zmqmr
from zmqmr.chaos import agent

FAST = dict(
    heartbeat_interval=0.2,
    worker_timeout=1.5,
    fetch_timeout=0.5,
    fetch_retries=2,
    reconnect_initial=0.2,
    reconnect_max=1.0,
)


def slow_wc_mapper(key, line):
    time.sleep(0.0005)
    yield from wc_mapper(key, line)


def wait_until(predicate, timeout=30.0, every=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def test_sigkilled_worker_mid_map_phase_is_replaced_and_answer_is_exact(books):
    books = books[:4]
    job = zmqmr.Job(
        slow_wc_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books,
        num_reducers=4,
        split_size=128 * 1024,
    )
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        handle = c.client().submit(job)
        wait_until(lambda: handle.progress()["maps_done"] >= 4)
        os.kill(c.worker_pids[0], signal.SIGKILL)
        result = handle.wait(timeout=120)
    assert list(result.items()) == serial_items(job, mapper=wc_mapper)
    assert result.stats["lost_attempts"] + result.stats["reexecuted_maps"] >= 1
    lines = 0
    for book in books:
        with open(book, "rb") as f:
            lines += sum(1 for _ in f)
    assert result.counters["zmqmr.map_input_records"] == lines  # each task counted once


def test_worker_killed_after_map_phase_loses_its_outputs_and_reducers_get_new_locations(books):
    def slow_reducer(word, counts):
        time.sleep(0.0005)
        return sum(counts)

    job = zmqmr.Job(
        wc_mapper,
        slow_reducer,
        combiner=wc_reducer,
        inputs=books,
        num_reducers=12,
        split_size=256 * 1024,
    )
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        handle = c.client().submit(job)
        wait_until(lambda: handle.progress()["maps_done"] == handle.progress()["maps"])
        os.kill(c.worker_pids[1], signal.SIGKILL)
        result = handle.wait(timeout=120)
    assert list(result.items()) == serial_items(job, reducer=wc_reducer)
    assert result.stats["reexecuted_maps"] >= 1


def test_restarted_worker_joins_as_a_new_incarnation_and_gets_work(books):
    job = zmqmr.Job(
        wc_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books,
        num_reducers=3,
        split_size=128 * 1024,
    )
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        old = c.worker_pids[0]
        os.kill(old, signal.SIGKILL)
        c.worker_procs[0].wait()
        wait_until(lambda: not c.client().status()["workers"])
        c.add_worker()
        c.wait_for_workers(1)
        status = c.client().status()
        assert [w["pid"] for w in status["workers"]] == [c.worker_pids[1]]
        result = c.client().run(job)
    assert dict(result.items()) == count_words(books)


def test_paused_worker_comes_back_fenced_and_the_output_is_exact(books, tmp_path):
    job = zmqmr.Job(
        slow_wc_mapper,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books[:4],
        num_reducers=3,
        split_size=128 * 1024,
        output_dir=tmp_path / "out",
    )
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        handle = c.client().submit(job)
        wait_until(lambda: handle.progress()["maps_done"] >= 3)
        victim = c.worker_pids[2]
        os.kill(victim, signal.SIGSTOP)
        try:
            time.sleep(3)  # twice worker_timeout: declared dead, its work given away
        finally:
            os.kill(victim, signal.SIGCONT)
        result = handle.wait(timeout=120)
        # it comes back as a new incarnation
        wait_until(lambda: len(c.client().status()["workers"]) == 3)
        again = c.client().run(
            zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:2], combiner=wc_reducer, num_reducers=3)
        )
    assert list(result.items()) == serial_items(job, mapper=wc_mapper)
    assert sorted(os.listdir(tmp_path / "out")) == [
        "_SUCCESS",
        "part-00000",
        "part-00001",
        "part-00002",
    ]
    from_files = {}
    for path in result.output_files:
        with open(path) as f:
            for line in f:
                k, v = line.rstrip("\n").split("\t")
                assert k not in from_files
                from_files[k] = int(v)
    assert from_files == count_words(books[:4])
    assert dict(again.items()) == count_words(books[:2])


def crashing_mapper(key, value):
    if value == 3 and not os.path.exists(key):
        open(key, "w").close()
        os._exit(7)
    yield value % 2, value


def segfaulting_mapper(key, value):
    if value == 5 and not os.path.exists(key):
        open(key, "w").close()
        import ctypes

        ctypes.string_at(0)  # a real segmentation fault
    yield value % 2, value


@pytest.mark.parametrize("mapper", [crashing_mapper, segfaulting_mapper])
def test_executor_crash_fails_only_that_attempt_and_the_task_is_retried(tmp_path, mapper):
    records = [(str(tmp_path / f"crashed-{i}"), i) for i in range(8)]
    job = zmqmr.Job(mapper, wc_reducer, inputs=records, num_reducers=2)
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        pid = c.worker_pids[0]
        result = c.client().run(job)
        assert c.worker_procs[0].poll() is None and c.worker_pids[0] == pid  # worker survived
    assert dict(result.items()) == {0: 12, 1: 16}
    assert result.stats["failed_attempts"] == 1


def test_worker_where_a_job_keeps_failing_gets_no_more_of_its_tasks(tmp_path):
    failures = str(tmp_path)
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        broken = c.worker_pids[0]

        def mapper(key, value):
            if os.getppid() == broken:  # executors are children of their worker
                open(os.path.join(failures, uuid.uuid4().hex), "w").close()
                raise RuntimeError("this host is broken")
            # The healthy worker holds its first task until the broken one has
            # failed three times, so the job cannot end before it is left out.
            deadline = time.monotonic() + 60
            while len(os.listdir(failures)) < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            yield value, 1

        records = [(i, i % 5) for i in range(400)]
        job = zmqmr.Job(
            mapper, wc_reducer, inputs=records, max_attempts=4, split_size=200, num_reducers=2
        )
        result = c.client().run(job)
    assert dict(result.items()) == {i: 80 for i in range(5)}
    # worker_job_failures (3) failures, then the broken worker is left out
    assert result.stats["failed_attempts"] == 3
    # The worker may start the one attempt it holds queued (prefetch=1 per slot)
    # before the cancel that its exclusion sends reaches it; that attempt is fenced.
    assert 3 <= len(os.listdir(failures)) <= 4
    assert result.stats["maps"] >= 8


def test_task_timeout_kills_a_hung_attempt_and_retries_it(tmp_path):
    def mapper(key, value):
        marker = os.path.join(key, "hung-once")
        if value == 0 and not os.path.exists(marker):
            open(marker, "w").close()
            time.sleep(600)  # hangs; only task_timeout gets it out
        yield value % 3, 1

    job = zmqmr.Job(
        mapper,
        wc_reducer,
        inputs=[(str(tmp_path), i) for i in range(30)],
        task_timeout=2.0,
        num_reducers=2,
    )
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        t = time.monotonic()
        result = c.client().run(job)
        assert time.monotonic() - t < 30
    assert dict(result.items()) == {0: 10, 1: 10, 2: 10}
    assert result.stats["timeouts"] == 1


def test_bad_records_are_skipped_after_two_failures_and_counted():
    def mapper(key, value):
        if value in (13, 77):
            raise ValueError(f"cannot parse record {value}")
        yield value % 4, value

    records = [(i, i) for i in range(200)]
    job = zmqmr.Job(mapper, wc_reducer, inputs=records, skip_bad_records=True, max_attempts=2)
    job.split_size = 256  # the oracle's splits are the cluster's (the default plan counts slots)
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        result = c.client().run(job)
    expected = {}
    for i in range(200):
        if i not in (13, 77):
            expected[i % 4] = expected.get(i % 4, 0) + i
    assert dict(result.items()) == expected
    assert result.counters["zmqmr.skipped_records"] == result.stats["skipped_records"] == 2
    serial = zmqmr.run_serial(job)  # the oracle skips the records the cluster skips
    assert list(result.items()) == list(serial.items())
    assert result.counters == serial.counters
    assert serial.stats["skipped_records"] == 2


def _small_outputs_job() -> zmqmr.Job:
    records = [(i, f"w{i % 7} w{i % 5} shared") for i in range(120)]
    job = zmqmr.Job(wc_mapper, wc_reducer, inputs=records, num_reducers=3)
    job.split_size = 1  # a task per record: outputs of a few hundred bytes, packed
    return job


@pytest.mark.parametrize("outputs", ["files", "packs"])
def test_lost_map_outputs_are_detected_and_regenerated(books, outputs):
    """Corrupt, truncate or delete map outputs as soon as they appear; reducers must notice.

    Large outputs are files of their own; small ones are entries of their executor's
    pack, damaged in place (a cut there loses the entries after it too)."""
    if outputs == "files":
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books, num_reducers=4, split_size=256 * 1024)
    else:
        job = _small_outputs_job()
    with zmqmr.LocalCluster(workers=2, **FAST) as c:
        data_dirs = [os.path.join(c.dir, f"worker-{i}") for i in range(2)]
        damaged: list = []
        stop = threading.Event()

        def saboteur():
            kinds = ["flip", "truncate", "delete"]
            while not stop.is_set() and len(damaged) < 3:
                for root in data_dirs:
                    for path in agent.map_outputs(root):
                        if path in damaged or len(damaged) >= 3:
                            continue
                        if agent.damage(path, kinds[len(damaged) % 3], 0.5, 0.5) is not None:
                            damaged.append(path)
                time.sleep(0.001)

        t = threading.Thread(target=saboteur)
        t.start()
        try:
            result = c.client().run(job)
        finally:
            stop.set()
            t.join()
    assert list(result.items()) == list(zmqmr.run_serial(job).items())
    assert len(damaged) >= 1
    assert all(("#" in p) == (outputs == "packs") for p in damaged), damaged
    assert result.stats["fetch_failures"] >= 1 and result.stats["reexecuted_maps"] >= 1


def test_client_gets_a_clear_error_when_the_master_dies_for_longer_than_master_wait(books):
    # a waiting client asks a silent master again (it may be restarting), up to master_wait
    job = zmqmr.Job(slow_wc_mapper, wc_reducer, inputs=books[:2], split_size=64 * 1024)
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        client = zmqmr.Client(c.address, keys=c.keys, timeout=1.0, master_wait=2.0)
        try:
            handle = client.submit(job)
            os.kill(c.master_pid, signal.SIGKILL)
            with pytest.raises(zmqmr.MasterUnavailable, match="master_wait"):
                handle.wait(timeout=60)
        finally:
            client.close()


def test_workers_reregister_with_a_master_restarted_at_the_same_address(books, tmp_path):
    sets = ("reconnect_initial=0.2", "reconnect_max=1.0")
    with CommandLineCluster(tmp_path, worker_timeout=1.5, worker_sets=sets) as lab:
        lab.start_master()
        lab.start_workers()
        wait_until(lab.registered)
        lab.kill_master()
        time.sleep(2.5)  # workers notice the silence and back off
        lab.start_master()
        wait_until(lab.registered, timeout=30)
        job = zmqmr.Job(
            wc_mapper, wc_reducer, inputs=books[:2], combiner=wc_reducer, num_reducers=2
        )
        with zmqmr.Client(lab.address) as cl:
            assert dict(cl.run(job).items()) == count_words(books[:2])


def test_backups_are_not_launched_for_even_tasks():
    # Eight map tasks of 2-5 s on four workers: each runs exactly once.
    durations = [2.0, 3.0, 4.0, 5.0, 2.5, 3.5, 4.5, 2.0]

    def mapper(key, value):
        steps = 20
        for _ in range(steps):
            time.sleep(value / steps)
        yield key, value

    job = zmqmr.Job(
        mapper,
        lambda k, vs: sum(vs),
        inputs=[(i, d) for i, d in enumerate(durations)],
        split_size=1,
    )
    with zmqmr.LocalCluster(workers=4, **FAST) as c:
        result = c.client().run(job)
    assert dict(result.items()) == dict(enumerate(durations))
    assert result.stats["maps"] == 8
    assert result.stats["map_attempts"] == 8
    assert result.stats["backups_launched"] == 0


def crash_test_mapper(path, text):
    maybe_crash()
    name = os.path.basename(path)
    return [("a", name), ("b", str(len(text))), ("c", str(text.count("\n"))), ("d", name[:3])]


def crash_test_reducer(key, values):
    maybe_crash()
    return " ".join(sorted(values))


def maybe_crash():
    """As in the classic MapReduce crash test: exit 1/3, sleep 0-10 s 1/3, else proceed."""
    rr = random.SystemRandom().randrange(1000)
    if os.environ.get("ZMQMR_NO_CRASH"):
        return
    if rr < 330:
        os._exit(1)
    elif rr < 660:
        time.sleep(random.SystemRandom().randrange(10_000) / 1000)


@pytest.mark.timeout(300)
def test_crash_test_output_equals_the_no_crash_run(books):
    job = zmqmr.Job(
        crash_test_mapper,
        crash_test_reducer,
        inputs=zmqmr.WholeFiles(books),
        split_size=1,
        num_reducers=10,
        max_attempts=40,
    )
    os.environ["ZMQMR_NO_CRASH"] = "1"
    try:
        expected = list(zmqmr.run_serial(job).items())
    finally:
        del os.environ["ZMQMR_NO_CRASH"]
    with zmqmr.LocalCluster(workers=3, **FAST) as c:
        result = c.client().run(job)
    assert list(result.items()) == expected
    assert result.stats["failed_attempts"] >= 1


class DutyCycle:
    """Slows a process to a fiftieth of its speed: SIGSTOP 98% of each 100 ms.

    A tenth is not enough on a loaded machine: there a process that runs only in
    short windows gets most of a core in each, while its busy peers share theirs,
    so it ended up only about twice as slow as they were.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _kill(self, sig: int) -> bool:
        try:
            os.kill(self.pid, sig)
            return True
        except ProcessLookupError:  # an executor killed because its attempt lost
            return False

    def _run(self) -> None:
        while not self.stop.is_set() and self._kill(signal.SIGSTOP):
            time.sleep(0.098)
            self._kill(signal.SIGCONT)
            time.sleep(0.002)

    def __enter__(self) -> DutyCycle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._kill(signal.SIGCONT)


@pytest.mark.parametrize("speculative", [True, False])
def test_straggler_gets_a_backup_that_wins_unless_speculation_is_off(speculative):
    import psutil

    records = [(i, 1) for i in range(8 * 20)]  # 8 splits of 20 records, 0.2 CPU s each

    def mapper(key, value):
        # CPU time, not sleep: a sleep runs on while its process is stopped
        t = time.process_time()
        while time.process_time() - t < 0.01:
            pass
        yield key % 3, value

    job = zmqmr.Job(mapper, wc_reducer, inputs=records, num_reducers=2, speculative=speculative)
    from zmqmr.inputs import record_splits

    per_split = len(zmqmr.inputs.dumps_records(records[:20]))
    job.split_size = per_split
    assert len(record_splits(records, per_split)[0]) >= 8
    # The slowed worker is a straggler, not a dead one: on a loaded machine its
    # heartbeats, sent in a fiftieth of its time, may miss FAST's short worker_timeout.
    with zmqmr.LocalCluster(workers=4, **dict(FAST, worker_timeout=15.0)) as c:
        slow = c.worker_pids[0]
        targets = [slow] + [p.pid for p in psutil.Process(slow).children()]
        cycles = [DutyCycle(pid) for pid in targets]
        for cycle in cycles:
            cycle.__enter__()
        try:
            t = time.monotonic()
            result = c.client().run(job)
            elapsed = time.monotonic() - t
        finally:
            for cycle in cycles:
                cycle.__exit__()
    assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
    if speculative:
        assert result.stats["backups_launched"] >= 1, str(result.stats)
        assert result.stats["backups_won"] >= 1
        assert (
            result.stats["backups_won"] + result.stats["backups_cancelled"]
            <= (result.stats["backups_launched"])
        )
    else:
        assert result.stats["backups_launched"] == 0
    assert elapsed < 90
