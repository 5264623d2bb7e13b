"""Task logs: what each attempt's user code prints and logs, kept on its worker.

While an attempt runs, its executor's ``sys.stdout``, ``sys.stderr`` and a
handler on the root logger write into three bounded tails (the last
``TAIL_CHARS`` characters of each are kept, and how many were dropped is
counted). The tails are written to the attempt's log file while it runs (at
most every ``FLUSH_EVERY`` seconds) and when it ends, so a failed, a
cancelled or a still-running attempt can be read too. The files live beside
the map outputs, in ``zmqmr-logs/JOB/`` of the worker's data directory (see
``layout``), one JSON file per attempt, written to a temporary name and renamed; a worker keeps
the logs of its last ``KEEP_JOBS`` jobs. ``read_logs`` gathers a job's (or one
task's) for the master's ASK_LOGS. Imports: the standard library and
``zmqmr.protocol`` and ``.layout`` only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import sys
import time
from collections import deque
from typing import Any

from . import layout, protocol

#: Characters of each stream (stdout, stderr, log records) an attempt keeps: its tail.
TAIL_CHARS = 64 * 1024
#: A running attempt's tails go to its file at most this often (seconds).
FLUSH_EVERY = 1.0
#: A failed attempt's error carries this much of each stream's tail to the client.
ERROR_TAIL_CHARS = 4096
#: A worker keeps the logs of this many jobs (the latest).
KEEP_JOBS = 100
#: Bytes of logs one answer to the master carries at most (``AttemptLog.wire_bytes``).
MAX_REPLY_BYTES = 16 * 1024 * 1024
STREAMS = ("stdout", "stderr", "log")
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
logs_root = layout.logs_root


class Tail(io.TextIOBase):
    """A text stream that keeps only its last ``limit`` characters."""

    def __init__(self, limit: int = TAIL_CHARS) -> None:
        super().__init__()
        self.limit = limit
        self.parts: deque[str] = deque()
        self.size = 0
        self.dropped = 0
        self.dirty = False

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        n = len(text)
        if n > self.limit:
            self.dropped += n - self.limit
            text = text[-self.limit :]
        self.parts.append(text)
        self.size += len(text)
        while self.size > self.limit:
            first = self.parts[0]
            excess = self.size - self.limit
            if len(first) <= excess:
                self.parts.popleft()
                self.size -= len(first)
                self.dropped += len(first)
            else:
                self.parts[0] = first[excess:]
                self.size -= excess
                self.dropped += excess
        self.dirty = True
        return n

    def getvalue(self) -> str:
        text = "".join(self.parts)
        self.parts = deque([text]) if text else deque()
        return text


class _TailHandler(logging.Handler):
    """Writes log records into the running capture's log tail (``tail``), if any."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.tail: Tail | None = None
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        tail = self.tail
        if tail is None:
            return
        try:
            tail.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


#: One handler per process, made on first use and pointed at each capture's log tail in
#: turn: a logging.Handler costs locks and registrations to make, and an executor makes
#: a capture per attempt.
_handler: _TailHandler | None = None


class Capture:
    """Capture an attempt's stdout, stderr and log records; ``with Capture(...) as c:``."""

    def __init__(self, root: str, job: str, kind: str, task: int, attempt: int) -> None:
        self._where = (root, job, kind, task, attempt)
        self._path: str | None = None
        self.attempt, self.kind, self.task = attempt, kind, task
        self.tails = {name: Tail() for name in STREAMS}
        self.outcome = "running"
        self._next_flush = time.monotonic() + FLUSH_EVERY
        self._saved: tuple[Any, Any, int, Tail | None] | None = None
        self._written = False  # the file exists: this capture wrote it

    @property
    def path(self) -> str:
        """The attempt's log file (named only when something is written to it)."""
        if self._path is None:
            self._path = layout.log_path(*self._where)
        return self._path

    def __enter__(self) -> Capture:
        global _handler
        if _handler is None:
            _handler = _TailHandler()
        root = logging.getLogger()
        self._saved = (sys.stdout, sys.stderr, root.level, _handler.tail)
        sys.stdout = self.tails["stdout"]
        sys.stderr = self.tails["stderr"]
        _handler.tail = self.tails["log"]
        root.addHandler(_handler)  # once: a capture within a capture shares it
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)  # the user's logging.info reaches the log
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._saved is not None and _handler is not None
        root = logging.getLogger()
        sys.stdout, sys.stderr, level, tail = self._saved
        _handler.tail = tail
        if tail is None:
            root.removeHandler(_handler)
        if root.level != level:  # setLevel clears every logger's cache: not per attempt
            root.setLevel(level)
        self._saved = None

    def maybe_flush(self) -> None:
        """Write the tails to the file if something was written and a while has passed."""
        now = time.monotonic()
        if now >= self._next_flush and any(t.dirty for t in self.tails.values()):
            self._next_flush = now + FLUSH_EVERY
            self.flush()

    def flush(self, outcome: str | None = None) -> None:
        if outcome is not None:
            self.outcome = outcome
            if not self._written and not any(t.size for t in self.tails.values()):
                return  # nothing to keep: no file for an attempt that wrote nothing
        texts = {name: tail.getvalue() for name, tail in self.tails.items()}
        record = {
            "attempt": self.attempt,
            "kind": self.kind,
            "task": self.task,
            "outcome": self.outcome,
            **texts,
            "dropped": sum(t.dropped for t in self.tails.values()),
        }
        for tail in self.tails.values():
            tail.dirty = False
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = self.path + ".tmp"
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                json.dump(record, f)
            os.replace(tmp, self.path)
            self._written = True
        except OSError:
            pass  # a full disk must not fail the attempt; its logs are what is lost

    def error_tail(self) -> str:
        """The end of each stream, for the error a failed attempt reports."""
        parts = []
        for name, tail in self.tails.items():
            text = tail.getvalue()[-ERROR_TAIL_CHARS:]
            if text.strip():
                parts.append(f"--- {name} ---\n{text.rstrip()}")
        return "\n".join(parts)


def read_logs(
    root: str, job: str, kind: str | None = None, task: int | None = None
) -> tuple[list[protocol.AttemptLog], int]:
    """The logs of ``job``'s attempts held here (only of tasks of ``kind``, numbered
    ``task``, when given), by task and attempt, up to the bounds of one reply; and how
    many more there are."""
    try:
        names = os.listdir(os.path.join(root, job)) if _JOB_ID.fullmatch(job) else []
    except OSError:
        names = []
    found = []
    for name in names:
        parsed = layout.parse_log_name(name)
        if parsed is None:
            continue
        k, t, a = parsed
        if (kind is not None and k != kind) or (task is not None and t != task):
            continue
        found.append((k != "map", t, a, name))
    found.sort()
    logs: list[protocol.AttemptLog] = []
    size = 0
    for i, (_, _, _, name) in enumerate(found):
        if len(logs) >= protocol.MAX_LOGS or size >= MAX_REPLY_BYTES:
            return logs, len(found) - i
        try:
            with open(os.path.join(root, job, name), encoding="utf-8", errors="replace") as f:
                log = protocol.AttemptLog.from_json(json.load(f))
        except (OSError, ValueError, protocol.ProtocolError):
            continue  # being replaced, or not ours
        # In bytes as the reply carries them: JSON escapes a character that is not
        # ASCII to 6 or 12 bytes, so a count of characters let a reply pass the
        # wire's limit, and the master dropped the worker that sent it.
        size += log.wire_bytes()
        logs.append(log)
    return logs, 0


def format_logs(logs: list[dict[str, Any]]) -> str:
    """Attempt logs (as JSON) as text, one section per attempt (``zmqmr logs``, the page)."""
    lines = []
    for g in logs:
        lines.append(
            f"=== {g['kind']} task {g['task']}, attempt {g['attempt']} on {g['worker']} "
            f"({g['outcome']}) ==="
        )
        if g["dropped"]:
            lines.append(f"[{g['dropped']} earlier characters not kept]")
        for stream in STREAMS:
            if g[stream]:
                lines.append(f"--- {stream} ---")
                lines.append(g[stream].rstrip("\n"))
    return "\n".join(lines) + ("\n" if lines else "")


def prune(root: str, keep: int = KEEP_JOBS) -> None:
    """Remove the logs of all but the ``keep`` jobs whose logs changed last."""
    try:
        entries = [e for e in os.scandir(root) if e.is_dir() and _JOB_ID.fullmatch(e.name)]
    except OSError:
        return
    if len(entries) <= keep:
        return
    entries.sort(key=lambda e: e.stat().st_mtime)
    for e in entries[: len(entries) - keep]:
        shutil.rmtree(e.path, ignore_errors=True)
