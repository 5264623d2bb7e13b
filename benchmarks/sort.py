#!/usr/bin/env python3
"""Sort three ways: zmqmr, one-process Python, and a multiprocessing.Pool.

    python benchmarks/sort.py                          # 256 MiB: 2.7 M records
    python benchmarks/sort.py --size 64MB --repeat 1 --only serial,zmqmr
    python benchmarks/sort.py --input /tmp/s.txt       # reuse it, or make it there and keep it

The input is ``--size`` bytes of seeded 100-byte records, one a line: a
10-character key and an 89-character value drawn from a 64-character ASCII
alphabet, then a newline (TeraSort's shape). Keys are distinct. Every
contender writes the records sorted by key as ``key<TAB>value`` lines, R
files whose concatenation is the whole sorted output:

* ``serial``: one process reads the file, ``list.sort()``s its lines, writes
  one file;
* ``pool``: ``multiprocessing.Pool(workers)``, MapReduce by hand: each map task
  sorts the lines of one line-aligned byte range of ``--split-size``, cuts the
  sorted list at the range partitioner's boundaries (bisect, no per-record
  partitioning) and writes R run files; each of R reduce tasks reads its
  partition's runs, sorts them together (timsort merges sorted runs) and
  writes its part file;
* ``zmqmr``: ``LocalCluster(workers=N)``, ``Job(mapper, reducer,
  partitioner=zmqmr.RangePartitioner(boundaries(R)), num_reducers=R,
  output_dir=...)`` with ``mapper(_, line) = ((line[:10], line[10:]),)`` and
  ``reducer(k, vs) = next(vs)``; timed from cluster start-up to the job's part
  files committed;
* ``zmqmr-fn`` (only when named in ``--only``): the same with the same ranges
  as a plain function, ``partitioner=range_partition``, which zmqmr calls once
  per record;
* ``dask`` and ``dask-df`` (only when named in ``--only``; they need
  ``pip install 'dask[distributed,dataframe]'``): a ``distributed.LocalCluster``
  of N worker processes with one thread each. ``dask`` is the Pool's MapReduce
  as ``dask.delayed`` tasks (a map returns its R sorted runs, ``nout=R``; the
  reduce of partition p sorts the runs Dask moved to it and writes its part
  file); ``dask-df`` is what a DataFrame user writes: ``dask.bag.read_text``,
  ``to_dataframe``, ``sort_values(npartitions=R)``, ``to_csv`` one file a
  partition.

Answers: the first output is checked in full (globally sorted, and the exact
multiset of the input's records: count and a sum of CRC-32s of every record);
every output must be byte-identical to it (SHA-256 of the concatenated part
files). The exit status is 1 otherwise. Memory and CPU are sampled over each
contender's process tree as in ``wordcount.py`` (its TreeSampler), and
``--repeat N`` interleaves N rounds and reports the fastest.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wordcount import (  # noqa: E402
    MiB,
    parse_size,
    print_roles,
    print_table,
    ratio_to,
    run_measured,
    zmqmr_default_split_size,
)

KINDS = ("serial", "pool", "zmqmr", "zmqmr-fn", "dask", "dask-df")
DEFAULT_KINDS = ("serial", "pool", "zmqmr")
RECORD = 100  # bytes per record, newline included
KEY = 10  # key characters
ALPHABET = "".join(sorted("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/"))
RANK = {c: i for i, c in enumerate(ALPHABET)}
TARGET_SERIAL = 1.2
TARGET_DASK = 0.4
TARGET_RSS_MB = 200


# -- the input ---------------------------------------------------------------------------


def generate(path: str, size: int, seed: int) -> None:
    """``size // 100`` records with distinct keys; the same seed gives the same file."""
    rng = random.Random(seed)
    table = bytes.maketrans(bytes(range(256)), (ALPHABET.encode() * 4))
    n = size // RECORD
    seen: set[bytes] = set()
    batch = 100_000
    with open(path, "wb") as f:
        while n > 0:
            k = min(batch, n)
            raw = rng.randbytes(k * (RECORD - 1)).translate(table)
            out = []
            for i in range(0, len(raw), RECORD - 1):
                rec = raw[i : i + RECORD - 1]
                while rec[:KEY] in seen:  # a repeated key: draw another (about 1 in 10^5 runs)
                    rec = rng.randbytes(KEY).translate(table) + rec[KEY:]
                seen.add(rec[:KEY])
                out.append(rec)
            f.write(b"\n".join(out) + b"\n")
            n -= k


# -- the sort, three ways ----------------------------------------------------------------


def range_partition(key: str, n: int) -> int:
    """Keys in ALPHABET order cut into ``n`` ranges by their first character."""
    return RANK[key[0]] * n // len(ALPHABET)


def boundaries(n: int) -> list[str]:
    """The first key character of partitions 1..n-1 under ``range_partition``."""
    size = len(ALPHABET)
    return [ALPHABET[-(-p * size // n)] for p in range(1, n)]


def formatted(lines: list[str]) -> str:
    return "".join([f"{line[:KEY]}\t{line[KEY:]}\n" for line in lines])


def read_lines(path: str, start: int = 0, end: int | None = None) -> list[str]:
    """The lines that start in ``[start, end)`` (the rule zmqmr's text splits follow)."""
    from wordcount import read_range

    data = read_range(path, start, os.path.getsize(path) if end is None else end)
    lines = data.decode("ascii").split("\n")
    lines.pop()  # after the last newline
    return lines


def run_serial(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    lines = read_lines(args.input)
    lines.sort()
    path = os.path.join(args.out_dir, "part-00000")
    with open(path, "w", encoding="ascii") as f:
        f.write(formatted(lines))
    return {"wall": time.perf_counter() - t0, "files": [path]}


def pool_map(task: tuple[str, int, int, int, int, str]) -> list[str]:
    """Sort one byte range's lines; write them as R runs, one per partition."""
    path, start, end, n, R, work = task
    lines = read_lines(path, start, end)
    lines.sort()
    cuts = [0, *(bisect.bisect_left(lines, b) for b in boundaries(R)), len(lines)]
    runs = []
    for p in range(R):
        run = os.path.join(work, f"run-{n}-{p}")
        with open(run, "w", encoding="ascii") as f:
            f.write("".join([line + "\n" for line in lines[cuts[p] : cuts[p + 1]]]))
        runs.append(run)
    return runs


def pool_reduce(task: tuple[list[str], str]) -> str:
    """Sort one partition's runs together (timsort merges them) into its part file."""
    runs, out = task
    lines: list[str] = []
    for run in runs:
        with open(run, encoding="ascii") as f:
            part = f.read().split("\n")
        part.pop()
        lines += part
        os.remove(run)
    lines.sort()
    with open(out, "w", encoding="ascii") as f:
        f.write(formatted(lines))
    return out


def run_pool(args: argparse.Namespace) -> dict[str, Any]:
    import multiprocessing

    from wordcount import line_ranges

    R = args.reducers
    t0 = time.perf_counter()
    pool = multiprocessing.Pool(args.workers)
    t1 = time.perf_counter()
    work = os.path.join(args.out_dir, "runs")
    os.makedirs(work)
    maps = [
        (path, start, end, n, R, work)
        for n, (path, start, end) in enumerate(line_ranges(args.input, args.split_size))
    ]
    runs = pool.map(pool_map, maps, chunksize=1)
    parts = [os.path.join(args.out_dir, f"part-{p:05d}") for p in range(R)]
    files = pool.map(pool_reduce, [([r[p] for r in runs], parts[p]) for p in range(R)], 1)
    t2 = time.perf_counter()
    pool.close()
    pool.join()
    os.rmdir(work)
    return {"wall": t2 - t0, "startup": t1 - t0, "shutdown": time.perf_counter() - t2,
            "tasks": len(maps) + R, "files": files}  # fmt: skip


def mapper(_: Any, line: str) -> Any:
    return ((line[:KEY], line[KEY:]),)


def reducer(_: Any, values: Any) -> Any:
    return next(values)  # keys are distinct: one value each


def run_zmqmr(args: argparse.Namespace) -> dict[str, Any]:
    import zmqmr

    partitioner: Any = zmqmr.RangePartitioner(boundaries(args.reducers))
    if args.child == "zmqmr-fn":
        partitioner = range_partition
    t0 = time.perf_counter()
    cluster = zmqmr.LocalCluster(workers=args.workers)
    cluster.start()
    try:
        t1 = time.perf_counter()
        job = zmqmr.Job(
            mapper=mapper,
            reducer=reducer,
            partitioner=partitioner,
            inputs=[args.input],
            num_reducers=args.reducers,
            split_size=args.split_size,
            output_dir=os.path.join(args.out_dir, "zmqmr"),
            name="sort",
        )
        client = cluster.client()
        handle = client.submit(job)
        result = handle.wait(progress=False)
        t2 = time.perf_counter()
        detail = client.job_info(handle.job_id) if args.timeline else None  # after the clock
    finally:
        cluster.close()
    return {"wall": t2 - t0, "startup": t1 - t0, "job": t2 - t1,
            "shutdown": time.perf_counter() - t2, "stats": result.stats,
            "files": sorted(result.output_files),
            "attempts": detail["attempts"] if detail else []}  # fmt: skip


def print_timeline(attempts: list[dict[str, Any]]) -> None:
    """``--timeline``: each attempt's run on its worker (seconds since the submit), and
    per worker the time its slot ran attempts, and the time it sat idle between its
    first attempt's start and the job's last attempt's end (the tail)."""
    ran = [a for a in attempts if a["end"] is not None]
    if not ran:
        return
    last = max(a["end"] for a in ran)
    by_worker: dict[str, list[dict[str, Any]]] = {}
    for a in sorted(ran, key=lambda a: (a["began"] if a["began"] is not None else a["start"])):
        by_worker.setdefault(a["worker"], []).append(a)
    names = {w: f"w{i}" for i, w in enumerate(sorted(by_worker))}
    print("      attempts (s since the submit: began - end; reduces: shuffle's end as the")
    print("      master heard of it, a heartbeat late at most):")
    for w, runs in sorted(by_worker.items()):
        cells = []
        for a in runs:
            began = a["began"] if a["began"] is not None else a["start"]
            shuffled = f" sh {a['shuffled']:.2f}" if a.get("shuffled") else ""
            cells.append(f"{a['kind'][0]}{a['task']} {began:.2f}-{a['end']:.2f}{shuffled}")
        busy = sum(a["end"] - (a["began"] if a["began"] is not None else a["start"]) for a in runs)
        print(f"        {names[w]}: busy {busy:.2f} s, idle {last - busy:.2f} s of {last:.2f}:")
        print("          " + ", ".join(cells))


def dask_map(task: tuple[str, int, int, int]) -> tuple[list[str], ...]:
    """Sort one byte range's lines; return them cut into R sorted runs."""
    path, start, end, R = task
    lines = read_lines(path, start, end)
    lines.sort()
    cuts = [0, *(bisect.bisect_left(lines, b) for b in boundaries(R)), len(lines)]
    return tuple(lines[cuts[p] : cuts[p + 1]] for p in range(R))


def dask_reduce(runs: list[list[str]], out: str) -> str:
    lines: list[str] = []
    for run in runs:
        lines += run
    lines.sort()
    with open(out, "w", encoding="ascii") as f:
        f.write(formatted(lines))
    return out


def dask_split(line: str) -> tuple[str, str]:
    return line[:KEY], line[KEY:].rstrip("\n")


def run_dask(args: argparse.Namespace) -> dict[str, Any]:
    import dask
    import dask.bag
    from distributed import Client, LocalCluster
    from wordcount import line_ranges

    R = args.reducers
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None)  # fmt: skip
    client = Client(cluster)
    t1 = time.perf_counter()
    try:
        if args.child == "dask":
            ranges = line_ranges(args.input, args.split_size)
            maps = [dask.delayed(dask_map, nout=R)((path, s, e, R)) for path, s, e in ranges]
            parts = [os.path.join(args.out_dir, f"part-{p:05d}") for p in range(R)]
            reduces = [dask.delayed(dask_reduce)([m[p] for m in maps], parts[p]) for p in range(R)]
            files = list(dask.compute(*reduces))
            tasks = len(maps) + R
        else:
            bag = dask.bag.read_text(args.input, blocksize=args.split_size).map(dask_split)
            df = bag.to_dataframe(columns=["key", "value"]).sort_values("key", npartitions=R)
            names = df.to_csv(os.path.join(args.out_dir, "part-*"), sep="\t", header=False,
                              index=False, name_function=lambda i: f"{i:05d}")  # fmt: skip
            files = sorted(names)
            tasks = df.npartitions
        t2 = time.perf_counter()
    finally:
        client.close()
        cluster.close()
    return {"wall": t2 - t0, "startup": t1 - t0, "shutdown": time.perf_counter() - t2,
            "tasks": tasks, "files": files}  # fmt: skip


# -- one task at a time, in process ------------------------------------------------------


def run_tasks(args: argparse.Namespace) -> int:
    """``--tasks N``: the first N map tasks and the R reduces of their outputs, run in
    this process with the executor's own code (``mapside.run_map``,
    ``ReduceSide.run_reduce``), each task's CPU seconds printed beside serial's
    read + sort + format of the same records; ``--profile`` adds cProfile's top
    functions of the first map and the first reduce. The reduces' part files
    must be serial's answer."""
    import cProfile
    import pstats

    import zmqmr
    from zmqmr import layout, mapside, outputreader, protocol, reduceside
    from zmqmr.config import DEFAULT_RESULT_LIMIT as limit
    from zmqmr.config import WorkerSettings

    R, n, split = args.reducers, args.tasks, args.split_size
    fn = args.partitioner == "fn"
    part: Any = range_partition if fn else zmqmr.RangePartitioner(boundaries(R))
    fns = {"mapper": mapper, "reducer": reducer, "combiner": None, "partitioner": part}
    work = tempfile.mkdtemp(prefix="zmqmr-sort-tasks-")
    address = "tcp://127.0.0.1:1"  # the reduces' own: every segment is read locally
    settings = WorkerSettings()

    def timed(label: str, profile: bool, call: Any, *call_args: Any, **kw: Any) -> Any:
        prof = cProfile.Profile(time.process_time) if profile else None
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        out = call(*call_args, **kw)
        if prof is not None:
            prof.disable()
        print(f"{label}: {time.process_time() - t0:.2f} CPU s")
        if prof is not None:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return out

    class NoConn:  # a reduce whose segments are all local sends nothing
        def send(self, msg: Any) -> None:
            raise AssertionError(msg)

        def recv(self) -> Any:
            raise AssertionError("recv")

    try:
        os.makedirs(layout.job_dir(work, "t"), exist_ok=True)
        out = os.path.join(work, "out")
        os.makedirs(os.path.join(out, "_temporary", "t"))
        end = min(os.path.getsize(args.input), n * split)
        reports = []
        for m in range(n):
            sp = protocol.Split("text", args.input, m * split, min(end, (m + 1) * split))
            spec = protocol.TaskSpec("t", R, n, None, False, 0, split=sp)
            where = {"data_dir": work, "settings": settings, "progress": lambda f: None}
            first = args.profile and m == 0
            run = mapside.run_map
            reports.append(timed(f"map {m}", first, run, fns, "t", m, 0, spec, None, {}, **where))
        reader = outputreader.OutputReader()
        conn: Any = NoConn()
        side = reduceside.ReduceSide(conn, work, address, settings, None, reader, lambda f: None)
        parts = []
        held: list[list[Any]] = [[] for _ in range(R)]  # per partition, the maps' segments
        for m, rep in enumerate(reports):
            for seg in rep.segments:
                held[seg.partition].append(protocol.Location(m, 0, address, seg.size, seg.groups))
        for r in range(R):
            # result_limit as a cluster's: a reduce encodes results only while they may fit
            spec = protocol.TaskSpec("t", R, n, out, False, limit, partition=r, locations=held[r])
            timed(f"reduce {r}", args.profile and r == 0, side.run_reduce, fns, "t", r, 0, spec, {})
            with open(layout.attempt_part_path(out, "t", r, 0), encoding="ascii") as f:
                parts.append(f.read())
        reader.forget()

        def serial() -> str:
            lines = read_lines(args.input, 0, end)
            lines.sort()
            return formatted(lines)

        want = timed(f"serial, the same {end / MiB:.0f} MiB", False, serial)
        ok = "".join(parts) == want
        print("answers: the part files are serial's" if ok else "WRONG: part files differ")
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


RUNNERS = {"serial": run_serial, "pool": run_pool, "zmqmr": run_zmqmr, "zmqmr-fn": run_zmqmr,
           "dask": run_dask, "dask-df": run_dask}  # fmt: skip


def child_main(args: argparse.Namespace) -> None:
    info = RUNNERS[args.child](args)
    info["maxrss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info["maxrss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with open(args.child_out, "wb") as f:
        pickle.dump(info, f, protocol=pickle.HIGHEST_PROTOCOL)


# -- checking the answers ----------------------------------------------------------------


def record_digest(lines: Any) -> tuple[int, int]:
    """(count, sum of CRC-32s): the same for any order of the same multiset of records."""
    n = total = 0
    for line in lines:
        n += 1
        total += zlib.crc32(line)
    return n, total


def input_digest(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        return record_digest(line[:KEY] + b"\t" + line[KEY:] for line in f)


def output_digest(files: list[str], full: bool) -> tuple[str, tuple[int, int] | None, str]:
    """SHA-256 of the concatenated files; with ``full``, the record digest and order check."""
    sha = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                sha.update(chunk)
    if not full:
        return sha.hexdigest(), None, ""
    problem = ""
    prev = b""

    def lines() -> Any:
        nonlocal prev, problem
        for path in files:
            with open(path, "rb") as f:
                for line in f:
                    if line < prev and not problem:
                        problem = f"out of order in {os.path.basename(path)}: {line[:KEY]!r}"
                    prev = line
                    yield line

    return sha.hexdigest(), record_digest(lines()), problem


# -- measuring ---------------------------------------------------------------------------


def measure(kind: str, args: argparse.Namespace, work: str, round_: int) -> dict[str, Any]:
    out = os.path.join(work, f"info-{kind}-{round_}.pkl")
    out_dir = os.path.join(work, f"out-{kind}-{round_}")
    os.makedirs(out_dir)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, "--child-out", out]
    cmd += ["--input", args.input, "--out-dir", out_dir, "--workers", str(args.workers)]
    cmd += ["--reducers", str(args.reducers), "--split-size", str(args.split_size)]
    if args.timeline:
        cmd.append("--timeline")
    r = run_measured(kind, cmd, out)
    r["out_dir"] = out_dir
    return r


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by = {r["kind"]: r for r in runs}

    print_table(runs, {k: "serial" for k in KINDS}, {k: "pool" for k in KINDS})
    if args.repeat > 1:
        print(f"(fastest of {args.repeat} interleaved runs; peak RSS: the largest of any run)")
        for r in runs:
            walls = ", ".join(f"{w:.2f}" for w in r["walls"])
            cpus = ", ".join(f"{c:.1f}" for c in r["cpus"])
            print(f"  {r['kind']} walls: {walls}; cpu s: {cpus}")
    print()
    print("wall: from the start of the work to the sorted files on disk, in the subprocess")
    print("      (zmqmr: LocalCluster start-up + job; pool: Pool() + map + reduce phases);")
    print("cpu:  user+system seconds of the whole process tree; RSS sampled every 50 ms.")
    for r in runs:
        info = r["info"]
        print_roles(r)
        if r["kind"].startswith("zmqmr"):
            st = info["stats"]
            print(
                f"      start-up {info['startup']:.2f} s, job {info['job']:.2f} s "
                f"(maps {st.get('maps')}: {st.get('map_seconds', 0):.2f} s, "
                f"reduces {st.get('reduces')}: {st.get('reduce_seconds', 0):.2f} s, "
                f"shuffle {st.get('shuffle_bytes', 0) / MiB:.1f} MiB, "
                f"re-executions {st.get('reexecutions', 0)})"
            )
            print_timeline(info.get("attempts", []))
    print()
    if "zmqmr" in by and "serial" in by:
        r = float(ratio_to(by, "zmqmr", {"zmqmr": "serial"}))
        verdict = "MET" if r <= TARGET_SERIAL else "MISSED"
        print(f"zmqmr / serial = {r:.2f}   (target <= {TARGET_SERIAL}: {verdict})")
    if "zmqmr" in by and "pool" in by:
        print(f"zmqmr / pool   = {ratio_to(by, 'zmqmr', {'zmqmr': 'pool'})}")
    for dask in ("dask", "dask-df"):
        if "zmqmr" in by and dask in by:
            r = float(ratio_to(by, "zmqmr", {"zmqmr": dask}))
            verdict = "MET" if r <= TARGET_DASK else "MISSED"
            print(f"zmqmr / {dask} = {r:.2f}   (target <= {TARGET_DASK}: {verdict})")
    if "zmqmr" in by:
        peak = by["zmqmr"]["peak_max_mb"]
        verdict = "MET" if peak <= TARGET_RSS_MB else "MISSED"
        print(
            f"zmqmr max RSS of any process = {peak:.0f} MB   (target <= {TARGET_RSS_MB}: {verdict})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=256 * MiB, help="input size (256MB)")
    p.add_argument("--seed", type=int, default=1, help="input seed (default 1)")
    p.add_argument("--workers", type=int, default=2, help="zmqmr workers / pool processes")
    p.add_argument("--reducers", type=int, default=4, help="partitions R (default 4)")
    p.add_argument("--split-size", type=parse_size, default=None, help="zmqmr split, pool chunk")
    p.add_argument("--input", help="input file: reused if it exists, else generated and kept")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--only", default=",".join(DEFAULT_KINDS), help="contenders, in this order")
    p.add_argument("--timeline", action="store_true",
                   help="zmqmr rows: each attempt's run and each worker's idle time")  # fmt: skip
    p.add_argument("--tasks", type=int, help="N map tasks and R reduces in process, no cluster")
    p.add_argument("--partitioner", choices=("range", "fn"), default="range",
                   help="with --tasks: RangePartitioner, or its ranges as a function")  # fmt: skip
    p.add_argument("--profile", action="store_true", help="--tasks: cProfile a map and a reduce")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    p.add_argument("--generate", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(args)
        return 0
    if args.generate:
        generate(args.generate, args.size, args.seed)
        return 0
    if args.split_size is None:
        args.split_size = zmqmr_default_split_size()
    if args.tasks:
        if not (args.input and os.path.exists(args.input)):
            p.error("--tasks needs an --input that exists")
        return run_tasks(args)
    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        p.error(f"--only takes a comma-separated subset of {','.join(KINDS)}")

    work = tempfile.mkdtemp(prefix="zmqmr-sort-")
    try:
        if not (args.input and os.path.exists(args.input)):
            path = os.path.abspath(args.input or os.path.join(work, "input.txt"))
            t0 = time.perf_counter()
            gen = [sys.executable, os.path.abspath(__file__), "--generate", path]
            subprocess.run([*gen, "--size", str(args.size), "--seed", str(args.seed)], check=True)
            print(f"input: generated {path} in {time.perf_counter() - t0:.1f} s")
            args.input = path
        args.input = os.path.abspath(args.input)
        size = os.path.getsize(args.input)
        print(
            f"input: {size / MiB:.1f} MiB, {size // RECORD:,} records of {RECORD} bytes; "
            f"{args.workers} workers, R = {args.reducers}, split/chunk "
            f"{args.split_size / MiB:g} MiB; {os.cpu_count()} CPUs; load average "
            f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python {sys.version.split()[0]}"
        )
        expected = input_digest(args.input)
        reference: str | None = None
        ok = True
        every: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for round_ in range(args.repeat):
            for kind in kinds:
                print(f"running {kind} ...", flush=True)
                r = measure(kind, args, work, round_)
                sha, digest, problem = output_digest(r["info"]["files"], reference is None)
                shutil.rmtree(r["out_dir"], ignore_errors=True)
                if reference is None:
                    if problem or digest != expected:
                        ok = False
                        print(f"  WRONG: {kind}: {problem or 'not the input records'}")
                    reference = sha
                elif sha != reference:
                    ok = False
                    print(f"  MISMATCH: {kind}'s output differs from the first run's")
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                print(f"  {kind}: {r['info']['wall']:.2f} s (load average after: {load})")
                every[kind].append(r)
        if ok:
            n = sum(len(v) for v in every.values())
            print(
                f"answers: all {n} runs agree, sorted, the input's {expected[0]:,} records exactly"
            )
        runs = []
        for kind in kinds:
            best = dict(min(every[kind], key=lambda r: r["info"]["wall"]))
            best["walls"] = [r["info"]["wall"] for r in every[kind]]
            best["cpus"] = [r["cpu"] for r in every[kind]]
            best["peak_max_mb"] = max(r["peak_max_mb"] for r in every[kind])
            best["peak_sum_mb"] = max(r["peak_sum_mb"] for r in every[kind])
            runs.append(best)
        report(runs, args)
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a generated --input outside it is kept


if __name__ == "__main__":
    sys.exit(main())
