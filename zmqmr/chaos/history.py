"""The history of a chaos run: every fault injected and when, as JSON lines.

A record is one line of JSON with at least ``time`` (seconds since the
master accepted the job, from ``time.monotonic``), ``nemesis``, ``target``
and ``action``; fault records also carry the ``fault`` index of the schedule
entry they carry out, and ``wall`` (Unix time, to line the history up with the
processes' logs). The job's own milestones (submitted, succeeded, failed) are
records with ``nemesis`` null and ``target`` "job".

This module imports the standard library only.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import IO, Any

JOB = "job"


class History:
    """An append-only list of records, mirrored to a JSON-lines file if given a path."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.path = None if path is None else os.fspath(path)
        self._file: IO[str] | None = None
        if self.path is not None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def record(
        self,
        time_: float,
        nemesis: str | None,
        target: str,
        action: str,
        fault: int | None = None,
        **detail: Any,
    ) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "time": round(time_, 4),
            "nemesis": nemesis,
            "target": target,
            "action": action,
        }
        if fault is not None:
            rec["fault"] = fault
        rec.update(detail)
        rec["wall"] = round(time.time(), 3)
        self.records.append(rec)
        if self._file is not None:
            self._file.write(json.dumps(rec, sort_keys=False, default=str) + "\n")
            self._file.flush()
        return rec

    def job(self, time_: float, action: str, **detail: Any) -> dict[str, Any]:
        return self.record(time_, None, JOB, action, **detail)

    def faults(self) -> list[dict[str, Any]]:
        """The first record of each injected fault (its start), in order."""
        seen: set[int] = set()
        out = []
        for rec in self.records:
            idx = rec.get("fault")
            if idx is not None and idx not in seen:
                seen.add(idx)
                out.append(rec)
        return out

    def counts(self) -> Counter[str]:
        """Injected faults per nemesis."""
        return Counter(rec["nemesis"] for rec in self.faults())

    def first(self, nemesis: str, action: str) -> dict[str, Any] | None:
        for rec in self.records:
            if rec["nemesis"] == nemesis and rec["action"] == action:
                return rec
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
