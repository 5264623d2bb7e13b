"""Scale: what the master costs per task as jobs and clusters grow.

Five parts, each printing figures and ratios measured in this run:

* ``state``: ``MasterState`` alone, events in and commands out, no sockets: a
  job of M one-record map tasks and R reduces on W workers, every attempt
  completing at once. Prints microseconds of state-machine work per task at
  each size and the ratio to the smallest: flat means constant work per task.
* ``reduce``: the reduce phase of 200 map outputs at R = 50, 200 and 400 on a
  2-worker LocalCluster (every segment non-empty), and the ratio to R = 50.
* ``local``: M one-record map tasks and one reduce on a real 2-worker
  ``LocalCluster`` (default settings), checked against ``run_serial``.
  Prints wall seconds, tasks/s, and the CPU seconds per task of the master,
  each worker, each executor and the client (psutil over the process tree),
  so the process that bounds small-task throughput is visible.
* ``executor``: an executor's loop alone, in this process over a fake pipe:
  CPU per one-record map attempt (user and kernel) in a directory of your
  choice, beside the CPU of creating one empty file there (a map output is
  one file: on a busy disk that is most of a small attempt's cost).
* ``cluster``: a real master process (``LocalCluster(workers=0)``) and fake
  workers (many DEALER sockets in a few processes, speaking the real
  protocol, batches included, completing every attempt the moment it arrives). Prints the
  master's CPU per task and tasks per second for one job of M maps and R
  reduces, and the master's CPU share while the fake workers only heartbeat.

    python benchmarks/scale.py                                  # both, full size
    python benchmarks/scale.py --only state --sizes 1000,10000,100000
    python benchmarks/scale.py --only cluster --workers 1000 --maps 100000 --reduces 1000
    python benchmarks/scale.py --only cluster --slots 8       # multi-core fake workers
    python benchmarks/scale.py --only local --local-maps 10000
    python benchmarks/scale.py --only executor --executor-dir /tmp

Targets (issue 9): master CPU per map task <= 50 us at 100,000 tasks, flat
from 1,000 to 100,000; the master under 1,000 workers' heartbeats alone below
20 % of a core at the default heartbeat interval; 10,000 one-record maps + 1
reduce on a 2-worker LocalCluster in <= 5 s (>= 2,000 tasks/s); 200 maps at R = 400 cost at
most 2x R = 50 in the reduce phase.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from multiprocessing.reduction import ForkingPickler

import psutil
import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import zmqmr  # noqa: E402
from zmqmr import events as ev  # noqa: E402
from zmqmr import protocol as p  # noqa: E402
from zmqmr.config import ClusterSettings  # noqa: E402
from zmqmr.state import MasterState  # noqa: E402


def _job_spec(maps: int, reduces: int) -> p.JobSpec:
    splits = [p.Split("records", blob=i, count=1, first=i) for i in range(maps)]
    return p.JobSpec("scale", reduces, splits, speculative=True)


def _report(a: ev.Assign | p.Assign, reduces: int) -> p.Report:
    if a.kind == "map":  # one non-empty segment per map output: a sparse shuffle
        return p.Report(segments=[p.Segment(a.task % reduces, 100, 1)], seconds=0.0)
    return p.Report(seconds=0.0)  # done the moment it arrived, as a worker reports it


def state_run(maps: int, reduces: int, workers: int) -> float:
    """Seconds of ``MasterState.handle`` for one job, every attempt done at once."""
    s = MasterState(ClusterSettings())
    now = 0.0
    spent = 0.0
    pending: list[ev.Assign] = []

    def handle(event: ev.Event) -> None:
        nonlocal spent
        t = time.perf_counter()
        out = s.handle(event, now)
        spent += time.perf_counter() - t
        pending.extend(c for c in out if isinstance(c, ev.Assign))

    for i in range(workers):
        handle(ev.WorkerReady(b"w%d" % i, 1, "tcp://10.0.0.1:7000", "host", i))
    handle(ev.JobSubmitted(b"client", "scale", _job_spec(maps, reduces), b"code", [b""] * maps))
    ticks = 0
    while pending:
        a = pending.pop(0)
        now += 1e-5
        result = b"" if a.kind == "reduce" else None
        handle(ev.AttemptDone(a.worker, a.attempt, _report(a, reduces), result))
        if now >= ticks * 1.0:  # a tick a simulated second, as the shell gives them
            ticks += 1
            handle(ev.Tick())
    assert s.jobs["scale"].status == "succeeded", s.jobs["scale"].status
    return spent


def bench_state(sizes: list[int], workers: int) -> None:
    """The state alone, fastest of 3 runs a size, under the collector's
    threshold the master's loop sets (``master.GC_THRESHOLD``). At Python's
    default, the collector's passes over a big job's long-lived tables made the
    100,000-map job about 1.6 x dearer per task than the small one, a cost the
    master does not pay."""
    import gc

    from zmqmr.master import GC_THRESHOLD

    print(f"MasterState alone: M one-record maps, R = M/100 reduces, {workers} workers")
    print(f"(fastest of 3; the collector's youngest generation every {GC_THRESHOLD:,} allocations)")
    print(f"{'tasks':>9} {'seconds':>9} {'us/task':>9} {'ratio':>7}")
    base = None
    before = gc.get_threshold()
    for m in sizes:
        r = max(1, m // 100)
        runs = []
        for _ in range(3):
            gc.collect()
            gc.set_threshold(GC_THRESHOLD, *before[1:])
            try:
                runs.append(state_run(m, r, workers))
            finally:
                gc.set_threshold(*before)
        seconds = min(runs)
        per = seconds / (m + r) * 1e6
        base = base or per
        print(f"{m + r:>9} {seconds:>9.3f} {per:>9.1f} {per / base:>7.2f}")


# -- fake workers against a real master -------------------------------------------------


def fake_workers(
    address: str, count: int, first: int, heartbeat: float, keys_dir: str, slots: int = 1
) -> None:
    """Register ``count`` workers of ``slots`` slots; complete every attempt at once;
    heartbeat; until stdin closes."""
    from zmqmr.security import MEMBER, load_keys

    keys = load_keys(keys_dir, MEMBER) if keys_dir else None
    ctx = zmq.Context()
    socks = []
    for i in range(first, first + count):
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, b"fake-%06d" % i)
        s.linger = 0
        if keys is not None:  # CURVE, as the cluster's real workers speak it
            keys.client(s, keys.master_public)
        s.connect(address)
        s.send_multipart(p.encode(p.Ready(slots, f"tcp://127.0.0.1:{10000 + i}", "fake", i)))
        socks.append(s)
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    seen = dict.fromkeys(socks, -1)  # each fake worker's highest attempt read, as workers say
    next_beat = time.monotonic() + heartbeat
    while True:
        for sock, _ in poller.poll(int(heartbeat * 500)):
            if sock == sys.stdin.fileno():
                return
            replies: list[p.Message] = []
            while True:
                try:
                    batch = p.decode_batch(sock.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
                if batch.errors:
                    raise SystemExit(f"a malformed message from the master: {batch.errors}")
                for msg in batch.parts:
                    if isinstance(msg, p.Assign):
                        seen[sock] = max(seen[sock], msg.attempt)
                        blobs = [b""] if msg.kind == "reduce" else []
                        report = _report(msg, msg.spec.num_reducers)
                        replies.append(p.Done(msg.attempt, report, blobs=blobs))
                    elif isinstance(msg, p.Reconnect):
                        raise SystemExit(f"the master dropped a fake worker: {msg}")
            for frames in p.pack(replies):  # one loop turn's completions, as a worker sends them
                sock.send_multipart(frames)
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + heartbeat
            for s in socks:
                s.send_multipart(p.encode(p.Heartbeat(seen=seen[s])))


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _main_thread_cpu(proc: psutil.Process) -> float:
    """CPU seconds of the master's poll loop (its main thread); the rest is ZeroMQ's
    I/O threads (CURVE, TCP) and the CURVE authenticator's thread."""
    for t in proc.threads():
        if t.id == proc.pid:
            return float(t.user_time + t.system_time)
    return 0.0


def bench_cluster(
    workers: int,
    maps: int,
    reduces: int,
    procs: int,
    heartbeat: float,
    idle: float,
    slots: int = 1,
) -> None:
    """``slots``: each fake worker's (1: the default figure; more shows what a batch of
    several attempts per message saves on multi-core workers)."""
    timeout = max(30.0, 10 * heartbeat)
    with zmqmr.LocalCluster(
        workers=0, client_timeout=120, heartbeat_interval=heartbeat, worker_timeout=timeout
    ) as cluster:
        assert cluster.master_pid is not None
        master = psutil.Process(cluster.master_pid)
        fakes = []
        per = -(-workers // procs)
        for i in range(procs):
            count = min(per, workers - i * per)
            fakes.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--fake", cluster.worker_address, str(count)]
                    + [str(i * per), str(heartbeat), cluster.keys or "", str(slots)],
                    stdin=subprocess.PIPE,
                )
            )
        try:
            cluster.wait_for_workers(workers, 120)
            cpu0, t0 = _cpu(master), time.perf_counter()
            time.sleep(idle)
            share = (_cpu(master) - cpu0) / (time.perf_counter() - t0)
            print(
                f"heartbeats alone: {workers} workers at {heartbeat:g}s, master CPU "
                f"{share:.1%} of a core over {idle:g}s"
            )
            job = zmqmr.Job(
                _noop, _noop, inputs=[(i, i) for i in range(maps)], num_reducers=reduces
            )
            job.split_size = 1  # one record, one task
            client = cluster.client()
            cpu0, loop0, t0 = _cpu(master), _main_thread_cpu(master), time.perf_counter()
            result = client.run(job, progress=False)
            wall = time.perf_counter() - t0
            cpu = _cpu(master) - cpu0
            loop = _main_thread_cpu(master) - loop0
            tasks = result.stats["maps"] + result.stats["reduces"]
            assert result.stats["maps"] == maps, result.stats
            print(
                f"one job: {maps} maps + {reduces} reduces on {workers} fake workers "
                f"of {slots} slots: "
                f"{wall:.1f}s, {tasks / wall:,.0f} tasks/s, master CPU {cpu:.1f}s = "
                f"{cpu / tasks * 1e6:.0f} us/task ({cpu / wall:.0%} of a core); of which the "
                f"poll loop {loop / tasks * 1e6:.0f} us/task, ZeroMQ's threads "
                f"{(cpu - loop) / tasks * 1e6:.0f} us/task"
            )
        finally:
            for f in fakes:
                if f.stdin is not None:
                    f.stdin.close()
            for f in fakes:
                try:
                    f.wait(10)
                except subprocess.TimeoutExpired:
                    f.kill()
                    f.wait()


def _keys_mapper(key: int, value: int) -> object:
    return [(k, 1) for k in range(value)]


def _count(key: object, values: object) -> int:
    return sum(values)  # type: ignore[call-overload]


def bench_reduce(maps: int, reducers: list[int], keys: int, repeat: int = 1) -> None:
    """The reduce phase of ``maps`` map outputs at growing R, on a 2-worker LocalCluster.

    Beside the phase's seconds (the job's ``reduce_seconds``), the CPU seconds every
    process spent from the last map's completion to the job's end, by role: on a
    loaded machine the CPU is the figure to compare. With ``repeat``, the Rs run
    interleaved that many rounds and the fastest round of each is shown.
    """
    load = os.getloadavg()[0]
    print(f"reduce phase: {maps} maps of {keys} keys each, 2 workers, load {load:.1f}")
    print(
        f"{'R':>6} {'reduce s':>9} {'ratio':>7} {'CPU s':>7} {'ratio':>7}"
        f" {'master':>7} {'workers':>8} {'execs':>7}"
    )
    best: dict[int, tuple[float, float, dict[str, float]]] = {}
    with zmqmr.LocalCluster(workers=2) as cluster:
        for _ in range(repeat):
            for r in reducers:
                job = zmqmr.Job(
                    _keys_mapper, _count, inputs=[(i, keys) for i in range(maps)], num_reducers=r
                )
                job.split_size = 1
                handle = cluster.client().submit(job)
                while handle.progress().get("maps_done", 0) < maps:
                    time.sleep(0.002)
                procs = _tree(cluster)
                before = _cpu_of(procs)
                result = handle.wait()
                after = _cpu_of(procs)
                assert dict(result.items()) == dict.fromkeys(range(keys), maps)
                roles = {"master": 0.0, "workers": 0.0, "execs": 0.0}
                for name in procs:
                    if name == "client":
                        continue
                    role = "execs" if "/" in name else "workers" if "worker" in name else "master"
                    roles[role] += after[name][0] - before[name][0]
                seconds = result.stats["reduce_seconds"]
                if r not in best or seconds < best[r][0]:
                    best[r] = (seconds, sum(roles.values()), roles)
    base = best[reducers[0]]
    for r in reducers:
        seconds, cpu, roles = best[r]
        print(
            f"{r:>6} {seconds:>9.2f} {seconds / base[0]:>7.2f} {cpu:>7.2f} {cpu / base[1]:>7.2f}"
            f" {roles['master']:>7.2f} {roles['workers']:>8.2f} {roles['execs']:>7.2f}"
        )


def _one_pair(key: int, value: int) -> list[tuple[int, int]]:
    return [(value % 7, value)]


def _sum(key: object, values: object) -> int:
    return sum(values)  # type: ignore[call-overload]


def _tree(cluster: zmqmr.LocalCluster) -> dict[str, psutil.Process]:
    """The cluster's processes by role: master, worker-N, worker-N/executor-K, client."""
    procs = {"client": psutil.Process()}
    assert cluster.master_pid is not None
    procs["master"] = psutil.Process(cluster.master_pid)
    for n, pid in enumerate(cluster.worker_pids):
        w = psutil.Process(pid)
        procs[f"worker-{n}"] = w
        executors = [c for c in w.children() if "resource_tracker" not in " ".join(c.cmdline())]
        for k, c in enumerate(sorted(executors, key=lambda c: c.pid)):
            procs[f"worker-{n}/executor-{k}"] = c
    return procs


def _cpu_of(procs: dict[str, psutil.Process]) -> dict[str, tuple[float, float, float]]:
    """Per process: CPU seconds of all its threads, of its main thread, and in the kernel."""
    out = {}
    for name, proc in procs.items():
        try:
            out[name] = (_cpu(proc), _main_thread_cpu(proc), float(proc.cpu_times().system))
        except psutil.NoSuchProcess:  # restarted during the job (a crash): not comparable
            out[name] = (float("nan"),) * 3
    return out


def bench_local(maps: int, warmup: int, settings: dict[str, object]) -> None:
    """M one-record maps + 1 reduce on LocalCluster(workers=2), CPU per task by process."""
    job = zmqmr.Job(_one_pair, _sum, inputs=[(i, i) for i in range(maps)], num_reducers=1)
    job.split_size = 1  # one record, one task
    expected = dict(zmqmr.run_serial(job).items())
    load = os.getloadavg()
    with zmqmr.LocalCluster(workers=2, **settings) as cluster:
        cluster.wait_for_workers(2, 120)
        client = cluster.client(timeout=120)
        if warmup:  # executors import and start: not what a task costs
            w = zmqmr.Job(_one_pair, _sum, inputs=[(i, i) for i in range(warmup)])
            w.split_size = 1
            client.run(w, progress=False)
        procs = _tree(cluster)
        cpu0, t0 = _cpu_of(procs), time.perf_counter()
        result = client.run(job, progress=False)
        wall = time.perf_counter() - t0
        cpu1 = _cpu_of(procs)
    assert dict(result.items()) == expected, "the cluster's answer differs from run_serial's"
    tasks = result.stats["maps"] + result.stats["reduces"]
    assert result.stats["maps"] == maps, result.stats
    print(
        f"local: {maps} one-record maps + 1 reduce on LocalCluster(workers=2"
        + "".join(f", {k}={v!r}" for k, v in settings.items())
        + f"), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
        + f"zmqmr of {os.path.dirname(os.path.dirname(os.path.abspath(zmqmr.__file__)))}"
    )
    st = result.stats
    print(
        f"wall {wall:.2f}s, {tasks / wall:,.0f} tasks/s, answer equals run_serial's; "
        f"map phase {st['map_seconds']:.2f}s, reduce phase {st['reduce_seconds']:.2f}s"
    )
    print(
        "us/task: CPU over all the job's tasks; of it, main: the process's main thread "
        "(the rest: ZeroMQ's I/O threads, CURVE, the shuffle server's thread); "
        "kernel: system time (system calls: files, pipes, sockets)"
    )
    print(f"{'process':<22} {'CPU s':>7} {'us/task':>8} {'main':>6} {'kernel':>7} {'of wall':>8}")
    total = 0.0
    for name in procs:
        spent, main, kernel = (cpu1[name][i] - cpu0[name][i] for i in range(3))
        total += spent
        print(
            f"{name:<22} {spent:>7.2f} {spent / tasks * 1e6:>8.0f} "
            f"{main / tasks * 1e6:>6.0f} {kernel / tasks * 1e6:>7.0f} {spent / wall:>8.0%}"
        )
    print(f"{'all':<22} {total:>7.2f} {total / tasks * 1e6:>8.0f} {'':>14} {total / wall:>8.0%}")


class _Pipe:
    """An executor's end of its pipe, in this process: attempts in, reports kept.

    Each message is pickled as a real pipe's would be: the attempts before they
    are timed (the worker's side), the reports as they are sent (the executor's).
    """

    def __init__(self, inbox: list[object]) -> None:
        self._sent: list[bytes] = []
        self.inbox = inbox

    @property
    def inbox(self) -> list[bytes]:
        return self._inbox

    @inbox.setter
    def inbox(self, msgs: list[object]) -> None:
        self._inbox = [bytes(ForkingPickler.dumps(m)) for m in msgs]
        self._inbox.reverse()

    def recv(self) -> object:
        if not self._inbox:
            raise EOFError
        return ForkingPickler.loads(self._inbox.pop())

    def send(self, msg: object) -> None:
        self._sent.append(bytes(ForkingPickler.dumps(msg)))

    @property
    def sent(self) -> list[object]:
        return [ForkingPickler.loads(m) for m in self._sent]


def bench_executor(maps: int, where: str | None) -> None:
    """An executor's CPU per one-record map attempt, run in this process (no worker;
    its pipe's messages pickled, not sent), beside what creating one file costs in
    the same directory."""
    import logging
    import shutil
    import tempfile

    from zmqmr import executor
    from zmqmr.config import WorkerSettings
    from zmqmr.job import make_splits, pickle_functions

    job = zmqmr.Job(_one_pair, _sum, inputs=[(i, i) for i in range(maps)], num_reducers=1)
    job.split_size = 1
    descs, blobs = make_splits(job)
    code: bytes | None = pickle_functions(job)
    msgs: list[object] = []
    for i, desc in enumerate(descs):
        spec = p.TaskSpec("scale", 1, maps, None, False, 1 << 20, split=p.Split.from_json(desc))
        msgs.append(p.RunAttempt(i + 1, "scale", "map", i, spec, code, blobs[desc["blob"]]))
        code = None
    top = tempfile.mkdtemp(prefix="zmqmr-scale-", dir=where)
    try:
        data = os.path.join(top, "zmqmr-maps")
        os.mkdir(data)
        first, rest = msgs[:1], msgs[1:]
        n = len(rest)
        pipe = _Pipe(first)
        ex = executor.Executor(pipe, data, "tcp://127.0.0.1:1", WorkerSettings())  # type: ignore[arg-type]
        logging.getLogger().setLevel(logging.INFO)  # as executor.main leaves it
        ex.serve()  # the job's code unpickled, its directory made
        pipe.inbox = rest
        t0, w0 = os.times(), time.perf_counter()
        ex.serve()
        t1, wall = os.times(), time.perf_counter() - w0
        sent = pipe.sent
        assert len(sent) == n + 1, "an attempt sent no report"
        assert all(isinstance(m, p.Done) for m in sent), sent[-1]
        user, kernel = t1.user - t0.user, t1.system - t0.system
        empty = os.path.join(top, "empty")
        os.mkdir(empty)
        c0 = os.times()
        for i in range(n):
            os.close(os.open(os.path.join(empty, f"f{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
        c1 = os.times()
        create = (c1.user - c0.user) + (c1.system - c0.system)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"executor alone: {n} one-record map attempts in {top}, load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(
        f"CPU {(user + kernel) / n * 1e6:.0f} us per attempt (kernel {kernel / n * 1e6:.0f} us), "
        f"wall {wall / n * 1e6:.0f} us; creating one empty file there: "
        f"{create / n * 1e6:.0f} us of CPU"
    )


def _print_profiles(where: str, top: int = 25) -> None:
    """The functions each profiled process spent most in (its own time), by process."""
    import pstats

    for name in sorted(os.listdir(where)):
        if name.endswith(".prof"):
            print(f"--- {name} (whole life: start-up, warm-up and the job) ---")
            pstats.Stats(os.path.join(where, name)).sort_stats("tottime").print_stats(top)


def _noop(key: object, value: object) -> None:  # never called: the fake workers run nothing
    return None


def _settings(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"--local-set takes NAME=VALUE, got {pair!r}")
        value: object = text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                pass
        out[name] = value
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--fake":
        address, count, first, heartbeat, keys_dir, slots = sys.argv[2:8]
        fake_workers(address, int(count), int(first), float(heartbeat), keys_dir, int(slots))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="state,cluster,reduce,local,executor")
    ap.add_argument("--sizes", default="1000,10000,100000", help="map tasks for the state part")
    ap.add_argument("--state-workers", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1000, help="fake workers")
    ap.add_argument("--maps", type=int, default=100_000)
    ap.add_argument("--reduces", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2, help="processes holding the fake workers")
    ap.add_argument("--slots", type=int, default=1, help="slots of each fake worker")
    ap.add_argument("--heartbeat", type=float, default=ClusterSettings().heartbeat_interval)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of heartbeats alone")
    ap.add_argument("--reduce-maps", type=int, default=200)
    ap.add_argument("--reduce-rs", default="50,200,400")
    ap.add_argument("--reduce-repeat", type=int, default=1, help="interleaved rounds")
    ap.add_argument("--reduce-keys", type=int, default=0, help="keys a map (default: largest R)")
    ap.add_argument("--local-maps", type=int, default=10_000, help="map tasks for local")
    ap.add_argument("--local-warmup", type=int, default=20, help="maps of a job run first")
    ap.add_argument("--executor-maps", type=int, default=2000, help="attempts for executor")
    ap.add_argument("--executor-dir", help="where executor writes (default: the temp dir)")
    ap.add_argument(
        "--profile",
        metavar="DIR",
        help="local: the master, workers and executors write cProfile stats to DIR "
        "(ZMQMR_PROFILE), and the top functions of each are printed",
    )
    ap.add_argument(
        "--local-set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a LocalCluster setting for local (an int, float or string), e.g. prefetch=2",
    )
    args = ap.parse_args()
    only = args.only.split(",")
    if "state" in only:
        bench_state([int(s) for s in args.sizes.split(",")], args.state_workers)
    if "cluster" in only:
        bench_cluster(
            args.workers, args.maps, args.reduces, args.procs, args.heartbeat, args.idle, args.slots
        )
    if "local" in only:
        if args.profile:
            os.environ["ZMQMR_PROFILE"] = os.path.abspath(args.profile)
        bench_local(args.local_maps, args.local_warmup, _settings(args.local_set))
        if args.profile:
            _print_profiles(args.profile)
    if "executor" in only:
        bench_executor(args.executor_maps, args.executor_dir)
    if "reduce" in only:
        rs = [int(r) for r in args.reduce_rs.split(",")]
        bench_reduce(args.reduce_maps, rs, args.reduce_keys or max(rs), args.reduce_repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
