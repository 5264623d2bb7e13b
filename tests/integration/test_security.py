"""Keys, safe defaults, validation under fuzzing, and graceful stops, on real processes."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
import zmq
from conftest import REPO, count_words, free_port, wc_mapper, wc_reducer

import zmqmr

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
FAST = dict(heartbeat_interval=0.2, worker_timeout=2.0)


def keygen(directory) -> str:
    out = subprocess.run(
        ZMQMR + ["keygen", str(directory)], env=ENV, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return str(directory)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return keygen(tmp_path_factory.mktemp("keys") / "lab")


@pytest.fixture(scope="module")
def secure_cluster(keys):
    with zmqmr.LocalCluster(workers=2, keys=keys, **FAST) as c:
        yield c


def test_keygen_writes_the_documented_layout_and_refuses_to_overwrite(tmp_path):
    d = keygen(tmp_path / "k")
    assert sorted(os.listdir(d)) == [
        "master.key",
        "master.key_secret",
        "member.key",
        "member.key_secret",
    ]
    assert os.stat(os.path.join(d, "member.key_secret")).st_mode & 0o077 == 0
    again = subprocess.run(
        ZMQMR + ["keygen", d], env=ENV, capture_output=True, text=True, timeout=30
    )
    assert again.returncode != 0 and "not overwriting" in again.stderr


def test_authorised_client_runs_a_job_over_curve(secure_cluster, books):
    job = zmqmr.Job(wc_mapper, wc_reducer, combiner=wc_reducer, inputs=books[:3], num_reducers=3)
    result = secure_cluster.client().run(job)
    assert dict(result.items()) == count_words(books[:3])
    assert result.stats["shuffle_bytes"] > 0  # reducers fetched over CURVE too


def test_client_with_another_key_pair_is_refused_and_the_refusal_logged(
    secure_cluster, keys, tmp_path
):
    stranger = keygen(tmp_path / "stranger")
    shutil.copy(os.path.join(keys, "master.key"), os.path.join(stranger, "master.key"))
    client = zmqmr.Client(secure_cluster.address, keys=stranger, timeout=1.5)
    try:
        t = time.monotonic()
        with pytest.raises(zmqmr.MasterRefused, match="did not let this client in"):
            client.status()
        assert time.monotonic() - t < 10
    finally:
        client.close()
    assert "refused a peer whose CURVE key" in secure_cluster.log("master")


def test_client_without_keys_is_refused(secure_cluster):
    client = zmqmr.Client(secure_cluster.address, timeout=1.5)
    try:
        with pytest.raises(zmqmr.MasterUnavailable):
            client.status()
    finally:
        client.close()


def test_worker_with_the_wrong_key_never_receives_a_task(secure_cluster, keys, tmp_path, books):
    stranger = keygen(tmp_path / "stranger")
    shutil.copy(os.path.join(keys, "master.key"), os.path.join(stranger, "master.key"))
    log = open(tmp_path / "w.log", "wb")
    proc = subprocess.Popen(
        ZMQMR
        + [
            "worker",
            "--master",
            secure_cluster.worker_address,
            "--keys",
            stranger,
            "--data-dir",
            str(tmp_path / "d"),
        ],
        env=ENV,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(1.5)
        job = zmqmr.Job(
            wc_mapper, wc_reducer, inputs=books[:2], split_size=64 * 1024, num_reducers=4
        )
        assert dict(secure_cluster.client().run(job).items()) == count_words(books[:2])
        pids = {w["pid"] for w in secure_cluster.client().status()["workers"]}
        assert proc.pid not in pids and pids == set(secure_cluster.worker_pids)
        # It never held a map output (each slot's position file is its own bookkeeping).
        held = [f for _, _, files in os.walk(tmp_path / "d") for f in files]
        assert [f for f in held if not re.fullmatch(r"\.slot-\d+\.pos", f)] == []
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_binding_beyond_loopback_without_keys_is_refused_unless_insecure(keys):
    port = free_port()
    args = [
        "master",
        "--bind",
        f"tcp://0.0.0.0:{port}",
        "--client-bind",
        f"tcp://127.0.0.1:{free_port()}",
    ]
    refused = subprocess.run(ZMQMR + args, env=ENV, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0
    assert "--keys" in refused.stderr and "--insecure" in refused.stderr
    proc = subprocess.Popen(
        ZMQMR + args + ["--insecure"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # it runs
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "INSECURE" in out
    with_keys = subprocess.Popen(
        ZMQMR + args + ["--keys", keys],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        assert with_keys.poll() is None
    finally:
        with_keys.terminate()
        with_keys.wait(10)


def random_frames(rng: random.Random) -> list[bytes]:
    kind = rng.randrange(4)
    n = rng.randrange(0, 8)
    frames = [rng.randbytes(rng.randrange(0, 64)) for _ in range(n)]
    if kind == 1:  # the right version frame, garbage after it
        frames = [b"ZMQMR1", *frames]
    elif kind == 2:  # a real type with a broken header
        frames = [
            b"ZMQMR1",
            rng.choice([b"READY", b"SUBMIT", b"DONE", b"POLL", b"FETCH"]),
            rng.choice([b"{", b"[]", b'{"slots": -1}', b"null", rng.randbytes(10)]),
            *frames,
        ]
    elif kind == 3:  # a valid JSON header of the wrong shape
        frames = [
            b"ZMQMR1",
            rng.choice([b"DONE", b"FAILED", b"HEARTBEAT", b"ASSIGN"]),
            b'{"attempt": "x", "progress": [[1, "a"]], "info": 3}',
        ]
    return frames or [b""]


def test_fuzzed_messages_leave_every_process_running_and_answers_right(books):
    rng = random.Random(1234)
    # Without CURVE, so that the frames reach the parsers (with it, the handshake stops them).
    with zmqmr.LocalCluster(workers=2, insecure=True, **FAST) as c:
        ctx = zmq.Context()
        try:
            shuffle = c.client().status()["workers"][0]["shuffle"]
            for address in (c.address, c.worker_address):
                sock = ctx.socket(zmq.DEALER)
                sock.linger = 0
                sock.connect(address)
                for _ in range(3000):
                    sock.send_multipart(random_frames(rng))
                sock.close()
            sock = ctx.socket(zmq.DEALER)  # REP strips an empty delimiter frame
            sock.linger = 0
            sock.connect(shuffle)
            for _ in range(2000):
                sock.send_multipart([b"", *random_frames(rng)])
            sock.send_multipart([b"", b"x" * 1_000_000])  # past the shuffle's MAXMSGSIZE
            time.sleep(1.0)
            sock.close()
        finally:
            ctx.term()
        assert c.master_proc.poll() is None
        assert all(p.poll() is None for p in c.worker_procs)
        job = zmqmr.Job(
            wc_mapper, wc_reducer, combiner=wc_reducer, inputs=books[:2], num_reducers=3
        )
        assert dict(c.client().run(job).items()) == count_words(books[:2])
        assert "malformed" in c.log("master")


def test_sigterm_on_a_worker_hands_its_attempts_back_at_once(books):
    def slow(key, line):
        time.sleep(0.001)
        yield from wc_mapper(key, line)

    job = zmqmr.Job(
        slow,
        wc_reducer,
        combiner=wc_reducer,
        inputs=books[:2],
        num_reducers=2,
        split_size=64 * 1024,
    )
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.5, worker_timeout=60) as c:
        handle = c.client().submit(job)
        while handle.progress()["maps_done"] < 2:
            time.sleep(0.05)
        victim = c.worker_procs[0]
        victim.send_signal(signal.SIGTERM)
        victim.wait(10)
        # gone from the master at once, not after the 60 s worker_timeout
        assert len(c.client().status()["workers"]) == 1
        result = handle.wait(timeout=120)
    assert dict(result.items()) == count_words(books[:2])
    assert result.stats["lost_attempts"] + result.stats["reexecuted_maps"] >= 1


def test_sigterm_on_the_master_tells_the_client_at_once(books):
    def slow(key, line):
        time.sleep(0.01)
        yield from wc_mapper(key, line)

    job = zmqmr.Job(slow, wc_reducer, inputs=books[:1])
    with zmqmr.LocalCluster(workers=1, heartbeat_interval=0.5, worker_timeout=5) as c:
        handle = c.client(timeout=30).submit(job)
        handle.progress()
        os.kill(c.master_pid, signal.SIGTERM)
        t = time.monotonic()
        with pytest.raises(zmqmr.ClusterError, match="master stopped"):
            handle.wait(timeout=60)
        assert time.monotonic() - t < 10  # told, not timed out after 30 s
        worker = psutil.Process(c.worker_pids[0])
        assert worker.is_running()  # the worker waits for the next master


def test_a_flood_of_refused_keys_logs_a_line_per_interval_counting_the_rest(
    tmp_path, caplog, monkeypatch
):
    from zmqmr import security

    directory = str(tmp_path / "keys")
    security.write_keys(directory)
    ctx = zmq.Context()
    gate = security.Gatekeeper(ctx, security.load_keys(directory, security.MEMBER))
    clock = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    try:
        with caplog.at_level("WARNING", logger="zmqmr.security"):
            for _ in range(5000):  # strangers' keys, as fast as they come
                assert not gate.callback("global", zmq.curve_keypair()[0])
            clock[0] += security.REFUSED_LOG_EVERY
            assert not gate.callback("global", zmq.curve_keypair()[0])
        lines = [r.getMessage() for r in caplog.records if "refused a peer" in r.message]
        assert len(lines) == 2 and gate.refused == 5001
        assert "more since" not in lines[0]
        assert "(and 4999 more since the last such line)" in lines[1]
        member = security.load_keys(directory, security.MEMBER).member_public
        assert gate.callback("global", member)  # a member still gets in
    finally:
        gate.stop()
        ctx.term()
