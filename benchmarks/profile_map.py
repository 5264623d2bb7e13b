#!/usr/bin/env python3
"""Where a zmqmr map task's time goes, for the word count of benchmarks/wordcount.py.

    python benchmarks/profile_map.py --corpus /tmp/c.txt            # first split
    python benchmarks/profile_map.py --size 16MB --profile 25       # generate, cProfile

Runs ``Executor.run_map`` on one text split in this process (a fake pipe to
the worker, a temporary data dir), times it against the serial count of the
same split, times each stage on its own, and times some rewritten versions of
the map loop (prototypes of possible changes to zmqmr/executor.py and
zmqmr/inputs.py; zmqmr itself is not modified). Every prototype's answer is
checked against the serial count.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pickle
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wordcount  # noqa: E402 - the same mapper, reducer and corpus as the benchmark

from zmqmr import shuffle, userfn  # noqa: E402
from zmqmr.config import DEFAULT_SPLIT_SIZE, WorkerSettings  # noqa: E402
from zmqmr.executor import Executor  # noqa: E402
from zmqmr.inputs import open_split  # noqa: E402

mapper = wordcount.mapper
reducer = wordcount.reducer


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# -- prototypes ------------------------------------------------------------------------


def loop_floor(records: list[Any]) -> dict[Any, list[Any]]:
    """The least a per-pair executor can do: group every pair, no checks, no combine."""
    buf: defaultdict[Any, list[Any]] = defaultdict(list)
    for key, value in records:
        for k, v in mapper(key, value):
            buf[k].append(v)
    return buf


def loop_current_no_combine(records: list[Any]) -> dict[Any, list[Any]]:
    """The executor's per-pair loop as it is, without the combine and spill checks."""
    buf: dict[Any, list[Any]] = {}
    get = buf.get
    for key, value in records:
        out = mapper(key, value)
        if out is None:
            continue
        for pair in out:
            if type(pair) is not tuple:
                if not isinstance(pair, list):
                    raise userfn.bad_pair("mapper", pair)
                pair = tuple(pair)
            try:
                k, v = pair
            except ValueError:
                raise userfn.bad_pair("mapper", pair) from None
            try:
                lst = get(k)
            except TypeError:
                raise
            if lst is None:
                buf[k] = [v]
            else:
                lst.append(v)
    return buf


def drain_only(records: list[Any]) -> int:
    """Only the user's mapper: the floor for any per-pair framework."""
    n = 0
    for key, value in records:
        for _ in mapper(key, value):
            n += 1
    return n


def loop_batched(
    records: list[Any], combiner: Any, batch: int = 512, every: int = 1_000_000
) -> dict[Any, list[Any]]:
    """Proposed fast path: the per-pair work done by C-level iterators.

    Per batch of records: create the mapper's outputs with ``starmap``, flatten
    them with ``chain.from_iterable``, check every pair is a 2-tuple with two
    C-level passes (``map(type)``, ``map(len)``), and group with
    ``map(list.append, map(defaultdict.__getitem__, keys), values)``. Any
    surprise (a None or dict output, a list pair, an exception) sends the batch
    to the existing per-pair loop, which keeps every check and error message;
    an exception only ever fails the attempt, so the half-updated buffer does
    not matter and the slow loop is rerun on a scratch buffer to find the record.
    """
    from collections import defaultdict, deque
    from itertools import chain, starmap
    from operator import itemgetter
    from types import GeneratorType

    ok_outputs = {GeneratorType, list, tuple}
    buf: defaultdict[Any, list[Any]] = defaultdict(list)
    getitem = buf.__getitem__
    append = list.append
    first, second = itemgetter(0), itemgetter(1)
    since = 0
    for i0 in range(0, len(records), batch):
        chunk = records[i0 : i0 + batch]
        outs = list(starmap(mapper, chunk))
        if not set(map(type, outs)) <= ok_outputs:
            raise NotImplementedError("slow path for this batch")
        pairs = list(chain.from_iterable(outs))
        if set(map(type, pairs)) - {tuple} or set(map(len, pairs)) - {2}:
            raise NotImplementedError("slow path for this batch")
        deque(map(append, map(getitem, map(first, pairs)), map(second, pairs)), maxlen=0)
        since += len(pairs)
        if since >= every and since >= len(buf):
            for k, lst in buf.items():
                if len(lst) > 1:
                    buf[k] = [combiner(k, iter(lst))]
            since = 0
    return buf


def loop_current_combine(
    records: list[Any], combiner: Any, combine_at: int = 100_000
) -> tuple[dict[Any, list[Any]], int]:
    """The current loop's combine trigger alone, to count how often it fires."""
    buf: dict[Any, list[Any]] = {}
    get = buf.get
    pairs = kept = base = 0
    combines = 0
    for i, (key, value) in enumerate(records):
        for k, v in mapper(key, value):
            lst = get(k)
            if lst is None:
                buf[k] = [v]
            else:
                lst.append(v)
            pairs += 1
        if i & 511 == 0 and kept + pairs - base >= combine_at:
            kept = Executor._combine(buf, combiner)
            combines += 1
            base = pairs
    return buf, combines


def finish(buf: dict[Any, list[Any]], combiner: Any) -> dict[Any, Any]:
    out = {}
    for k, lst in buf.items():
        out[k] = combiner(k, iter(lst)) if len(lst) > 1 else lst[0]
    return out


# -- a whole proposed run_map -------------------------------------------------------------


def iter_text_split(path: str, start: int, end: int) -> Any:
    """Like inputs.read_text_split, but a generator: no list of every record."""
    from zmqmr.inputs import _read_range

    pos, data = _read_range(path, start, end)
    if not data:
        return
    if data.isascii():
        text = data.decode("ascii")
        find = text.find
        i, n = 0, len(text)
        while i < n:
            j = find("\n", i)
            if j < 0:
                j = n
            yield (path, pos + i), text[i:j]
            i = j + 1
        return
    for raw in data.split(b"\n")[: -1 if data.endswith(b"\n") else None]:
        yield (path, pos), raw.decode("utf-8", "surrogateescape")
        pos += len(raw) + 1


def fast_partitioner(partitioner: Any, R: int) -> Callable[[Any], int]:
    """userfn.checked_partitioner with a str fast path for the default partitioner."""
    import zlib

    slow = userfn.checked_partitioner(partitioner, R)
    if partitioner is not None or R == 1:
        return slow

    def part(key: Any) -> int:
        if type(key) is str:
            return zlib.crc32(key.encode("utf-8", "surrogatepass")) % R
        return slow(key)

    return part


class ProposedExecutor(Executor):
    """Executor.run_map with the changes proposed in benchmarks/README.md:

    1. text splits are streamed (``iter_text_split``), not materialised;
    2. the cyclic GC is paused during the record loop (the loop allocates a list
       per new key and nothing cyclic, so generation-0 collections only rescan
       the buffer again and again); it is re-enabled, and collects, afterwards;
    3. the combine is amortised: it runs when the values added since the last
       one reach max(combine_records, len(buf)), so a pass over the buffer costs
       O(1) per pair whatever the number of distinct keys (today it runs every
       combine_records - len(buf) pairs, and on every 512th record once
       len(buf) >= combine_records);
    4. the default partitioner has a ``str`` fast path;
    5. the buffer is a ``defaultdict(list)``: one lookup per pair
       (``buf[k].append(v)``) instead of ``get`` and a branch.
    The checks and error messages of the loop are unchanged.
    """

    gc_mode = "disable"  # or "none"

    def run_map(  # type: ignore[override]
        self,
        fns: dict[str, Any],
        job_id: str,
        task: int,
        attempt: int,
        spec: dict[str, Any],
        records_blob: bytes | None,
        counters: dict[str, int],
    ) -> dict[str, Any]:
        import gc

        from zmqmr.executor import RecordFailed

        desc = spec["split"]
        if desc.get("kind") == "text":
            start, end = int(desc["start"]), int(desc["end"])
            records: Any = iter_text_split(desc["path"], start, end)
            span = max(1, end - start)
        else:
            records = open_split(desc, records_blob)
            start, span = 0, max(1, len(records))
        text = desc.get("kind") == "text"
        skip = set(spec.get("skip") or ())
        R = spec["num_reducers"]
        mapper = fns["mapper"]
        combiner = fns["combiner"]
        part = fast_partitioner(fns["partitioner"], R)
        stem = os.path.join(shuffle.job_dir(self.data_dir, job_id), f"m{task:05d}-a{attempt}")
        spill_dir = stem + ".spills"
        spills: list[tuple[str, list[shuffle.Segment]]] = []
        buf: defaultdict[Any, list[Any]] = defaultdict(list)
        pairs = 0  # pairs the mapper emitted
        base = 0  # pairs at the last combine or spill
        held = 0  # values in buf after the last combine or spill
        combine_at = self.settings.combine_records
        spill_at = self.settings.spill_records
        i = -1
        gc_was = gc.isenabled()
        if self.gc_mode == "disable":
            gc.disable()
        try:
            for i, (key, value) in enumerate(records):
                if skip and i in skip:
                    counters["zmqmr.skipped_records"] = counters.get("zmqmr.skipped_records", 0) + 1
                    continue
                out = mapper(key, value)
                if out is None:
                    continue
                if type(out) is dict:
                    out = out.items()
                elif isinstance(out, (str, bytes)):
                    raise TypeError(
                        f"mapper returned a {type(out).__name__}; "
                        "it must return or yield (key, value) pairs"
                    )
                for pair in out:
                    if type(pair) is not tuple:
                        if not isinstance(pair, list):
                            raise userfn.bad_pair("mapper", pair)
                        pair = tuple(pair)
                    try:
                        k, v = pair
                    except ValueError:
                        raise userfn.bad_pair("mapper", pair) from None
                    try:
                        buf[k].append(v)
                    except TypeError:
                        raise TypeError(
                            f"mapper yielded an unhashable key of type "
                            f"{type(k).__name__}: {k!r:.80}"
                        ) from None
                    pairs += 1
                if i & 511 == 0:
                    self.progress(((key[1] - start) / span) if text else i / span)
                    new = pairs - base  # values added since the last combine or spill
                    if new >= combine_at and new >= len(buf):
                        base = pairs
                        if combiner is not None:
                            held = self._combine(buf, combiner)
                        else:
                            held += new
                        if held >= spill_at:
                            spills.append(self._spill(buf, part, R, spill_dir, len(spills)))
                            buf.clear()
                            held = 0
        except Exception as exc:
            raise RecordFailed(max(i, 0)) from exc
        finally:
            if gc_was:
                gc.enable()
        total = i + 1
        counters["zmqmr.map_input_records"] = total - counters.get("zmqmr.skipped_records", 0)
        counters["zmqmr.map_output_records"] = pairs
        path = shuffle.map_output_path(self.data_dir, job_id, task, attempt)
        writer = shuffle.MapOutputWriter(path, R)
        try:
            if not spills:
                if combiner is not None:
                    self._combine(buf, combiner)
                for groups in self._partitioned(buf, part, R):
                    writer.write_segment(groups)
            else:
                if buf:
                    spills.append(self._spill(buf, part, R, spill_dir, len(spills)))
                    buf.clear()
                for r in range(R):
                    streams = [
                        shuffle.file_segment_groups(p, segs[r].offset, segs[r].length)
                        for p, segs in spills
                    ]
                    writer.write_segment(self._merge_runs(streams, combiner))
            segments = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            shutil.rmtree(spill_dir, ignore_errors=True)
        return {
            "sizes": [s.length for s in segments],
            "groups": [s.groups for s in segments],
            "bytes": writer.bytes_written,
        }


def many_keys_mapper(key: Any, line: str) -> Any:
    """About 7x more distinct keys than words: past combine_records (100k) per split."""
    tag = len(line) % 7
    for w in line.split():
        yield (w, tag), 1


# -- main --------------------------------------------------------------------------------

VARIANTS = {
    "serial": "Counter per line of the split (as wordcount.py's pool tasks)",
    "run_map": "Executor.run_map as it is",
    "run_map-gc-off": "Executor.run_map as it is, cyclic GC disabled around it",
    "proposed": "ProposedExecutor.run_map (all five changes)",
    "proposed-gc-on": "ProposedExecutor.run_map without the GC pause",
    "run_map-many-keys": "Executor.run_map, many_keys_mapper (~320k keys)",
    "proposed-many-keys": "ProposedExecutor.run_map, many_keys_mapper",
}


def setup(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    end = min(args.split_size, os.path.getsize(args.corpus))
    desc = {"kind": "text", "path": os.path.abspath(args.corpus), "start": 0, "end": end}
    data_dir = os.path.join(tmp, "data")
    os.makedirs(shuffle.job_dir(data_dir, "prof"), exist_ok=True)
    return {
        "desc": desc,
        "end": end,
        "spec": {"split": desc, "num_reducers": args.reducers},
        "fns": {"mapper": mapper, "reducer": reducer, "combiner": reducer, "partitioner": None},
        "data_dir": data_dir,
        "attempt": 0,
    }


def run_variant(name: str, env: dict[str, Any]) -> tuple[float, Any]:
    """One timing of one variant; returns (seconds, answer as {key: total})."""
    import gc

    desc, spec, data_dir = env["desc"], env["spec"], env["data_dir"]
    if name == "serial":
        t0 = time.perf_counter()
        c = wordcount.count_range((desc["path"], 0, env["end"]))
        return time.perf_counter() - t0, dict(c)
    cls = ProposedExecutor if name.startswith("proposed") else Executor
    ex = cls(FakeConn(), data_dir, "tcp://127.0.0.1:1", WorkerSettings())  # type: ignore[arg-type]
    if isinstance(ex, ProposedExecutor):
        ex.gc_mode = "none" if name.endswith("gc-on") else "disable"
    fns = dict(env["fns"])
    if name.endswith("many-keys"):
        fns["mapper"] = many_keys_mapper
    env["attempt"] += 1
    attempt = env["attempt"]
    gc_off = name == "run_map-gc-off"
    t0 = time.perf_counter()
    if gc_off:
        gc.disable()
    try:
        ex.run_map(fns, "prof", 0, attempt, spec, None, {})
    finally:
        if gc_off:
            gc.enable()
    elapsed = time.perf_counter() - t0
    path = shuffle.map_output_path(data_dir, "prof", 0, attempt)
    out: dict[Any, int] = {}
    for r in range(spec["num_reducers"]):
        for k, vs in shuffle.local_segment(path, r).groups():
            out[k] = sum(vs)
    os.remove(path)
    return elapsed, out


def stages(args: argparse.Namespace, env: dict[str, Any]) -> None:
    """Each stage of a map task on its own, in this process."""
    desc = env["desc"]
    n = args.repeat
    t_serial, expected = best_of(n, lambda: wordcount.count_range((desc["path"], 0, env["end"])))
    words = sum(expected.values())
    t_read, records = best_of(n, lambda: open_split(desc))
    t_drain, count = best_of(n, lambda: drain_only(records))
    assert count == words
    t_floor, buf = best_of(n, lambda: loop_floor(records))
    assert finish(buf, reducer) == expected
    t_loop, buf = best_of(n, lambda: loop_current_no_combine(records))
    assert finish(buf, reducer) == expected
    t_comb, (buf, combines) = best_of(n, lambda: loop_current_combine(records, reducer))
    assert finish(buf, reducer) == expected
    t_batch, buf = best_of(n, lambda: loop_batched(records, reducer))
    assert finish(buf, reducer) == expected
    R = args.reducers
    part = userfn.checked_partitioner(None, R)
    tails = []
    for _ in range(n):
        b = loop_current_no_combine(records)
        t0 = time.perf_counter()
        Executor._combine(b, reducer)
        t1 = time.perf_counter()
        groups = Executor._partitioned(b, part, R)
        t2 = time.perf_counter()
        w = shuffle.MapOutputWriter(os.path.join(env["data_dir"], "tail.out"), R)
        for g in groups:
            w.write_segment(g)
        w.close()
        tails.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    t_tc, t_tp, t_tw = (min(x[j] for x in tails) for j in range(3))
    mb = env["end"] / 1024 / 1024
    print(
        f"split: {mb:.1f} MiB, {len(records):,} lines, {words:,} words, "
        f"{len(expected):,} distinct keys; best of {n}, in one process"
    )
    rows = [
        ("serial Counter of the split", t_serial),
        ("open_split (read + list of records)", t_read),
        ("mapper drain only (user code floor)", t_drain),
        ("floor: bare `buf[k].append(v)` loop", t_floor),
        ("record loop as in run_map, no combine", t_loop),
        (f"record loop + combines ({combines} of them)", t_comb),
        ("C-level batched loop (negative result)", t_batch),
        ("final combine", t_tc),
        ("partition + sort", t_tp),
        ("encode + write", t_tw),
    ]
    for name, t in rows:
        print(f"  {name:<42} {t:6.3f} s  {t / t_serial:5.2f} x serial")
    print(
        f"  per word: serial {t_serial / words * 1e9:.0f} ns, mapper drain "
        f"{t_drain / words * 1e9:.0f} ns, record loop + combines {t_comb / words * 1e9:.0f} ns"
    )


def reduce_side(args: argparse.Namespace, tmp: str) -> None:
    """One reduce task's merge-and-reduce over real map outputs, two ways.

    Map outputs are made from the first ``--reduce-maps`` splits (counted with a
    Counter, written with MapOutputWriter exactly as a map task with a combiner
    writes them); then partition 0 is reduced as ``Executor._reduce`` does it
    (``heapq.merge`` of sorted streams, ``groupby``, reducer, result blocks) and
    with a hash-grouping alternative (a dict over the segments in map order, one
    sort of the distinct keys). Same answer, same value order per key.
    """
    R = args.reducers
    part = userfn.checked_partitioner(None, R)
    size = os.path.getsize(args.corpus)
    segments = []
    for m, (path, start, end) in enumerate(wordcount.line_ranges(args.corpus, args.split_size)):
        if m >= args.reduce_maps or start >= size:
            break
        c = wordcount.count_range((path, start, end))
        buf = {k: [v] for k, v in c.items()}
        out = os.path.join(tmp, f"m{m}.out")
        w = shuffle.MapOutputWriter(out, R)
        for groups in Executor._partitioned(buf, part, R):
            w.write_segment(groups)
        w.close()
        segments.append(shuffle.local_segment(out, 0))

    def current() -> list[bytes]:
        blocks, block = [], []
        streams = [seg.groups() for seg in segments]
        for kv in userfn.reduce_groups(reducer, userfn.merged(streams), {}):
            block.append(kv)
            if len(block) >= shuffle.BLOCK_GROUPS:
                blocks.append(shuffle.encode_block(block))
                block = []
        if block:
            blocks.append(shuffle.encode_block(block))
        return blocks

    def hashed() -> list[bytes]:
        acc: dict[Any, list[Any]] = {}
        get = acc.get
        for seg in segments:
            for k, vs in seg.groups():
                lst = get(k)
                if lst is None:
                    acc[k] = vs
                else:
                    lst.extend(vs)
        try:
            keys = sorted(acc)
        except TypeError:
            raise userfn.unorderable(acc) from None
        blocks, block = [], []
        for k in keys:
            block.append((k, reducer(k, iter(acc[k]))))
            if len(block) >= shuffle.BLOCK_GROUPS:
                blocks.append(shuffle.encode_block(block))
                block = []
        if block:
            blocks.append(shuffle.encode_block(block))
        return blocks

    t_cur, a = best_of(args.repeat, current)
    t_hash, b = best_of(args.repeat, hashed)
    assert a == b, "the two reduce paths disagree"
    print(
        f"\nreduce side: partition 0 (of {R}) over {len(segments)} map outputs, "
        f"best of {args.repeat}"
    )
    print(f"  heapq.merge + groupby (as Executor._reduce)   {t_cur:6.3f} s")
    print(f"  hash-group in a dict, sort keys once          {t_hash:6.3f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="corpus file (default: generate one of --size)")
    p.add_argument("--size", type=wordcount.parse_size, default=16 * 1024 * 1024)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--split-size", type=wordcount.parse_size, default=DEFAULT_SPLIT_SIZE)
    p.add_argument("--reducers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="timings per variant (best is kept)")
    p.add_argument("--profile", type=int, default=20, help="cProfile rows to print (0: none)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated head-to-head variants (default: all; serial is always run)",
    )
    p.add_argument("--no-stages", action="store_true", help="skip the in-process stage table")
    p.add_argument(
        "--reduce-maps",
        type=int,
        default=0,
        help="also time one reduce task over this many real map outputs (0: skip)",
    )
    p.add_argument("--variant", choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()

    tmp = tempfile.mkdtemp(prefix="zmqmr-prof-")
    try:
        if not args.corpus:
            args.corpus = os.path.join(tmp, "corpus.txt")
            wordcount.generate(args.corpus, args.size, args.seed, 1 << 18)
        env = setup(args, tmp)
        if args.variant:  # a subprocess of the head-to-head below
            t, out = run_variant(args.variant, env)
            with open(os.path.join(tmp, "answer.pkl"), "wb") as f:
                pickle.dump(out, f)
            print(f"{t!r} {tmp}")
            sys.stdout.flush()
            os._exit(0)  # keep tmp: the parent reads the answer, then removes it

        if not args.no_stages:
            stages(args, env)
        if args.reduce_maps:
            reduce_side(args, tmp)
        chosen = ["serial"] + [v for v in args.variants.split(",") if v and v != "serial"]
        unknown = [v for v in chosen if v not in VARIANTS]
        if unknown:
            p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")

        # Head to head: every timing in a fresh process, the variants interleaved,
        # so heap state and the machine's other load fall on all of them alike.
        print(f"\nhead to head: fresh process per timing, {args.repeat} rounds, best kept")
        best: dict[str, float] = {}
        answers: dict[str, Any] = {}
        for _ in range(args.repeat):
            for name in chosen:
                cmd = [sys.executable, os.path.abspath(__file__), "--variant", name]
                cmd += ["--corpus", args.corpus, "--split-size", str(args.split_size)]
                cmd += ["--reducers", str(args.reducers), "--profile", "0"]
                line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                t_str, sub_tmp = line.split()
                with open(os.path.join(sub_tmp, "answer.pkl"), "rb") as f:
                    answer = pickle.load(f)
                shutil.rmtree(sub_tmp, ignore_errors=True)
                best[name] = min(best.get(name, float("inf")), float(t_str))
                group = "many" if name.endswith("many-keys") else "words"
                if group in answers and answers[group] != answer:
                    raise SystemExit(f"{name}: wrong answer")
                answers.setdefault(group, answer)
        base = best["serial"]
        for name in chosen:
            what = VARIANTS[name]
            print(f"  {name:<20} {best[name]:6.3f} s  {best[name] / base:5.2f} x serial  {what}")

        if args.profile:
            prof = cProfile.Profile()
            env["attempt"] += 1
            ex = Executor(FakeConn(), env["data_dir"], "tcp://127.0.0.1:1", WorkerSettings())  # type: ignore[arg-type]
            prof.enable()
            ex.run_map(env["fns"], "prof", 0, env["attempt"], env["spec"], None, {})
            prof.disable()
            print("\ncProfile of Executor.run_map (profiler overhead inflates per-call costs):")
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
