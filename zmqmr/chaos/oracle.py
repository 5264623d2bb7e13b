"""The oracle: ``zmqmr.run_serial(job)``, computed once per job, and asked twice.

Every run of a job is checked against one serial answer, cached per job
file, inputs and settings (a soak draws the same job many times). Before it
is trusted, the job is run serially a second time, in a fresh process whose
``PYTHONHASHSEED`` differs from this one's (a job object, which cannot be
rebuilt elsewhere, runs a second time here). If the two answers differ, the
job's answer depends on the run (random numbers, the clock, the order of a
set or dict of strings, the process it runs in), so no cluster run can be
judged against it: the run reports the job as not deterministic, with the
difference, instead of blaming the cluster.

``python -m zmqmr.chaos.oracle SPEC.json`` is the second process: it builds
the job from the spec (as ``zmqmr chaos run`` does), runs it serially and
pickles its records and counters to the spec's ``out`` path.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
from typing import Any

import zmqmr

from . import checker
from .cluster import ROOT
from .workload import load_job

#: Oracles kept (a soak draws many input sets; each answer holds every record).
ORACLES_KEPT = 8

_cache: dict[Any, tuple[zmqmr.JobResult, list[str]]] = {}


def spec_of(sc: Any) -> dict[str, Any]:
    """What builds a scenario's job anywhere: its job file, inputs and settings."""
    return {
        "job_file": os.path.abspath(sc.job_path()),
        "inputs": list(sc.expanded_inputs()),
        "reducers": sc.reducers,
        "split_size": sc.split_size,
        "settings": dict(sc.settings),
    }


def oracle(sc: Any, job: zmqmr.Job) -> tuple[zmqmr.JobResult, list[str]]:
    """The serial answer and what makes it untrustworthy (empty: deterministic).

    Cached per job file, inputs and settings; a scenario with a job object is
    not cached.
    """
    if sc.job is not None:
        expected = zmqmr.run_serial(job)
        return expected, compare(expected, zmqmr.run_serial(job), "in this process")
    spec = spec_of(sc)
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in _cache:
        while len(_cache) >= ORACLES_KEPT:
            del _cache[next(iter(_cache))]
        expected = zmqmr.run_serial(job)
        _cache[key] = (expected, second_opinion(spec, expected, job))
    return _cache[key]


def compare(first: zmqmr.JobResult, second: zmqmr.JobResult, where: str) -> list[str]:
    """Why two serial runs of one job disagree (empty: they agree)."""
    problems = checker.diff_records(list(first.items()), list(second.items()))
    problems += checker.diff_counters(first.counters, second.counters)
    if not problems:
        return []
    return [f"run_serial gave another answer the second time ({where}): " + "; ".join(problems)]


def second_opinion(spec: dict[str, Any], expected: zmqmr.JobResult, job: zmqmr.Job) -> list[str]:
    """Run the job serially in another process (another hash seed) and compare."""
    seed = str(random.randrange(1, 2**32 - 1))
    if os.environ.get("PYTHONHASHSEED") == seed:  # pragma: no cover - one chance in 4e9
        seed = str(int(seed) + 1)
    with tempfile.TemporaryDirectory(prefix="zmqmr-chaos-oracle-") as tmp:
        spec_path, out = os.path.join(tmp, "spec.json"), os.path.join(tmp, "answer.pickle")
        with open(spec_path, "w") as f:
            json.dump({**spec, "out": out}, f, default=str)
        path = os.environ.get("PYTHONPATH", "")
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": ROOT + (os.pathsep + path if path else ""),
        }
        proc = subprocess.run(
            [sys.executable, "-m", "zmqmr.chaos.oracle", spec_path],
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not os.path.exists(out):
            # The job cannot be rebuilt or its answer not pickled there: ask again here.
            return compare(expected, zmqmr.run_serial(job), "in this process")
        with open(out, "rb") as f:
            items, counters = pickle.load(f)
    second = zmqmr.JobResult(job.name, [lambda: items], [], counters, {})
    return compare(expected, second, f"in another process, PYTHONHASHSEED={seed}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        spec = json.load(f)
    job = load_job(
        spec["job_file"],
        spec["inputs"],
        spec["reducers"],
        spec["split_size"],
        None,
        spec["settings"],
    )
    result = zmqmr.run_serial(job)
    with open(spec["out"], "wb") as f:
        pickle.dump((list(result.items()), dict(result.counters)), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
