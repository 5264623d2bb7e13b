"""The master's small decisions: LoadIndex (who gets the next attempt), RunningMedian
(the typical task time) and straggler (who deserves a backup), without a MasterState."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

import pytest

from zmqmr.config import ClusterSettings
from zmqmr.policy import (
    SMALL_PHASE_MIN_FINISHED,
    LoadIndex,
    RunningMedian,
    queue_depth,
    straggler,
)


@dataclass
class W:
    """A worker as LoadIndex sees it."""

    id: bytes
    slots: int
    load: int = 0


def anyone(w: object) -> bool:
    return True


def loaded(index: LoadIndex, w: W, load: int) -> None:
    w.load = load
    index.update(w)


# -- LoadIndex ---------------------------------------------------------------------------


def test_pick_takes_the_least_loaded_worker_and_the_earliest_updated_on_ties():
    index = LoadIndex(prefetch=0)
    a, b, c = W(b"a", 4, 2), W(b"b", 4, 1), W(b"c", 4, 1)
    for w in (a, b, c):
        index.update(w)
    assert index.pick(anyone, queue=False) is b
    loaded(index, b, 2)
    assert index.pick(anyone, queue=False) is c
    loaded(index, c, 3)
    assert index.pick(anyone, queue=False) is a  # a and b at 2: a was updated first


def test_a_worker_claiming_many_slots_gets_no_more_than_its_share():
    index = LoadIndex(prefetch=0)
    big, small = W(b"big", 64), W(b"small", 2)
    index.update(big)
    index.update(small)
    placed = []
    for _ in range(6):
        w = index.pick(anyone, queue=False)
        assert w is not None
        placed.append(w.id)
        loaded(index, w, w.load + 1)
    assert placed == [b"big", b"small", b"big", b"small", b"big", b"big"]


def test_a_full_worker_is_picked_only_for_its_queue_and_only_with_prefetch():
    w = W(b"a", 2, 2)
    without = LoadIndex(prefetch=0)
    without.update(w)
    assert without.pick(anyone, queue=False) is None
    assert without.pick(anyone, queue=True) is None
    with_queue = LoadIndex(prefetch=1)
    with_queue.update(w)
    assert with_queue.capacity(w) == 4
    assert with_queue.pick(anyone, queue=False) is None
    assert with_queue.pick(anyone, queue=True) is w
    loaded(with_queue, w, 4)  # its queue is full too
    assert with_queue.pick(anyone, queue=True) is None


def test_a_free_slot_is_preferred_to_a_queue_place_however_loaded():
    index = LoadIndex(prefetch=1)
    busy_but_free = W(b"big", 8, 7)
    full = W(b"small", 1, 1)
    index.update(full)
    index.update(busy_but_free)
    assert index.pick(anyone, queue=True) is busy_but_free


def test_a_deeper_queue_is_taken_level_by_level_and_a_pick_too_shallow_stops_at_once():
    index = LoadIndex(prefetch=3)
    one = W(b"one", 1, 1)  # its slot busy, nothing queued: level 1
    two = W(b"two", 2, 3)  # two slots, one queued (under one per slot): level 1, more load
    deep = W(b"deep", 1, 2)  # one queued per slot: level 2
    for w in (deep, two, one):
        index.update(w)
    assert index.pick(anyone, queue=1) is one
    assert index.pick(lambda w: w is not one, queue=1) is two  # by load within a level
    assert index.pick(lambda w: w is deep, queue=1) is None
    assert index.pick(lambda w: w is deep, queue=2) is deep
    # every worker queued beyond what a pick asks for: it looks at one entry, not all
    full = LoadIndex(prefetch=3)
    workers = [W(b"w%d" % i, 1, 2) for i in range(1000)]
    for w in workers:
        full.update(w)
    looked = []
    assert full.pick(lambda w: looked.append(w) or True, queue=0) is None
    assert looked == []
    assert full.pick(lambda w: looked.append(w) or True, queue=1) is None
    assert looked == []  # level 2 > 1 at the top: stopped before asking anyone
    assert full.pick(lambda w: looked.append(w) or True, queue=2) is workers[0]
    assert looked == [workers[0]]


def test_queue_depth_is_deeper_for_small_tasks_and_none_without_prefetch():
    def depth(prefetch: int, small: int, times: list[float], long_seen: bool = False) -> int:
        settings = ClusterSettings(
            prefetch=prefetch, small_task_prefetch=small, small_task_seconds=0.05
        )
        finished = RunningMedian()
        for t in times:
            finished.add(t)
        return queue_depth(settings, finished, long_seen)

    eight_small = [0.01] * SMALL_PHASE_MIN_FINISHED
    assert depth(1, 4, []) == 1  # nothing finished: not known small
    assert depth(1, 4, eight_small[1:]) == 1  # too few finished to tell
    assert depth(1, 4, eight_small) == 4
    assert depth(1, 4, eight_small, long_seen=True) == 1  # one long attempt was seen
    assert depth(1, 4, [0.05] * SMALL_PHASE_MIN_FINISHED) == 1
    assert depth(2, 1, eight_small) == 2  # never shallower than prefetch
    assert depth(0, 4, eight_small) == 0  # prefetch 0: never queue


def test_workers_refused_by_ok_stay_in_the_index():
    index = LoadIndex(prefetch=0)
    a, b = W(b"a", 1), W(b"b", 1, 0)
    index.update(a)
    index.update(b)
    assert index.pick(lambda w: w.id != b"a", queue=False) is b
    assert index.pick(lambda w: False, queue=False) is None
    assert index.pick(anyone, queue=False) is a


def test_a_stale_entry_is_not_picked_and_a_removed_worker_never_is():
    index = LoadIndex(prefetch=0)
    a, b = W(b"a", 1), W(b"b", 2, 1)
    index.update(a)
    index.update(b)
    loaded(index, a, 1)  # a's earlier entry (load 0) is stale now, and a is full
    assert index.pick(anyone, queue=False) is b
    index.remove(b"b")
    assert index.pick(anyone, queue=False) is None
    loaded(index, a, 0)
    assert index.pick(anyone, queue=False) is a


def test_the_heap_stays_small_however_often_loads_change():
    index = LoadIndex(prefetch=1)
    workers = [W(bytes([i]), 4) for i in range(10)]
    rng = random.Random(7)
    for _ in range(10_000):
        loaded(index, rng.choice(workers), rng.randrange(0, 8))
    assert len(index._heap) <= 4 * len(workers) + 64
    best = index.pick(anyone, queue=True)
    assert best is not None
    # the pick agrees with the workers' true loads: a free slot first, then the least load
    with_room = [w for w in workers if w.load < index.capacity(w)]
    key = min((w.load >= w.slots, w.load) for w in with_room)
    assert (best.load >= best.slots, best.load) == key


# -- RunningMedian -----------------------------------------------------------------------


def test_running_median_of_nothing_is_none():
    m = RunningMedian()
    assert len(m) == 0 and m.median() is None


@pytest.mark.parametrize(("xs", "median"), [([3.0], 3.0), ([5.0, 1.0], 3.0), ([9, 1, 5], 5)])
def test_running_median_of_a_few_numbers(xs, median):
    m = RunningMedian()
    for x in xs:
        m.add(x)
    assert len(m) == len(xs) and m.median() == median


def test_running_median_agrees_with_statistics_after_every_insert():
    rng = random.Random(11)
    m = RunningMedian()
    xs: list[float] = []
    for _ in range(500):
        x = rng.choice([rng.random() * 100, 1.0, 50.0])  # repeats too
        xs.append(x)
        m.add(x)
        assert m.median() == pytest.approx(statistics.median(xs))


# -- straggler ---------------------------------------------------------------------------


def late(**kw: float | None) -> str | None:
    args: dict[str, float | None] = dict(
        now=20.0,
        start=0.0,
        progress=0.5,
        quiet_since=19.0,
        typical=10.0,
        stall_seconds=5.0,
        min_seconds=2.0,
    )
    args.update(kw)
    return straggler(**args)  # type: ignore[arg-type]


def test_no_backup_without_a_typical_time():
    assert late(typical=None, progress=0.01, quiet_since=0.0) is None


def test_no_backup_before_the_typical_time_or_the_minimum():
    assert late(now=9.0, progress=0.01, quiet_since=0.0) is None  # 9 s < typical 10 s
    assert late(now=1.5, typical=0.5, progress=0.01, quiet_since=0.0) is None  # < min 2 s


def test_an_attempt_on_pace_gets_no_backup():
    assert late(progress=0.5) is None  # 20 s more, at most twice the typical 10 s


def test_late_an_attempt_whose_rate_says_it_needs_more_than_twice_typical():
    why = late(progress=0.4)  # 30 s more
    assert why is not None and "at 40% after 20.0s" in why and "30.0s more" in why


def test_quiet_an_attempt_without_progress_for_three_typical_times():
    assert late(now=31.0, progress=0.9, quiet_since=0.5) is not None  # quiet 30.5 > 30
    assert late(now=30.0, progress=0.9, quiet_since=0.5) is None  # quiet 29.5
    why = late(now=31.0, progress=0.0, quiet_since=0.5)
    assert why is not None and why.startswith("no progress for 30.5s")


def test_quiet_waits_for_stall_seconds_when_tasks_are_short():
    # typical 1 s: three typical times are 3 s, but stall_seconds is 5 s
    assert late(now=4.5, typical=1.0, progress=0.0, quiet_since=0.0) is None
    assert late(now=5.5, typical=1.0, progress=0.0, quiet_since=0.0) is not None


def test_a_worker_removed_and_registered_again_under_its_identity_starts_afresh():
    index = LoadIndex(prefetch=0)
    old = W(b"a", slots=1)
    index.update(old)  # an entry that says: room for one
    index.remove(b"a")
    new = W(b"a", slots=1)
    loaded(index, new, 1)  # the new incarnation is full
    assert index.pick(anyone, queue=False) is None  # the old entry must not count
    loaded(index, new, 0)
    assert index.pick(anyone, queue=False) is new
