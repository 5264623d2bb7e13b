"""``zmqmr chaos``: run one job under faults, soak, list nemeses, clean up.

    zmqmr chaos run --job myjob.py --inputs FILES... --workers 4 --nemesis kill,pause --seed 7
    zmqmr chaos run --job myjob.py --inputs FILES... --hosts HOSTS --master ADDR \\
        --nemesis kill,pause,corrupt        # a lab's workers, faults over ssh
    zmqmr chaos soak --minutes 30 --seed 1
    zmqmr chaos nemeses
    zmqmr chaos cleanup

``run`` and ``soak`` print a report and exit 0 when every check passed, 1
when any failed, 3 when the job is not deterministic (its serial answer
differed between two runs, so nothing could be judged), 2 on a usage error
or a cluster that cannot be used; they always print the seed and the command
that replays the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys

import zmqmr
from zmqmr.cli import _run_sets, size_arg

from . import netns, schedule
from .nemesis import NEMESES
from .runner import Report, Scenario, run_scenario
from .soak import soak
from .workload import WORKLOADS


def _kinds(text: str) -> list[str]:
    try:
        return schedule.parse_kinds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str = "zmqmr chaos") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Fault injection for zmqmr: run jobs on a cluster of real processes "
        "while nemeses kill, pause, slow, corrupt and cut off its nodes, and check every "
        "answer against zmqmr.run_serial.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log the harness's steps")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run one job under a seeded schedule of faults")
    r.add_argument(
        "--job",
        default="wordcount",
        help="a job file defining mapper and reducer (and maybe combiner, partitioner), "
        f"as for `zmqmr run`, or a built-in: {', '.join(WORKLOADS)} (default wordcount)",
    )
    r.add_argument(
        "--inputs",
        nargs="+",
        default=Scenario().inputs,
        help="input files or globs (default: the sample books shipped with zmqmr)",
    )
    r.add_argument("--workers", type=int, default=4, help="worker processes (default 4)")
    r.add_argument("--slots", type=int, default=1, help="executors per worker (default 1)")
    r.add_argument(
        "--nemesis",
        type=_kinds,
        default=["kill"],
        help=f"comma-separated nemeses: {', '.join(schedule.KINDS)}; 'all'; 'none' (default kill)",
    )
    r.add_argument("--seed", type=int, default=None, help="the schedule's seed (default: random)")
    r.add_argument(
        "-r",
        "--reducers",
        type=int,
        default=None,
        help="reduce tasks (default: the job file's JOB, else 4)",
    )
    r.add_argument(
        "--split-size",
        type=size_arg,
        default=None,
        help="bytes per input split, e.g. 64k or 1MB (default: the job file's JOB, else 256k)",
    )
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a Job setting, as for zmqmr run (max_attempts=2, task_timeout=30, ...); repeat",
    )
    r.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the run without faults that the report compares the job's time with",
    )
    r.add_argument(
        "--pace",
        type=float,
        default=0.0002,
        help="seconds of sleep added to every mapper and reducer call, so faults land "
        "while the job runs; 0 runs at full speed (default 0.0002)",
    )
    r.add_argument(
        "--window",
        type=float,
        default=4.0,
        help="faults start between 0.2 s and this many seconds after submission (default 4)",
    )
    r.add_argument(
        "--faults", type=int, default=None, help="faults in the schedule (default: seeded)"
    )
    r.add_argument(
        "--deadline",
        type=float,
        default=120.0,
        help="seconds the job may take before it counts as hung (default 120)",
    )
    r.add_argument(
        "--netns",
        choices=("auto", "on", "off"),
        default="auto",
        help="workers in network namespaces: auto (as root, when partition is among "
        "the nemeses), on, off",
    )
    r.add_argument(
        "--client-timeout",
        type=float,
        default=5.0,
        help="seconds the client waits for each answer of the master (default 5)",
    )
    r.add_argument(
        "--state-dir",
        action="store_true",
        help="give the master a journal: a killed master is restarted and must resume the "
        "job exactly (the kill-master nemesis then also strikes at the worst moments)",
    )
    r.add_argument(
        "--no-output-dir",
        action="store_true",
        help="return results through the master instead of part files in an output_dir",
    )
    lab = r.add_argument_group(
        "a lab",
        "the workers scripts/start-workers.sh started on real machines; faults over ssh "
        "(ZMQMR_SSH, as for the scripts)",
    )
    lab.add_argument(
        "--hosts",
        metavar="HOSTS_FILE",
        help="the hosts file given to start-workers.sh: run on those workers (--workers, "
        "--slots and --netns do not apply)",
    )
    lab.add_argument("--master", metavar="ADDR", help="the lab master's client address")
    lab.add_argument(
        "--master-host",
        default="",
        metavar="HOST",
        help="the machine the master runs on, over ssh, for kill-master and its log "
        "(default: this machine, without ssh)",
    )
    lab.add_argument(
        "--run-dir",
        default="",
        metavar="DIR",
        help="the scripts' --run-dir on the hosts, where the pid files are (default ~/.zmqmr)",
    )
    lab.add_argument(
        "--master-run-dir",
        default=None,
        metavar="DIR",
        help="start-master.sh's --run-dir on the master's machine (default: --run-dir)",
    )
    lab.add_argument("--keys", metavar="DIR", help="key directory for the client (CURVE)")
    lab.add_argument(
        "--insecure", action="store_true", help="no CURVE: a master started with --insecure"
    )
    lab.add_argument(
        "--output-dir",
        metavar="DIR",
        help="a directory every worker and this machine share (NFS): part files go there "
        "and are checked (default: results through the master)",
    )
    r.add_argument("--keep", metavar="DIR", help="keep the run's logs, history and output here")
    r.add_argument("--history", metavar="FILE", help="also write the history (JSON lines) here")
    r.add_argument("--json", action="store_true", help="print the report as JSON")

    s = sub.add_parser("soak", help="many jobs in a row under random nemeses")
    s.add_argument("--minutes", type=float, default=None, help="stop after this long")
    s.add_argument("--jobs", type=int, default=None, help="stop after this many jobs")
    s.add_argument("--seed", type=int, default=None, help="the soak's seed (default: random)")
    s.add_argument(
        "--inputs", nargs="+", default=None, help="input files or globs (default: the books)"
    )
    s.add_argument(
        "--job",
        action="append",
        default=None,
        help=f"job files or built-ins to draw from (default: {', '.join(WORKLOADS)}); repeatable",
    )
    s.add_argument("--json", metavar="FILE", help="write every report as JSON lines to FILE")

    sub.add_parser("nemeses", help="list the nemeses and what each does")
    sub.add_parser("cleanup", help="remove network namespaces left by crashed chaos runs")
    return p


def cmd_run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    if args.hosts is None and (args.master or args.output_dir or args.master_host):
        raise SystemExit("zmqmr chaos run: --master, --master-host and --output-dir need --hosts")
    if args.hosts is not None and args.state_dir:
        raise SystemExit(
            "zmqmr chaos run: --state-dir is for the harness's own master; in a lab, start "
            "the master with --state-dir (start-master.sh -- --state-dir DIR) and the "
            "harness restarts it with it"
        )
    if args.hosts is not None and not args.master:
        raise SystemExit("zmqmr chaos run: --hosts needs --master, the master's client address")
    settings = _run_sets(args.set, local=False)[0]
    sc = Scenario(
        job_file=args.job,
        inputs=args.inputs,
        nemeses=args.nemesis,
        seed=seed,
        workers=args.workers,
        slots=args.slots,
        reducers=args.reducers,
        split_size=args.split_size,
        settings=settings,
        output=not args.no_output_dir,
        pace=args.pace,
        window=args.window,
        faults=args.faults,
        deadline=args.deadline,
        netns=args.netns,
        client_timeout=args.client_timeout,
        state_dir=args.state_dir,
        baseline=not args.no_baseline,
        hosts=args.hosts,
        master=args.master,
        master_host=args.master_host,
        run_dir=args.run_dir,
        master_run_dir=args.master_run_dir,
        keys=args.keys,
        insecure=args.insecure,
        output_dir=args.output_dir,
    )
    try:
        report = run_scenario(sc, keep=args.keep, history_path=args.history)
    except (zmqmr.JobSubmitError, zmqmr.ClusterError) as exc:  # before any job ran
        print(f"zmqmr chaos run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2, default=str))
    else:
        print(report.text())
    if report.nondeterministic:
        return 3
    return 0 if report.ok else 1


def cmd_soak(args: argparse.Namespace) -> int:
    if args.minutes is None and args.jobs is None:
        raise SystemExit("zmqmr chaos soak: give --minutes, --jobs or both")
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    print(f"soak seed {seed} (replay the whole soak with --seed {seed})", flush=True)
    out = open(args.json, "w") if args.json else None  # noqa: SIM115 - closed below

    def echo(line: str) -> None:
        print(line, flush=True)

    def save(report: Report) -> None:
        if out is not None:
            out.write(json.dumps(report.to_json(), default=str) + "\n")
            out.flush()

    try:
        result = soak(
            seed,
            minutes=args.minutes,
            jobs=args.jobs,
            inputs=args.inputs,
            job_files=args.job,
            echo=echo,
            on_report=save,
        )
    finally:
        if out is not None:
            out.close()
    print()
    print(result.table())
    print(f"\nsoak seed {seed}: {'PASS' if result.ok else 'FAIL'}")
    return 0 if result.ok else 1


def cmd_nemeses(args: argparse.Namespace) -> int:
    ok, why = netns.available()
    for kind, cls in NEMESES.items():
        print(f"{kind}:\n  {cls.description}")
        if kind == schedule.PARTITION and not ok:
            print(f"  (unavailable here: {why})")
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    ok, why = netns.available()
    if not ok:
        print(f"nothing to do: {why}")
        return 0
    removed = netns.cleanup_stale()
    print("\n".join(removed) if removed else "nothing left behind")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # Once: a second Ctrl-C must not cut short the clean-up the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None, prog: str = "zmqmr chaos") -> int:
    args = build_parser(prog).parse_args(argv)
    # SIGINT and SIGTERM unwind once, so the cluster, its namespaces and its files go too,
    # and a lab is restored (every worker running, nothing stopped).
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    handler = {"run": cmd_run, "soak": cmd_soak, "nemeses": cmd_nemeses, "cleanup": cmd_cleanup}
    try:
        code = handler[args.command](args)
        sys.stdout.flush()  # here, for a reader that went away to be told of below
        return code
    except BrokenPipeError:  # `zmqmr chaos nemeses | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print("zmqmr chaos: interrupted", file=sys.stderr)
        return 130
