"""run_serial: the same job in this process, one record at a time.

This is the oracle every test compares the cluster with, and the paper's
"local execution" for debugging: a breakpoint in a mapper works here. It reads
exactly the records the cluster reads (the same split code), groups every
value of a key in one dict, partitions with the same partitioner (keys of
user types hashed under the executors' fixed seed, by a helper process: see
``partitioning``) and returns a JobResult ordered as the cluster's: partition
0 first, keys sorted within each. ``output_dir`` is ignored: the oracle never
touches the cluster's output.

With a combiner, the oracle runs it as one run of the cluster may: once per
key that has more than one value, over all of them, and hands the reducer
its result. So a combiner that fails, or returns a generator, fails here
with the cluster's message. (Its result replaces the values rather than
being checked and dropped: a combiner may build its result in one of its
input values, in place.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from . import partitioning, userfn
from .inputs import read_split
from .job import Job, JobResult, make_splits


def run_serial(job: Job) -> JobResult:
    job.validate()
    start = time.monotonic()
    descs, blobs = make_splits(job)
    counters: dict[str, int] = {}
    previous = userfn.counting(counters, per_task=False)
    try:
        groups: dict[Any, list[Any]] = {}
        n_in = n_out = 0
        for desc in descs:
            blob = blobs[desc["blob"]] if desc["kind"] == "records" else None
            records = read_split(desc, blob)
            if job.split_mapper is not None:
                read = _Counted(iter(records))
                for k, v in userfn.output_pairs(job.split_mapper(read), "split_mapper"):
                    groups.setdefault(k, []).append(v)
                    n_out += 1
                n_in += read.n
                continue
            for key, value in records:
                n_in += 1
                assert job.mapper is not None
                for k, v in userfn.output_pairs(job.mapper(key, value)):
                    groups.setdefault(k, []).append(v)
                    n_out += 1
        counters["zmqmr.map_input_records"] = n_in
        counters["zmqmr.map_output_records"] = n_out
        if job.combiner is not None:
            for k, vs in groups.items():
                if len(vs) > 1:
                    groups[k] = [userfn.combined(job.combiner, k, iter(vs))]
        # Keys of user types hash as in the executors: under their fixed seed.
        with partitioning.seeded_hashing():
            part = userfn.checked_partitioner(job.partitioner, job.num_reducers)
            parts = part.split(groups.items())
        results = []
        for p in parts:
            userfn.sort_by_key(p)
            assert job.reducer is not None  # validated
            results.append(list(userfn.reduce_groups(job.reducer, p, counters)))
        counters["zmqmr.reduce_output_records"] = sum(len(r) for r in results)
    finally:
        userfn.counting(previous)
    stats = {
        "maps": len(descs),
        "reduces": job.num_reducers,
        "total_seconds": time.monotonic() - start,
        "spilled_bytes": 0,
    }
    return JobResult("serial", [_constant(r) for r in results], [], counters, stats)


class _Counted:
    """An iterator over a split's records that counts those it gave."""

    def __init__(self, records: Iterator[tuple[Any, Any]]) -> None:
        self._records = records
        self.n = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> tuple[Any, Any]:
        record = next(self._records)
        self.n += 1
        return record


def _constant(items: list[tuple[Any, Any]]) -> Callable[[], list[tuple[Any, Any]]]:
    return lambda: items
