"""Nemeses: the faults the harness injects, each a small class with start and stop.

A nemesis carries out one scheduled ``Fault`` on a ``ChaosCluster`` (local
processes) or a ``LabCluster`` (a lab's machines, through ssh):
``start(now)`` injects it, ``stop(now)`` undoes it when its duration is over,
``tick(now)`` lets a fault that acts over time (a duty cycle, a watch for new
files) do its next step and say when it wants the next tick, and ``heal(now)``
undoes whatever is still in force when the job has ended. Every action is
written to the history, with the host and pid it hit. ``now`` is seconds
since the master accepted the job.

The runner calls all of these from one thread, the one that started the
cluster's processes (restarts must come from it: see ``zmqmr.chaos.cluster``).
"""

from __future__ import annotations

import os
import random
from typing import Any, ClassVar

from .history import History
from .schedule import CORRUPT, KILL, KILL_MASTER, PARTITION, PAUSE, SLOW, Fault


class Nemesis:
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(
        self, fault: Fault, cluster: Any, history: History, job_id: str | None = None
    ) -> None:
        self.fault = fault
        self.cluster = cluster  # a ChaosCluster or a LabCluster
        self.history = history
        self.target = fault.target
        self.job_id = job_id  # the job under faults (corrupt damages its files only)

    def record(self, now: float, action: str, **detail: Any) -> None:
        detail.setdefault("pid", self.cluster.pid(self.target))
        host = self.cluster.host(self.target)
        self.history.record(
            now, self.kind, self.target, action, self.fault.index, host=host, **detail
        )

    def start(self, now: float) -> None:
        raise NotImplementedError

    def stop(self, now: float) -> None:
        """Undo the fault (its duration is over)."""

    def tick(self, now: float) -> float | None:
        """Do the next step; return when to be ticked again (None: not needed)."""
        return None

    def heal(self, now: float) -> None:
        """The job has ended: undo what is still in force (a kill stays a kill)."""
        self.stop(now)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.fault.describe()}>"


class Kill(Nemesis):
    kind = KILL
    description = (
        "SIGKILL a worker's process group (the worker and its executors), as when a "
        "machine dies; optionally start it again after a delay, with an empty disk."
    )

    def start(self, now: float) -> None:
        pid = self.cluster.pid(self.target)
        was = self.cluster.kill(self.target)
        self.record(now, "kill", pid=pid, was_running=was)

    def stop(self, now: float) -> None:
        pid = self.cluster.restart(self.target)
        self.record(now, "restart", pid=pid)

    def heal(self, now: float) -> None:
        pass  # a dead node stays dead; the cluster is torn down anyway


class KillMaster(Kill):
    kind = KILL_MASTER
    description = (
        "SIGKILL the master; optionally restart it at the same addresses (in a lab: with "
        "its own command line, so with its --state-dir if it has one). A master without "
        "a state directory keeps its jobs in memory, so the client must get a clear error "
        "(never a hang, never a wrong answer); one with it (--state-dir) is always "
        "restarted, at times at the worst moments (the job being accepted, the map/reduce "
        "transition, the job's end), and the job must finish exactly, the maps it had "
        "journaled not run again."
    )

    def __init__(
        self, fault: Fault, cluster: Any, history: History, job_id: str | None = None
    ) -> None:
        super().__init__(fault, cluster, history, job_id)
        self.moment = fault.params.get("moment")
        self.killed_at: float | None = None
        self.restarted = False

    def start(self, now: float) -> None:
        if self.moment is None:  # no journal: today's kill, restarted (or not) by stop()
            super().start(now)
        elif self.moment in ("time", "accept"):  # "accept": the runner calls this at once
            self._kill(now)
        else:
            self.record(now, "armed", moment=self.moment)

    def _kill(self, now: float) -> None:
        pid = self.cluster.pid(self.target)
        was = self.cluster.kill(self.target)
        self.killed_at = now
        self.record(now, "kill", pid=pid, was_running=was, **self.cluster.journal())

    def _due(self) -> bool:
        try:
            jobs = self.cluster.status()["jobs"]
        except Exception:  # the master is busy or away: not now
            return False
        for j in jobs:
            if j.get("state") not in ("running", "queued", "committing"):
                continue
            if self.moment == "transition":  # the last map running (or later: at once)
                return bool(j["maps_done"] >= j["maps"] - 1)
            # "commit": the job's end, once every map is done: its reduces and the
            # commit. (The last reduce alone is too short to be seen by polling.)
            return bool(j["maps_done"] >= j["maps"] > 0)
        return any(j.get("state") == "succeeded" for j in jobs)  # passed it: kill now

    def tick(self, now: float) -> float | None:
        if self.moment is None:
            return None
        if self.killed_at is None:
            if self._due():
                self._kill(now)
            return now + 0.02
        if not self.restarted and now >= self.killed_at + float(self.fault.params["restart"]):
            self.restarted = True
            pid = self.cluster.restart(self.target)
            self.record(now, "restart", pid=pid)
            return None
        return now + 0.02

    def heal(self, now: float) -> None:
        if self.moment is not None and self.killed_at is not None and not self.restarted:
            self.restarted = True
            self.record(now, "restart", pid=self.cluster.restart(self.target))


class Pause(Nemesis):
    kind = PAUSE
    description = (
        "SIGSTOP a worker's process group, later SIGCONT it: shorter than worker_timeout "
        "(nobody should notice) or longer (declared dead, work given away, comes back fenced)."
    )

    def start(self, now: float) -> None:
        ok = self.cluster.pause(self.target)
        self.record(now, "pause", ok=ok, length=self.fault.params.get("length"))

    def stop(self, now: float) -> None:
        ok = self.cluster.resume(self.target)
        self.record(now, "resume", ok=ok)


class Slow(Nemesis):
    kind = SLOW
    description = (
        "Make a worker a straggler: SIGSTOP its process group for most of every period "
        "and SIGCONT it for the rest (a duty cycle), so backup tasks are needed."
    )

    def __init__(
        self, fault: Fault, cluster: Any, history: History, job_id: str | None = None
    ) -> None:
        super().__init__(fault, cluster, history, job_id)
        self.period = float(fault.params["period"])
        self.stopped_for = self.period * float(fault.params["stopped"])
        self.stopped = False
        self.cycles = 0
        self.next = 0.0
        self.active = False

    def start(self, now: float) -> None:
        self.active = True
        self.record(
            now, "slow", period=self.period, stopped=round(self.stopped_for / self.period, 3)
        )
        self.next = now

    def tick(self, now: float) -> float | None:
        if not self.active:
            return None
        if now < self.next:
            return self.next
        if self.stopped:
            self.cluster.resume(self.target)
            self.stopped = False
            self.next = now + self.period - self.stopped_for
        else:
            if not self.cluster.pause(self.target):
                self.next = now + self.period  # not running (killed?): try later
                return self.next
            self.stopped = True
            self.cycles += 1
            self.next = now + self.stopped_for
        return self.next

    def stop(self, now: float) -> None:
        if not self.active:
            return
        self.active = False
        self.cluster.resume(self.target)
        self.stopped = False
        self.record(now, "normal", cycles=self.cycles)


class Corrupt(Nemesis):
    kind = CORRUPT
    description = (
        "Damage a worker's map output files as they appear, while reducers still need "
        "them: flip a byte, truncate the file, or delete it. Checksums must catch it "
        "and the map must run again."
    )

    #: How often to look for new map outputs (seconds; over ssh a look takes longer).
    EVERY = 0.01

    def __init__(
        self, fault: Fault, cluster: Any, history: History, job_id: str | None = None
    ) -> None:
        super().__init__(fault, cluster, history, job_id)
        self.modes: list[str] = list(fault.params["modes"])
        self.rng = random.Random(f"corrupt/{fault.params['seed']}")
        self.damaged: set[str] = set()
        self.active = False

    def start(self, now: float) -> None:
        self.active = True
        self.record(now, "watch", modes=list(self.modes))
        self.tick(now)

    def tick(self, now: float) -> float | None:
        if not self.active:
            return None
        while self.modes:
            outputs = [
                p
                for p in self.cluster.map_outputs(self.target, self.job_id)
                if p not in self.damaged
            ]
            if not outputs:
                break
            path = outputs[0]
            mode = self.modes[0]
            # A third of the flips hit the tail: the index and footer that say where
            # every partition's segment lies, the rest anywhere (mostly block data).
            where, pick = self.rng.random(), self.rng.random()
            detail = self.cluster.damage(self.target, path, mode, where, pick)
            self.damaged.add(path)
            if detail is None:  # gone before we got to it (a lost attempt, say)
                continue
            self.modes.pop(0)
            name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
            self.record(now, mode, file=name, **detail)
        if not self.modes:
            self.stop(now)
            return None
        return now + self.EVERY

    def stop(self, now: float) -> None:
        if self.active:
            self.active = False
            self.record(now, "unwatch", left=len(self.modes))


class Partition(Nemesis):
    kind = PARTITION
    description = (
        "Cut a worker off the network: take its link down (its own network namespace, "
        "as root), later bring it up. Needs root; skipped with the reason otherwise."
    )

    def start(self, now: float) -> None:
        self.cluster.link(self.target, up=False)
        self.record(now, "link-down", length=self.fault.params.get("length"))

    def stop(self, now: float) -> None:
        self.cluster.link(self.target, up=True)
        self.record(now, "link-up")


NEMESES: dict[str, type[Nemesis]] = {
    cls.kind: cls for cls in (Kill, Pause, Slow, Corrupt, Partition, KillMaster)
}


def make(fault: Fault, cluster: Any, history: History, job_id: str | None = None) -> Nemesis:
    return NEMESES[fault.kind](fault, cluster, history, job_id)
