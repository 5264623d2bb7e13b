"""`zmqmr chaos run --hosts`: faults over ssh on the workers of a namespaced lab.

The lab is the one tests/integration/test_scripts.py builds (network
namespaces with their own host names and sshd, a master started with
scripts/start-master.sh), here with three machines and a master with fast
timeouts; the workers are started with scripts/start-workers.sh, as a user
would. The harness reaches them over the scripts' ssh command (ZMQMR_SSH).
Needs root and sshd, like test_scripts.py; skips and says why otherwise.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import BOOKS, REPO, _ours, assert_no_leaks
from test_scripts import Lab, _wait_for, build_lab

pytestmark = pytest.mark.timeout(600)

LABS = 3
HERE = os.path.dirname(os.path.abspath(__file__))
CHAOS_TESTS = os.path.join(os.path.dirname(HERE), "chaos")
FEW_BOOKS = [
    b
    for b in BOOKS
    if os.path.basename(b).startswith(("pg-being", "pg-frank", "pg-grimm", "pg-meta"))
]
FAST_MASTER = (
    "--worker-timeout",
    "1.5",
    "--heartbeat-interval",
    "0.2",
    "--set",
    "speculation_min_seconds=0.5",
    "--http",
    "off",  # two labs at once: no dashboard on the default port
)
FAST_WORKER = (
    "--set",
    "fetch_timeout=0.5",
    "--set",
    "fetch_retries=2",
    "--set",
    "reconnect_initial=0.2",
    "--set",
    "reconnect_max=1.0",
)


#: The labs of this module (their masters' pid files are under TMP/master-run).
LAB_DIRS: list[str] = []


def _lab_masters() -> set[int]:
    pids = set()
    for tmp in LAB_DIRS:
        for path in glob.glob(os.path.join(tmp, "master-run", "master-*.pid")):
            with contextlib.suppress(OSError, ValueError), open(path) as f:
                pids.add(int(f.read()))
    return pids


@pytest.fixture(autouse=True)
def no_leaked_processes():
    """conftest's check, except for a lab's master that a kill-master run started
    again: start-master.sh's pid file names it, and the lab's teardown stops it."""
    before = set(_ours())
    yield
    assert_no_leaks(before, _lab_masters)


@contextlib.contextmanager
def lab_with_workers(tmp: str, machines: int, master_args: tuple[str, ...]):
    """A lab whose workers start-workers.sh started, with fast timeouts."""
    LAB_DIRS.append(tmp)
    with build_lab(tmp, machines, master_args) as lab:
        hosts = lab.hosts_file("hosts", "".join(f"{lab.address(i)}\n" for i in range(machines)))
        p = lab.start_workers(hosts, "--", *FAST_WORKER)
        assert p.returncode == 0, p.stdout + p.stderr
        _wait_for(lambda: len(lab.status()["workers"]) == machines, 30, "the lab's workers")
        lab.hosts = hosts  # type: ignore[attr-defined]
        yield lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with lab_with_workers(str(tmp_path_factory.mktemp("chaoslab")), LABS, FAST_MASTER) as lab:
        yield lab


def chaos_args(lab: Lab, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "zmqmr",
        "chaos",
        "run",
        "--hosts",
        lab.hosts,  # type: ignore[attr-defined]
        "--master",
        lab.client,
        "--run-dir",
        os.path.join(lab.tmp, "run"),
        "--master-run-dir",
        os.path.join(lab.tmp, "master-run"),
        *lab.insecure,
        *args,
    ]


def run_chaos(lab: Lab, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZMQMR_SSH": lab.ssh}
    return subprocess.run(
        chaos_args(lab, *args),
        capture_output=True,
        text=True,
        env=env,
        cwd=lab.tmp,
        timeout=timeout,
    )


def stopped_in(lab: Lab) -> list[tuple[str, int]]:
    """Processes of the lab machines in the stopped state."""
    found = []
    for ns in lab.namespaces:
        for pid in lab.processes_in(ns):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state in ("T", "t"):
                found.append((ns, pid))
    return found


def running_workers(lab: Lab) -> dict[str, int]:
    """Host name -> pid of the live worker its pid file names (the scripts' files)."""
    found = {}
    for name in lab.hostnames:
        try:
            with open(os.path.join(lab.tmp, "run", f"worker-{name}.pid")) as f:
                pid = int(f.read())
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and "zmqmr worker" in " ".join(proc.cmdline()):
                found[name] = pid
        except (OSError, ValueError, psutil.Error):
            continue
    return found


def assert_restored(lab: Lab, why: str = "") -> None:
    assert stopped_in(lab) == [], why
    running = running_workers(lab)
    assert sorted(running) == sorted(lab.hostnames), why
    # the master lists exactly those processes (stop-workers.sh would stop them)
    listed = lambda: {w["host"]: w["pid"] for w in lab.status()["workers"]} == running  # noqa: E731
    _wait_for(listed, 20, f"the master to list {running}: {lab.status()} {why}")


def test_a_job_under_kill_pause_and_corrupt_on_the_lab_is_exact_and_the_lab_is_restored(lab):
    proc = run_chaos(
        lab,
        "--job",
        "wordcount",
        "--inputs",
        *FEW_BOOKS,
        "--nemesis",
        "kill,pause,corrupt",
        "--seed",
        "7",
        "--faults",
        "4",
        "--window",
        "2.5",
        "--json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    context = json.dumps(report, indent=1)[:6000]
    assert report["verdict"] == "PASS", context
    checks = {c["name"]: c["ok"] for c in report["checks"]}
    assert checks["records"] and checks["lab restored"] and checks["no-fault run"], context
    assert report["hosts"] == [lab.address(i) for i in range(LABS)]
    faults = [r for r in report["history"] if r.get("fault") is not None]
    assert {r["nemesis"] for r in faults} == {"kill", "pause", "corrupt"}, context
    # every fault says which machine it hit
    for r in faults:
        assert r["host"] == report["hosts"][int(r["target"][1:])], r
    # the master noticed: a killed worker's pid is named in the master's reaction
    kills = [r for r in faults if r["action"] == "kill"]
    said = report["reactions"]
    for r in kills:
        lines = [x["line"] for x in said[str(r["fault"])]]
        assert any(f":{r['pid']}" in line for line in lines), (r, said)
    corrupted = [r for r in faults if r["action"] in ("flip", "truncate", "delete")]
    assert corrupted, context
    assert report["summary"]["reexecutions"] >= 1, context
    assert report["baseline"]["seconds"] > 0
    assert "--hosts" in report["replay"] and "--seed 7" in report["replay"]
    assert_restored(lab)


def test_a_straggler_made_over_ssh_slows_a_host_and_the_answer_is_exact(lab):
    proc = run_chaos(
        lab,
        "--job",
        "inverted_index",
        "--inputs",
        *FEW_BOOKS,
        "--nemesis",
        "slow",
        "--seed",
        "4",
        "--faults",
        "1",
        "--window",
        "1.0",
        "--no-baseline",
        "--json",
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "PASS", json.dumps(report["checks"], indent=1)
    slow = [r for r in report["history"] if r["nemesis"] == "slow"]
    assert [r["action"] for r in slow] == ["slow", "normal"], slow
    assert slow[1]["cycles"] >= 1  # it was stopped and continued, over the agent, at least once
    assert slow[0]["host"] in report["hosts"]
    assert_restored(lab)


def test_the_text_report_names_hosts_and_the_masters_reactions(lab):
    proc = run_chaos(
        lab,
        "--job",
        "wordcount",
        "--inputs",
        *FEW_BOOKS[:2],
        "--nemesis",
        "kill",
        "--seed",
        "3",
        "--faults",
        "1",
        "--window",
        "1.0",
        "--no-baseline",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "verdict: PASS  (seed 3)" in out
    assert f"on the lab of {lab.hosts}" in out  # type: ignore[attr-defined]
    kill = [line for line in out.splitlines() if ": kill  {" in line]
    assert kill and any(f" on {lab.address(i)} (pid " in kill[0] for i in range(LABS)), out
    assert "master at " in out and "is gone" in out, out
    assert "[ok] lab restored: all 3 workers running again, none stopped" in out
    assert_restored(lab)


def test_a_wrong_job_is_caught_on_the_lab(lab, tmp_path):
    proc = run_chaos(
        lab,
        "--job",
        os.path.join(CHAOS_TESTS, "wrong_wordcount.py"),
        "--inputs",
        FEW_BOOKS[0],
        "--nemesis",
        "none",
        "--seed",
        "9",
        "--no-baseline",
        "--keep",
        str(tmp_path),  # a failed run keeps its files: here, not in /tmp
        "--json",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "FAIL" and report["outcome"] == "succeeded"
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"records", "counters"}, report["checks"]
    assert_restored(lab)


def test_ctrl_c_during_a_long_pause_leaves_nothing_stopped_and_every_worker_back(lab, tmp_path):
    history = tmp_path / "history.jsonl"
    env = {**os.environ, "ZMQMR_SSH": lab.ssh}
    args = chaos_args(
        lab,
        "--job",
        "wordcount",
        "--inputs",
        *FEW_BOOKS,
        "--nemesis",
        "kill,pause",
        "--seed",
        "5",
        "--faults",
        "3",
        "--window",
        "1.0",
        "--pace",
        "0.002",
        "--no-baseline",
        "--history",
        str(history),
    )
    proc = subprocess.Popen(
        args, env=env, cwd=lab.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:

        def faults_done():
            if not history.exists():
                return False
            recs = [json.loads(x) for x in history.read_text().splitlines()]
            acts = {r["action"] for r in recs}
            return {"kill", "pause"} <= acts and stopped_in(lab)

        _wait_for(faults_done, 120, "a kill and a pause in force")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err
    assert_restored(lab, f"{history.read_text()}\n{out}\n{err}")
    assert "zmqmr chaos: restoring the lab: " in err
    # the interrupted job was cancelled on the master, not left running
    time.sleep(0.5)
    assert all(j["state"] not in ("queued", "running") for j in lab.status()["jobs"])


def test_a_lab_without_a_worker_on_a_host_is_refused_with_the_reason(lab, tmp_path):
    hosts = lab.hosts_file("hosts-extra", f"{lab.address(0)}\n{lab.nobody}\n")
    env = {**os.environ, "ZMQMR_SSH": lab.ssh}
    args = chaos_args(lab, "--nemesis", "kill", "--seed", "1", "--keep", str(tmp_path))
    args[args.index("--hosts") + 1] = hosts
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert lab.nobody in proc.stdout and "the chaos agent is gone" in proc.stdout, proc.stdout
    assert f"logs and history kept in {tmp_path}" in proc.stdout
    assert_restored(lab)


@pytest.fixture(scope="module")
def journaled_lab(tmp_path_factory):
    """Two machines, and a master started with --state-dir (its journal)."""
    tmp = str(tmp_path_factory.mktemp("journaledlab"))
    state = os.path.join(tmp, "master-state")
    with lab_with_workers(tmp, 2, (*FAST_MASTER, "--state-dir", state)) as lab:
        yield lab


def _seed_killing_at(moment: str) -> int:
    from zmqmr.chaos.schedule import KILL_MASTER, make_schedule

    for seed in range(1, 1000):
        (f,) = make_schedule(seed, [KILL_MASTER], 2, window=2.0, count=1, restart_master=True)
        if f.params["moment"] == moment:
            return seed
    raise AssertionError(moment)


@pytest.mark.parametrize("moment", ["time", "transition"])
def test_a_lab_master_with_a_state_dir_killed_comes_back_with_it_and_the_job_is_exact(
    journaled_lab, moment
):
    lab = journaled_lab
    seed = _seed_killing_at(moment)
    proc = run_chaos(
        lab,
        "--job",
        "wordcount",
        "--inputs",
        *FEW_BOOKS[:3],
        "--nemesis",
        "kill-master",
        "--seed",
        str(seed),
        "--faults",
        "1",
        "--window",
        "2.0",
        "--no-baseline",
        "--json",
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr
    report = json.loads(proc.stdout)
    context = json.dumps(report["history"], indent=1) + json.dumps(report["checks"], indent=1)
    assert report["verdict"] == "PASS" and report["outcome"] == "succeeded", context
    acts = [(r["target"], r["action"]) for r in report["history"] if r.get("fault") is not None]
    assert ("master", "kill") in acts and ("master", "restart") in acts, context
    # the restarted master is the one start-master.sh's pid file names, with its state dir
    with open(os.path.join(lab.tmp, "master-run", f"master-{os.uname().nodename}.pid")) as f:
        pid = int(f.read())
    assert "--state-dir" in psutil.Process(pid).cmdline()
    restart = [r for r in report["history"] if r["action"] == "restart"][0]
    assert restart["pid"] == pid
    assert_restored(lab)
