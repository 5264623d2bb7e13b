"""The ``zmqmr`` command: master, worker, run, status, cancel, keygen, chaos.

This is the only module that configures logging. A mistake a user can make
here (a flag, an address, a setting, a key or data directory, a job file)
ends in one message on stderr and a non-zero exit, never in a traceback of
zmqmr's; an error in a job file is shown as the job file's own traceback.
SIGINT and SIGTERM stop ``zmqmr run`` cleanly: a job it submitted to a
master is cancelled, an embedded cluster is shut down with its files, and
the exit status is 128 + the signal's number (130, 143).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any, NoReturn

from . import __version__
from .config import (
    DEFAULT_CLIENT_BIND,
    DEFAULT_HTTP,
    DEFAULT_WORKER_BIND,
    ClusterSettings,
    WorkerSettings,
    check_endpoint,
    coerce,
    parse_size,
    setting_types,
)
from .errors import ClusterError, ZmqmrError
from .jobfiles import (  # noqa: F401 - re-exported: the chaos harness loads job files
    job_from_file,
    job_setting_types,
    load_job_file,
)

log = logging.getLogger("zmqmr")


def fail(message: str) -> NoReturn:
    """Stop the command with one line on stderr and exit status 1."""
    raise SystemExit(f"zmqmr: {message}")


# -- values from the command line ----------------------------------------------------------


def _arg(convert: Any) -> Any:
    """An argparse type from a function that raises ValueError with a readable message."""

    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        value = coerce(text, kind)
        if value <= 0:
            raise ValueError(f"must be positive, got {text!r}")
        return value

    return _arg(convert)


def _size(text: str) -> int:
    value = parse_size(text)
    if value <= 0:
        raise ValueError(f"must be positive, got {text!r}")
    return value


#: argparse types: a positive size (64MB), an address to connect to, one to bind.
size_arg = _arg(_size)
connect_address = _arg(lambda text: check_endpoint(text, ""))
bind_address = _arg(lambda text: check_endpoint(text, "", bind=True))


def _pairs(pairs: list[str]) -> Iterator[tuple[str, str]]:
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            fail(f"--set takes NAME=VALUE, got {pair!r}")
        yield name.strip(), raw


def _typed(
    values: Mapping[str, Any], types: Mapping[str, Any], source: str, what: str
) -> dict[str, Any]:
    """``values`` coerced to the types of the settings they name; a clear error if not."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in types:
            fail(f"{source}: unknown {what} {name!r}; known: {', '.join(sorted(types))}")
        try:
            out[name] = coerce(value, types[name])
        except ValueError as exc:
            fail(f"{source}: {name} {exc}")
    return out


def _parse_sets(pairs: list[str], cls: Any) -> dict[str, Any]:
    return _typed(dict(_pairs(pairs)), setting_types(cls), "--set", "setting")


def _settings(cls: Any, overrides: dict[str, Any]) -> Any:
    try:
        return cls(**overrides)
    except ValueError as exc:  # a value of the right type out of range: say which
        fail(str(exc))


def _server_keys(
    args: argparse.Namespace, binds: list[str], what: str, shown: list[str] | None = None
) -> str | None:
    """The key directory of a master or worker: --keys; none with --insecure; the default.

    The default keys are this machine's: a bind beyond loopback serves other
    machines, which need the keys too, so it takes an explicit --keys. ``shown``:
    each bind as an error names it.
    """
    from .security import check_default_keys_bind, key_dir

    if not args.keys and not args.insecure:
        check_default_keys_bind(binds, shown)
    return key_dir(args.keys, args.insecure, what)


def _data_dir(path: str | None) -> str | None:
    """``path`` as a directory this process can write, made if missing."""
    if path is None:
        return None
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"--data-dir {path} is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        fail(f"--data-dir {path} cannot be made: {exc.strerror}")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"--data-dir {path} is not writable by this user")
    return path


# -- signals -----------------------------------------------------------------------------


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: ``zmqmr run`` cleans up and exits 128 + signum.

    A BaseException, as KeyboardInterrupt is, so that ``except Exception``
    in the code it passes through does not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class Interrupts:
    """SIGINT and SIGTERM raise ``Interrupted`` in the main thread, once.

    Within ``held()`` a signal waits until the block ends (so a submission
    completes and its job id is known, or a clean-up runs whole). After the
    first, further signals are ignored: the clean-up they would cut short is
    what removes the job and the files.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._holding = 0
        self._pending: int | None = None
        self._raised = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self._raised:
            log.warning("%s: already stopping", signal.Signals(signum).name)
        elif self._holding:
            self._pending = signum
        else:
            self._raised = True
            raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
        if not self._holding and self._pending is not None and not self._raised:
            self._raised = True
            raise Interrupted(self._pending)

    def __enter__(self) -> Interrupts:
        for sig in self.SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


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
    settings = _settings(ClusterSettings, overrides)
    from .dashboard import endpoint, parse_http
    from .security import MASTER, load_keys

    try:
        http_at = parse_http(args.http)
    except ValueError as exc:
        fail(f"--http: {exc}")
    binds = [args.bind, args.client_bind] + ([endpoint(*http_at)] if http_at else [])
    shown = [args.bind, args.client_bind, f"--http {args.http}"]
    directory = _server_keys(args, binds, "the master", shown)
    keys = load_keys(directory, MASTER) if directory else None
    import zmq

    try:
        master = Master(
            args.bind,
            args.client_bind,
            settings,
            keys=keys,
            insecure=args.insecure,
            state_dir=args.state_dir,
            http=args.http if http_at else None,
        )
    except zmq.ZMQError as exc:  # the port is taken, or the address is not this machine's
        raise ClusterError(f"the master cannot bind: {exc}") from None
    except OSError as exc:
        raise ClusterError(f"the dashboard cannot bind {args.http}: {exc.strerror}") from None
    if args.announce:
        tmp = args.announce + ".tmp"
        with open(tmp, "w") as f:
            json.dump(
                {
                    "worker_address": master.worker_address,
                    "client_address": master.client_address,
                    "dashboard_url": master.dashboard_url,
                    "pid": os.getpid(),
                },
                f,
            )
        os.replace(tmp, args.announce)
    log.info(
        "master: workers connect to %s, clients to %s", master.worker_address, master.client_address
    )
    if master.dashboard_url:
        log.info("master: dashboard at %s", master.dashboard_url)
    _stop_on_signals(master.stop_event)
    from .profiling import Profile

    profile = Profile("master")
    profile.start()
    try:
        master.run()
    finally:
        profile.dump()
    return 0


def _announced_worker_address(path: str, timeout: float = 60.0) -> str:
    """The worker address in a master's announce file (``--announce``), once it is there.

    LocalCluster starts its workers beside the master, not after it: each
    imports its modules while the master starts, and waits here for the file
    (which the master writes whole, by a rename).
    """
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            fail(f"no master announced itself in {path} within {timeout:.0f}s")
        time.sleep(0.005)
    try:
        with open(path) as f:
            address = json.load(f)["worker_address"]
        return check_endpoint(address, "the announced worker address")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"cannot read the master's address from {path}: {exc!r:.200}")


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import Worker

    if args.master_announce:
        args.master = _announced_worker_address(args.master_announce)
    overrides = _parse_sets(args.set, WorkerSettings)
    if args.slots is not None:
        overrides["slots"] = args.slots
    shuffle = Worker._default_shuffle_bind(args.master)
    worker = Worker(
        args.master,
        _data_dir(args.data_dir),
        _settings(WorkerSettings, overrides),
        keys_dir=_server_keys(args, [shuffle], "a worker"),
        insecure=args.insecure,
    )
    _stop_on_signals(worker.stop_event)
    worker.run()
    return 0


def _run_sets(pairs: list[str], local: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` of ``zmqmr run``: (Job settings, settings of the embedded cluster)."""
    job_types = job_setting_types()
    cluster_types = {**setting_types(ClusterSettings), **setting_types(WorkerSettings)}
    job: dict[str, Any] = {}
    cluster: dict[str, Any] = {}
    for name, raw in _pairs(pairs):
        if name in job_types:
            job.update(_typed({name: raw}, job_types, "--set", "Job setting"))
        elif name in cluster_types and local:
            cluster.update(_typed({name: raw}, cluster_types, "--set", "setting"))
        elif name in cluster_types:
            fail(f"--set {name}: a cluster setting; give it to zmqmr master or zmqmr worker")
        else:
            fail(f"--set: unknown Job setting {name!r}; known: {', '.join(sorted(job_types))}")
    return job, cluster


# -- running jobs ----------------------------------------------------------------------


def _cancel_on_interrupt(client: Any, handle: Any, exc: Interrupted) -> None:
    client.timeout = min(client.timeout, 5.0)  # the user asked to stop: do not linger
    try:
        state = client.cancel(handle.job_id)
    except ZmqmrError as err:
        print(f"zmqmr: {exc.name}: could not cancel job {handle.job_id}: {err}", file=sys.stderr)
        return
    # None: the master forgot the job (its outcome was collected, or it was lost)
    if state in (None, "cancelled"):
        print(f"zmqmr: {exc.name}: cancelled job {handle.job_id}", file=sys.stderr)
    else:
        print(f"zmqmr: {exc.name}: job {handle.job_id} had already {state}", file=sys.stderr)


def _run_on_master(
    args: argparse.Namespace, job: Any, progress: bool | None, interrupts: Interrupts
) -> Any:
    from .client import Client

    with Client(
        args.master,
        keys=args.keys,
        timeout=args.timeout,
        insecure=args.insecure,
        worker_wait=args.worker_wait,
    ) as client:
        with interrupts.held():  # the job id is known once submit returns
            handle = client.submit(job)
        log.info("submitted job %s (%s) to %s", handle.job_id, handle.name, args.master)
        try:
            return handle.wait(progress=progress)
        except Interrupted as exc:
            _cancel_on_interrupt(client, handle, exc)
            raise


def _run_locally(
    args: argparse.Namespace,
    job: Any,
    progress: bool | None,
    cluster_settings: dict[str, Any],
    interrupts: Interrupts,
) -> Any:
    from .local import LocalCluster

    cluster = LocalCluster(
        workers=args.workers, keys=args.keys, insecure=args.insecure, **cluster_settings
    )
    try:
        cluster.start()
        log.info(
            "local cluster: master at %s, %d workers, files in %s, dashboard at %s",
            cluster.address,
            args.workers,
            cluster.dir,
            cluster.dashboard_url,
        )
        return cluster.client().run(job, progress=progress)
    finally:
        with interrupts.held():  # a signal now must not cut short the clean-up
            cluster.close()


def cmd_run(args: argparse.Namespace) -> int:
    job_sets, cluster_sets = _run_sets(args.set, local=not args.master)
    if args.overwrite:
        job_sets["overwrite"] = True
    if args.keys:  # before any process starts: a bad key directory is one message
        from .security import MEMBER, load_keys

        load_keys(args.keys, MEMBER)
    job = job_from_file(
        args.jobfile, args.inputs, args.reducers, args.output, args.split_size, job_sets
    )
    progress = False if args.quiet else None
    with Interrupts() as interrupts:
        if args.master:
            result = _run_on_master(args, job, progress, interrupts)
        else:
            result = _run_locally(args, job, progress, cluster_sets, interrupts)
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


def cmd_keygen(args: argparse.Namespace) -> int:
    from .security import write_keys

    written = write_keys(args.dir)
    for public, secret in zip(written[::2], written[1::2]):
        print(f"wrote {public} and {secret}")
    return 0


SERVER_INSECURE = (
    "without --keys: no CURVE, even beyond loopback (anyone who can reach the ports, "
    "every account of this machine included, can run code as you)"
)


#: The master and the workers log every decision at INFO by default; the one-off
#: commands only warnings.
VERBOSE_HELP = "more logging (master, worker: -v debug; other commands: -v info, -vv debug)"


def build_parser() -> argparse.ArgumentParser:
    from .cli_master import cmd_cancel, cmd_logs, cmd_status, parse_task

    p = argparse.ArgumentParser(prog="zmqmr", description="MapReduce for Python on ZeroMQ.")
    p.add_argument("--version", action="version", version=f"zmqmr {__version__}")
    # -v and -q are taken before the subcommand and after it (zmqmr -v run, zmqmr run -v);
    # under their own names here, since a subcommand's default would overwrite them.
    p.add_argument(
        "-v",
        "--verbose",
        dest="top_verbose",
        action="count",
        default=0,
        help=VERBOSE_HELP,
    )
    p.add_argument("-q", "--quiet", dest="top_quiet", action="count", default=0, help="less output")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help=VERBOSE_HELP)
    common.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="less output (for run: no progress line or summary)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    def sets(sp: argparse.ArgumentParser, help: str) -> None:
        sp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help=help)

    def master_address(sp: Any, help: str, **kw: Any) -> None:
        sp.add_argument("--master", type=connect_address, help=help, **kw)

    def keys(sp: argparse.ArgumentParser, insecure: str) -> None:
        sp.add_argument(
            "--keys",
            metavar="DIR",
            help="key directory for CURVE (default: $ZMQMR_KEYS, else ~/.zmqmr/keys, "
            "made on first use for this user only)",
        )
        sp.add_argument("--insecure", action="store_true", help=insecure)

    def client_options(
        sp: argparse.ArgumentParser,
        timeout: float,
        insecure: str = "without --keys: no CURVE, to reach a master started with --insecure",
    ) -> None:
        keys(sp, insecure)
        sp.add_argument(
            "--timeout",
            type=_positive(float),
            default=timeout,
            help=f"seconds to wait for the master's answers (default {timeout:g})",
        )

    m = command("master", "run the master")
    m.add_argument(
        "--bind",
        type=bind_address,
        default=DEFAULT_WORKER_BIND,
        help=f"address workers connect to (default {DEFAULT_WORKER_BIND})",
    )
    m.add_argument(
        "--client-bind",
        type=bind_address,
        default=DEFAULT_CLIENT_BIND,
        help=f"address clients connect to (default {DEFAULT_CLIENT_BIND})",
    )
    m.add_argument(
        "--http",
        default=DEFAULT_HTTP,
        metavar="HOST:PORT",
        help=f"where the dashboard listens (default {DEFAULT_HTTP}; a free port if that is "
        "taken), or off",
    )
    keys(m, SERVER_INSECURE)
    m.add_argument("--heartbeat-interval", type=_positive(float), help="seconds between heartbeats")
    m.add_argument(
        "--worker-timeout", type=_positive(float), help="seconds of silence before a worker is dead"
    )
    sets(m, "a cluster setting (see zmqmr.config.ClusterSettings); sizes such as 64MB are fine")
    m.add_argument(
        "--state-dir",
        help="keep a journal here: started again with the same directory and addresses, "
        "the master resumes its jobs (default: jobs live in memory only)",
    )
    m.add_argument("--announce", help=argparse.SUPPRESS)
    m.set_defaults(func=cmd_master)

    w = command("worker", "run a worker")
    # Required, one of the two; checked in main, so the message names --master alone.
    given = w.add_mutually_exclusive_group()
    master_address(given, "the master's worker address, e.g. tcp://lab-01:5555 (required)")
    given.add_argument("--master-announce", help=argparse.SUPPRESS)  # LocalCluster's
    w.set_defaults(subparser=w)
    w.add_argument("--data-dir", help="where map outputs live (default: a temporary directory)")
    w.add_argument(
        "--slots",
        type=_positive(int),
        help="executor processes, i.e. attempts at a time (default 1)",
    )
    keys(w, SERVER_INSECURE)
    sets(w, "a worker setting (see zmqmr.config.WorkerSettings); sizes such as 64MB are fine")
    w.set_defaults(func=cmd_worker)

    r = command("run", "run a job file on inputs")
    r.add_argument(
        "jobfile",
        help="a Python file defining mapper, reducer (and maybe combiner, partitioner, "
        "and JOB = dict(...) of Job settings)",
    )
    r.add_argument("inputs", nargs="+", help="input files or globs")
    r.add_argument(
        "-r",
        "--reducers",
        type=_positive(int),
        help="reduce tasks (default: the job file's JOB, else 1)",
    )
    r.add_argument(
        "-o", "--output", help="output directory for part files (default: print results)"
    )
    r.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the part files of an output directory that holds some, on success",
    )
    master_address(r, "a master's client address; without it, a local cluster runs the job")
    r.add_argument(
        "--workers", type=_positive(int), default=2, help="workers of the local cluster (default 2)"
    )
    r.add_argument(
        "--split-size",
        type=size_arg,
        help="bytes per input split, e.g. 64MB (default: planned for the cluster)",
    )
    sets(
        r,
        "a Job setting (max_attempts=2, task_timeout=30, skip_bad_records=true, "
        "split_size=1MB, speculative=false, name=...), or on the local cluster a cluster "
        "or worker setting; repeat for more",
    )
    client_options(
        r,
        10.0,
        "without --keys: no CURVE, on the local cluster or to reach a master started "
        "with --insecure",
    )
    r.add_argument(
        "--worker-wait",
        type=_positive(float),
        metavar="SECONDS",
        help="with --master: cancel the job if the cluster has no worker for this long "
        "(default: wait for ever, saying so)",
    )
    r.set_defaults(func=cmd_run)

    s = command("status", "show a master's workers, jobs and finished jobs, or one job")
    s.add_argument(
        "job", nargs="?", help="a job's id (or its first characters): that job in detail"
    )
    master_address(
        s, "the master's client address (default %(default)s)", default=DEFAULT_CLIENT_BIND
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    s.add_argument(
        "--attempts", type=_positive(int), default=50, help="attempts shown of a job (default 50)"
    )
    client_options(s, 5.0)
    s.set_defaults(func=cmd_status)

    lg = command("logs", "show what a job's attempts printed and logged")
    lg.add_argument("job", help="the job's id (as zmqmr status shows it), or its first characters")
    lg.add_argument(
        "task", nargs="?", type=_arg(parse_task), help="one task: map:3, reduce:0 (or m3, r0)"
    )
    master_address(
        lg, "the master's client address (default %(default)s)", default=DEFAULT_CLIENT_BIND
    )
    lg.add_argument("--json", action="store_true", help="print JSON")
    client_options(lg, 10.0)
    lg.set_defaults(func=cmd_logs)

    c = command("cancel", "cancel a job on a master")
    c.add_argument("job", help="the job's id (as zmqmr status shows it), or its first characters")
    master_address(
        c, "the master's client address (default %(default)s)", default=DEFAULT_CLIENT_BIND
    )
    client_options(c, 5.0)
    c.set_defaults(func=cmd_cancel)

    k = command("keygen", "make CURVE key pairs for a master and its members")
    k.add_argument("dir", help="directory to write the keys to")
    k.set_defaults(func=cmd_keygen)

    # Listed for --help only: main() hands `zmqmr chaos ...` to zmqmr.chaos.cli.
    sub.add_parser(
        "chaos",
        help="run jobs under faults and check the answers (zmqmr chaos --help)",
        add_help=False,
    )

    for sp in (m, w):
        sp.add_argument("--die-with-parent", action="store_true", help=argparse.SUPPRESS)
    return p


def _public_name(exc: BaseException) -> str:
    """The name of the nearest public class of ``exc`` (zmqmr's private ones are details)."""
    return next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["chaos"]:  # a command line of its own (zmqmr.chaos.cli)
        from .chaos.cli import main as chaos_main

        return chaos_main(argv[1:], prog="zmqmr chaos")
    args = build_parser().parse_args(argv)
    if args.command == "worker" and not (args.master or args.master_announce):
        args.subparser.error("the following arguments are required: --master")
    args.verbose += args.top_verbose
    args.quiet += args.top_quiet
    # The long-running processes say what they do; one-off commands only what went wrong.
    default = logging.INFO if args.command in ("master", "worker") else logging.WARNING
    level = min(logging.CRITICAL, max(logging.DEBUG, default - 10 * (args.verbose - args.quiet)))
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if getattr(args, "die_with_parent", False):
        from .executor import die_with_parent

        die_with_parent(os.getppid())
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, for a reader that went away to be told of below
        return code
    except ZmqmrError as exc:
        print(f"zmqmr: {_public_name(exc)}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`zmqmr status | head`): as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 128 + signal.SIGPIPE
    except OSError as exc:  # a path, a permission, a full disk: the user's to fix
        where = f": {exc.filename}" if exc.filename else ""
        print(f"zmqmr: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
