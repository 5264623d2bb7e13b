"""What faults cost: word count on 4 workers, with and without faults, in one invocation.

Scenarios, each on a fresh LocalCluster of 4 workers:

  none          no faults: the baseline
  kill          one worker SIGKILLed when half the map tasks are done
  slow+backup   one worker (and its executors) slowed to a tenth of its speed by a
                SIGSTOP/SIGCONT duty cycle, backup tasks on
  slow-nobackup the same straggler with speculative=False

Prints each wall time and its ratio to the no-fault run, and checks every
answer against run_serial. Targets (issue 3): kill <= 1.5x, slow with backups
<= 1.3x, slow without backups >= 2x.

    python benchmarks/faults.py [--copies 24] [--reducers 4]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

import psutil

import zmqmr

BOOKS = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "examples", "data", "gutenberg"
)
WORD = re.compile(r"[a-z]+")


def mapper(key, line):
    for word in WORD.findall(line.lower()):
        yield word, 1


def reducer(word, counts):
    return sum(counts)


class DutyCycle(threading.Thread):
    """Keeps a set of processes stopped 90% of each 100 ms."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.done = threading.Event()

    def _signal(self, sig: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        while not self.done.is_set():
            self._signal(signal.SIGSTOP)
            time.sleep(0.09)
            self._signal(signal.SIGCONT)
            time.sleep(0.01)
        self._signal(signal.SIGCONT)


def run(scenario: str, inputs: list[str], reducers: int, split_size: int) -> tuple[float, dict]:
    job = zmqmr.Job(
        mapper,
        reducer,
        combiner=reducer,
        inputs=inputs,
        num_reducers=reducers,
        split_size=split_size,
        speculative=scenario != "slow-nobackup",
    )
    settings = dict(heartbeat_interval=0.25, worker_timeout=2.0, fetch_timeout=1.0, fetch_retries=2)
    with zmqmr.LocalCluster(workers=4, **settings) as cluster:
        victim = cluster.worker_pids[0]
        cycle = None
        if scenario.startswith("slow"):
            pids = [victim] + [p.pid for p in psutil.Process(victim).children(recursive=True)]
            cycle = DutyCycle(pids)
        start = time.perf_counter()
        handle = cluster.client().submit(job)
        if cycle:
            cycle.start()
        if scenario == "kill":
            while True:
                p = handle.progress()
                if p.get("maps_done", 0) >= p.get("maps", 1) / 2 or p.get("state") != "running":
                    break
                time.sleep(0.02)
            os.kill(victim, signal.SIGKILL)
        try:
            result = handle.wait(timeout=900)
        finally:
            if cycle:
                cycle.done.set()
                cycle.join()
        elapsed = time.perf_counter() - start
    return elapsed, {"result": dict(result.items()), "stats": result.stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=24, help="copies of the 8 books (default 24)")
    ap.add_argument("--reducers", type=int, default=4)
    ap.add_argument("--split-size", type=int, default=1 << 20)
    ap.add_argument("--only", default="none,kill,slow+backup,slow-nobackup")
    args = ap.parse_args()
    books = sorted(glob.glob(os.path.join(BOOKS, "*.txt")))
    if not books:
        sys.exit(f"no books in {BOOKS}")
    tmp = tempfile.mkdtemp(prefix="zmqmr-faults-")
    try:
        inputs = []
        for c in range(args.copies):
            for b in books:
                dst = os.path.join(tmp, f"{c}-{os.path.basename(b)}")
                shutil.copyfile(b, dst)
                inputs.append(dst)
        size = sum(os.path.getsize(p) for p in inputs)
        print(
            f"word count over {size / 1e6:.1f} MB, {args.copies} copies of 8 books, "
            f"4 workers, R={args.reducers}, split {args.split_size} bytes"
        )
        oracle = dict(zmqmr.run_serial(zmqmr.Job(mapper, reducer, inputs=inputs)).items())
        times: dict[str, float] = {}
        ok = True
        for scenario in args.only.split(","):
            elapsed, out = run(scenario, inputs, args.reducers, args.split_size)
            right = out["result"] == oracle
            ok &= right
            times[scenario] = elapsed
            s = out["stats"]
            base = times.get("none")
            ratio = f"{elapsed / base:5.2f}x" if base else "   - "
            print(
                f"{scenario:14s} {elapsed:7.2f}s  {ratio}  answer {'right' if right else 'WRONG'}"
                f"  attempts {s['map_attempts']}+{s['reduce_attempts']}"
                f"  re-executed maps {s['reexecuted_maps']}"
                f"  backups {s['backups_launched']}/{s['backups_won']}/{s['backups_cancelled']}"
                " (launched/won/cancelled)"
            )
        base = times.get("none")
        if base:
            targets = {
                "kill": ("<=", 1.5),
                "slow+backup": ("<=", 1.3),
                "slow-nobackup": (">=", 2.0),
            }
            for name, (op, limit) in targets.items():
                if name in times:
                    r = times[name] / base
                    met = r <= limit if op == "<=" else r >= limit
                    print(f"target {name}: {r:.2f}x {op} {limit}x: {'met' if met else 'NOT met'}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
