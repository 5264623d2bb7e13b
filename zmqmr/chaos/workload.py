"""Jobs for chaos runs: a job file as ``zmqmr run`` reads it, and pacing.

A job file defines ``mapper`` and ``reducer`` at module level, and optionally
``combiner`` and ``partitioner`` (``zmqmr.cli.load_job_file``, the same
convention as ``zmqmr run``). The built-in workloads are two of the examples:
word count and an inverted index (examples/wordcount.py and
examples/inverted_index.py, shipped in ``zmqmr/chaos/jobs``), over the sample
books shipped in ``zmqmr/chaos/books`` (examples/data/gutenberg in a
checkout). Both ship inside the package, so an installed zmqmr needs no
checkout.

Pacing: a word count over a few megabytes finishes in about a second, before
most faults land. ``paced(job, seconds)`` returns the same job with each
mapper and reducer call delayed by ``seconds`` (sleeping, so it costs no
CPU); the answer is unchanged, and the oracle runs the job unpaced.
"""

from __future__ import annotations

import copy
import glob
import os
import time
from collections.abc import Mapping
from typing import Any

import zmqmr
from zmqmr.cli import job_from_file, load_job_file

HERE = os.path.dirname(os.path.abspath(__file__))
#: The sample corpus (package data; in a checkout, a link to examples/data/gutenberg).
BOOKS_DIR = os.path.join(HERE, "books")
JOBS_DIR = os.path.join(HERE, "jobs")
#: Built-in workloads by short name.
WORKLOADS = {
    "wordcount": os.path.join(JOBS_DIR, "wordcount.py"),
    "inverted_index": os.path.join(JOBS_DIR, "inverted_index.py"),
}


def books() -> list[str]:
    return sorted(glob.glob(os.path.join(BOOKS_DIR, "*.txt")))


def resolve_job_file(name_or_path: str) -> str:
    """A workload's short name (``wordcount``) or a path -> the job file's path."""
    return WORKLOADS.get(name_or_path, name_or_path)


def expand_inputs(patterns: list[str]) -> list[str]:
    """Globs expanded and sorted (a pattern that matches nothing is kept, for the error)."""
    out: list[str] = []
    for p in patterns:
        matches = sorted(glob.glob(os.path.expanduser(p)))
        out.extend(matches or [p])
    return out


#: What a chaos run uses where neither the command line nor the job file's JOB says:
#: several reduce tasks and small splits, so that faults find tasks to hit.
CHAOS_DEFAULTS: dict[str, Any] = {"num_reducers": 4, "split_size": 256 * 1024}


def load_job(
    job_file: str,
    inputs: list[str],
    reducers: int | None,
    split_size: int | None,
    output_dir: str | None,
    settings: Mapping[str, Any] | None = None,
) -> zmqmr.Job:
    """The job a job file defines, as ``zmqmr run`` builds it (``JOB = dict(...)``,
    then ``reducers``/``split_size``, then ``settings``), with ``CHAOS_DEFAULTS``
    below the file's ``JOB``."""
    path = resolve_job_file(job_file)
    try:
        declared = getattr(load_job_file(path), "JOB", None)
        given = set(declared) if isinstance(declared, Mapping) else set()
        given |= set(settings or {})
        if reducers is None and "num_reducers" not in given:
            reducers = CHAOS_DEFAULTS["num_reducers"]
        if split_size is None and "split_size" not in given:
            split_size = CHAOS_DEFAULTS["split_size"]
        job = job_from_file(path, inputs, reducers, output_dir, split_size, settings)
    except SystemExit as exc:  # zmqmr's CLI helper exits with a message on a bad job file
        raise zmqmr.JobSubmitError(str(exc.code).removeprefix("zmqmr: ")) from None
    return job


class Paced:
    """A user function, delayed by ``seconds`` per call; the same answer, later."""

    def __init__(self, fn: Any, seconds: float) -> None:
        self.fn = fn
        self.seconds = seconds
        self.__name__ = getattr(fn, "__name__", "paced")

    def __call__(self, key: Any, value: Any) -> Any:
        time.sleep(self.seconds)
        return self.fn(key, value)


def paced(job: zmqmr.Job, seconds: float) -> zmqmr.Job:
    """A copy of ``job`` whose mapper and reducer sleep ``seconds`` per call."""
    if seconds <= 0:
        return job
    out = copy.copy(job)
    out.mapper = Paced(job.mapper, seconds)
    out.reducer = Paced(job.reducer, seconds)
    return out
