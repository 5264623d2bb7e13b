"""One map task in this process: what its record loop costs, path by path.

Runs ``Executor.run_map`` (read the split, call the mapper, group, combine,
partition, sort, write) on one split of a word-count corpus with several
mappers, and a one-process ``Counter`` loop over the same bytes as the
baseline. For each it prints the fastest CPU time of ``--repeat`` interleaved
rounds, the ratio to the baseline, and how many times the mapper was called
per record: every path must call it exactly once, and the script exits 1 if
one does not, or if a map task's output differs from the baseline's counts.

    python benchmarks/mapside.py                          # 8 MiB split
    python benchmarks/mapside.py --size 32MB --corpus /tmp/c32.txt
    python benchmarks/mapside.py --only ones,split,ones-tracked,split-tracked

``split`` is a split mapper (one ``Counter`` over the split, as wordcount.py's
``zmqmr-split``); the ``-tracked`` rows keep the record's position as a map
under skip_bad_records does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wordcount  # noqa: E402 - the corpus generator and the word-count functions

from zmqmr import layout, mapside, protocol, shuffle  # noqa: E402
from zmqmr.config import WorkerSettings  # noqa: E402

CALLS = [0]


def ones(key: Any, line: str) -> Any:
    CALLS[0] += 1
    for w in line.split():
        yield w, 1


def floats(key: Any, line: str) -> Any:
    CALLS[0] += 1
    for w in line.split():
        yield w, 1.0


def weight(line: str) -> int:
    return 2 if len(line) % 31 == 0 else 1


def switching(key: Any, line: str) -> Any:
    """(w, 1) for most lines, (w, 2) for a few: the C loop hands over midway."""
    CALLS[0] += 1
    n = weight(line)
    for w in line.split():
        yield w, n


def count_switching(path: str) -> Counter[str]:
    """What ``switching`` sums to, counted independently."""
    c: Counter[str] = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            for w in line.split():
                c[w] += weight(line)
    return c


def split_counter(records: Any) -> Any:
    """In-mapper combining: wordcount.py's split mapper, counting its records."""
    c: Counter[str] = Counter()
    for _, line in records:
        CALLS[0] += 1
        c.update(line.split())
    return c.items()


def total(word: str, values: Any) -> Any:
    return sum(values)


#: name -> (mapper, the C loop on?); ``split*`` are split mappers, ``*-tracked`` keep
#: the record's position as under skip_bad_records.
CONTENDERS: dict[str, tuple[Callable[..., Any], bool]] = {
    "ones": (ones, True),
    "ones-tracked": (ones, True),
    "split": (split_counter, True),
    "split-tracked": (split_counter, True),
    "ones-py": (ones, False),
    "floats": (floats, True),
    "switching": (switching, True),
}


def run_map(
    path: str, mapper: Callable[..., Any], c_loop: bool, work: str, name: str = ""
) -> Counter[str]:
    """One map task over the whole file with one reducer; returns its output's sums."""
    saved = mapside.speedups
    if not c_loop:
        mapside.speedups = None
    try:
        os.makedirs(layout.job_dir(work, "bench"), exist_ok=True)
        kind = "split_mapper" if name.startswith("split") else "mapper"
        fns = {kind: mapper, "reducer": total, "combiner": total, "partitioner": None}
        track = memoryview(bytearray(16)).cast("q") if name.endswith("-tracked") else None
        split = protocol.Split("text", path, 0, os.path.getsize(path))
        spec = protocol.TaskSpec("bench", 1, 1, None, True, 0, split=split)
        mapside.run_map(
            fns,
            "bench",
            0,
            0,
            spec,
            None,
            {},
            data_dir=work,
            settings=WorkerSettings(),
            progress=lambda fraction: None,
            track=track,
        )
    finally:
        mapside.speedups = saved
    got: Counter[str] = Counter()
    output = shuffle.local_segment(layout.map_output_path(work, "bench", 0, 0), 0)
    for key, values in output.groups():
        got[key] += int(sum(values))
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=wordcount.parse_size, default=8 * wordcount.MiB)
    p.add_argument("--corpus", help="corpus file: reused if it exists, else generated and kept")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS]
    if unknown:
        p.error(f"unknown contender(s) {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if "ones" in names and mapside.speedups is None:
        print("note: zmqmr._speedups is not built; 'ones' runs without the C loop")

    work = tempfile.mkdtemp(prefix="zmqmr-mapside-")
    try:
        path = args.corpus or os.path.join(work, "corpus.txt")
        if not os.path.exists(path):
            wordcount.generate(path, args.size, seed=1, pool_lines=1 << 16)
        lines = wordcount.count_lines(path)
        want = wordcount.count_serial(path)
        wants = {"switching": count_switching(path)}
        best: dict[str, float] = {}
        calls: dict[str, float] = {}
        wrong: list[str] = []
        for _ in range(args.repeat):
            t0 = time.process_time()
            wordcount.count_serial(path)
            best["serial"] = min(best.get("serial", 1e9), time.process_time() - t0)
            for name in names:
                mapper, c_loop = CONTENDERS[name]
                shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
                CALLS[0] = 0
                t0 = time.process_time()
                got = run_map(path, mapper, c_loop, os.path.join(work, "data"), name)
                best[name] = min(best.get(name, 1e9), time.process_time() - t0)
                calls[name] = CALLS[0] / lines
                if got != wants.get(name, want) and name not in wrong:
                    wrong.append(name)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"one split of {args.size / wordcount.MiB:.0f} MiB: {lines:,} lines, "
        f"{sum(want.values()):,} words, {len(want):,} distinct; fastest of {args.repeat}"
    )
    print(f"{'name':14s} {'cpu s':>7s} {'x serial':>8s} {'calls/record':>12s}")
    print(f"{'serial':14s} {best['serial']:7.2f} {1:8.2f} {'-':>12s}")
    for name in names:
        print(
            f"{name:14s} {best[name]:7.2f} {best[name] / best['serial']:8.2f} {calls[name]:12.2f}"
        )
    twice = [n for n in names if calls[n] != 1.0]
    if twice:
        print(f"FAILED: the mapper was not called once per record in {', '.join(twice)}")
    if wrong:
        print(f"FAILED: wrong counts from {', '.join(wrong)}")
    return 1 if twice or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
