"""Secure by default: a cluster started with no keys speaks CURVE with its user's own keys.

On a shared machine every account can reach 127.0.0.1, so the default
LocalCluster and the default ``zmqmr master|worker|run|status`` use the key
pairs of the user's key directory (made with mode 0700 on first use). The
tests point HOME and ZMQMR_KEYS at directories of their own (see conftest),
never at the machine's real ~/.zmqmr.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import zmq
from conftest import REPO, count_words, free_port, stop_processes, wc_mapper, wc_reducer

import zmqmr
from zmqmr import protocol

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
WORDCOUNT = os.path.join(REPO, "examples", "wordcount.py")
FAST = dict(heartbeat_interval=0.2, worker_timeout=2.0)


def raw_answer(address: str, frames: list[bytes], wait: float = 2.0) -> bool:
    """Whether a plain ZMTP peer (no CURVE) sending ``frames`` gets any answer."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(address)
        sock.send_multipart(frames)
        answered = bool(sock.poll(int(wait * 1000)))
        sock.close()
        return answered
    finally:
        ctx.term()


STATUS = protocol.encode(protocol.StatusRequest())


def test_a_default_local_cluster_speaks_curve_and_its_owner_runs_jobs(books):
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        assert c.keys == os.environ["ZMQMR_KEYS"] and not c.insecure
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1], combiner=wc_reducer)
        with zmqmr.Client(c.address) as owner:  # no keys given: the same defaults
            assert dict(owner.run(job).items()) == count_words(books[:1])
        assert not raw_answer(c.address, STATUS)
        with (
            zmqmr.Client(c.address, timeout=1.5, insecure=True) as plain,
            pytest.raises(zmqmr.MasterUnavailable, match="did not let this client in"),
        ):
            plain.status()
    # The same probe is answered when CURVE is off: it is a well-formed request.
    with zmqmr.LocalCluster(workers=0, insecure=True, **FAST) as c:
        assert c.keys is None and c.insecure
        assert raw_answer(c.address, STATUS)
        assert "INSECURE" in c.log("master")


def test_the_default_key_directory_is_made_in_home_with_mode_0700(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "ZMQMR_KEYS"}
    env["HOME"] = str(tmp_path)
    book = os.path.join(REPO, "examples", "data", "gutenberg", "pg-metamorphosis.txt")
    out = subprocess.run(
        ZMQMR + ["run", WORDCOUNT, book, "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == len(count_words([book]))
    keys = tmp_path / ".zmqmr" / "keys"
    assert stat.S_IMODE(os.stat(tmp_path / ".zmqmr").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    assert sorted(os.listdir(keys)) == [
        "master.key",
        "master.key_secret",
        "member.key",
        "member.key_secret",
    ]


@pytest.fixture
def default_cli_cluster(tmp_path):
    """``zmqmr master`` and ``zmqmr worker`` as a user types them: no key flags at all."""
    wport, cport = free_port(), free_port()
    logs = [open(tmp_path / f"{n}.log", "wb") for n in ("master", "worker")]
    procs = [
        subprocess.Popen(
            ZMQMR
            + ["master", "--bind", f"tcp://127.0.0.1:{wport}"]
            + ["--client-bind", f"tcp://127.0.0.1:{cport}", "--heartbeat-interval", "0.3"],
            env=ENV,
            stdout=logs[0],
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            ZMQMR + ["worker", "--master", f"tcp://127.0.0.1:{wport}"],
            env=ENV,
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        ),
    ]
    address = f"tcp://127.0.0.1:{cport}"
    try:
        with zmqmr.Client(address, timeout=2) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if len(client.status()["workers"]) == 1:
                        break
                except zmqmr.MasterUnavailable:
                    pass
                assert time.monotonic() < deadline, "the worker did not register"
                time.sleep(0.1)
        yield address
    finally:
        stop_processes(procs)
        for log in logs:
            log.close()


def test_the_command_line_uses_the_default_keys_everywhere(default_cli_cluster, books):
    address = default_cli_cluster
    run = subprocess.run(
        ZMQMR + ["run", WORDCOUNT, books[0], "--master", address, "-q"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert {w: int(n) for w, n in (ln.split("\t") for ln in run.stdout.splitlines())} == (
        count_words(books[:1])
    )
    status = subprocess.run(
        ZMQMR + ["status", "--master", address, "--json"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status.returncode == 0 and len(json.loads(status.stdout)["workers"]) == 1
    plain = subprocess.run(
        ZMQMR + ["status", "--master", address, "--insecure", "--timeout", "1"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode == 1 and "did not let this client in" in plain.stderr
    assert not raw_answer(address, STATUS)


@pytest.mark.parametrize("command", ["master", "worker", "dashboard"])
def test_default_keys_do_not_serve_beyond_loopback(command):
    port = free_port()
    args = {
        "master": ["master", "--bind", f"tcp://0.0.0.0:{port}"],
        "worker": ["worker", "--master", f"tcp://192.0.2.1:{port}"],  # TEST-NET: a remote master
        "dashboard": ["master", "--bind", f"tcp://127.0.0.1:{port}", "--client-bind",
                      f"tcp://127.0.0.1:{free_port()}", "--http", f"0.0.0.0:{free_port()}"],
    }[command]  # fmt: skip
    out = subprocess.run(ZMQMR + args, env=ENV, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "reachable from other machines" in out.stderr and "--keys DIR" in out.stderr
    if command == "dashboard":  # named as given, not as the socket address it becomes
        assert f"--http {args[-1]} is reachable" in out.stderr, out.stderr


# -- another account of the same machine ------------------------------------------------------

NOBODY = 65534

INTRUDER = textwrap.dedent(
    """
    import json, os, sys
    import zmq
    import zmqmr
    from zmqmr import protocol

    owner_keys, stolen_keys, client_address, worker_address = sys.argv[1:5]
    seen = {}
    try:
        os.listdir(owner_keys)
        seen["owner's keys"] = "read"
    except PermissionError:
        seen["owner's keys"] = "denied"

    # Builtins, which travel by reference: this interpreter does not count the
    # site-packages on its PYTHONPATH as installed, so functions of the script's own
    # would take those packages along by value.
    job = zmqmr.Job(zip, max, inputs=[((1,), (2,))])
    for how, kw in [
        ("own default keys", {}),
        ("the master's public key", {"keys": stolen_keys}),
        ("no CURVE", {"insecure": True}),
    ]:
        try:
            with zmqmr.Client(client_address, timeout=2, **kw) as client:
                client.run(job)
            seen[how] = "ran a job"
        except zmqmr.MasterUnavailable as exc:
            seen[how] = "refused: " + str(exc)

    ctx = zmq.Context()
    ready = protocol.Ready(8, "tcp://127.0.0.1:1", "intruder", os.getpid())
    for how, address, frames in [
        ("raw STATUS", client_address, protocol.encode(protocol.StatusRequest())),
        ("raw READY", worker_address, protocol.encode(ready)),
    ]:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(address)
        sock.send_multipart(frames)
        seen[how] = "answered" if sock.poll(2000) else "no answer"
        sock.close()
    ctx.term()
    print(json.dumps(seen))
    """
)


def _interpreter_for(uid: int, env: dict[str, str]) -> str:
    """A Python that ``uid`` may run and that imports zmqmr and its dependencies."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += [shutil.which(version, path="/usr/local/bin:/usr/bin:/bin") or ""]
    tried = []
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            probe = subprocess.run(
                [python, "-c", "import zmq, cloudpickle, psutil, zmqmr"],
                user=uid,
                group=uid,
                extra_groups=[],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except PermissionError as exc:
            tried.append(f"{python}: {exc}")
            continue
        if probe.returncode == 0:
            return python
        tried.append(f"{python}: {probe.stderr.strip().splitlines()[-1:]}")
    pytest.fail(f"no Python that uid {uid} can run imports zmqmr: {tried}")


def _stage_packages(dest: str) -> None:
    """Copy zmqmr and what it imports where any account can read them.

    The repository and the virtual environment may sit in a directory other
    accounts cannot enter (root's home); the copies are the same code.
    """
    import cloudpickle
    import psutil

    for module in (zmqmr, zmq, cloudpickle, psutil):
        package = os.path.dirname(module.__file__)
        shutil.copytree(package, os.path.join(dest, os.path.basename(package)))
        for libs in ("pyzmq.libs", "psutil.libs"):  # the wheels' bundled shared libraries
            path = os.path.join(os.path.dirname(package), libs)
            if os.path.isdir(path) and not os.path.exists(os.path.join(dest, libs)):
                shutil.copytree(path, os.path.join(dest, libs))


@pytest.fixture
def homes(monkeypatch):
    """Homes for the owner (this process) and for ``nobody``, and nobody's packages.

    Under /tmp and mode 0755, so that only the key directory's own mode keeps
    the other account out (pytest's tmp_path sits in a directory of mode 0700).
    """
    made = [tempfile.mkdtemp(prefix=f"zmqmr-{n}-", dir="/tmp") for n in ("owner", "nobody", "lib")]
    owner, other, lib = made
    for path in made:
        os.chmod(path, 0o755)
    os.chown(other, NOBODY, NOBODY)
    _stage_packages(lib)
    monkeypatch.setenv("HOME", owner)
    monkeypatch.delenv("ZMQMR_KEYS")
    try:
        yield owner, other, lib
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another account needs root")
def test_another_account_cannot_run_a_job_on_a_default_local_cluster(homes, books):
    owner_home, other_home, lib = homes
    env = {
        "HOME": other_home,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": lib,
        "PYTHONDONTWRITEBYTECODE": "1",
        "ZMQMR_TEST_SESSION": os.environ["ZMQMR_TEST_SESSION"],
    }
    python = _interpreter_for(NOBODY, env)
    with zmqmr.LocalCluster(workers=1, **FAST) as c:
        keys = os.path.join(owner_home, ".zmqmr", "keys")
        assert c.keys == keys and stat.S_IMODE(os.stat(keys).st_mode) == 0o700
        # Public keys are not secrets: say nobody learnt the master's, and has a pair of
        # its own beside it.
        stolen = os.path.join(other_home, "stolen")
        zmqmr.security.write_keys(stolen)
        os.remove(os.path.join(stolen, "master.key_secret"))
        shutil.copy(os.path.join(keys, "master.key"), stolen)
        for name in [stolen, *(os.path.join(stolen, f) for f in os.listdir(stolen))]:
            os.chown(name, NOBODY, NOBODY)
        out = subprocess.run(
            [python, "-c", INTRUDER, keys, stolen, c.address, c.worker_address],
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        seen = json.loads(out.stdout)
        assert seen["owner's keys"] == "denied"
        assert seen["own default keys"].startswith("refused: ")
        assert seen["the master's public key"].startswith("refused: ")
        assert "it refused this peer's key" in seen["the master's public key"]
        assert seen["no CURVE"].startswith("refused: ")
        assert seen["raw STATUS"] == seen["raw READY"] == "no answer"
        assert os.path.isdir(os.path.join(other_home, ".zmqmr", "keys"))  # its own, made
        assert "refused a peer whose CURVE key" in c.log("master")

        owner = c.client()
        status = owner.status()
        assert status["jobs"] == [] and len(status["workers"]) == 1  # nothing of nobody's
        job = zmqmr.Job(wc_mapper, wc_reducer, inputs=books[:1], combiner=wc_reducer)
        assert dict(owner.run(job).items()) == count_words(books[:1])


def test_a_keyless_worker_is_told_why_once_and_the_master_logs_the_refusal(tmp_path):
    with zmqmr.LocalCluster(workers=0, **FAST) as c:
        log_path = tmp_path / "worker.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*ZMQMR, "worker", "--master", c.worker_address, "--insecure"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
                cwd=str(tmp_path),
            )
            try:
                deadline = time.monotonic() + 30
                while "refused at the worker port" not in c.log("master"):
                    assert time.monotonic() < deadline, c.log("master")
                    time.sleep(0.1)
                time.sleep(1.5)  # several heartbeats, each one dropped
                assert c.client().status()["workers"] == []
            finally:
                stop_processes([proc])
        out = log_path.read_text()
        assert out.count("did not let this worker in") == 1, out
        assert "queue to the master is full" not in out, out
