"""The output commit protocol: how a job's part files come to be in its ``output_dir``.

As Hadoop's FileOutputCommitter and Spark's commit protocol do it, in four steps
(every name is ``zmqmr.layout``'s):

* **Setup** (the client, at submit; ``check_output_dir``, ``setup_job``): an
  ``output_dir`` that holds files fails unless the job says ``overwrite=True``
  (a ``_temporary`` left by a job that never ended does not count), then
  ``output_dir/_temporary/JOB/`` is made. The master refuses a second running
  job with the same ``output_dir``: it sees every job, a client sees its own.
* **Task output** (reduce attempts, on workers; ``zmqmr.reduceside``): each
  attempt writes and fsyncs ``_temporary/JOB/part-NNNNN-aATTEMPT`` and renames
  nothing. An attempt never makes that directory, so one that runs on after its
  job ended (its worker was paused, then declared dead) has nowhere to write.
* **Approval** (``MasterState``): the first attempt of a partition whose DONE
  the master accepts is that partition's approved attempt; any other attempt
  (a losing backup, one of a worker declared dead, one of a cancelled job) is
  fenced there, and its file is never read.
* **Job commit** (the master's shell, in the ``Committer`` thread; ``commit_job``):
  once every partition has an approved attempt, ``_SUCCESS`` is removed (so a
  directory being changed never claims success), part files of a previous
  output that this job does not replace are removed, each approved file is
  renamed into place (atomically: whole or absent), ``_SUCCESS`` (one line:
  the job's id) is written last and ``_temporary/JOB`` removed. A previous
  output stays untouched until every reduce task of the new job has succeeded.
* **Abort** (the master's shell, for a failed or cancelled job; ``abort_job``):
  ``_temporary/JOB`` is removed. No part file of the job was ever in place.

The master commits, as YARN's MapReduce ApplicationMaster and Spark's driver
do, rather than a task on a worker: a worker paused in the middle of a commit
and resumed after another job took the directory would change that job's
output; the master runs one commit per directory at a time. So the master must
see the output dir at the same path as the workers and the client (a shared
file system in a lab, any path on one machine for LocalCluster).

Imports: the standard library and ``zmqmr.layout`` and ``.errors`` only.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
from dataclasses import dataclass, field

from . import layout
from .errors import JobSubmitError

log = logging.getLogger(__name__)

#: In ``_temporary/JOB/`` while a commit runs: a commit tried again after a crash
#: finds it and knows that approved files already moved.
COMMITTING = "_COMMITTING"


class CommitError(Exception):
    """A job's output cannot be committed."""


# -- setup (the client) --------------------------------------------------------------


def check_output_dir(path: str, overwrite: bool) -> str:
    """The output dir's real absolute path; JobSubmitError if it cannot take the job's output."""
    path = os.path.realpath(os.path.expanduser(path))
    if os.path.lexists(path) and not os.path.isdir(path):
        raise JobSubmitError(f"output_dir {path!r} is not writable: it is not a directory")
    try:
        entries = sorted(e for e in os.listdir(path) if e != layout.TEMPORARY)
    except FileNotFoundError:
        entries = []
    except OSError as exc:
        raise JobSubmitError(f"output_dir {path!r} cannot be read: {exc}") from exc
    if entries and not overwrite:
        shown = ", ".join(entries[:3]) + (
            f" and {len(entries) - 3} more" if len(entries) > 3 else ""
        )
        raise JobSubmitError(
            f"output_dir {path!r} already holds files ({shown}); use another directory, or "
            "Job(..., overwrite=True) to replace its output when the job succeeds"
        )
    return path


def setup_job(output_dir: str, job_id: str) -> None:
    """Make ``output_dir/_temporary/JOB/``, where the job's reduce attempts write."""
    try:
        os.makedirs(layout.temporary_dir(output_dir), exist_ok=True)
        os.mkdir(layout.job_temp_dir(output_dir, job_id))
    except OSError as exc:
        raise JobSubmitError(f"output_dir {output_dir!r} is not writable: {exc}") from exc


# -- commit and abort (the master) -----------------------------------------------------


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs directories
    finally:
        os.close(fd)


def _write_synced(path: str, data: bytes = b"") -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def commit_job(output_dir: str, job_id: str, approved: list[int]) -> None:
    """Move each partition's approved attempt's file into place; ``_SUCCESS`` last.

    ``approved[p]`` is the attempt the master approved for partition ``p``. Safe
    to run again after a crash part-way: files that moved are not looked for.
    """
    temp = layout.job_temp_dir(output_dir, job_id)
    success = os.path.join(output_dir, layout.SUCCESS)
    if not os.path.exists(temp) and _committed_by(success) == job_id:
        return  # done already, by a master that stopped before it journaled the job's end
    marker = os.path.join(temp, COMMITTING)
    again = os.path.exists(marker)
    sources = [layout.attempt_part_path(output_dir, job_id, p, a) for p, a in enumerate(approved)]
    if not again:
        missing = [s for s in sources if not os.path.exists(s)]
        if missing:
            raise CommitError(
                f"{len(missing)} approved part files are missing from {temp}, "
                f"{os.path.basename(missing[0])} first (the master must see output_dir "
                "at the path the workers write it)"
            )
        _write_synced(marker)
    try:
        os.remove(success)
    except FileNotFoundError:
        pass
    for name in os.listdir(output_dir):  # a previous output's partitions beyond ours
        index = layout.part_index(name)
        if index is not None and index >= len(approved):
            os.remove(os.path.join(output_dir, name))
    for partition, src in enumerate(sources):
        dst = os.path.join(output_dir, layout.part_name(partition))
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            if not (again and os.path.exists(dst)):
                raise
    _fsync_dir(output_dir)
    written = os.path.join(temp, layout.SUCCESS)
    _write_synced(written, f"{job_id}\n".encode())
    os.replace(written, success)
    _fsync_dir(output_dir)
    remove_job_temp(output_dir, job_id)


def _committed_by(success: str) -> str | None:
    """The job whose commit wrote ``_SUCCESS`` (its one line), if it is there."""
    try:
        with open(success, "rb") as f:
            return f.read(100).decode("ascii", "replace").strip()
    except OSError:
        return None


def abort_job(output_dir: str, job_id: str) -> None:
    """Remove what a failed or cancelled job wrote: its ``_temporary/JOB``."""
    remove_job_temp(output_dir, job_id)


def remove_job_temp(output_dir: str, job_id: str) -> None:
    """Remove ``_temporary/JOB``, and ``_temporary`` when nothing else is in it."""
    temp = layout.job_temp_dir(output_dir, job_id)
    for _ in range(3):  # a fenced attempt may create its file while the tree goes
        shutil.rmtree(temp, ignore_errors=True)
        if not os.path.lexists(temp):
            break
    try:
        os.rmdir(layout.temporary_dir(output_dir))
    except OSError:
        pass  # another job's directory is in it, or it is gone already


# -- the master's thread -----------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """A commit or abort that has run: ``error`` says why it failed ("" if it did not)."""

    kind: str  # "commit" or "abort"
    job_id: str
    stimulus: str
    error: str = ""


@dataclass(slots=True)
class _Work:
    kind: str
    job_id: str
    output_dir: str
    stimulus: str
    approved: list[int] = field(default_factory=list)


class Committer:
    """Runs commits and aborts one at a time in a thread, off the master's poll loop.

    ``fileno()`` turns readable when an outcome waits: register it with the
    poller and collect them with ``outcomes()``.
    """

    def __init__(self) -> None:
        self._work: queue.Queue[_Work | None] = queue.Queue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._pending = 0
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="zmqmr-committer", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._read

    def commit(self, job_id: str, output_dir: str, approved: list[int], stimulus: str) -> None:
        self._put(_Work("commit", job_id, output_dir, stimulus, list(approved)))

    def abort(self, job_id: str, output_dir: str, stimulus: str) -> None:
        self._put(_Work("abort", job_id, output_dir, stimulus))

    def _put(self, work: _Work) -> None:
        with self._lock:
            self._pending += 1
        self._work.put(work)

    def _run(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            error = ""
            try:
                if work.kind == "commit":
                    commit_job(work.output_dir, work.job_id, work.approved)
                else:
                    abort_job(work.output_dir, work.job_id)
            except Exception as exc:  # every failure goes back to the state as an outcome
                error = f"{type(exc).__name__}: {exc}"
                log.debug("%s of job %s failed: %s", work.kind, work.job_id, error)
            self._done.put(Outcome(work.kind, work.job_id, work.stimulus, error))
            with self._lock:
                self._pending -= 1
                self._lock.notify_all()
            try:
                os.write(self._write, b"x")
            except OSError:
                pass  # closed: the master is gone

    def outcomes(self) -> list[Outcome]:
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        found = []
        while True:
            try:
                found.append(self._done.get_nowait())
            except queue.Empty:
                return found

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        self._work.put(None)
        self._thread.join(5)
        os.close(self._read)
        os.close(self._write)
