"""What a job is, how it is prepared for the wire, and what it returns.

``Job`` holds the user's functions and settings. ``prepare`` checks it and
turns it into a JSON-able spec, one code blob (the functions, cloudpickled)
and the blobs of in-memory record splits; it runs in the client, so a bad
input or an unpicklable function fails at submit. ``JobResult`` is what
``Client.run`` and ``run_serial`` return.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import inputs as _inputs
from . import pickling
from .commit import check_output_dir
from .config import (
    DEFAULT_RECORD_SPLIT_BYTES,
    DEFAULT_SLOTS,
    MAPS_PER_SLOT,
    MAX_MAP_TASKS,
    MAX_WHOLE_FILE_TASKS,
)
from .errors import JobSubmitError, ResultTooLarge
from .inputs import WholeFiles
from .partitioning import RangePartitioner


class Job:
    """A MapReduce job: functions, inputs and settings.

    Functions travel to the workers with cloudpickle, closures included;
    functions defined outside installed packages (a script, a notebook, a test
    module, a job file) travel by value, installed ones by reference.

    ``split_size`` (bytes) cuts text into splits of that size, groups whole
    files up to it, and cuts in-memory records into splits of that many pickled
    bytes (1 MiB at most). Unset, the splits are planned for the cluster: about
    MAPS_PER_SLOT map tasks per slot where the input allows, text splits of
    MIN_SPLIT_SIZE to MAX_SPLIT_SIZE, one whole file per task (see config).

    ``split_mapper`` replaces ``mapper`` for in-mapper combining (Hadoop's
    setup/cleanup, Spark's mapPartitions): it is called once per split with an
    iterator over the split's ``(key, value)`` records and returns or yields
    pairs. It may keep state across the split's records (a dict of partial
    counts, say) and emit it at the end.
    With ``output_dir``, a job that succeeds leaves ``part-00000`` .. and then
    ``_SUCCESS`` there (``zmqmr.commit``); a directory that already holds files
    fails at submit unless ``overwrite=True``, which replaces the previous
    part files only when the new job has succeeded.
    """

    def __init__(
        self,
        mapper: Callable[[Any, Any], Any] | None = None,
        reducer: Callable[[Any, Iterator[Any]], Any] | None = None,
        inputs: Any = None,
        num_reducers: int = 1,
        combiner: Callable[[Any, Iterator[Any]], Any] | None = None,
        partitioner: Callable[[Any, int], int] | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        split_size: int | None = None,
        max_attempts: int = 4,
        speculative: bool = True,
        skip_bad_records: bool = False,
        task_timeout: float | None = None,
        split_mapper: Callable[[Iterator[tuple[Any, Any]]], Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.mapper = mapper
        self.split_mapper = split_mapper
        self.reducer = reducer
        self.inputs = inputs
        self.num_reducers = num_reducers
        self.combiner = combiner
        self.partitioner = partitioner
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self.name = name or default_name(mapper or split_mapper, inputs)
        self.split_size = split_size
        self.max_attempts = max_attempts
        self.speculative = speculative
        self.skip_bad_records = skip_bad_records
        self.task_timeout = task_timeout
        self.overwrite = overwrite

    def __repr__(self) -> str:
        return f"Job(name={self.name!r}, num_reducers={self.num_reducers})"

    def validate(self) -> None:
        """Raise JobSubmitError naming the first bad setting."""
        if (self.mapper is None) == (self.split_mapper is None):
            raise JobSubmitError("give a job either a mapper or a split_mapper (exactly one)")
        for fname in ("mapper", "split_mapper"):
            fn = getattr(self, fname)
            if fn is not None and not callable(fn):
                raise JobSubmitError(f"{fname} must be callable")
        if not callable(self.reducer):
            raise JobSubmitError("reducer must be callable")
        if self.inputs is None:
            raise JobSubmitError("a job needs inputs")
        for fname in ("combiner", "partitioner"):
            fn = getattr(self, fname)
            if fn is not None and not callable(fn):
                raise JobSubmitError(f"{fname} must be callable or None")
        _check_int("num_reducers", self.num_reducers, 1)
        if isinstance(self.partitioner, RangePartitioner):
            cuts = len(self.partitioner.boundaries) + 1
            if cuts != self.num_reducers:
                raise JobSubmitError(
                    f"partitioner: a RangePartitioner with {cuts - 1} boundaries cuts keys "
                    f"into {cuts} partitions; the job has num_reducers={self.num_reducers}"
                )
        if self.split_size is not None:
            _check_int("split_size", self.split_size, 1)
        _check_int("max_attempts", self.max_attempts, 1)
        if self.task_timeout is not None and (
            isinstance(self.task_timeout, bool)
            or not isinstance(self.task_timeout, (int, float))
            or self.task_timeout <= 0
        ):
            raise JobSubmitError(
                f"task_timeout must be a positive number of seconds or None, "
                f"got {self.task_timeout!r}"
            )
        if not isinstance(self.overwrite, bool):
            raise JobSubmitError(f"overwrite must be True or False, got {self.overwrite!r}")
        if not isinstance(self.name, str):
            raise JobSubmitError(f"name must be a str, got {type(self.name).__name__}")


def default_name(mapper: Any, inputs: Any) -> str:
    """A job's name when none is given: the mapper's module and name, and the first input.

    ``wordcount.mapper books/*.txt``; in-memory records are named by their
    count. Printable and at most 200 characters, as the wire wants a name.
    """
    fn = ".".join(
        part
        for part in (getattr(mapper, "__module__", None), getattr(mapper, "__qualname__", None))
        if isinstance(part, str)
    )
    src = inputs.paths if isinstance(inputs, WholeFiles) else inputs
    if isinstance(src, (str, os.PathLike)):
        first = os.fspath(src)
    elif isinstance(src, Sequence) and src and isinstance(src[0], (str, os.PathLike)):
        first = os.fspath(src[0]) + (f" (+{len(src) - 1})" if len(src) > 1 else "")
    elif isinstance(src, Sequence):
        first = f"{len(src)} records"
    else:
        first = ""
    name = " ".join(p for p in (fn or "job", first) if p)
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name if len(name) <= 200 else name[:199] + "…"


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise JobSubmitError(f"{name} must be an int >= {low}, got {value!r}")


# -- splitting and pickling ----------------------------------------------------


@dataclass
class PreparedJob:
    spec: dict[str, Any]
    code: bytes
    records: list[bytes] = field(default_factory=list)


def make_splits(
    job: Job, slots: int | None = None, max_tasks: int | None = None
) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The job's splits and record blobs, planned for ``slots`` slots (None: DEFAULT_SLOTS).

    A plan of more than ``max_tasks`` map tasks is a JobSubmitError, raised
    before the splits are made.
    """
    slots = DEFAULT_SLOTS if slots is None else slots
    src = job.inputs
    if isinstance(src, WholeFiles):
        paths = _inputs.resolve_paths(src.paths)
        if job.split_size is None:
            descs = _inputs.whole_file_groups(paths, MAX_WHOLE_FILE_TASKS)
        else:
            descs = _inputs.whole_file_splits(paths, job.split_size)
        _inputs.check_task_count(len(descs), max_tasks, job.split_size, len(paths))
        return descs, []
    if isinstance(src, (str, os.PathLike)):
        src = [os.fspath(src)]
    if not isinstance(src, Sequence) or isinstance(src, (bytes, bytearray)):
        raise JobSubmitError(
            f"inputs must be a list of paths or globs, WholeFiles(...), or a list of "
            f"(key, value) pairs; got {type(src).__name__}"
        )
    if not src:
        raise JobSubmitError("no inputs given")
    if all(isinstance(p, (str, os.PathLike)) for p in src):
        paths = _inputs.resolve_paths([os.fspath(p) for p in src])
        size = job.split_size
        if size is None:
            size = _inputs.plan_text_split_size(paths, slots)
        count = _inputs.count_text_splits(paths, size)
        _inputs.check_task_count(count, max_tasks, job.split_size, len(paths))
        return _inputs.text_splits(paths, size), []
    if job.split_size is None:
        split_bytes, min_splits = DEFAULT_RECORD_SPLIT_BYTES, MAPS_PER_SLOT * slots
    else:
        split_bytes, min_splits = min(job.split_size, DEFAULT_RECORD_SPLIT_BYTES), 1
    descs, blobs = _inputs.record_splits(src, split_bytes, min_splits, max_tasks, job.split_size)
    for i, desc in enumerate(descs):
        desc["blob"] = i
    return descs, blobs


def functions(job: Job) -> dict[str, Any]:
    """The job's functions by name, as executors get them."""
    return {
        "mapper": job.mapper,
        "split_mapper": job.split_mapper,
        "reducer": job.reducer,
        "combiner": job.combiner,
        "partitioner": job.partitioner,
    }


def pickle_functions(job: Job) -> bytes:
    fns = functions(job)
    try:
        with pickling.local_modules_by_value():
            return pickling.dumps(fns)
    except Exception as exc:
        raise JobSubmitError(f"the job's functions cannot be pickled: {exc!r}") from exc


def prepare(job: Job, slots: int | None = None) -> PreparedJob:
    """Check a job and build what travels to the master; raises JobSubmitError.

    ``slots`` is the cluster's total number of slots, if known: the splits are
    planned for it (see ``Job``).
    """
    if not isinstance(job, Job):
        raise JobSubmitError(f"expected a zmqmr.Job, got {type(job).__name__}")
    job.validate()
    if slots is not None:
        _check_int("slots", slots, 1)
    splits, records = make_splits(job, slots, MAX_MAP_TASKS)
    code = pickle_functions(job)
    output_dir = None
    if job.output_dir is not None:
        output_dir = check_output_dir(job.output_dir, bool(job.overwrite))
    spec = {
        "name": job.name,
        "num_reducers": job.num_reducers,
        "splits": splits,
        "output_dir": output_dir,
        "max_attempts": job.max_attempts,
        "speculative": bool(job.speculative),
        "skip_bad_records": bool(job.skip_bad_records),
        "task_timeout": job.task_timeout,
        "has_combiner": job.combiner is not None,
    }
    return PreparedJob(spec, code, records)


# -- results -------------------------------------------------------------------------


class JobResult:
    """What a finished job returns.

    ``items()`` yields ``(key, value)`` Python objects, partition 0 first,
    sorted by key within each partition. Results too large to come back through
    the master (only possible with ``output_dir``, where each reduce returns its
    results only while they fit in its share, ``result_limit / num_reducers``)
    are read from the part files, when their lines are the results exactly
    (every key and value a str with no tab or newline inside: a sort's, say);
    other such results cannot be told from their text (``1`` or ``"1"``?), so
    ``items()`` raises ``ResultTooLarge`` rather than guess. ``text_items()``
    always reads the part files: ``(str, str)`` as they were written.
    """

    def __init__(
        self,
        job_id: str,
        partitions: Sequence[Callable[[], list[tuple[Any, Any]]]] | None,
        output_files: list[str],
        counters: dict[str, int],
        stats: dict[str, Any],
        text_exact: bool = False,
    ) -> None:
        self.job_id = job_id
        self._partitions = partitions
        self.output_files = output_files
        self.counters = counters
        self.stats = stats
        self._text_exact = text_exact

    def items(self) -> Iterator[tuple[Any, Any]]:
        if self._partitions is not None:
            for load in self._partitions:
                yield from load()
            return
        if not self._text_exact:
            raise ResultTooLarge(
                f"job {self.job_id}: its results were too large to come back through the "
                "master (result_limit), and its part files hold them as text, which does "
                "not say which were str (an int 1 and a str '1' write the same line): "
                "read them with text_items() or from output_files, or raise result_limit"
            )
        yield from self.text_items()

    def text_items(self) -> Iterator[tuple[str, str]]:
        """The part files' lines as ``(key, value)`` strings (``str`` of each, as written),
        partition 0 first; a job without ``output_dir`` has none."""
        for path in self.output_files:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
                for line in f:
                    key, _, value = (line[:-1] if line.endswith("\n") else line).partition("\t")
                    yield key, value

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        return self.items()

    def to_dict(self) -> dict[Any, Any]:
        return dict(self.items())

    def __repr__(self) -> str:
        return (
            f"JobResult(job_id={self.job_id!r}, output_files={len(self.output_files)}, "
            f"counters={len(self.counters)})"
        )
