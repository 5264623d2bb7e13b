"""One chaos run: a cluster, a job, a schedule of faults, a history, a verdict.

``run_scenario(Scenario(...))``:

1. computes the oracle, ``zmqmr.run_serial(job)`` (cached per job and inputs);
2. starts a ``ChaosCluster`` (in network namespaces when the schedule may cut
   links and this process is root);
3. submits the job from a client in a helper thread, and from this thread
   carries out the schedule, seconds after the master accepted the job,
   writing every action to the history, until the job ends or its deadline;
4. heals what is still in force (resumes paused nodes, brings links up),
   waits a grace period, and looks again at the output directory for late
   writes of attempts that were paused or cut off;
5. tears the cluster down and asks the checker for a verdict.

Every process is started from the calling thread (see ``zmqmr.chaos.cluster``).
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmqmr

from . import checker, nemesis, netns, schedule
from .cluster import FAST_MASTER, ChaosCluster
from .history import History
from .workload import BOOKS_DIR, expand_inputs, load_job, paced

#: Seconds to wait after healing for stale attempts to write (or not).
GRACE = 1.0
#: How often the schedule loop wakes when nothing is due (seconds).
TICK = 0.05


@dataclass
class Scenario:
    """Everything that decides a chaos run; ``replay_command`` prints it back."""

    job_file: str = "wordcount"
    inputs: list[str] = field(default_factory=lambda: [f"{BOOKS_DIR}/*.txt"])
    nemeses: list[str] = field(default_factory=list)
    seed: int = 0
    workers: int = 4
    slots: int = 1
    reducers: int = 4
    split_size: int = 256 * 1024
    output: bool = True  # part files in a temporary output_dir (False: results via the master)
    pace: float = 0.0002
    window: float = 4.0
    faults: int | None = None
    deadline: float = 120.0
    netns: str = "auto"  # auto | on | off
    client_timeout: float = 5.0
    state_dir: bool = False  # the master keeps a journal: killed, it restarts and resumes
    job: zmqmr.Job | None = None  # a job object instead of a job file (tests)

    def replay_command(self) -> str:
        if self.job is not None:
            return f"(a job object; replay with the same job and seed={self.seed})"
        d = Scenario()
        args = ["zmqmr", "chaos", "run", "--job", self.job_file, "--inputs", *self.inputs]
        args += ["--workers", str(self.workers), "--nemesis", ",".join(self.nemeses) or "none"]
        args += ["--seed", str(self.seed)]
        for name, flag in (
            ("slots", "--slots"),
            ("reducers", "--reducers"),
            ("split_size", "--split-size"),
            ("pace", "--pace"),
            ("window", "--window"),
            ("faults", "--faults"),
            ("deadline", "--deadline"),
            ("netns", "--netns"),
            ("client_timeout", "--client-timeout"),
        ):
            if getattr(self, name) != getattr(d, name):
                args += [flag, str(getattr(self, name))]
        if not self.output:
            args.append("--no-output-dir")
        if self.state_dir:
            args.append("--state-dir")
        return " ".join(shlex.quote(a) for a in args)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(dataclasses.replace(self, job=None))
        out["job"] = self.job.name if self.job is not None else None
        return out


@dataclass
class Report:
    scenario: Scenario
    schedule: list[schedule.Fault]
    history: list[dict[str, Any]]
    verdict: checker.Verdict
    summary: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)  # nemesis -> why it did not run
    netns: bool = False
    directory: str | None = None  # kept run directory (logs, history), if any
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def text(self) -> str:
        sc, s = self.scenario, self.summary
        job = sc.job.name if sc.job is not None else sc.job_file
        lines = [
            f"chaos run: job {job}, {sc.workers} workers, nemeses "
            f"{','.join(sc.nemeses) or 'none'}, seed {sc.seed}"
            + (", workers in network namespaces" if self.netns else ""),
        ]
        for kind, why in self.skipped.items():
            lines.append(f"  skipped {kind}: {why}")
        lines.append(f"schedule ({len(self.schedule)} faults):")
        injected = {r["fault"] for r in self.history if "fault" in r}
        for f in self.schedule:
            mark = "injected" if f.index in injected else "not reached"
            lines.append(f"  {f.at:6.2f}s  #{f.index} {f.kind:<11} {f.describe()}  [{mark}]")
        lines.append("history:")
        for r in self.history:
            extra = {
                k: v
                for k, v in r.items()
                if k not in ("time", "nemesis", "target", "action", "fault", "wall")
            }
            what = r["nemesis"] or "job"
            lines.append(
                f"  {r['time']:7.3f}s  {what:<11} {r['target']:<6} {r['action']}"
                + (f"  {json.dumps(extra, default=str)}" if extra else "")
            )
        faults = ", ".join(f"{k} {n}" for k, n in sorted(s["faults"].items())) or "none"
        lines.append(
            f"summary: faults injected {s['faults_total']} ({faults}); "
            f"attempts {s['attempts']} (map {s['map_attempts']}, reduce {s['reduce_attempts']}); "
            f"re-executions {s['reexecutions']}; backups {s['backups']} "
            f"(won {s['backups_won']}); fetch failures {s['fetch_failures']}; "
            f"wall time {s['wall_seconds']:.2f}s"
        )
        lines.append(f"outcome: {self.verdict.outcome}")
        for c in self.verdict.checks:
            lines.append(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if self.error:
            lines.append(f"error: {self.error}")
        if self.directory:
            lines.append(f"logs and history kept in {self.directory}")
        lines.append(f"verdict: {'PASS' if self.ok else 'FAIL'}  (seed {sc.seed})")
        lines.append(f"replay: {sc.replay_command()}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.to_json(),
            "schedule": [f.to_json() for f in self.schedule],
            "history": self.history,
            "verdict": "PASS" if self.ok else "FAIL",
            "outcome": self.verdict.outcome,
            "checks": [dataclasses.asdict(c) for c in self.verdict.checks],
            "summary": self.summary,
            "skipped": self.skipped,
            "netns": self.netns,
            "directory": self.directory,
            "replay": self.scenario.replay_command(),
        }


_oracles: dict[Any, zmqmr.JobResult] = {}
#: Oracles kept (a soak draws many input sets; each answer holds every record).
ORACLES_KEPT = 8


def oracle(sc: Scenario, job: zmqmr.Job) -> zmqmr.JobResult:
    """``zmqmr.run_serial(job)``, cached per job file and inputs (a job object: not cached)."""
    if sc.job is not None:
        return zmqmr.run_serial(job)
    key = (os.path.abspath(sc.job_file), tuple(sc.inputs), sc.reducers, sc.split_size)
    if key not in _oracles:
        while len(_oracles) >= ORACLES_KEPT:
            del _oracles[next(iter(_oracles))]
        _oracles[key] = zmqmr.run_serial(job)
    return _oracles[key]


def plan(sc: Scenario) -> tuple[list[str], dict[str, str], bool]:
    """The nemeses that can run here, those skipped (with why), and whether to use netns."""
    kinds, skipped = list(sc.nemeses), {}
    ok, why = netns.available()
    if sc.netns == "on" and not ok:
        raise zmqmr.ClusterError(f"--netns on: {why}")
    use = sc.netns == "on" or (sc.netns == "auto" and ok and schedule.PARTITION in kinds)
    if schedule.PARTITION in kinds and not use:
        kinds.remove(schedule.PARTITION)
        skipped[schedule.PARTITION] = why or "workers are not in network namespaces (--netns off)"
    return kinds, skipped, use


class _Waiter(threading.Thread):
    """Submits the job and waits for its outcome, so the schedule thread never blocks."""

    def __init__(
        self, cluster: ChaosCluster, job: zmqmr.Job, deadline: float, master_wait: float | None
    ) -> None:
        super().__init__(name="chaos-client", daemon=True)
        self.cluster, self.job, self.deadline = cluster, job, deadline
        self.master_wait = master_wait
        self.accepted = threading.Event()
        self.accepted_at = 0.0
        self.ended_at = 0.0
        self.result: zmqmr.JobResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.cluster.client(master_wait=self.master_wait) as client:
                handle = client.submit(self.job)
                self.accepted_at = time.monotonic()
                self.accepted.set()
                self.result = handle.wait(timeout=self.deadline, progress=False)
        except BaseException as exc:  # the outcome to judge, whatever it is
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.accepted.set()


def run_scenario(
    sc: Scenario,
    *,
    keep: str | None = None,
    keep_on_failure: bool = True,
    history_path: str | None = None,
) -> Report:
    """Run one scenario and judge it; see the module docstring.

    ``keep``: a directory to keep the run's files in (logs, history, output);
    otherwise they are kept in a temporary directory only when the run fails
    and ``keep_on_failure`` is set.
    """
    kinds, skipped, use_netns = plan(sc)
    if sc.job is not None:
        job = sc.job
    else:
        job = load_job(sc.job_file, expand_inputs(sc.inputs), sc.reducers, sc.split_size, None)
    expected = oracle(sc, job)  # raises JobSubmitError for bad inputs, before anything starts
    if keep:
        os.makedirs(keep, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"zmqmr-chaos-{sc.seed}-", dir=keep)
    out_dir = os.path.join(workdir, "output") if sc.output else None
    job.output_dir = out_dir
    worker_timeout = float(FAST_MASTER["worker_timeout"])
    faults = schedule.make_schedule(
        sc.seed,
        kinds,
        sc.workers,
        window=sc.window,
        count=sc.faults,
        worker_timeout=worker_timeout,
        restart_master=sc.state_dir,
    )
    history = History(history_path or os.path.join(workdir, "history.jsonl"))
    outcome = checker.Outcome()
    snapshots = None
    error = ""
    cluster = ChaosCluster(
        sc.workers,
        netns=use_netns,
        slots=sc.slots,
        directory=workdir,
        keep=True,
        client_timeout=sc.client_timeout,
        state_dir=sc.state_dir,
    )
    try:
        cluster.start()
        outcome, at_end = _drive(
            cluster, paced(job, sc.pace), faults, history, sc.deadline, out_dir
        )
        cluster.heal()
        if at_end is not None and out_dir is not None and outcome.result is not None:
            time.sleep(GRACE)
            snapshots = (at_end, checker.snapshot(out_dir))
    except Exception as exc:  # a harness or cluster failure is a failed run, with its reason
        error = f"{type(exc).__name__}: {exc}"
    except BaseException:  # interrupted: leave nothing behind
        cluster.close()
        history.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        cluster.close()
        history.close()
    killed = history.first(schedule.KILL_MASTER, "kill")
    verdict = checker.check(
        expected,
        outcome,
        bound=sc.deadline,
        num_reducers=job.num_reducers,
        partitioner=job.partitioner,
        output_dir=out_dir,
        late_snapshots=snapshots,
        master_killed_at=None if killed is None else killed["time"],
        failure_bound=sc.client_timeout + 5.0,
        recovers=sc.state_dir,
    )
    kills = [
        r
        for r in history.records
        if r["nemesis"] == schedule.KILL_MASTER and r["action"] == "kill" and "maps_done" in r
    ]
    worker_faults = any(r["nemesis"] not in (None, schedule.KILL_MASTER) for r in history.records)
    if kills and outcome.result is not None and not worker_faults:
        verdict.add(
            "journaled maps reused",
            checker.journaled_maps_reused(kills, outcome.result.stats),
            "no map the journal knew as done ran again",
        )
    if error:
        verdict.add("harness", [error.splitlines()[0]])
    report = Report(
        sc,
        faults,
        list(history.records),
        verdict,
        checker.summarize(outcome, history.counts()),
        skipped,
        use_netns,
        error=error,
    )
    if keep or (keep_on_failure and not report.ok):
        report.directory = workdir
        with open(os.path.join(workdir, "report.txt"), "w") as f:
            f.write(report.text() + "\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _kill_while_accepting(
    cluster: ChaosCluster,
    waiter: _Waiter,
    faults: list[schedule.Fault],
    history: History,
) -> list[schedule.Fault]:
    """Carry out a master kill at the "accept" moment: as soon as the master starts
    writing the job to its journal (or the job is accepted first), then restart it.
    Returns the other faults."""
    accept = [f for f in faults if f.params.get("moment") == "accept"]
    if not accept:
        return faults
    n = nemesis.make(accept[0], cluster, history)
    path = os.path.join(cluster.state_dir, "journal")
    before = os.path.getsize(path)
    give_up = time.monotonic() + 30.0
    while not waiter.accepted.is_set() and time.monotonic() < give_up:
        if os.path.getsize(path) > before:
            break
        time.sleep(0.0005)
    n.start(0.0)
    time.sleep(float(accept[0].params["restart"]))
    n.heal(0.0)  # the restart
    return [f for f in faults if f is not accept[0]]


def _drive(
    cluster: ChaosCluster,
    job: zmqmr.Job,
    faults: list[schedule.Fault],
    history: History,
    deadline: float,
    out_dir: str | None,
) -> tuple[checker.Outcome, dict[str, str] | None]:
    """Submit the job and carry out the schedule until the job ends.

    Returns what the client saw, and the output directory as it was when the
    job ended, before anything paused was resumed (see ``checker.snapshot``).
    """
    # Without a journal the master keeps jobs in memory: one unanswered request is a
    # clear failure. With one, the client rides through the restart.
    waiter = _Waiter(cluster, job, deadline, None if cluster.journaled else 1.0)
    waiter.start()
    faults = _kill_while_accepting(cluster, waiter, faults, history)
    waiter.accepted.wait()
    if waiter.result is None and waiter.error is not None and not waiter.accepted_at:
        waiter.join()
        return checker.Outcome(error=waiter.error), None
    t0 = waiter.accepted_at
    history.job(0.0, "submitted", address=cluster.address)
    # (time, order, what, nemesis): starts and stops in schedule order.
    due: list[tuple[float, int, str, nemesis.Nemesis]] = []
    for f in faults:
        n = nemesis.make(f, cluster, history)
        heapq.heappush(due, (f.at, 2 * f.index, "start", n))
    active: dict[int, nemesis.Nemesis] = {}
    ticks: dict[int, float] = {}
    hung = False
    while waiter.is_alive():
        now = time.monotonic() - t0
        if now > deadline + cluster.client_timeout:
            hung = True
            break
        while due and due[0][0] <= now:
            _, order, what, n = heapq.heappop(due)
            if what == "start":
                n.start(now)
                active[n.fault.index] = n
                if n.fault.duration is not None:
                    heapq.heappush(due, (n.fault.end, order + 1, "stop", n))
            else:
                n.stop(now)
                active.pop(n.fault.index, None)
                ticks.pop(n.fault.index, None)
        for i, n in list(active.items()):
            if ticks.get(i, 0.0) <= now:
                nxt = n.tick(now)
                if nxt is None:
                    ticks[i] = float("inf")
                else:
                    ticks[i] = nxt
        wake = min([now + TICK, *(t for t in ticks.values()), *(d[0] for d in due[:1])])
        waiter.join(max(0.0, wake - (time.monotonic() - t0)))
    if hung:  # handle.wait gives up at the deadline; a last request takes client_timeout
        waiter.join(2 * cluster.client_timeout)
    end = (waiter.ended_at or time.monotonic()) - t0
    if hung:
        history.job(end, "hung")
    elif waiter.error is not None:
        history.job(end, "failed", error=f"{type(waiter.error).__name__}: {waiter.error}"[:500])
    else:
        history.job(end, "succeeded")
    at_end = checker.snapshot(out_dir) if out_dir is not None else None
    now = time.monotonic() - t0
    for n in active.values():
        n.heal(now)
    if isinstance(waiter.error, TimeoutError):
        hung = True
    return checker.Outcome(waiter.result, None if hung else waiter.error, end, hung), at_end
