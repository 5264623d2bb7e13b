"""Merging sorted runs in bounded memory: at most ``fanin`` streams at once.

A stream being merged holds one decoded block (see ``mapoutput.BLOCK_BYTES``),
so a merge of F streams holds F blocks, however large the runs. With more
runs than F, the smallest are merged into a new run on disk first (in passes,
as Hadoop's merger does: the first pass takes just enough runs that every
later one takes F), until F are left; the last merge feeds its caller
(the reducer, or a map task's output) without a run of its own.

Used by both sides: a reduce merges its fetched segments, a map task the
sorted runs it spilled. Imports: ``mapoutput``, ``shuffle``, ``userfn``, ``ordering``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from . import mapoutput, shuffle, userfn
from .ordering import ordered_parts

#: Each stream of a merge holds about this much (a block and its decoded
#: groups); the fan-in is what ``reduce_memory`` allows at this rate.
STREAM_MEMORY = 2 << 20
MIN_FANIN = 2
#: The counter of bytes an attempt wrote to its local disk besides its output:
#: a map's sorted runs, a reduce's segments fetched past reduce_memory, merge
#: passes. ``JobResult.stats["spilled_bytes"]`` is its total.
SPILLED = "zmqmr.spilled_bytes"


class Source(Protocol):
    @property
    def length(self) -> int: ...

    def blocks(self) -> Iterator[list[mapoutput.Group]]: ...


@dataclass(frozen=True, slots=True)
class FileSegment:
    """One segment of a file that holds several (a map task's spilled run)."""

    path: str
    offset: int
    length: int

    def blocks(self) -> Iterator[list[mapoutput.Group]]:
        return mapoutput.file_segment_blocks(self.path, self.offset, self.length)


def fanin_for(setting: int, memory: int) -> int:
    """The streams merged at once: the setting, fewer when ``memory`` is small."""
    return max(MIN_FANIN, min(setting, memory // STREAM_MEMORY))


def streams(sources: list[Any]) -> list[Iterator[list[mapoutput.Group]]]:
    """Each source's groups ready for ``userfn.merged``: a decoded part at a time."""
    return [ordered_parts(s.blocks()) for s in sources]


def merge_down(
    sources: list[Any], fanin: int, work_dir: str, prefix: str = "merge"
) -> tuple[list[Any], int]:
    """``sources`` merged down to at most ``fanin``, and the bytes the passes wrote.

    Runs next to each other are merged, so the sources' order is kept: a key's
    values reach the reducer in the order of the map tasks, as they would in
    one merge (and in ``run_serial``). A pass merges just enough runs to leave
    ``fanin``. The list given is emptied (so an in-memory segment is freed once
    merged); runs written here are removed once merged again.
    """
    fanin = max(MIN_FANIN, fanin)
    todo = list(sources)
    sources.clear()
    written = 0
    made: set[str] = set()
    n = 0
    while len(todo) > fanin:
        excess = len(todo) - fanin
        out: list[Any] = []
        i = 0
        while i < len(todo):
            take = min(fanin, excess + 1, len(todo) - i)
            if take < 2:
                out.append(todo[i])
                i += 1
                continue
            path = os.path.join(work_dir, f"{prefix}-{n}")
            n += 1
            batch = todo[i : i + take]
            length = mapoutput.write_run(path, userfn.merged(streams(batch)))
            for s in batch:
                if getattr(s, "path", None) in made:
                    os.remove(s.path)
                    made.discard(s.path)
                todo[i] = None  # freed now, not at the end of the pass
                i += 1
            del batch
            written += length
            made.add(path)
            out.append(shuffle.Fetched(length, path=path))
            excess -= take - 1
        todo = out
    return todo, written
