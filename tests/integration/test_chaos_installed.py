"""The chaos harness from a plain install: a wheel in a fresh virtual environment.

The wheel is built from this checkout and installed into a venv in a
temporary directory; every command runs there, outside the repository, with
no PYTHONPATH: ``zmqmr chaos run`` on a job file of the test's own (its JOB
settings honoured), on the sample books shipped inside the package by
default, and on a deliberately wrong job, which must be caught.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.timeout(900)

WRONG_JOB = os.path.join(REPO, "tests", "chaos", "wrong_wordcount.py")
MY_JOB = """\
import re

WORD = re.compile(r"[a-z]+")
JOB = dict(num_reducers=3, split_size=128 * 1024)


def mapper(key, line):
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts)


combiner = reducer
"""


def _run(cmd, cwd, env, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, a working directory outside the repository, the environment to run in)."""
    top = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TMPDIR"] = str(top)
    wheels = top / "wheels"
    p = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), REPO],
        cwd=top,
        env=env,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    [wheel] = glob.glob(str(wheels / "zmqmr-*.whl"))
    venv = top / "venv"
    p = _run([sys.executable, "-m", "venv", str(venv)], cwd=top, env=env)
    assert p.returncode == 0, p.stderr
    p = _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", wheel], top, env)
    assert p.returncode == 0, p.stdout + p.stderr
    work = top / "work"
    work.mkdir()
    (work / "myjob.py").write_text(MY_JOB)
    shutil.copy(WRONG_JOB, work / "wrong_wordcount.py")
    yield venv, work, env
    shutil.rmtree(top, ignore_errors=True)


def test_the_installed_package_is_used_and_ships_its_books(installed):
    venv, work, env = installed
    p = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import zmqmr.chaos.workload as w; "
            "print(w.__file__); print(len(w.books())); print(w.WORKLOADS['wordcount'])",
        ],
        work,
        env,
    )
    assert p.returncode == 0, p.stderr
    where, count, wordcount = p.stdout.split()
    assert where.startswith(str(venv)) and not where.startswith(REPO)
    assert int(count) == 8 and os.path.isfile(wordcount) and wordcount.startswith(str(venv))
    p = _run([str(venv / "bin" / "zmqmr"), "chaos", "nemeses"], work, env)
    assert p.returncode == 0 and "corrupt:" in p.stdout, p.stderr


def test_zmqmr_chaos_run_on_a_job_file_of_ones_own_passes(installed):
    venv, work, env = installed
    p = _run(
        [
            str(venv / "bin" / "zmqmr"),
            "chaos",
            "run",
            "--job",
            "myjob.py",
            "--workers",
            "3",
            "--nemesis",
            "kill,pause",
            "--seed",
            "11",
            "--window",
            "2.0",
            "--pace",
            "0.0001",
            "--json",
        ],
        work,
        env,
    )
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr
    report = json.loads(p.stdout)
    assert report["verdict"] == "PASS", json.dumps(report["checks"], indent=1)
    # the default inputs: the eight books inside the installed package
    [pattern] = report["scenario"]["inputs"]
    assert pattern.startswith(str(venv)) and pattern.endswith("chaos/books/*.txt")
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["output files"]["detail"] == "3 part files, no temporaries"  # the JOB's
    assert checks["no-fault run"]["ok"] and report["baseline"]["seconds"] > 0
    assert report["summary"]["faults_total"] >= 1
    assert report["replay"].startswith("zmqmr chaos run --job myjob.py")


def test_python_m_zmqmr_chaos_catches_a_deliberately_wrong_job(installed):
    venv, work, env = installed
    books = glob.glob(
        str(
            venv
            / "lib"
            / "python*"
            / "site-packages"
            / "zmqmr"
            / "chaos"
            / "books"
            / "pg-metamorphosis.txt"
        )
    )
    p = _run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "zmqmr.chaos",
            "run",
            "--job",
            "wrong_wordcount.py",
            "--inputs",
            *books,
            "--workers",
            "2",
            "--nemesis",
            "kill",
            "--seed",
            "2",
            "--json",
        ],
        work,
        env,
    )
    assert p.returncode == 1, p.stdout[-4000:] + p.stderr
    report = json.loads(p.stdout)
    assert report["verdict"] == "FAIL" and report["outcome"] == "succeeded"
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert {"records", "counters", "no-fault run"} <= failed, report["checks"]
    assert report["directory"] and os.path.isdir(report["directory"])
    shutil.rmtree(report["directory"])
