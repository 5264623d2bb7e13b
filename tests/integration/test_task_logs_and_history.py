"""Task logs (zmqmr logs, JobFailed's log tail) and the history of finished jobs,
on a real local cluster."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

import zmqmr

LOG = logging.getLogger("user.job")


def chatty_mapper(key, line):
    path, offset = key
    name = os.path.basename(path)
    print(f"mapping {name}@{offset}")
    print(f"stderr of {name}", file=sys.stderr)
    LOG.info("logged %s", name)
    for word in line.split():
        yield word, 1


def total(word, counts):
    return sum(counts)


def failing_mapper(key, line):
    print(f"about to look at {line!r}")
    if "poison" in line:
        raise ValueError(f"cannot digest {line!r}")
    yield line, 1


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.2, worker_timeout=5.0) as c:
        yield c


def zmqmr_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "zmqmr", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def four_files(tmp_path):
    paths = []
    for i in range(4):
        path = tmp_path / f"book{i}.txt"
        path.write_text("".join(f"w{i} common line{j}\n" for j in range(3)))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def chatty_run(cluster, tmp_path_factory):
    paths = four_files(tmp_path_factory.mktemp("books"))
    job = zmqmr.Job(chatty_mapper, total, inputs=paths, num_reducers=2, name="chatty")
    result = cluster.client().run(job, progress=False)
    assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
    return job, paths, result


def test_zmqmr_logs_shows_each_map_tasks_prints_stderr_and_log_records(cluster, chatty_run):
    _, paths, result = chatty_run
    out = zmqmr_cli("logs", result.job_id, "--master", cluster.address)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for task, path in enumerate(paths):
        name = os.path.basename(path)
        section = text.split(f"=== map task {task}, attempt")[1].split("\n===")[0]
        assert "(done) ===" in section
        for offset in (0, len(f"w{task} common line0\n"), 2 * len(f"w{task} common line0\n")):
            assert f"mapping {name}@{offset}" in section
        assert f"--- stderr ---\nstderr of {name}" in section
        assert f"logged {name}" in section
    # one task only: the others' prints are not there
    one = zmqmr_cli("logs", result.job_id[:6], "map:1", "--master", cluster.address)
    assert one.returncode == 0, one.stderr
    assert f"mapping {os.path.basename(paths[1])}@0" in one.stdout
    assert os.path.basename(paths[0]) not in one.stdout
    assert "=== map task 1," in one.stdout and "=== map task 0," not in one.stdout


def test_a_failed_job_carries_the_failing_attempts_log_tail(cluster, tmp_path):
    path = tmp_path / "in.txt"
    path.write_text("fine\npoison pill\n")
    job = zmqmr.Job(failing_mapper, total, inputs=[str(path)], max_attempts=2, name="poisoned")
    handle = cluster.client().submit(job)
    with pytest.raises(zmqmr.JobFailed) as info:
        handle.wait(progress=False)
    err = info.value
    assert err.remote_type == "ValueError"
    assert "about to look at 'poison pill'" in err.log_tail
    assert "about to look at 'fine'" in err.log_tail
    assert "cannot digest" in err.remote_traceback
    assert "about to look at 'poison pill'" in str(err)  # shown beside the traceback
    # the history keeps the failed job with its error, and the logs of both attempts
    history = {j["id"]: j for j in cluster.client().status()["history"]}
    assert history[handle.job_id]["state"] == "failed"
    assert history[handle.job_id]["error"]["type"] == "ValueError"
    out = zmqmr_cli("logs", handle.job_id, "--master", cluster.address)
    assert out.stdout.count("(failed) ===") == 2, out.stdout


def test_history_keeps_a_collected_job_with_counters_stats_and_a_stopped_clock(
    cluster, chatty_run
):
    _, paths, result = chatty_run
    client = cluster.client()
    first = {j["id"]: j for j in client.status()["history"]}
    assert result.job_id not in {j["id"] for j in client.status()["jobs"]}
    row = first[result.job_id]
    assert row["name"] == "chatty" and row["state"] == "succeeded"
    assert row["counters"] == result.counters
    assert row["counters"]["zmqmr.map_input_bytes"] == sum(os.path.getsize(p) for p in paths)
    assert row["stats"]["maps"] == 4 and row["stats"]["map_attempts"] >= 4
    assert row["maps_done"] == 4 and row["reduces_done"] == 2
    time.sleep(0.5)
    again = {j["id"]: j for j in client.status()["history"]}[result.job_id]
    assert again["elapsed"] == row["elapsed"]  # ELAPSED stops when a job ends
    assert again["ended_ago"] > row["ended_ago"]

    listing = zmqmr_cli("status", "--master", cluster.address)
    assert listing.returncode == 0, listing.stderr
    finished = listing.stdout.split("finished job(s)")[1]
    assert result.job_id in finished and "succeeded" in finished

    detail = zmqmr_cli("status", result.job_id[:8], "--master", cluster.address)
    assert detail.returncode == 0, detail.stderr
    text = detail.stdout
    assert f"job {result.job_id} (chatty): succeeded" in text
    assert "map tasks: 4 done" in text and "reduce tasks: 2 done" in text
    assert "zmqmr.map_input_records" in text
    info = client.job_info(result.job_id)
    assert info is not None
    done = [a for a in info["attempts"] if a["outcome"] == "done"]
    assert sorted((a["kind"], a["task"]) for a in done) == sorted(
        [("map", i) for i in range(4)] + [("reduce", r) for r in range(2)]
    )
    assert all(a["end"] >= a["start"] for a in done)


def test_history_is_bounded_by_its_setting(tmp_path):
    with zmqmr.LocalCluster(workers=1, heartbeat_interval=0.2, history_jobs=2) as c:
        client = c.client()
        ids = []
        for i in range(3):
            job = zmqmr.Job(failing_mapper, total, inputs=[(i, f"rec{i}")], name=f"j{i}")
            ids.append(client.run(job, progress=False).job_id)
        assert [j["id"] for j in client.status()["history"]] == ids[1:]


def test_zmqmr_run_locally_shows_a_failed_attempts_output(tmp_path):
    jobfile = tmp_path / "poison.py"
    jobfile.write_text(
        "def mapper(key, line):\n"
        "    print('looking at', repr(line))\n"
        "    if 'poison' in line:\n"
        "        raise ValueError('cannot digest ' + line)\n"
        "    yield line, 1\n\n"
        "def reducer(k, vs):\n"
        "    return sum(vs)\n\n"
        "JOB = dict(max_attempts=1)\n"
    )
    data = tmp_path / "in.txt"
    data.write_text("ok\npoison pill\n")
    out = zmqmr_cli("run", str(jobfile), str(data), "--workers", "1")
    assert out.returncode == 1
    assert "ValueError" in out.stderr and "cannot digest poison pill" in out.stderr
    assert "looking at 'poison pill'" in out.stderr


def test_history_survives_a_master_restart_with_a_state_dir(tmp_path):
    state = tmp_path / "state"
    with zmqmr.LocalCluster(workers=1, heartbeat_interval=0.2, state_dir=str(state)) as c:
        client = c.client()
        job = zmqmr.Job(chatty_mapper, total, inputs=four_files(tmp_path), name="before")
        result = client.run(job, progress=False)
        poison = tmp_path / "poison.txt"
        poison.write_text("poison\n")
        bad = zmqmr.Job(failing_mapper, total, inputs=[str(poison)], max_attempts=1, name="bad")
        with pytest.raises(zmqmr.JobFailed):
            client.run(bad, progress=False)
        before = {j["id"]: j for j in client.status()["history"]}
        assert len(before) == 2
        assert c.master_proc is not None
        c.master_proc.kill()
        c.master_proc.wait(30)
        c.restart_master()
        c.wait_for_workers(1, 60)
        after = {j["id"]: j for j in c.client().status()["history"]}
        assert list(after) == list(before)
        for job_id, row in before.items():
            again = after[job_id]
            for key in ("name", "state", "counters", "stats", "maps", "maps_done", "elapsed"):
                assert again[key] == row[key], key
        assert after[result.job_id]["counters"] == result.counters
        failed = [j for j in after.values() if j["name"] == "bad"][0]
        assert failed["error"]["type"] == "ValueError"
        detail = c.client().job_info(failed["id"])
        assert detail is not None and detail["tasks"]["map_done"] == 0
        assert "cannot digest" in detail["failures"][0]["message"]


def test_an_ended_job_its_client_has_not_collected_is_listed_as_finished(cluster, tmp_path):
    """A client that went away (a Ctrl-C'd zmqmr run) leaves its outcome waiting for
    result_ttl: zmqmr status lists that job among the finished, not the running."""
    paths = four_files(tmp_path)
    handle = cluster.client().submit(zmqmr.Job(chatty_mapper, total, paths, name="orphan"))
    client = cluster.client()
    deadline = time.monotonic() + 60
    while True:
        row = {j["id"]: j for j in client.status()["jobs"]}[handle.job_id]
        if row["state"] == "succeeded" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert row["state"] == "succeeded" and row["ended_ago"] is not None
    listing = zmqmr_cli("status", "--master", cluster.address)
    assert listing.returncode == 0, listing.stderr
    running, finished = listing.stdout.split("finished job(s)")
    assert handle.job_id not in running and "0 job(s)" in running
    assert "(1 not yet collected by its client)" in finished
    assert handle.job_id in finished and "succeeded" in finished
    # and its outcome is still there for the client
    result = handle.wait(progress=False)
    counted: dict[str, int] = {}
    for p in paths:
        with open(p) as f:
            for word in f.read().split():
                counted[word] = counted.get(word, 0) + 1
    assert dict(result.items()) == counted
