"""Fault schedules: which nemesis hits which node when, decided by a seed alone.

``make_schedule(seed, kinds, workers)`` draws every choice (how many faults,
their kinds, offsets, targets, durations and parameters) from one
``random.Random`` seeded with the seed, and nothing else: the same arguments
give the same schedule on any machine, so a seed printed by a failing run
replays its faults at the same offsets (seconds after the master accepted the
job). Which of them land before the job ends depends on timing; the history
says which did.

Two rules keep a tolerable schedule tolerable:

* at any moment at least one worker is free of kill, pause, slow and
  partition faults (with a single worker, faults on it do not overlap), and a
  worker killed for good is never the last one standing;
* two faults never overlap on the same node, and the master is killed at
  most once.

This module imports the standard library only.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

KILL = "kill"
PAUSE = "pause"
SLOW = "slow"
CORRUPT = "corrupt"
PARTITION = "partition"
KILL_MASTER = "kill-master"

#: Every nemesis, in the order the docs list them.
KINDS = (KILL, PAUSE, SLOW, CORRUPT, PARTITION, KILL_MASTER)
#: Nemeses that the cluster is expected to tolerate with an exact answer.
TOLERATED = (KILL, PAUSE, SLOW, CORRUPT, PARTITION)
#: Faults that take a worker out of service while they last.
IMPAIRING = (KILL, PAUSE, SLOW, PARTITION)

MASTER = "master"
#: When a kill of a master with a journal strikes: at its time, or at the first worst
#: moment after it: while the job is being accepted (its journal entry is being written),
#: at the map/reduce transition (the last map), at the job's end (its reduces and commit).
MOMENTS = ("time", "accept", "transition", "commit")


def worker_name(i: int) -> str:
    return f"w{i}"


@dataclass(frozen=True)
class Fault:
    """One scheduled fault: ``kind`` hits ``target`` at ``at`` for ``duration`` seconds.

    ``duration`` None means the fault is never undone (a kill without restart).
    """

    index: int
    kind: str
    target: str
    at: float
    duration: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> float:
        return math.inf if self.duration is None else self.at + self.duration

    def describe(self) -> str:
        p = self.params
        if self.kind == KILL_MASTER and "moment" in p:
            when = "" if p["moment"] == "time" else f" at the {p['moment']} moment"
            return f"SIGKILL {self.target}{when}, restart after {p['restart']:.2f}s"
        if self.kind in (KILL, KILL_MASTER):
            then = (
                "never restarted"
                if self.duration is None
                else f"restart after {self.duration:.2f}s"
            )
            return f"SIGKILL {self.target}, {then}"
        if self.kind == PAUSE:
            return f"SIGSTOP {self.target} for {self.duration:.2f}s ({p['length']})"
        if self.kind == SLOW:
            return (
                f"slow {self.target} for {self.duration:.2f}s "
                f"(stopped {p['stopped']:.0%} of every {p['period'] * 1000:.0f} ms)"
            )
        if self.kind == CORRUPT:
            return (
                f"damage up to {len(p['modes'])} map output(s) on {self.target} "
                f"({', '.join(p['modes'])}) within {self.duration:.2f}s"
            )
        if self.kind == PARTITION:
            return f"cut {self.target} off the network for {self.duration:.2f}s ({p['length']})"
        return f"{self.kind} {self.target}"

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "target": self.target,
            "at": round(self.at, 3),
            "duration": None if self.duration is None else round(self.duration, 3),
            "params": self.params,
        }


def parse_kinds(text: str) -> list[str]:
    """``"kill,pause"`` -> ``["kill", "pause"]``; ``"all"`` -> every kind; ``"none"`` -> []."""
    text = text.strip()
    if text in ("", "none"):
        return []
    if text == "all":
        return list(KINDS)
    kinds = []
    for name in text.split(","):
        name = name.strip()
        if name not in KINDS:
            raise ValueError(f"unknown nemesis {name!r}; known: {', '.join(KINDS)}, all, none")
        if name not in kinds:
            kinds.append(name)
    return kinds


def _overlaps(a_start: float, a_end: float, b_start: float, b_end: float) -> bool:
    return a_start < b_end and b_start < a_end


def make_schedule(
    seed: int,
    kinds: list[str] | tuple[str, ...],
    workers: int,
    *,
    window: float = 4.0,
    count: int | None = None,
    worker_timeout: float = 1.5,
    restart_master: bool = False,
) -> list[Fault]:
    """The faults for ``seed``: each of ``kinds`` at least once, offsets in [0.2, window].

    ``restart_master`` (the master has a journal): a killed master is always started
    again, the nemesis restarts it itself ``params["restart"]`` seconds after the kill,
    and the kill may wait for one of the worst ``MOMENTS``."""
    if workers < 1:
        raise ValueError("a schedule needs at least one worker")
    if window < 0.2:
        raise ValueError("window must be at least 0.2 seconds")
    kinds = list(kinds)
    if not kinds:
        return []
    rng = random.Random(f"zmqmr-chaos/{seed}")
    if count is None:
        count = rng.randint(len(kinds), len(kinds) + 2)
    order = rng.sample(kinds, len(kinds))[:count]
    others = [k for k in kinds if k != KILL_MASTER] or kinds
    while len(order) < count:
        order.append(rng.choice(others))
    order = [k for i, k in enumerate(order) if k != KILL_MASTER or KILL_MASTER not in order[:i]]
    offsets = sorted(rng.uniform(0.2, window) for _ in order)

    placed: list[Fault] = []
    names = [worker_name(i) for i in range(workers)]
    for kind, at in zip(order, offsets):
        duration, params = _draw(rng, kind, worker_timeout)
        if kind == KILL_MASTER:
            target = MASTER
            if restart_master:
                params = {
                    "moment": MOMENTS[int(rng.random() * len(MOMENTS))],
                    "restart": duration if duration is not None else 1.0,
                }
                duration = None  # the nemesis restarts it, counted from the kill
                if params["moment"] == "accept":
                    at = 0.0
        else:
            target, at, duration = _place(rng, kind, at, duration, placed, names)
        placed.append(Fault(len(placed), kind, target, round(at, 3), duration, params))
    placed.sort(key=lambda f: (f.at, f.index))
    return [Fault(i, f.kind, f.target, f.at, f.duration, f.params) for i, f in enumerate(placed)]


def _draw(rng: random.Random, kind: str, worker_timeout: float) -> tuple[float | None, dict]:
    """A fault's duration and parameters (every kind draws the same number of values)."""
    a, b, c = rng.random(), rng.random(), rng.random()
    if kind in (KILL, KILL_MASTER):
        # Restart most killed nodes after a while; leave some dead for good.
        return (None if a < 0.3 else round(0.5 + 2.5 * b, 3)), {}
    if kind in (PAUSE, PARTITION):
        # Shorter than worker_timeout (the master never notices) or longer (it does).
        if a < 0.5:
            return round(worker_timeout * (0.3 + 0.5 * b), 3), {"length": "short"}
        return round(worker_timeout * (1.5 + 1.5 * b), 3), {"length": "long"}
    if kind == SLOW:
        return round(2.0 + 4.0 * a, 3), {"period": 0.1, "stopped": round(0.8 + 0.15 * b, 3)}
    if kind == CORRUPT:
        n = 1 + int(a * 3)
        modes = [("flip", "truncate", "delete")[int(rng.random() * 3)] for _ in range(n)]
        return round(1.0 + 3.0 * b, 3), {"modes": modes, "seed": int(c * 2**31)}
    raise ValueError(f"unknown nemesis {kind!r}")


def _place(
    rng: random.Random,
    kind: str,
    at: float,
    duration: float | None,
    placed: list[Fault],
    names: list[str],
) -> tuple[str, float, float | None]:
    """A target for a worker fault at ``at`` or later, keeping the schedule's rules."""
    workers = len(names)
    forever = sum(1 for f in placed if f.kind == KILL and f.duration is None)
    if kind == KILL and duration is None and forever >= workers - 1:
        duration = round(0.5 + 2.5 * rng.random(), 3)  # the last worker standing comes back
    # First keep one worker unimpaired; if the schedule leaves no room for that,
    # settle for a free worker (the faults on the others heal in time).
    for keep_one in (True, False):
        t = at
        for _ in range(2 * len(placed) + 2):
            end = math.inf if duration is None else t + duration
            busy = {f.target for f in placed if _overlaps(t, end, f.at, f.end)}
            free = [n for n in names if n not in busy]
            if keep_one and kind in IMPAIRING:
                impaired = {
                    f.target
                    for f in placed
                    if f.kind in IMPAIRING and _overlaps(t, end, f.at, f.end)
                }
                if len(impaired) >= max(1, workers - 1):
                    free = []
            if free:
                return rng.choice(free), t, duration
            ends = [f.end for f in placed if t < f.end < math.inf]
            if not ends:
                break
            t = min(ends) + 0.05
    raise AssertionError("no worker can take this fault")  # pragma: no cover - see the rules
