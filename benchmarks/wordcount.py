#!/usr/bin/env python3
"""Word count: zmqmr, one-process Python and a multiprocessing.Pool, two tokenisers.

    python benchmarks/wordcount.py --size 64MB
    python benchmarks/wordcount.py --size 256MB --keep        # keep the corpus
    python benchmarks/wordcount.py --corpus /tmp/c.txt --only serial,zmqmr --repeat 1

One invocation generates a Zipf-distributed corpus (or reuses one), then runs

* ``serial``: one Python process, ``Counter.update(line.split())`` per line;
* ``pool``:   ``multiprocessing.Pool(workers)``; each task counts the lines of
  one line-aligned byte range with a ``Counter``; the parent merges;
* ``zmqmr``:  ``LocalCluster(workers=N)`` and a job with a per-word generator
  mapper, ``combiner = reducer = sum``; timed from cluster start-up to the
  result dict in hand;
* ``zmqmr-split``: the same job with in-mapper combining,
  ``Job(split_mapper=f)`` where ``f`` counts its split's lines in a ``Counter``;
* ``serial-re``, ``pool-re``, ``zmqmr-re``: serial, pool and zmqmr (per-word
  generator + combiner) with ``re.findall("[a-z]+", line.lower())`` instead of
  ``line.split()``;

and, only when named in ``--only``, ``zmqmr-py``: the zmqmr run with the
optional C counting loop turned off (``ZMQMR_NO_SPEEDUPS=1``), and
``zmqmr-insecure`` (CURVE off).

It checks that all answers are equal (exit status 1 if not) and prints wall
time, CPU time, peak memory and the ratios to the serial run. ``--repeat N``
(default 3: these machines are shared, and one round can be 25% off the next)
interleaves N rounds, reports the fastest of each and lists every round. See
benchmarks/README.md.

The corpus is lowercase ASCII words separated by single spaces, so ``split()``
and the regex give the same words, and every answer must be the same. Ratios
are to the serial and pool runs with the same tokeniser.

Each contender runs in a fresh subprocess of this script, so the numbers do
not include the generator's memory. A thread in the parent samples the RSS and
CPU time of that subprocess and all its descendants (for zmqmr: the client,
the master, the workers and their executors) every 50 ms; the subprocess also
reports ``getrusage`` peaks (its own, and its waited-for descendants') as an
exact cross-check of the sampled figures.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import pickle
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any

MiB = 1024 * 1024
KINDS = ("serial", "pool", "zmqmr", "zmqmr-split", "serial-re", "pool-re", "zmqmr-re")
#: Optional contenders, run only when named in --only.
EXTRA_KINDS = ("zmqmr-py", "zmqmr-insecure")
#: The baseline of each contender: the serial and pool runs with its tokeniser.
SERIAL_OF = {k: "serial-re" if k.endswith("-re") else "serial" for k in KINDS + EXTRA_KINDS}
POOL_OF = {k: "pool-re" if k.endswith("-re") else "pool" for k in KINDS + EXTRA_KINDS}
VOCAB_SIZE = 50_000
ZIPF_S = 1.1
SAMPLE_INTERVAL = 0.05

# Targets (wall over serial's with the same tokeniser; 256 MB corpus, 2 cores).
TARGETS = {"zmqmr": 0.65, "zmqmr-re": 0.65, "zmqmr-split": 0.55}
TARGET_RSS_MB = 200


# -- the word count, three ways ----------------------------------------------------------
#
# All three use ``line.split()`` (see the module docstring).


def mapper(key: Any, line: str) -> Any:
    for w in line.split():
        yield w, 1


def reducer(word: str, counts: Any) -> int:
    return sum(counts)


_WORD = re.compile("[a-z]+")


def words_split(line: str) -> list[str]:
    return line.split()


def words_re(line: str) -> list[str]:
    return _WORD.findall(line.lower())


def mapper_re(key: Any, line: str) -> Any:
    for w in _WORD.findall(line.lower()):
        yield w, 1


def split_mapper(records: Any) -> Any:
    """In-mapper combining: one ``Counter`` over the split's lines, one pair per word."""
    c: Counter[str] = Counter()
    for _, line in records:
        c.update(line.split())
    return c.items()


def count_serial(path: str, words: Any = words_split) -> Counter[str]:
    c: Counter[str] = Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            c.update(words(line))
    return c


def line_ranges(path: str, chunk: int) -> list[tuple[str, int, int]]:
    """Byte ranges of about ``chunk`` bytes; a range owns the lines that start in it."""
    size = os.path.getsize(path)
    return [(path, s, min(s + chunk, size)) for s in range(0, size, chunk)] or [(path, 0, 0)]


def read_range(path: str, start: int, end: int) -> bytes:
    """The lines that start in ``[start, end)`` (the rule zmqmr's text splits follow)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            start = start - 1 + len(f.readline())
        if start >= end:
            return b""
        f.seek(start)
        data = f.read(end - start)
        if data and not data.endswith(b"\n"):
            data += f.readline()
    return data


def count_range(task: tuple[str, int, int], words: Any = words_split) -> Counter[str]:
    c: Counter[str] = Counter()
    for line in read_range(*task).decode("utf-8").split("\n"):
        c.update(words(line))
    return c


def count_range_re(task: tuple[str, int, int]) -> Counter[str]:
    return count_range(task, words_re)


# -- runners: each runs in its own subprocess ------------------------------------------


def run_serial(args: argparse.Namespace, words: Any = words_split) -> tuple[dict[str, int], Any]:
    t0 = time.perf_counter()
    counts = count_serial(args.corpus, words)
    wall = time.perf_counter() - t0
    return dict(counts), {"wall": wall}


def run_pool(args: argparse.Namespace, count: Any = count_range) -> tuple[dict[str, int], Any]:
    import multiprocessing

    t0 = time.perf_counter()
    pool = multiprocessing.Pool(args.workers)
    t1 = time.perf_counter()
    total: Counter[str] = Counter()
    tasks = line_ranges(args.corpus, args.split_size)
    for c in pool.imap_unordered(count, tasks):
        total.update(c)
    counts = dict(total)
    t2 = time.perf_counter()
    pool.close()
    pool.join()
    t3 = time.perf_counter()
    return counts, {"wall": t2 - t0, "startup": t1 - t0, "shutdown": t3 - t2, "tasks": len(tasks)}


def run_on_cluster(args: argparse.Namespace, job_of: Any) -> tuple[dict[str, int], dict[str, Any]]:
    """Start a LocalCluster, run ``job_of()`` on it, and time start-up, job and shutdown."""
    import zmqmr

    t0 = time.perf_counter()
    cluster = zmqmr.LocalCluster(workers=args.workers, insecure=getattr(args, "insecure", False))
    cluster.start()
    try:
        t1 = time.perf_counter()
        result = cluster.client().run(job_of(), progress=False)
        counts = dict(result.items())
        t2 = time.perf_counter()
    finally:
        cluster.close()
    t3 = time.perf_counter()
    info = {
        "wall": t2 - t0,
        "startup": t1 - t0,
        "job": t2 - t1,
        "shutdown": t3 - t2,
        "stats": result.stats,
        "counters": result.counters,
        "speedups": speedups_on(),
    }
    return counts, info


def run_zmqmr(args: argparse.Namespace, **fn: Any) -> tuple[dict[str, int], dict[str, Any]]:
    """The word count on a LocalCluster; ``fn``: the mapper (default ``mapper``) or split mapper."""
    import zmqmr

    def job_of() -> Any:
        return zmqmr.Job(
            **(fn or {"mapper": mapper}),
            reducer=reducer,
            combiner=reducer,
            inputs=[args.corpus],
            num_reducers=args.reducers,
            split_size=args.split_size,
            name="wordcount",
        )

    return run_on_cluster(args, job_of)


def speedups_on() -> bool:
    """Whether zmqmr's executors count in C (they inherit this process's environment)."""
    import zmqmr.mapside

    return zmqmr.mapside.speedups is not None


def run_zmqmr_py(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, Any]]:
    """zmqmr with its optional C counting loop turned off (ZMQMR_NO_SPEEDUPS=1)."""
    os.environ["ZMQMR_NO_SPEEDUPS"] = "1"
    return run_zmqmr(args)


def run_zmqmr_insecure(args: argparse.Namespace) -> tuple[dict[str, int], dict[str, Any]]:
    """zmqmr with CURVE off (``insecure=True``): what encryption costs the ``zmqmr`` row."""
    args.insecure = True
    return run_zmqmr(args)


RUNNERS = {
    "serial": run_serial,
    "pool": run_pool,
    "zmqmr": run_zmqmr,
    "zmqmr-split": lambda args: run_zmqmr(args, split_mapper=split_mapper),
    "serial-re": lambda args: run_serial(args, words_re),
    "pool-re": lambda args: run_pool(args, count_range_re),
    "zmqmr-re": lambda args: run_zmqmr(args, mapper=mapper_re),
    "zmqmr-py": run_zmqmr_py,
    "zmqmr-insecure": run_zmqmr_insecure,
}


def child_main(args: argparse.Namespace) -> None:
    counts, info = RUNNERS[args.child](args)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    info["maxrss_self_mb"] = own / 1024
    info["maxrss_children_mb"] = kids / 1024
    with open(args.child_out + ".counts", "wb") as f:
        pickle.dump(counts, f, protocol=pickle.HIGHEST_PROTOCOL)
    with open(args.child_out, "wb") as f:
        pickle.dump(info, f, protocol=pickle.HIGHEST_PROTOCOL)


# -- the corpus ------------------------------------------------------------------------


def make_vocab(rng: random.Random, n: int = VOCAB_SIZE) -> list[str]:
    """``n`` distinct lowercase words, by rank; frequent words are short, as in prose.

    A word of rank r has about 1.8 + 0.45 log2(r) letters (sd 1, at least 2):
    weighted by Zipf frequency that is 4.85 letters per word (English: about
    4.7-5), and 8.2 letters per distinct word.
    """
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen: set[str] = set()
    vocab: list[str] = []
    for rank in range(1, n + 1):
        length = max(2, min(14, round(rng.gauss(1.8 + 0.45 * math.log2(rank), 1.0))))
        word = "".join(rng.choices(letters, k=length))
        while word in seen:
            word = "".join(rng.choices(letters, k=length))
        seen.add(word)
        vocab.append(word)
    return vocab


class LineSampler:
    """Lines of 8-12 words drawn from a Zipf(s=1.1) distribution over the vocabulary."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.vocab = make_vocab(rng)
        self.cum = list(itertools.accumulate(1.0 / r**ZIPF_S for r in range(1, VOCAB_SIZE + 1)))

    def lines(self, k: int) -> list[str]:
        rng = self.rng
        lens = [rng.randint(8, 12) for _ in range(k)]
        words = rng.choices(self.vocab, cum_weights=self.cum, k=sum(lens))
        out = []
        pos = 0
        for n in lens:
            out.append(" ".join(words[pos : pos + n]))
            pos += n
        return out


def generate(path: str, size: int, seed: int, pool_lines: int) -> None:
    """Write about ``size`` bytes of corpus (whole lines) to ``path``.

    Sampling word by word costs about half a microsecond per word in pure
    Python (~17 s for 256 MB on a small machine). So the generator samples
    ``pool_lines`` fresh lines word by word, writes them, and draws the rest
    of the corpus's lines uniformly, with replacement, from that pool: the
    word frequencies stay Zipf, every line still costs the same to count.
    ``pool_lines=0`` samples every word.
    """
    rng = random.Random(seed)
    sampler = LineSampler(rng)
    batch = 100_000  # lines per write: about 7 MB
    pool: list[str] = []
    written = 0
    with open(path, "wb") as f:
        while written < size:
            if pool_lines and len(pool) >= pool_lines:
                lines = rng.choices(pool, k=batch)
            else:
                k = batch if not pool_lines else min(batch, pool_lines - len(pool))
                lines = sampler.lines(k)
                if pool_lines:
                    pool.extend(lines)
            data = ("\n".join(lines) + "\n").encode("ascii")
            if written + len(data) > size:  # end with the last whole line that fits
                f.write(data[: data.rfind(b"\n", 0, size - written) + 1])
                break
            f.write(data)
            written += len(data)


def count_lines(path: str) -> int:
    """Lines as zmqmr reads them: a last line without a newline counts too."""
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


# -- measuring a subprocess tree ---------------------------------------------------------


def role_of(
    cmdline: list[str],
    is_root: bool,
    kind: str,
    parent: list[str] | None = None,
    name: str = "",
    parent_name: str = "",
) -> str:
    """A process's role from its command line and name (and its parent's: a worker's
    forked executor has the worker's). A LocalCluster's launcher forks its master and
    workers, which keep its command line and take the names ``zmqmr master`` and
    ``zmqmr worker``."""
    if name == "zmqmr worker":
        return "executor" if parent_name == "zmqmr worker" else "worker"
    if name == "zmqmr master":
        return "master"
    if "zmqmr.launcher" in cmdline:
        return "launcher"
    if is_root:
        return (
            "client"
            if kind.startswith("zmqmr")
            else "pool parent"
            if kind.startswith("pool")
            else "python"
        )
    line = " ".join(cmdline)
    if cmdline == parent and "zmqmr" in line and " worker" in line:
        return "executor"
    if "zmqmr" in line and " master" in line:
        return "master"
    if "zmqmr" in line and " worker" in line:
        return "worker"
    if "resource_tracker" in line:
        return "resource tracker"
    if "spawn_main" in line:
        return "executor" if kind.startswith("zmqmr") else "spawned"
    return "pool worker" if kind.startswith("pool") else "child"


class TreeSampler(threading.Thread):
    """Samples RSS and CPU time of a process and its descendants every 50 ms."""

    def __init__(self, pid: int, kind: str) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.pid = pid
        self.kind = kind
        self.stop = threading.Event()
        self.procs: dict[int, dict[str, Any]] = {}  # pid -> role, peak rss, last cpu
        self.peak_sum = 0
        self.samples = 0

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while True:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            total = 0
            for p in tree:
                try:
                    with p.oneshot():
                        rss = p.memory_info().rss
                        cpu = p.cpu_times()
                        # Read every time: a child sampled between fork and exec still
                        # shows its parent's command line (an exiting one shows none).
                        cmdline = p.cmdline()
                        entry = self.procs.setdefault(p.pid, {"rss": 0, "cpu": 0.0, "role": "?"})
                        entry["cmdline"] = cmdline
                        entry["name"] = name = p.name()
                        up = self.procs.get(p.ppid(), {})
                        if cmdline or p.pid == self.pid:
                            entry["role"] = role_of(
                                cmdline,
                                p.pid == self.pid,
                                self.kind,
                                up.get("cmdline"),
                                name,
                                up.get("name", ""),
                            )
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                entry["rss"] = max(entry["rss"], rss)
                entry["cpu"] = max(entry["cpu"], cpu.user + cpu.system)
                total += rss
            self.peak_sum = max(self.peak_sum, total)
            self.samples += 1
            if not tree or self.stop.wait(SAMPLE_INTERVAL):
                return

    @property
    def peak_max(self) -> int:
        return max((e["rss"] for e in self.procs.values()), default=0)

    @property
    def cpu(self) -> float:
        return sum(e["cpu"] for e in self.procs.values())

    def by_role(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for e in self.procs.values():
            out.setdefault(e["role"], []).append(e["rss"])
        return out

    def cpu_by_role(self) -> dict[str, list[float]]:
        """Each process's CPU seconds (its last sample), by role."""
        out: dict[str, list[float]] = {}
        for e in self.procs.values():
            out.setdefault(e["role"], []).append(e["cpu"])
        return out


def measure(kind: str, args: argparse.Namespace, work: str, round_: int) -> dict[str, Any]:
    out = os.path.join(work, f"result-{kind}-{round_}.pkl")
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        kind,
        "--child-out",
        out,
        "--corpus",
        args.corpus,
        "--workers",
        str(args.workers),
        "--reducers",
        str(args.reducers),
        "--split-size",
        str(args.split_size),
    ]
    r = run_measured(kind, cmd, out)
    r["counts_path"] = out + ".counts"  # loaded by check(), after every run
    return r


def run_measured(kind: str, cmd: list[str], out: str) -> dict[str, Any]:
    """Run ``cmd`` (a child of a benchmark script, which pickles its info to ``out``),
    sampling its process tree; its info, CPU and peak memory."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    sampler = TreeSampler(proc.pid, kind)
    sampler.start()
    try:
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        sampler.stop.set()
        sampler.join()
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"the {kind} run failed with exit status {rc}")
    with open(out, "rb") as f:
        info = pickle.load(f)
    os.remove(out)
    cpu_waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "kind": kind,
        "info": info,
        "process_wall": elapsed,
        "cpu": max(sampler.cpu, cpu_waited),
        "peak_max_mb": sampler.peak_max / MiB,
        "peak_sum_mb": sampler.peak_sum / MiB,
        "roles": {r: [v / MiB for v in vs] for r, vs in sampler.by_role().items()},
        "cpu_roles": sampler.cpu_by_role(),
        "nprocs": len(sampler.procs),
        "samples": sampler.samples,
    }


# -- the report --------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """A size as zmqmr's command line reads it (64MB = 64 MiB), for argparse."""
    from zmqmr.cli import size_arg

    return int(size_arg(text))


def fmt_mb(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in sorted(values, reverse=True))


def ratio_to(by: dict[str, Any], kind: str, of: dict[str, str], field: str = "wall") -> str:
    """``kind``'s wall (or cpu) over its baseline's in ``of``, or "-" without one."""

    def get(r: dict[str, Any]) -> float:
        return float(r["info"]["wall"] if field == "wall" else r[field])

    base = by.get(of[kind])
    return f"{get(by[kind]) / get(base):.2f}" if base else "-"


def print_table(runs: list[dict[str, Any]], serial_of: dict[str, str], pool_of: Any) -> None:
    """One row per run: wall, CPU and memory, and ratios to the baselines the maps name."""
    by = {r["kind"]: r for r in runs}
    width = max(len(r["kind"]) for r in runs)
    print()
    head = (
        f"{'name':<{width}} {'wall s':>7} {'x serial':>8} {'x pool':>6} {'start-up s':>10} "
        f"{'cpu s':>7} {'cpu x ser':>9} {'max RSS/proc MB':>15} {'sum RSS MB':>10} {'procs':>5}"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        info, kind = r["info"], r["kind"]
        startup = f"{info['startup']:.2f}" if "startup" in info else "-"
        print(
            f"{kind:<{width}} {info['wall']:>7.2f} {ratio_to(by, kind, serial_of):>8} "
            f"{ratio_to(by, kind, pool_of):>6} {startup:>10} {r['cpu']:>7.1f} "
            f"{ratio_to(by, kind, serial_of, 'cpu'):>9} "
            f"{r['peak_max_mb']:>15.0f} {r['peak_sum_mb']:>10.0f} {r['nprocs']:>5}"
        )


def print_roles(r: dict[str, Any]) -> None:
    """A run's peak RSS per process, by role, and the exact getrusage peaks."""
    info = r["info"]
    roles = "; ".join(f"{role} {fmt_mb(v)}" for role, v in sorted(r["roles"].items()))
    print(
        f"  {r['kind']}: peak RSS MB by process: {roles}  "
        f"[getrusage: self {info['maxrss_self_mb']:.0f}, "
        f"largest waited-for descendant {info['maxrss_children_mb']:.0f}]"
    )
    if "cpu_roles" in r:
        cpu = "; ".join(
            f"{role} " + ", ".join(f"{v:.1f}" for v in sorted(vs, reverse=True))
            for role, vs in sorted(r["cpu_roles"].items())
        )
        print(f"  {r['kind']}: CPU s by process: {cpu}")


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> None:
    by = {r["kind"]: r for r in runs}
    print_table(runs, SERIAL_OF, POOL_OF)
    print("x serial, x pool, cpu x ser: against the serial and pool runs with the same tokeniser")
    print("(serial-re and pool-re for the -re rows; serial and pool for the others)")
    if args.repeat > 1:
        print(f"(fastest of {args.repeat} interleaved runs; peak RSS: the largest of any run)")
        for r in runs:
            print(f"  {r['kind']} walls: " + ", ".join(f"{w:.2f}" for w in r["walls"]))
    print()
    print("wall: from the start of the work to the answer in hand, in the subprocess")
    print("      (zmqmr: LocalCluster start-up + job + result dict; pool: Pool() + map + merge);")
    print("cpu:  user+system seconds of the whole process tree; RSS sampled every 50 ms.")
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"getrusage peaks are exact but never read below this script's own peak "
        f"({parent:.0f} MB), which Linux carries into every child"
    )
    for r in runs:
        info = r["info"]
        print_roles(r)
        extra = f"process {r['process_wall']:.2f} s incl. interpreter start"
        if "shutdown" in info:
            extra += f", shutdown {info['shutdown']:.2f} s (not in wall)"
        if r["kind"].startswith("pool"):
            extra += f", {info['tasks']} tasks"
        if r["kind"].startswith("zmqmr"):
            st = info["stats"]
            extra += (
                f"; start-up {info['startup']:.2f} s, job {info['job']:.2f} s "
                f"(maps {st.get('maps')}: {st.get('map_seconds', 0):.2f} s, "
                f"reduces {st.get('reduces')}: {st.get('reduce_seconds', 0):.2f} s, "
                f"shuffle {st.get('shuffle_bytes', 0) / MiB:.1f} MiB, "
                f"re-executions {st.get('reexecutions', 0)}, "
                f"backups {st.get('backups_launched', 0)})"
            )
            if "speedups" in info:
                extra += f"; C counting loop {'on' if info['speedups'] else 'off'}"
        print(f"      {extra}")
    print()
    for kind, target in TARGETS.items():
        if kind in by and by.get(SERIAL_OF[kind]):
            ratio = float(ratio_to(by, kind, SERIAL_OF))
            verdict = "MET" if ratio <= target else "MISSED"
            print(f"{kind} / {SERIAL_OF[kind]} = {ratio:.2f}   (target <= {target}: {verdict})")
    if "zmqmr-split" in by and "pool" in by:
        ratio = float(ratio_to(by, "zmqmr-split", POOL_OF))
        verdict = "MET" if ratio <= 1.0 else "MISSED"
        print(f"zmqmr-split / pool = {ratio:.2f}   (target <= 1.0: {verdict})")
    for kind in ("zmqmr", "zmqmr-re"):
        if kind in by and by.get(POOL_OF[kind]):
            print(f"{kind} / {POOL_OF[kind]} = {ratio_to(by, kind, POOL_OF)}")
    zruns = [r for r in runs if r["kind"].startswith("zmqmr")]
    if zruns:
        peak = max(r["peak_max_mb"] for r in zruns)
        verdict = "MET" if peak < TARGET_RSS_MB else "MISSED"
        print(
            f"zmqmr max RSS of any process, any zmqmr row = {peak:.0f} MB   "
            f"(target < {TARGET_RSS_MB} MB: {verdict})"
        )
    if "zmqmr-insecure" in by and "zmqmr" in by:
        curve = by["zmqmr"]["info"]["wall"] / by["zmqmr-insecure"]["info"]["wall"]
        print(f"zmqmr (CURVE) / zmqmr-insecure = {curve:.2f}   (what encryption costs)")


def check(runs: list[dict[str, Any]]) -> bool:
    if len(runs) < 2:
        print("answers: only one run; nothing to compare")
        return True

    def load(r: dict[str, Any]) -> dict[str, int]:
        with open(r["counts_path"], "rb") as f:
            counts: dict[str, int] = pickle.load(f)
        os.remove(r["counts_path"])
        return counts

    ref = runs[0]
    a = load(ref)
    ok = True
    for r in runs[1:]:
        b = load(r)
        if a == b:
            continue
        ok = False
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        print(
            f"MISMATCH: {ref['kind']} and {r['kind']} differ on {len(diff)} word(s), e.g. "
            + ", ".join(f"{k!r}: {a.get(k)} vs {b.get(k)}" for k in diff[:5])
        )
    if ok:
        words = sum(a.values())
        print(f"answers: all {len(runs)} runs agree ({len(a):,} distinct words, {words:,} words)")
    return ok


def zmqmr_default_split_size() -> int:
    """zmqmr.config.DEFAULT_SPLIT_SIZE, read without importing zmqmr (and zmq) here.

    The parent stays small (see ``measure``); zmqmr/config.py imports only the
    standard library, so it is loaded on its own.
    """
    import importlib.util

    spec = importlib.util.find_spec("zmqmr")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("zmqmr is not installed")
    path = os.path.join(list(spec.submodule_search_locations)[0], "config.py")
    cspec = importlib.util.spec_from_file_location("_zmqmr_config", path)
    assert cspec is not None and cspec.loader is not None
    module = importlib.util.module_from_spec(cspec)
    sys.modules["_zmqmr_config"] = module  # dataclasses looks the module up
    cspec.loader.exec_module(module)
    return int(module.DEFAULT_SPLIT_SIZE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=parse_size, default=64 * MiB, help="corpus size (default 64MB)")
    p.add_argument("--seed", type=int, default=1, help="corpus seed (default 1)")
    p.add_argument("--workers", type=int, default=2, help="zmqmr workers / pool processes")
    p.add_argument("--reducers", type=int, default=2, help="zmqmr reduce tasks (default 2)")
    p.add_argument(
        "--split-size",
        type=parse_size,
        default=None,
        help="zmqmr split size and pool chunk (default: zmqmr's default split size)",
    )
    p.add_argument("--corpus", help="corpus file: reused if it exists, else generated and kept")
    p.add_argument("--keep", action="store_true", help="keep the generated corpus")
    p.add_argument(
        "--pool-lines",
        type=int,
        default=1 << 18,
        help="fresh lines sampled word by word; the rest are drawn from them (0: all fresh)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="run every contender N times, interleaved; report the fastest (default 3)",
    )
    p.add_argument(
        "--only",
        default=",".join(KINDS),
        help="comma-separated contenders, run in this order (default serial,pool,zmqmr)",
    )
    p.add_argument("--child", choices=KINDS + EXTRA_KINDS, help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    p.add_argument("--generate", metavar="PATH", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        child_main(args)
        return 0
    if args.generate:
        generate(args.generate, args.size, args.seed, args.pool_lines)
        return 0
    if args.split_size is None:
        args.split_size = zmqmr_default_split_size()

    kinds = [k.strip() for k in args.only.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS + EXTRA_KINDS]
    if bad or not kinds:
        p.error(f"--only takes a comma-separated subset of {','.join(KINDS + EXTRA_KINDS)}")

    work = tempfile.mkdtemp(prefix="zmqmr-bench-")
    keep_work = False
    try:
        if args.corpus and os.path.exists(args.corpus):
            args.corpus = os.path.abspath(args.corpus)
            print(f"corpus: reusing {args.corpus}")
        else:
            if args.corpus:
                args.corpus = os.path.abspath(args.corpus)
            else:
                args.corpus = os.path.join(work, f"corpus-{args.size}-seed{args.seed}.txt")
                keep_work = args.keep
            t0 = time.perf_counter()
            # In a subprocess: the parent's peak RSS leaks into its children's
            # ru_maxrss (Linux carries it across fork and exec), so it stays small.
            gen = [sys.executable, os.path.abspath(__file__), "--generate", args.corpus]
            gen += ["--size", str(args.size), "--seed", str(args.seed)]
            subprocess.run([*gen, "--pool-lines", str(args.pool_lines)], check=True)
            print(f"corpus: generated {args.corpus} in {time.perf_counter() - t0:.1f} s")
        size = os.path.getsize(args.corpus)
        print(
            f"corpus: {size / MiB:.1f} MiB, {count_lines(args.corpus):,} lines; "
            f"seed {args.seed}, Zipf s={ZIPF_S} over {VOCAB_SIZE:,} words"
        )
        print(
            f"setup:  {args.workers} workers, {args.reducers} reducers, "
            f"split/chunk {args.split_size / MiB:g} MiB; {os.cpu_count()} CPUs; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
            f"Python {sys.version.split()[0]}"
        )
        every: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        for round_ in range(args.repeat):
            for kind in kinds:
                print(f"running {kind} ...", flush=True)
                r = measure(kind, args, work, round_)
                load = " ".join(f"{x:.2f}" for x in os.getloadavg())
                wall = r["info"]["wall"]
                print(f"  {kind}: {wall:.2f} s (load average after: {load})", flush=True)
                every[kind].append(r)
        ok = check([r for k in kinds for r in every[k]])
        runs = []
        for kind in kinds:  # the fastest run of each; memory: the largest of any run
            best = dict(min(every[kind], key=lambda r: r["info"]["wall"]))
            best["walls"] = [r["info"]["wall"] for r in every[kind]]
            best["peak_max_mb"] = max(r["peak_max_mb"] for r in every[kind])
            best["peak_sum_mb"] = max(r["peak_sum_mb"] for r in every[kind])
            runs.append(best)
        report(runs, args)
        if keep_work:
            print(f"\ncorpus kept: {args.corpus}")
        return 0 if ok else 1
    finally:
        if keep_work:
            for entry in os.listdir(work):
                if entry.startswith("result-"):
                    os.remove(os.path.join(work, entry))
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
