"""The master's dashboard: in a real headless Chromium, its JSON against zmqmr status --json,
its token, the bind rule, and HTTP clients that cannot stall the master."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from conftest import REPO

import zmqmr
from zmqmr.errors import SecurityError
from zmqmr.master import Master

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)


def slow_mapper(key, line):
    import time as t

    t.sleep(0.2)
    print("slow mapper saw", line)
    for word in line.split():
        yield word, 1


def words_of(key, line):
    for w in line.split():
        yield w, 1


def total(word, counts):
    return sum(counts)


RECORDS = [(i, f"alpha beta {i % 7}") for i in range(120)]


def chromium(tmp_path, url: str, *how: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,1100",
        "--virtual-time-budget=3000",
        *how,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def api(cluster, path: str) -> str:
    base, _, query = cluster.dashboard_url.partition("?")
    return f"{base}{path}?{query}"


@pytest.fixture(scope="module")
def cluster():
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.2) as c:
        yield c


@needs_chromium
def test_chromium_renders_the_running_jobs_name_workers_and_timeline(cluster, tmp_path):
    job = zmqmr.Job(slow_mapper, total, inputs=RECORDS, num_reducers=2, name="dashboard-demo")
    handle = cluster.client().submit(job)
    url = f"{cluster.dashboard_url}#job={handle.job_id}"
    dom = chromium(tmp_path, url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert "dashboard-demo" in html
    assert handle.job_id in html
    status = cluster.client().status()
    for w in status["workers"]:
        assert f'data-worker="{w["id"]}"' in html
    assert "Attempts over time, per worker" in html and 'class="attempt"' in html
    shot = tmp_path / "dashboard.png"
    out = chromium(tmp_path, url, f"--screenshot={shot}")
    assert out.returncode == 0, out.stderr[-2000:]
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a page with content, not a blank one
    result = handle.wait(progress=False)
    assert dict(result.items()) == dict(zmqmr.run_serial(job).items())


def test_a_job_whose_client_has_not_collected_it_shows_as_finished(cluster, tmp_path):
    job = zmqmr.Job(words_of, total, inputs=RECORDS[:10], name="uncollected-demo")
    handle = cluster.client().submit(job)
    client = cluster.client()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = {j["id"]: j for j in client.status()["jobs"]}[handle.job_id]
        if row["state"] == "succeeded":
            break
        time.sleep(0.1)
    assert row["state"] == "succeeded"
    dom = chromium(tmp_path, cluster.dashboard_url, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    jobs = dom.stdout.split('<table id="jobs">')[1].split("</table>")[0]
    history = dom.stdout.split('<table id="history">')[1].split("</table>")[0]
    assert handle.job_id not in jobs and handle.job_id in history
    assert dict(handle.wait(progress=False).items()) == dict(zmqmr.run_serial(job).items())


def test_the_json_is_what_zmqmr_status_json_prints(cluster):
    job = zmqmr.Job(slow_mapper, total, inputs=RECORDS[:40], name="json-check")
    handle = cluster.client().submit(job)
    # The page serves the master's latest snapshot, taken a moment after the submit.
    deadline = time.monotonic() + 30
    while True:
        code, body = get(api(cluster, "api/status"))
        assert code == 200
        page = json.loads(body)["status"]
        if handle.job_id in {j["id"] for j in page["jobs"]}:
            break
        assert time.monotonic() < deadline, f"the page never listed the job: {page['jobs']}"
        time.sleep(0.1)
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "zmqmr", "status", "--json", "--master", cluster.address]
    cli = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env).stdout)
    assert set(page) == set(cli)
    key = ("id", "host", "pid", "slots", "shuffle")
    # (listed by when each was last heard from, an order that changes between the two)
    assert sorted(tuple(w[k] for k in key) for w in page["workers"]) == sorted(
        tuple(w[k] for k in key) for w in cli["workers"]
    )
    assert {j["id"]: j["name"] for j in page["jobs"]} == {j["id"]: j["name"] for j in cli["jobs"]}
    assert handle.job_id in {j["id"] for j in page["jobs"]}
    assert set(page["jobs"][0]) == set(cli["jobs"][0])
    result = handle.wait(progress=False)
    # the job's detail and a task's logs, through the page's own routes
    code, body = get(api(cluster, f"api/job/{result.job_id}"))
    detail = json.loads(body)
    assert code == 200 and detail["status"]["name"] == "json-check"
    assert detail["status"]["state"] == "succeeded"
    assert {a["task"] for a in detail["attempts"] if a["kind"] == "map"} == set(
        range(int(detail["status"]["maps"]))
    )
    code, body = get(api(cluster, f"logs/{result.job_id}") + "&kind=map&task=0")
    assert code == 200 and b"=== map task 0, attempt" in body and b"slow mapper saw" in body
    for task in ("%C2%B2", "-1", "1e3", "0x1", "1234567890"):  # "²" is a digit int() refuses
        code, _ = get(api(cluster, f"logs/{result.job_id}") + f"&kind=map&task={task}")
        assert code == 400, task


def test_without_the_token_nothing_is_served(cluster):
    base = cluster.dashboard_url.partition("?")[0]
    for path in ("", "api/status", "logs/abc"):
        code, _ = get(base + path)
        assert code == 403
        code, _ = get(base + path + "?token=wrong")
        assert code == 403
    assert get(cluster.dashboard_url)[0] == 200


def test_stuck_http_clients_do_not_stall_scheduling(cluster):
    host, port = cluster.dashboard_url.split("//")[1].split("/")[0].rsplit(":", 1)
    stuck = []
    try:
        for _ in range(60):  # more than the server serves at once; none sends a full request
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n")
            stuck.append(s)
        assert get(api(cluster, "api/status"))[0] == 503  # one more: told to come back
        job = zmqmr.Job(slow_mapper, total, inputs=RECORDS[:10], name="while-stuck")
        start = time.monotonic()
        result = cluster.client().run(job, progress=False)
        assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
        assert time.monotonic() - start < 60
    finally:
        for s in stuck:
            s.close()
    deadline = time.monotonic() + 30
    while True:  # served again once they are gone; told to come back (503) meanwhile
        try:
            code = get(api(cluster, "api/status"))[0]
        except ConnectionError:  # a connection the server closed before it read the 503
            code = 0
        if code == 200:
            break
        assert code in (0, 503) and time.monotonic() < deadline, code
        time.sleep(0.2)


def test_a_dashboard_beyond_loopback_needs_keys_or_insecure():
    with pytest.raises(SecurityError, match="dashboard"):
        Master("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", http="0.0.0.0:0")
    env = {**os.environ, "PYTHONPATH": REPO}
    cmd = [sys.executable, "-m", "zmqmr", "master", "--bind", "tcp://127.0.0.1:0"]
    cmd += ["--client-bind", "tcp://127.0.0.1:0", "--http", "0.0.0.0:0"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 1
    assert "0.0.0.0" in out.stderr and "--keys" in out.stderr
    bad = subprocess.run(cmd[:-1] + ["nonsense"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "HOST:PORT" in bad.stderr
