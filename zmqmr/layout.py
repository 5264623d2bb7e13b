"""Every name zmqmr gives a file on disk, in one place.

On a worker, under its data dir, one directory per job::

    DATA_DIR/JOB/m00003-a7.out        map task 3's output, written by attempt 7
    DATA_DIR/JOB/m00003-a7.out.tmp    ... while attempt 7 writes it
    DATA_DIR/JOB/x4242-9f3c0a1b.pack  small map outputs of executor 4242, appended
                                      (``zmqmr.packs``); each still named as above
    DATA_DIR/JOB/m00003-a7.spills/    ... sorted runs spilled by attempt 7
    DATA_DIR/JOB/r00001-a9/           reduce task 1's work dir, made only if it spills
    DATA_DIR/.slot-2.pos              slot 2's executor: the attempt and record it maps

A worker started without ``--data-dir`` makes its own temporary directory, and
holds an exclusive ``flock`` on a file in it for as long as it lives::

    $TMPDIR/zmqmr-worker-XXXXXXXX/.owner.lock

A worker killed with SIGKILL cannot remove that directory; the next worker of
the same user to start on the machine removes every such directory whose lock
is free (``sweep_temp_dirs``).

Beside the data dir, the captured output of attempts (``tasklogs``)::

    DATA_DIR/../zmqmr-logs/JOB/map-00003-a7.json   what attempt 7 of map task 3 printed

In a job's output directory (the commit protocol is ``zmqmr.commit``'s)::

    OUTPUT_DIR/_temporary/JOB/                  made at submit, removed at the job's end
    OUTPUT_DIR/_temporary/JOB/part-00001-a9     reduce task 1's output, written by attempt 9
    OUTPUT_DIR/part-00001                       ... moved there by the job's commit, whole
    OUTPUT_DIR/_SUCCESS                         written last, by a job that succeeded

A job id is checked against a fixed alphabet before it names a directory, so a
peer cannot make a path escape the data dir.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable

_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_OUTPUT_NAME = re.compile(r"m(\d{5,})-a(\d+)\.out")
_PART_NAME = re.compile(r"part-(\d{5,})")
_PACK_NAME = re.compile(r"x\d+-[0-9a-f]{8}\.pack")

PART_PREFIX = "part-"
#: Attempts write under this subdirectory of the output dir; it is never output.
TEMPORARY = "_temporary"
#: Written last into the output dir by a job whose commit completed.
SUCCESS = "_SUCCESS"
LOGS_SUBDIR = "zmqmr-logs"
#: A worker's own temporary directory: ``tempfile.mkdtemp(prefix=TEMP_PREFIX)``.
TEMP_PREFIX = "zmqmr-worker-"
#: Held (``flock``) by the worker that owns a temporary directory, while it lives.
OWNER_LOCK = ".owner.lock"

log = logging.getLogger(__name__)
_LOG_NAME = re.compile(r"(map|reduce)-(\d{5,})-a(\d+)\.json")


def logs_root(data_dir: str) -> str:
    """Where a worker whose map outputs live in ``data_dir`` keeps attempt logs."""
    return os.path.join(os.path.dirname(os.path.abspath(data_dir)), LOGS_SUBDIR)


def log_path(root: str, job_id: str, kind: str, task: int, attempt: int) -> str:
    return os.path.join(job_dir(root, job_id), f"{kind}-{task:05d}-a{attempt}.json")


def parse_log_name(name: str) -> tuple[str, int, int] | None:
    """(kind, task, attempt) of an attempt log's file name; None for anything else."""
    m = _LOG_NAME.fullmatch(name)
    return None if m is None else (m.group(1), int(m.group(2)), int(m.group(3)))


# -- a worker's temporary directory ------------------------------------------------


def make_temp_dir(root: str | None = None) -> tuple[str, int]:
    """A new temporary directory for a worker, and the fd of the lock it holds on it.

    The lock lasts as long as the fd is open, so it ends with the process however
    that ends; ``sweep_temp_dirs`` removes directories whose lock nobody holds.
    """
    path = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=root)
    lock = os.path.join(path, OWNER_LOCK)
    fd = os.open(lock + ".new", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and ours: nobody else can hold it
    os.rename(lock + ".new", lock)  # a sweep never sees the lock file unlocked
    return path, fd


def sweep_temp_dirs(root: str | None = None) -> list[str]:
    """Remove the temporary directories of workers that died without removing them.

    Only directories of this user that hold an owner lock nobody holds are removed:
    a live worker's lock is held, and a directory without the lock file (made by
    something else, or not yet locked) is left alone. Returns what was removed.
    """
    root = root or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(root) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)  # a symlink is never followed
            if st.st_uid != uid or not stat.S_ISDIR(st.st_mode):
                continue
            fd = os.open(os.path.join(path, OWNER_LOCK), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # held: its worker lives
            continue
        try:  # removed while locked, so a worker cannot start in it meanwhile
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        if not os.path.exists(path):
            removed.append(path)
    if removed:
        log.info("removed %d temporary directories of dead workers", len(removed))
    return removed


# -- a worker's data dir -------------------------------------------------------------


@functools.lru_cache(maxsize=256)  # asked several times per attempt, for a few jobs
def job_dir(data_dir: str, job_id: str) -> str:
    if not _JOB_ID.match(job_id):
        raise ValueError(f"bad job id {job_id!r}")
    return os.path.join(data_dir, job_id)


def map_stem(data_dir: str, job_id: str, task: int, attempt: int) -> str:
    """The common prefix of a map attempt's files."""
    return f"{job_dir(data_dir, job_id)}{os.sep}m{task:05d}-a{attempt}"


def map_output_path(data_dir: str, job_id: str, task: int, attempt: int) -> str:
    return f"{job_dir(data_dir, job_id)}{os.sep}{map_output_name(task, attempt)}"


@functools.lru_cache(maxsize=1 << 16)  # a reducer at large R names hundreds per attempt
def map_output_name(task: int, attempt: int) -> str:
    """A map output's file name in its job's directory (``job_dir``)."""
    return f"m{task:05d}-a{attempt}.out"


def map_output_paths(directory: str, tasks: Iterable[int], attempts: Iterable[int]) -> list[str]:
    """``directory`` + ``map_output_name(t, a)`` for each task and attempt, in one
    C-level pass (a reduce at large R names one output per map task)."""
    escaped = directory.replace("{", "{{").replace("}", "}}")  # a literal in the format
    return list(map(f"{escaped}m{{:05d}}-a{{}}.out".format, tasks, attempts))


def pack_path(data_dir: str, job_id: str) -> str:
    """A new pack for this process's small map outputs of a job (a name of its own:
    a pid is used again, and an executor that died leaves its pack behind)."""
    return os.path.join(job_dir(data_dir, job_id), f"x{os.getpid()}-{os.urandom(4).hex()}.pack")


def is_pack_name(name: str) -> bool:
    return _PACK_NAME.fullmatch(name) is not None


def spill_dir(data_dir: str, job_id: str, task: int, attempt: int) -> str:
    return map_stem(data_dir, job_id, task, attempt) + ".spills"


def reduce_work_dir(data_dir: str, job_id: str, task: int, attempt: int) -> str:
    return os.path.join(job_dir(data_dir, job_id), f"r{task:05d}-a{attempt}")


def position_path(data_dir: str, slot: int) -> str:
    """Where the executor of ``slot`` leaves its position (no job id starts with a dot)."""
    return os.path.join(data_dir, f".slot-{slot}.pos")


def held_outputs(data_dir: str) -> list[tuple[str, int, int]]:
    """``(job, map task, attempt)`` of every finished map output under ``data_dir``,
    in a file of its own or in a pack."""
    found = []
    try:
        jobs = os.listdir(data_dir)
    except OSError:
        return []
    for job in jobs:
        if not _JOB_ID.match(job):
            continue
        try:
            names = os.listdir(os.path.join(data_dir, job))
        except OSError:
            continue
        for name in names:
            m = _OUTPUT_NAME.fullmatch(name)
            if m:
                found.append((job, int(m.group(1)), int(m.group(2))))
        if any(map(is_pack_name, names)):
            from . import packs  # packs names its files with this module

            found += [
                (job, e.task, e.attempt) for e in packs.live_entries(os.path.join(data_dir, job))
            ]
    return sorted(found)


# -- a job's output dir --------------------------------------------------------------


def part_name(partition: int) -> str:
    return f"{PART_PREFIX}{partition:05d}"


def part_index(name: str) -> int | None:
    """The partition a ``part-NNNNN`` name holds, or None for any other name."""
    m = _PART_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def temporary_dir(output_dir: str) -> str:
    return os.path.join(output_dir, TEMPORARY)


def job_temp_dir(output_dir: str, job_id: str) -> str:
    """Where a job's reduce attempts write: made at submit, removed when the job ends."""
    if not _JOB_ID.match(job_id):
        raise ValueError(f"bad job id {job_id!r}")
    return os.path.join(output_dir, TEMPORARY, job_id)


def attempt_part_path(output_dir: str, job_id: str, partition: int, attempt: int) -> str:
    """Where reduce attempt ``attempt`` of ``partition`` writes its part file."""
    return os.path.join(job_temp_dir(output_dir, job_id), f"{part_name(partition)}-a{attempt}")


# -- cleanup -------------------------------------------------------------------------


def attempt_paths(
    data_dir: str, job_id: str, kind: str, task: int, attempt: int, output_dir: str | None
) -> list[str]:
    """Every file or directory an attempt may leave behind (for cleanup on cancel)."""
    if kind == "map":
        stem = map_stem(data_dir, job_id, task, attempt)
        return [stem + ".out", stem + ".out.tmp", stem + ".spills"]
    paths = [reduce_work_dir(data_dir, job_id, task, attempt)]
    if output_dir:
        paths.append(attempt_part_path(output_dir, job_id, task, attempt))
    return paths


def remove_paths(paths: list[str]) -> None:
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
