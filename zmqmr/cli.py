"""The ``zmqmr`` command: master, worker, run, status, keygen.

This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from types import ModuleType
from typing import Any

from .config import (
    DEFAULT_CLIENT_BIND,
    DEFAULT_WORKER_BIND,
    ClusterSettings,
    WorkerSettings,
)
from .errors import ClusterError, ZmqmrError

log = logging.getLogger("zmqmr")


def _parse_sets(pairs: list[str], cls: Any) -> dict[str, Any]:
    fields = cls.__dataclass_fields__
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"zmqmr: unknown setting {name!r}; known: {', '.join(fields)}")
        kind = type(getattr(cls(), name))
        try:
            out[name] = kind(raw) if kind is not bool else raw.lower() in ("1", "true", "yes")
        except ValueError:
            raise SystemExit(
                f"zmqmr: setting {name} needs a {kind.__name__}, got {raw!r}"
            ) from None
    return out


def _stop_on_signals(event: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def cmd_master(args: argparse.Namespace) -> int:
    from .master import Master

    overrides = _parse_sets(args.set, ClusterSettings)
    if args.heartbeat_interval is not None:
        overrides["heartbeat_interval"] = args.heartbeat_interval
    if args.worker_timeout is not None:
        overrides["worker_timeout"] = args.worker_timeout
    from .security import MASTER, load_keys

    keys = load_keys(args.keys, MASTER) if args.keys else None
    import zmq

    try:
        master = Master(
            args.bind,
            args.client_bind,
            ClusterSettings(**overrides),
            keys=keys,
            insecure=args.insecure,
        )
    except zmq.ZMQError as exc:  # the port is taken, or the address is not this machine's
        raise ClusterError(f"the master cannot bind: {exc}") from None
    if args.announce:
        tmp = args.announce + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "worker_address": master.worker_address,
                    "client_address": master.client_address,
                    "pid": os.getpid(),
                },
                f,
            )
        os.replace(tmp, args.announce)
    log.info(
        "master: workers connect to %s, clients to %s", master.worker_address, master.client_address
    )
    _stop_on_signals(master.stop_event)
    master.run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    overrides = _parse_sets(args.set, WorkerSettings)
    if args.slots is not None:
        overrides["slots"] = args.slots
    worker = Worker(
        args.master,
        args.data_dir,
        WorkerSettings(**overrides),
        keys_dir=args.keys,
        insecure=args.insecure,
    )
    _stop_on_signals(worker.stop_event)
    worker.run()
    return 0


def load_job_file(path: str) -> ModuleType:
    """Import a job file (a module defining mapper, reducer, maybe combiner/partitioner)."""
    if not os.path.isfile(path):
        raise SystemExit(f"zmqmr: job file {path!r} does not exist")
    name = "zmqmr_jobfile_" + "".join(
        c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0]
    )
    spec = importlib.util.spec_from_file_location(name, os.path.abspath(path))
    if spec is None or spec.loader is None:
        raise SystemExit(f"zmqmr: cannot load {path!r} as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    for fn in ("mapper", "reducer"):
        if not callable(getattr(module, fn, None)):
            raise SystemExit(f"zmqmr: {path} must define a function {fn}()")
    return module


def job_from_file(
    path: str, inputs: list[str], reducers: int, output: str | None, split_size: int | None
) -> Any:
    from .job import Job

    mod = load_job_file(path)
    return Job(
        mapper=mod.mapper,
        reducer=mod.reducer,
        inputs=inputs,
        combiner=getattr(mod, "combiner", None),
        partitioner=getattr(mod, "partitioner", None),
        num_reducers=reducers,
        output_dir=output,
        split_size=split_size,
        name=os.path.splitext(os.path.basename(path))[0],
    )


def cmd_run(args: argparse.Namespace) -> int:
    from .client import Client
    from .local import LocalCluster

    job = job_from_file(args.jobfile, args.inputs, args.reducers, args.output, args.split_size)
    progress = None if not args.quiet else False
    if args.master:
        with Client(args.master, keys=args.keys, timeout=args.timeout) as client:
            result = client.run(job, progress=progress)
    else:
        with LocalCluster(workers=args.workers, keys=args.keys) as cluster:
            result = cluster.client().run(job, progress=progress)
    if args.output:
        for path in result.output_files:
            print(path)
    else:
        try:
            out = sys.stdout
            for key, value in result.items():
                out.write(f"{key}\t{value}\n")
            out.flush()
        except BrokenPipeError:  # `zmqmr run ... | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    s = result.stats
    if not args.quiet:
        print(
            f"zmqmr: {s.get('maps')} map and {s.get('reduces')} reduce tasks in "
            f"{s.get('total_seconds', 0):.2f}s",
            file=sys.stderr,
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .client import Client

    with Client(args.master, keys=args.keys, timeout=args.timeout) as client:
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    workers = status["workers"]
    print(f"{len(workers)} worker(s)")
    if workers:
        print(f"  {'HOST':<20} {'PID':>7} {'SLOTS':>5} {'BUSY':>4} {'HEARTBEAT':>10}  SHUFFLE")
        for w in workers:
            print(
                f"  {w['host']:<20} {w['pid']:>7} {w['slots']:>5} {w['running']:>4} "
                f"{w['last_heartbeat']:>9.1f}s  {w['shuffle']}"
            )
    jobs = status["jobs"]
    print(f"{len(jobs)} job(s)")
    if jobs:
        print(f"  {'ID':<16} {'NAME':<16} {'STATE':<10} {'MAPS':>9} {'REDUCES':>9} {'ELAPSED':>8}")
        for j in jobs:
            print(
                f"  {j['id']:<16} {j['name'][:16]:<16} {j['state']:<10} "
                f"{j['maps_done']:>4}/{j['maps']:<4} {j['reduces_done']:>4}/{j['reduces']:<4} "
                f"{j['elapsed']:>7.1f}s"
            )
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    import zmq.auth

    os.makedirs(args.dir, exist_ok=True)
    for name in ("master", "member"):
        for suffix in (".key", ".key_secret"):
            if os.path.exists(os.path.join(args.dir, name + suffix)):
                raise SystemExit(f"zmqmr: {args.dir}/{name}{suffix} exists; not overwriting")
    for name in ("master", "member"):
        public, secret = zmq.auth.create_certificates(args.dir, name)
        os.chmod(secret, 0o600)
        print(f"wrote {public} and {secret}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zmqmr", description="MapReduce for Python on ZeroMQ.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("master", help="run the master")
    m.add_argument(
        "--bind",
        default=DEFAULT_WORKER_BIND,
        help=f"address workers connect to (default {DEFAULT_WORKER_BIND})",
    )
    m.add_argument(
        "--client-bind",
        default=DEFAULT_CLIENT_BIND,
        help=f"address clients connect to (default {DEFAULT_CLIENT_BIND})",
    )
    m.add_argument("--keys", help="key directory: turn on CURVE")
    m.add_argument("--heartbeat-interval", type=float, help="seconds between heartbeats")
    m.add_argument(
        "--worker-timeout", type=float, help="seconds of silence before a worker is dead"
    )
    m.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a cluster setting (see zmqmr.config.ClusterSettings)",
    )
    m.add_argument("--announce", help=argparse.SUPPRESS)
    m.set_defaults(func=cmd_master)

    w = sub.add_parser("worker", help="run a worker")
    w.add_argument(
        "--master", required=True, help="the master's worker address, e.g. tcp://lab-01:5555"
    )
    w.add_argument("--data-dir", help="where map outputs live (default: a temporary directory)")
    w.add_argument(
        "--slots", type=int, help="executor processes, i.e. attempts at a time (default 1)"
    )
    w.add_argument("--keys", help="key directory: turn on CURVE")
    w.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting (see zmqmr.config.WorkerSettings)",
    )
    w.set_defaults(func=cmd_worker)

    r = sub.add_parser("run", help="run a job file on inputs")
    r.add_argument(
        "jobfile", help="a Python file defining mapper, reducer (and maybe combiner, partitioner)"
    )
    r.add_argument("inputs", nargs="+", help="input files or globs")
    r.add_argument("-r", "--reducers", type=int, default=1, help="reduce tasks (default 1)")
    r.add_argument(
        "-o", "--output", help="output directory for part files (default: print results)"
    )
    r.add_argument(
        "--master", help="a master's client address; without it, a local cluster runs the job"
    )
    r.add_argument(
        "--workers", type=int, default=2, help="workers of the local cluster (default 2)"
    )
    r.add_argument(
        "--split-size",
        type=int,
        default=None,
        help="bytes per input split (default: planned for the cluster)",
    )
    r.add_argument("--keys", help="key directory: turn on CURVE")
    r.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the master's answers"
    )
    r.add_argument("-q", "--quiet", action="store_true", help="no progress line or summary")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show a master's workers and jobs")
    s.add_argument(
        "--master",
        default=f"tcp://127.0.0.1:{DEFAULT_CLIENT_BIND.rsplit(':', 1)[1]}",
        help="the master's client address",
    )
    s.add_argument("--keys", help="key directory: turn on CURVE")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the master")
    s.set_defaults(func=cmd_status)

    k = sub.add_parser("keygen", help="make CURVE key pairs for a master and its members")
    k.add_argument("dir", help="directory to write the keys to")
    k.set_defaults(func=cmd_keygen)

    for sp in (m, w):
        sp.add_argument(
            "--insecure",
            action="store_true",
            help="allow binding beyond loopback without --keys (anyone who can reach it can "
            "run code as you)",
        )
        sp.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default = logging.WARNING if args.command in ("run", "status", "keygen") else logging.INFO
    level = max(logging.DEBUG, default - 10 * args.verbose)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if getattr(args, "die_with_parent", False):
        from .executor import die_with_parent

        die_with_parent(os.getppid())
    try:
        return int(args.func(args))
    except ZmqmrError as exc:
        print(f"zmqmr: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
