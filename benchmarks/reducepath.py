"""The reduce path's cost per segment, in one process and a shuffle server's.

``M`` map outputs of ``KEYS`` keys over ``R`` partitions (a segment of KEYS/R keys
each, as in ``scale.py --only reduce``), half in this process's data directory
and half served by a real ``ShuffleServer`` in a child process. Prints the CPU
per segment of: the reduce assignment's encode and decode (``ASSIGN`` with its
``Locations``) and its pickle to an executor; the shuffle server's ``handle``
(in process, no socket: the requests a reducer sends); and the executor's
reduce path (``ReduceSide.run_reduce``: this process's segments read, the
others fetched from the child over a socket, decoded, grouped and reduced),
with the child's CPU beside it. Every reduce's result is checked.

    python benchmarks/reducepath.py            # R = 50 and 400
    python benchmarks/reducepath.py --rs 400 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import os
import pickle
import pstats
import resource
import shutil
import signal
import sys
import tempfile
import time
from multiprocessing import Pipe
from typing import Any

import zmq

from zmqmr import layout, mapoutput, outputreader, protocol, reduceside, shuffle
from zmqmr.config import WorkerSettings

JOB = "job1"
HERE = "tcp://127.0.0.1:1"  # this process's shuffle address: its segments are read locally


def _write(data_dir: str, maps: range, r: int, keys: int) -> dict[int, list[mapoutput.Segment]]:
    os.makedirs(layout.job_dir(data_dir, JOB), exist_ok=True)
    segments = {}
    for m in maps:
        w = mapoutput.MapOutputWriter(layout.map_output_path(data_dir, JOB, m, 1), r)
        for p in range(r):
            w.write_pairs([(k, 1) for k in range(p, keys, r)])
        segments[m] = w.close()
    return segments


def _serve(data_dir: str, queue: Any) -> None:
    server = shuffle.ShuffleServer(zmq.Context(), data_dir, "tcp://127.0.0.1:*")
    queue.put(server.start())

    def report(*_: Any) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        queue.put((usage.ru_utime + usage.ru_stime, server.requests))

    signal.signal(signal.SIGUSR1, report)
    while True:
        time.sleep(1)


def _sum(key: Any, values: Any) -> int:
    return sum(values)


def bench(r: int, maps: int, keys: int, profile: bool) -> None:
    root = tempfile.mkdtemp(prefix="zmqmr-reducepath-")
    here, there = os.path.join(root, "here"), os.path.join(root, "there")
    try:
        local = _write(here, range(0, maps, 2), r, keys)
        remote = _write(there, range(1, maps, 2), r, keys)
        queue: Any = mp.get_context("fork").Queue()
        server = mp.get_context("fork").Process(target=_serve, args=(there, queue), daemon=True)
        server.start()
        address = queue.get(timeout=30)
        specs = []
        for p in range(r):
            locs = []
            for m in range(maps):
                segs, at = (local, HERE) if m % 2 == 0 else (remote, address)
                seg = segs[m][p]
                if seg.length:
                    locs.append(protocol.Location(m, 1, at, seg.length, seg.groups))
            specs.append(protocol.TaskSpec("t", r, maps, None, False, 1 << 30, partition=p))
            specs[-1].locations = protocol.Locations.of(locs)
        n = sum(len(s.locations) for s in specs)

        t = time.process_time()
        frames = [
            protocol.encode(protocol.Assign(5 + p, JOB, "reduce", p, specs[p])) for p in range(r)
        ]
        encode = time.process_time() - t
        t = time.process_time()
        decoded = [protocol.decode(f) for f in frames]
        decode = time.process_time() - t
        t = time.process_time()
        got = [pickle.loads(pickle.dumps(d.spec, pickle.HIGHEST_PROTOCOL)) for d in decoded]  # type: ignore[attr-defined]
        pickled = time.process_time() - t

        served = shuffle.ShuffleServer(None, there, "")  # type: ignore[arg-type]
        odd = list(range(1, maps, 2))
        requests = [
            protocol.encode(protocol.Fetch(JOB, p, odd, [1] * len(odd), [0] * len(odd), 1 << 20))
            for p in range(r)
        ]
        served.handle(requests[0])
        t = time.process_time()
        for f in requests:
            served.handle(f)
        handle = time.process_time() - t
        served.reader.forget()

        conn, other = Pipe()
        side = reduceside.ReduceSide(
            conn, here, HERE, WorkerSettings(), None, outputreader.OutputReader(), lambda f: None
        )
        prof = cProfile.Profile() if profile else None
        os.kill(server.pid, signal.SIGUSR1)
        child_before = queue.get(timeout=30)[0]
        t, w = time.process_time(), time.perf_counter()
        if prof is not None:
            prof.enable()
        for p in range(r):
            _, blob = side.run_reduce({"reducer": _sum}, JOB, p, 10 + p, got[p], {})
            results = dict(mapoutput.segment_groups(blob or b""))
            assert results == dict.fromkeys(range(p, keys, r), maps), f"partition {p}"
        if prof is not None:
            prof.disable()
        reduce_cpu, wall = time.process_time() - t, time.perf_counter() - w
        os.kill(server.pid, signal.SIGUSR1)
        child = queue.get(timeout=30)[0] - child_before
        server.kill()
        side.reader.forget()
        conn.close()
        other.close()
        print(
            f"R = {r}: {n} segments ({keys // r or 1} keys each), us per segment:"
            f" assignment encode {encode * 1e6 / n:.2f}, decode {decode * 1e6 / n:.2f},"
            f" pickle {pickled * 1e6 / n:.2f}; shuffle server handle"
            f" {handle * 1e6 / len(odd) / r:.2f} per segment served;"
            f" reduce path {reduce_cpu * 1e6 / n:.2f}"
            f" ({reduce_cpu * 1e3 / r:.2f} ms per reduce, wall {wall:.2f} s),"
            f" serving child {child * 1e6 / n:.2f}"
        )
        if prof is not None:
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(20)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rs", default="50,400")
    ap.add_argument("--maps", type=int, default=200)
    ap.add_argument("--keys", type=int, default=400)
    ap.add_argument("--profile", action="store_true", help="cProfile of the reduce path")
    args = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}")
    for r in (int(x) for x in args.rs.split(",")):
        bench(r, args.maps, args.keys, args.profile)


if __name__ == "__main__":
    main()
