"""`zmqmr chaos`: run and soak print a report and the seed, and exit non-zero on failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import chaos_support
import pytest
from chaos_support import HERE, REPO, slow

pytestmark = pytest.mark.chaos


def chaos_cli(*args, timeout=300, cwd=REPO):
    return subprocess.run(
        [sys.executable, "-m", "zmqmr", "chaos", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_prints_a_passing_report_with_the_seed_and_a_replay_command(tmp_path):
    history = tmp_path / "history.jsonl"
    proc = chaos_cli(
        "run",
        "--job",
        "examples/wordcount.py",
        "--inputs",
        *chaos_support.FEW_BOOKS,
        "--workers",
        "3",
        "--nemesis",
        "kill,pause",
        "--seed",
        "7",
        "--window",
        "2.5",
        "--history",
        str(history),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "verdict: PASS  (seed 7)" in out
    assert "replay: zmqmr chaos run --job examples/wordcount.py" in out and "--seed 7" in out
    for section in ("schedule (", "history (", "summary: faults injected", "outcome: succeeded"):
        assert section in out
    assert re.search(
        r"^under faults the job took [\d.]+s, [\d.]+s without faults \([\d.]+x\)$",
        out,
        re.MULTILINE,
    ), out
    assert "[ok] no-fault run: " in out
    records = [json.loads(line) for line in history.read_text().splitlines()]
    assert {r["nemesis"] for r in records} >= {None}
    faults = [r for r in records if r.get("fault") is not None]
    assert faults and {r["nemesis"] for r in faults} <= {"kill", "pause"}
    assert all({"time", "nemesis", "target", "action"} <= set(r) for r in records)
    assert all(r["host"] == socket.gethostname() and r["pid"] for r in faults)
    # the master's reaction to a kill names the killed worker
    kills = [r for r in faults if r["action"] == "kill"]
    for r in kills:
        assert f"on {r['host']} (pid {r['pid']}): kill" in out


def test_run_exits_non_zero_on_a_wrong_answer_and_prints_the_seed():
    proc = chaos_cli(
        "run",
        "--job",
        os.path.join(HERE, "wrong_wordcount.py"),
        "--inputs",
        chaos_support.BOOKS[0],
        "--workers",
        "2",
        "--nemesis",
        "none",
        "--seed",
        "99",
        "--json",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "FAIL"
    assert report["scenario"]["seed"] == 99 and "--seed 99" in report["replay"]
    assert any(c["name"] == "records" and not c["ok"] for c in report["checks"])
    assert report["directory"] and os.path.isdir(report["directory"])  # kept for the post-mortem
    with open(os.path.join(report["directory"], "report.txt")) as f:
        assert "verdict: FAIL" in f.read()
    shutil.rmtree(report["directory"])


def test_nemeses_lists_every_nemesis_with_what_it_does():
    proc = chaos_cli("nemeses")
    assert proc.returncode == 0
    for kind in ("kill:", "pause:", "slow:", "corrupt:", "partition:", "kill-master:"):
        assert kind in proc.stdout


def test_unknown_nemesis_is_a_usage_error():
    proc = chaos_cli("run", "--nemesis", "kill,explode")
    assert proc.returncode == 2 and "unknown nemesis 'explode'" in proc.stderr


@slow
def test_soak_runs_jobs_and_prints_the_table_and_seed(tmp_path):
    proc = chaos_cli(
        "soak", "--jobs", "2", "--seed", "3", "--json", str(tmp_path / "r.jsonl"), timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "soak seed 3" in proc.stdout and "| jobs | 2 |" in proc.stdout
    assert "| jobs failed | 0 |" in proc.stdout
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_a_job_whose_serial_answer_changes_is_reported_as_not_deterministic():
    proc = chaos_cli(
        "run",
        "--job",
        os.path.join(HERE, "unordered_letters.py"),
        "--inputs",
        chaos_support.BOOKS[0],
        "--nemesis",
        "kill",
        "--seed",
        "5",
        "--json",
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "NONDETERMINISTIC" and report["outcome"] == "nondeterministic"
    assert report["history"] == [] and report["baseline"] is None  # no cluster was judged
    [check] = report["checks"]
    assert check["name"] == "deterministic" and not check["ok"]
    assert "PYTHONHASHSEED=" in check["detail"] and "value(s) differ" in check["detail"]


def test_the_job_files_settings_and_set_are_those_of_zmqmr_run(tmp_path):
    job = tmp_path / "myjob.py"
    job.write_text(
        "JOB = dict(num_reducers=3, split_size=64 * 1024)\n"
        "def mapper(key, line):\n"
        "    for word in line.split():\n"
        "        yield word.lower(), 1\n"
        "def reducer(word, counts):\n"
        "    return sum(counts)\n"
    )
    proc = chaos_cli(
        "run",
        "--job",
        str(job),
        "--inputs",
        chaos_support.BOOKS[0],
        "--workers",
        "2",
        "--nemesis",
        "none",
        "--seed",
        "4",
        "--set",
        "max_attempts=3",
        "--set",
        "name=mine",
        "--json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["verdict"] == "PASS"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["output files"]["detail"] == "3 part files, no temporaries"  # JOB's reducers
    assert checks["no-fault run"]["ok"] and report["baseline"]["seconds"] > 0
    assert report["scenario"]["settings"] == {"max_attempts": 3, "name": "mine"}
    assert "--set max_attempts=3 --set name=mine" in report["replay"]
    # 64k splits of a 139k book (the JOB's split_size): three map tasks
    assert report["summary"]["maps"] == 3, report["summary"]
