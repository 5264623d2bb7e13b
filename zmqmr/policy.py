"""The master's small decisions, as pure functions and the structures that keep them cheap.

``MasterState`` (state.py) owns the tables and the rules, and ``scheduling.py``
places and backs up attempts with what is here; each decides one thing, with
its constants in ``ClusterSettings``:

* ``LoadIndex``: which worker gets the next attempt. Attempts go to the worker
  that runs the fewest, so a worker that claims many slots gets no more than
  its share; a worker may hold queued attempts beyond its slots only while the
  job has more idle tasks than the cluster has free slots (small tasks then
  never wait a round trip; big ones never queue behind one another near the
  end of a phase): ``prefetch`` per slot, or ``small_task_prefetch`` once the
  phase is known to be small: enough finished, their median under
  ``small_task_seconds``, none seen long (``queue_depth``, ``is_long``).
* ``straggler``: whether a running attempt deserves a backup, and why (LATE's
  estimate from progress; a worker silent while its peers progress).
* ``RunningMedian``: the typical task time of a phase, in O(log n) a task.

Imports: the standard library only.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import ClusterSettings


class Placeable(Protocol):
    @property
    def id(self) -> bytes: ...
    @property
    def slots(self) -> int: ...
    @property
    def load(self) -> int: ...


class LoadIndex:
    """Workers with room for another attempt, least loaded first.

    A heap of ``(level, load, seq, id, version)``, where ``level`` is 0 for a
    worker with a free slot, else 1 + how many whole queued attempts per slot it
    holds (1: fewer than one per slot), so a pick for queues of up to ``queue``
    per slot takes levels up to ``queue``; an entry is stale once its
    worker's version moved on (``update`` pushes a fresh one), and stale
    entries are dropped as they surface, so every change costs O(log n).
    ``prefetch``: the deepest queue, in attempts per slot, any pick may ask for.
    """

    def __init__(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self._heap: list[tuple[int, int, int, bytes, int]] = []
        self._version: dict[bytes, int] = {}
        self._workers: dict[bytes, Placeable] = {}
        self._seq = itertools.count()

    def capacity(self, w: Placeable) -> int:
        return w.slots * (1 + self.prefetch)

    def update(self, w: Placeable) -> None:
        """``w`` joined, or its load changed."""
        wid, load, slots = w.id, w.load, w.slots
        version = self._version.get(wid, 0) + 1
        self._version[wid] = version
        self._workers[wid] = w
        if load < slots * (1 + self.prefetch):  # below its capacity
            level = 0 if load < slots else (load - slots) // slots + 1
            heapq.heappush(self._heap, (level, load, next(self._seq), wid, version))
            if len(self._heap) > 4 * len(self._workers) + 64:
                self._compact()

    def remove(self, worker: bytes) -> None:
        # The version moves on rather than going: a worker registering again with the
        # same identity must not find its old entries valid.
        self._version[worker] = self._version.get(worker, 0) + 1
        self._workers.pop(worker, None)

    def _compact(self) -> None:
        self._version = {w: v for w, v in self._version.items() if w in self._workers}
        self._heap = [e for e in self._heap if self._version.get(e[3]) == e[4]]
        heapq.heapify(self._heap)

    def pick(self, ok: Callable[[Placeable], bool] | None, queue: int) -> Placeable | None:
        """The least loaded worker that ``ok`` accepts (None: any): one with a free
        slot, or one holding fewer than ``queue`` queued attempts per slot (0: none;
        the shallowest queues first). Costs O(log n) plus the workers ``ok`` refuses."""
        heap = self._heap
        refused = []
        found = None
        while heap:
            entry = heap[0]
            level, _, _, wid, version = entry
            if self._version.get(wid) != version or wid not in self._workers:
                heapq.heappop(heap)
                continue
            if level > queue:  # and so is every entry below it
                break
            w = self._workers[wid]
            if ok is None or ok(w):
                found = w
                break
            refused.append(heapq.heappop(heap))
        for entry in refused:
            heapq.heappush(heap, entry)
        return found


class RunningMedian:
    """The median of a growing list of numbers: two heaps, O(log n) an insert."""

    def __init__(self) -> None:
        self._low: list[float] = []  # max-heap (negated): the smaller half
        self._high: list[float] = []  # min-heap: the larger half
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def add(self, x: float) -> None:
        low, high = self._low, self._high
        self._n += 1
        if low and x > -low[0]:  # the larger half, which may hold one more than the smaller
            if len(high) < len(low):
                heapq.heappush(high, x)
            else:
                heapq.heappush(low, -heapq.heappushpop(high, x))
        elif len(low) > len(high):  # the smaller half, which must then give one up
            heapq.heappush(high, -heapq.heappushpop(low, -x))
        else:
            heapq.heappush(low, -x)

    def median(self) -> float | None:
        if not self._low:
            return None
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2


#: Attempts of a phase that must have finished before its median may call it small.
SMALL_PHASE_MIN_FINISHED = 8
#: An attempt this many times ``small_task_seconds`` or longer (finished, or still
#: running on the master's clock) makes its phase not small for good: one long task
#: behind which queued ones would wait is enough.
LONG_TASK_FACTOR = 10.0


def is_long(seconds: float, settings: ClusterSettings) -> bool:
    """Whether an attempt that took (or has run for) ``seconds`` ends small-task queueing
    in its phase."""
    return seconds >= LONG_TASK_FACTOR * settings.small_task_seconds


def max_queue_depth(settings: ClusterSettings) -> int:
    """The most queued attempts per slot any phase may get (0: no queueing)."""
    return settings.prefetch and max(settings.prefetch, settings.small_task_prefetch)


def queue_depth(settings: ClusterSettings, run_seconds: RunningMedian, long_seen: bool) -> int:
    """Queued attempts per slot a worker may hold for a phase: ``small_task_prefetch``
    while its tasks are small (a round trip to the master would cost about as much as
    the task, and one message then carries several), else ``prefetch``; never any when
    ``prefetch`` is 0. Small: at least ``SMALL_PHASE_MIN_FINISHED`` attempts finished,
    their median time on the workers (``run_seconds``) under ``small_task_seconds``,
    and no attempt of the phase seen long (``long_seen``, ``is_long``): fast tasks
    finish first, so a median alone would queue slow ones behind each other."""
    if settings.prefetch == 0:
        return 0
    if long_seen or len(run_seconds) < SMALL_PHASE_MIN_FINISHED:
        return settings.prefetch
    typical = run_seconds.median()
    if typical is not None and typical < settings.small_task_seconds:
        return max_queue_depth(settings)
    return settings.prefetch


def straggler(
    *,
    now: float,
    start: float,
    progress: float,
    quiet_since: float,
    typical: float | None,
    stall_seconds: float,
    min_seconds: float,
    quiet_factor: float = 3.0,
    late_factor: float = 2.0,
) -> str | None:
    """Why a running attempt (the only one of its task) should get a backup, or None.

    ``typical`` is the phase's typical task time (the median of finished ones,
    or an estimate from the progress of running ones); ``quiet_since`` is when
    the attempt, or its worker, last showed any progress, and ``start`` when its
    worker began it (an attempt still queued on its worker is never asked).

    * Quiet: no progress for ``quiet_factor`` typical times (and ``stall_seconds``).
      This also catches a worker that reports progress it does not make: once
      its claims stop moving, it is quiet.
    * LATE (Zaharia et al.): past the typical time, its progress rate says it
      needs more than ``late_factor`` typical times to finish.
    """
    if typical is None:
        return None
    elapsed = now - start
    if elapsed < max(typical, min_seconds):
        return None
    quiet = now - quiet_since
    if quiet > max(quiet_factor * typical, stall_seconds):
        return f"no progress for {quiet:.1f}s; a typical task takes {typical:.1f}s"
    if progress > 0:
        left = (1.0 - progress) * elapsed / progress
        if left > late_factor * typical:
            return (
                f"at {progress:.0%} after {elapsed:.1f}s it needs about {left:.1f}s more; "
                f"a typical task takes {typical:.1f}s"
            )
    return None
