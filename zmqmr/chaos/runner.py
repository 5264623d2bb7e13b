"""One chaos run: a cluster, a job, a schedule of faults, a history, a verdict.

``run_scenario(Scenario(...))``:

1. computes the oracle, ``zmqmr.run_serial(job)``, once per job, and asks it
   twice (``zmqmr.chaos.oracle``): a job whose serial answer differs between
   the two is reported as not deterministic, and no cluster runs;
2. starts a ``ChaosCluster`` (in network namespaces when the schedule may cut
   links and this process is root), or reaches a lab (``LabCluster``: the
   workers scripts/start-workers.sh started, over ssh);
3. runs the job once without faults (its time is the yardstick; its answer
   is checked too), unless the scenario says not to;
4. submits the job again from a client in a helper thread, and from this
   thread carries out the schedule, seconds after the master accepted the
   job, writing every action (with its host) to the history, until the job
   ends or its deadline;
5. heals what is still in force (resumes paused nodes, brings links up),
   waits a grace period, and looks again at the output directory for late
   writes of attempts that were paused or cut off;
6. reads the master's reaction to every fault from its log, tears the
   cluster down (a lab is restored instead: every worker running again,
   nothing stopped) and asks the checker for a verdict.

Every process is started from the calling thread (see ``zmqmr.chaos.cluster``).
An interrupt (Ctrl-C, SIGTERM) restores a lab before it propagates.
"""

from __future__ import annotations

import heapq
import os
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

import zmqmr

from . import checker, nemesis, netns, reactions, schedule
from .cluster import ChaosCluster
from .history import History
from .lab import LabCluster
from .oracle import oracle
from .report import Report
from .scenario import Scenario
from .workload import load_job, paced

__all__ = ["Report", "Scenario", "plan", "run_scenario"]

#: Seconds to wait after healing for stale attempts to write (or not).
GRACE = 1.0
#: How often the schedule loop wakes when nothing is due (seconds).
TICK = 0.05


def plan(sc: Scenario) -> tuple[list[str], dict[str, str], bool]:
    """The nemeses that can run here, those skipped (with why), and whether to use netns."""
    kinds, skipped = list(sc.nemeses), {}
    if sc.lab:
        if schedule.PARTITION in kinds:
            kinds.remove(schedule.PARTITION)
            skipped[schedule.PARTITION] = "cutting a lab machine off its network is not supported"
        return kinds, skipped, False
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

    def __init__(self, cluster: Any, job: zmqmr.Job, deadline: float) -> None:
        super().__init__(name="chaos-client", daemon=True)
        self.cluster, self.job, self.deadline = cluster, job, deadline
        # Without a journal the master keeps jobs in memory: one unanswered request is a
        # clear failure. With one, the client rides through the restart.
        self.master_wait = None if cluster.journaled else 1.0
        self.accepted = threading.Event()
        self.accepted_at = 0.0
        self.ended_at = 0.0
        self.job_id: str | None = None
        self.result: zmqmr.JobResult | None = None
        self.error: BaseException | None = None
        self._cancel: Any = None

    def run(self) -> None:
        try:
            with self.cluster.client(master_wait=self.master_wait) as client:
                handle = client.submit(self.job)
                self.job_id = handle.job_id
                self._cancel = handle.cancel
                self.accepted_at = time.monotonic()
                self.accepted.set()
                self.result = handle.wait(timeout=self.deadline, progress=False)
        except BaseException as exc:  # the outcome to judge, whatever it is
            self.error = exc
        finally:
            self._cancel = None
            self.ended_at = time.monotonic()
            self.accepted.set()

    def cancel(self) -> None:
        """Best effort: cancel the job on the master (the harness was interrupted)."""
        cancel = self._cancel
        if cancel is not None:
            try:
                cancel()
            except Exception:  # the master may be gone; the lab is restored anyway
                pass


def _make_cluster(sc: Scenario, use_netns: bool, workdir: str) -> Any:
    if sc.lab:
        assert sc.hosts is not None
        if not sc.master:
            raise zmqmr.ClusterError("a lab run needs --master, the master's client address")
        return LabCluster(
            sc.hosts,
            master=sc.master,
            master_host=sc.master_host,
            run_dir=sc.run_dir,
            master_run_dir=sc.master_run_dir,
            keys=sc.keys,
            insecure=sc.insecure,
            client_timeout=sc.client_timeout,
            directory=workdir,
        )
    return ChaosCluster(
        sc.workers,
        netns=use_netns,
        slots=sc.slots,
        directory=workdir,
        keep=True,
        client_timeout=sc.client_timeout,
        state_dir=sc.state_dir,
    )


def _output_dir(sc: Scenario, workdir: str, name: str) -> str | None:
    if sc.lab:  # part files land on the reducers' machines: a shared directory only
        if sc.output_dir is None:
            return None
        return os.path.join(sc.output_dir, f"zmqmr-chaos-{sc.seed}-{os.getpid()}-{name}")
    return os.path.join(workdir, name) if sc.output else None


def _nondeterministic(sc: Scenario, problems: list[str]) -> Report:
    v = checker.Verdict(outcome="nondeterministic")
    v.add("deterministic", problems)
    summary = checker.summarize(checker.Outcome(), {})
    return Report(sc, [], [], v, summary)


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
        inputs = sc.expanded_inputs()
        job = load_job(sc.job_file, inputs, sc.reducers, sc.split_size, None, sc.settings)
    # raises JobSubmitError for bad inputs, before anything starts
    expected, doubts = oracle(sc, job)
    if doubts:
        return _nondeterministic(sc, doubts)
    if keep:
        os.makedirs(keep, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"zmqmr-chaos-{sc.seed}-", dir=keep)
    out_dir = _output_dir(sc, workdir, "output")
    history = History(history_path or os.path.join(workdir, "history.jsonl"))
    outcome = checker.Outcome()
    snapshots = None
    error = ""
    faults: list[schedule.Fault] = []
    baseline: dict[str, Any] | None = None
    said: dict[int, list[dict[str, Any]]] = {}
    master_log = True
    cluster = _make_cluster(sc, use_netns, workdir)
    waiter: list[_Waiter] = []
    try:
        cluster.start()
        if schedule.KILL_MASTER in kinds and not cluster.master_known:
            kinds.remove(schedule.KILL_MASTER)
            skipped[schedule.KILL_MASTER] = (
                "the master's process was not found (start it with scripts/start-master.sh "
                "on --master-host, with --master-run-dir)"
            )
        faults = schedule.make_schedule(
            sc.seed,
            kinds,
            cluster.num_workers,
            window=sc.window,
            count=sc.faults,
            worker_timeout=cluster.worker_timeout,
            restart_master=cluster.journaled,
        )
        if sc.baseline:
            baseline = _baseline(sc, cluster, job, expected, workdir)
        job.output_dir = out_dir
        outcome, at_end = _drive(
            cluster, paced(job, sc.pace), faults, history, sc.deadline, out_dir, waiter
        )
        cluster.heal()
        if at_end is not None and out_dir is not None and outcome.result is not None:
            time.sleep(GRACE)
            snapshots = (at_end, checker.snapshot(out_dir))
        lines = cluster.master_log()
        master_log = bool(lines)
        nodes = {n: cluster.node_name(n) for n in cluster.worker_names}
        said = reactions.attribute(history.records, lines, nodes)
    except Exception as exc:  # a harness or cluster failure is a failed run, with its reason
        error = f"{type(exc).__name__}: {exc}"
    except BaseException:  # interrupted: restore the lab, leave nothing behind
        for w in waiter:
            w.cancel()
        cluster.close()
        history.close()
        _say_restored(cluster)
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
        recovers=cluster.journaled,
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
    if baseline is not None:
        verdict.add("no-fault run", baseline["problems"], f"{baseline['seconds']:.2f}s, exact")
    if sc.lab:
        verdict.add(
            "lab restored",
            list(cluster.restored),
            f"all {cluster.num_workers} workers running again, none stopped",
        )
    if error:
        verdict.add("harness", [error.splitlines()[0]])
    summary = checker.summarize(outcome, history.counts())
    summary["ran"] = True
    report = Report(
        sc,
        faults,
        list(history.records),
        verdict,
        summary,
        skipped,
        use_netns,
        error=error,
        baseline=baseline,
        reactions=said,
        hosts=list(getattr(cluster, "hosts", [])),
        master_log=master_log,
    )
    if out_dir is not None and sc.lab:
        shutil.rmtree(out_dir, ignore_errors=True)
    if keep or (keep_on_failure and not report.ok):
        report.directory = workdir
        with open(os.path.join(workdir, "report.txt"), "w") as f:
            f.write(report.text() + "\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _say_restored(cluster: Any) -> None:
    """On stderr: what restoring a lab after an interrupt did, and what it could not."""
    for what in getattr(cluster, "restore_actions", []):
        print(f"zmqmr chaos: restoring the lab: {what}", file=sys.stderr)
    for what in cluster.restored:
        print(f"zmqmr chaos: could not restore the lab: {what}", file=sys.stderr)


def _baseline(
    sc: Scenario, cluster: Any, job: zmqmr.Job, expected: zmqmr.JobResult, workdir: str
) -> dict[str, Any]:
    """Run the job once without faults: its time, and whether its answer is right."""
    out_dir = _output_dir(sc, workdir, "baseline")
    job.output_dir = out_dir
    waiter = _Waiter(cluster, paced(job, sc.pace), sc.deadline)
    waiter.start()
    waiter.join(sc.deadline + 2 * cluster.client_timeout)
    seconds = (waiter.ended_at - waiter.accepted_at) if waiter.accepted_at else 0.0
    outcome = checker.Outcome(waiter.result, waiter.error, seconds, waiter.is_alive())
    v = checker.check(
        expected,
        outcome,
        bound=sc.deadline,
        num_reducers=job.num_reducers,
        partitioner=job.partitioner,
        output_dir=out_dir,
    )
    if out_dir is not None and sc.lab:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {
        "seconds": round(seconds, 3) if v.outcome == "succeeded" else None,
        "outcome": v.outcome,
        "problems": v.problems,
    }


def _kill_while_accepting(
    cluster: Any,
    waiter: _Waiter,
    faults: list[schedule.Fault],
    history: History,
) -> list[schedule.Fault]:
    """Carry out a master kill at the "accept" moment: as soon as the master starts
    writing the job to its journal (or the job is accepted first), then restart it.
    Returns the other faults. (A lab's journal is on its master's machine: there the
    kill comes at once after the acceptance, from the schedule, at 0 s.)"""
    accept = [f for f in faults if f.params.get("moment") == "accept"]
    if not accept or not isinstance(cluster, ChaosCluster):
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
    cluster: Any,
    job: zmqmr.Job,
    faults: list[schedule.Fault],
    history: History,
    deadline: float,
    out_dir: str | None,
    waiters: list[_Waiter],
) -> tuple[checker.Outcome, dict[str, str] | None]:
    """Submit the job and carry out the schedule until the job ends.

    Returns what the client saw, and the output directory as it was when the
    job ended, before anything paused was resumed (see ``checker.snapshot``).
    """
    waiter = _Waiter(cluster, job, deadline)
    waiters.append(waiter)
    waiter.start()
    faults = _kill_while_accepting(cluster, waiter, faults, history)
    waiter.accepted.wait()
    if waiter.result is None and waiter.error is not None and not waiter.accepted_at:
        waiter.join()
        return checker.Outcome(error=waiter.error), None
    t0 = waiter.accepted_at
    history.job(0.0, "submitted", address=cluster.address, job_id=waiter.job_id)
    # (time, order, what, nemesis): starts and stops in schedule order.
    due: list[tuple[float, int, str, nemesis.Nemesis]] = []
    for f in faults:
        n = nemesis.make(f, cluster, history, waiter.job_id)
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
