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

With ``skip_bad_records`` a record is skipped as the cluster skips it: once
the mapper failed on it ``BAD_RECORD_FAILURES`` times (a split mapper: while
it was the record being read), the pairs and counters of the failed calls
dropped. Past ``MAX_BAD_RECORDS`` bad records in one split the mapper's error
is raised, as the cluster then fails the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from . import partitioning, userfn
from .errors import JobFailed
from .inputs import read_split
from .job import Job, JobResult, make_splits
from .mapside import split_bytes
from .parts import Split
from .tables import BAD_RECORD_FAILURES, MAX_BAD_RECORDS

Pair = tuple[Any, Any]


def run_serial(job: Job) -> JobResult:
    job.validate()
    start = time.monotonic()
    descs, blobs = make_splits(job)
    counters: dict[str, int] = {}
    previous = userfn.counting(counters, per_task=False)
    try:
        groups: dict[Any, list[Any]] = {}
        n_in = n_out = n_bytes = 0
        for desc_index, desc in enumerate(descs):
            blob = blobs[desc["blob"]] if desc["kind"] == "records" else None
            records = read_split(desc, blob)
            n_bytes += split_bytes(Split(**desc), blob)
            if job.skip_bad_records:
                pairs, n, skipped = _skipping(
                    job, f"map task {desc_index}", list(records), counters
                )
                for k, v in pairs:
                    groups.setdefault(k, []).append(v)
                n_in += n
                n_out += len(pairs)
                if skipped:
                    counters["zmqmr.skipped_records"] = (
                        counters.get("zmqmr.skipped_records", 0) + skipped
                    )
                continue
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
        counters["zmqmr.map_input_bytes"] = n_bytes
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
        "skipped_records": counters.get("zmqmr.skipped_records", 0),
    }
    return JobResult("serial", [_constant(r) for r in results], [], counters, stats)


class _Counted:
    """An iterator over a split's records that counts those it gave."""

    def __init__(self, records: Iterator[Pair]) -> None:
        self._records = records
        self.n = 0

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> Pair:
        record = next(self._records)
        self.n += 1
        return record


def _skipping(
    job: Job, task: str, records: list[Pair], counters: dict[str, int]
) -> tuple[list[Pair], int, int]:
    """One split's pairs under skip_bad_records, its records mapped and skipped."""
    failures: dict[int, int] = {}

    def failed(at: int, exc: Exception) -> None:
        failures[at] = failures.get(at, 0) + 1
        if len(failures) > MAX_BAD_RECORDS:
            raise JobFailed(
                f"{task} has more than the {MAX_BAD_RECORDS} bad records a task may skip; "
                f"last error: {type(exc).__name__}: {exc}",
                remote_type=type(exc).__name__,
                remote_message=str(exc),
                task=task,
            ) from exc

    if job.split_mapper is None:
        assert job.mapper is not None
        pairs: list[Pair] = []
        for i, (key, value) in enumerate(records):
            while failures.get(i, 0) < BAD_RECORD_FAILURES:
                try:
                    pairs.extend(_counted_into(counters, _mapped, job.mapper, key, value))
                    break
                except Exception as exc:
                    failed(i, exc)
        skipped = sum(n >= BAD_RECORD_FAILURES for n in failures.values())
        return pairs, len(records) - skipped, skipped
    while True:
        given = _Skipping(records, {i for i, n in failures.items() if n >= BAD_RECORD_FAILURES})
        try:
            pairs = _counted_into(counters, _split_mapped, job.split_mapper, given)
        except Exception as exc:
            if given.last < 0:  # before the first record: nothing to pin it on
                raise
            failed(given.last, exc)
            continue
        return pairs, given.n, sum(i <= given.last for i in given.skip)


class _Skipping:
    """A split's records but those in ``skip``; ``last`` is the index of the one read last."""

    def __init__(self, records: list[Pair], skip: set[int]) -> None:
        self._records = records
        self.skip = skip
        self.last = -1
        self.n = 0

    def __iter__(self) -> _Skipping:
        return self

    def __next__(self) -> Pair:
        while self.last + 1 < len(self._records):
            self.last += 1
            if self.last not in self.skip:
                self.n += 1
                return self._records[self.last]
        raise StopIteration


def _mapped(mapper: Callable[[Any, Any], Any], key: Any, value: Any) -> list[Pair]:
    return list(userfn.output_pairs(mapper(key, value)))


def _split_mapped(
    split_mapper: Callable[[Iterator[Pair]], Any], records: Iterator[Pair]
) -> list[Pair]:
    return list(userfn.output_pairs(split_mapper(records), "split_mapper"))


def _counted_into(
    counters: dict[str, int], fn: Callable[..., list[Pair]], *args: Any
) -> list[Pair]:
    """``fn(*args)``, its counters added to ``counters`` only if it returns."""
    own: dict[str, int] = {}
    previous = userfn.counting(own, per_task=False)
    try:
        pairs = fn(*args)
    finally:
        userfn.counting(previous)
    for name, n in own.items():
        counters[name] = counters.get(name, 0) + n
    return pairs


def _constant(items: list[tuple[Any, Any]]) -> Callable[[], list[tuple[Any, Any]]]:
    return lambda: items
