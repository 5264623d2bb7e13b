"""What faults cost: word count on 4 workers, with and without faults, in one invocation.

Scenarios, each on a fresh LocalCluster of 4 workers:

  none          no faults: the baseline
  kill          one worker SIGKILLed when half the map tasks are done
  slow+backup   one worker (and its executors) slowed to a tenth of its speed by a
                SIGSTOP/SIGCONT duty cycle, backup tasks on
  slow-nobackup the same straggler with speculative=False
  journal       no faults, the master with a state dir (what the journal costs)
  kill-master   the master (with a state dir) SIGKILLed when half the map tasks are
                done and started again 1 s later; it resumes the job

Prints each wall time and its ratio to the no-fault run, and checks every
answer against run_serial. For kill-master it also prints the map attempts
the journal held when the master died and those run after its restart (the
maps done before the kill are reused, not run again). Targets: kill <= 1.5x,
slow with backups <= 1.3x, slow without backups >= 2x, kill-master <= 1.3x.

    python benchmarks/faults.py [--copies 24] [--reducers 4] [--only none,kill-master]
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
from zmqmr.journal import read_entries

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
    state_dir = tempfile.mkdtemp(prefix="zmqmr-state-") if scenario in JOURNALED else None
    extra: dict = {}
    try:
        with zmqmr.LocalCluster(workers=4, state_dir=state_dir, **settings) as cluster:
            elapsed, result = _run(scenario, cluster, job, state_dir, extra)
    finally:
        if state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
    return elapsed, {"result": dict(result.items()), "stats": result.stats, **extra}


JOURNALED = ("journal", "kill-master")


def _half_the_maps(handle: zmqmr.JobHandle) -> None:
    while True:
        p = handle.progress()
        if p.get("maps_done", 0) >= p.get("maps", 1) / 2 or p.get("state") != "running":
            return
        time.sleep(0.02)


def _journaled_maps(state_dir: str, job_id: str) -> tuple[int, int]:
    """(map attempts, distinct maps done) that the dead master's journal holds."""
    entries, _ = read_entries(os.path.join(state_dir, "journal"))
    attempts = sum(
        1
        for e in entries
        if e.kind == "attempt" and e.fields["job"] == job_id and e.fields["kind"] == "map"
    )
    done = {e.fields["task"] for e in entries if e.kind == "map" and e.fields["job"] == job_id}
    return attempts, len(done)


def _run(
    scenario: str, cluster: zmqmr.LocalCluster, job: zmqmr.Job, state_dir: str | None, extra: dict
) -> tuple[float, zmqmr.JobResult]:
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
        _half_the_maps(handle)
        os.kill(victim, signal.SIGKILL)
    if scenario == "kill-master":
        assert state_dir is not None and cluster.master_proc is not None
        _half_the_maps(handle)
        os.kill(cluster.master_proc.pid, signal.SIGKILL)
        cluster.master_proc.wait()
        extra["before"], extra["done_before"] = _journaled_maps(state_dir, handle.job_id)
        time.sleep(1.0)
        cluster.restart_master()
    try:
        result = handle.wait(timeout=900)
    finally:
        if cycle:
            cycle.done.set()
            cycle.join()
    elapsed = time.perf_counter() - start
    return elapsed, result


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
            if "before" in out:
                print(
                    f"{'':14s} map attempts: {out['before']} before the kill "
                    f"({out['done_before']} maps done, journaled), "
                    f"{s['map_attempts'] - out['before']} after the restart, "
                    f"{s['maps']} maps in the job"
                )
        base = times.get("none")
        if base:
            targets = {
                "kill": ("<=", 1.5),
                "slow+backup": ("<=", 1.3),
                "slow-nobackup": (">=", 2.0),
                "kill-master": ("<=", 1.3),
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
