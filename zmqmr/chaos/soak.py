"""The soak: many jobs in a row, each under a random mix of nemeses.

Every job's scenario (workload, nemeses, number of workers and reducers,
split size, output directory or not, and its own seed) is drawn from one
``random.Random`` seeded with the soak's seed, so a soak replays job for job;
each job is also a complete ``Scenario`` whose ``replay_command`` reruns it on
its own. The kill-master nemesis is mixed into one job in ten: each such job
ends in a (clear) failure and proves nothing about answers. Without given
inputs each job reads a random two to eight of the Gutenberg books.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import schedule
from .runner import Report, Scenario, run_scenario
from .workload import WORKLOADS, books


@dataclass
class SoakResult:
    seed: int
    reports: list[Report] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def failures(self) -> list[Report]:
        return [r for r in self.reports if not r.ok]

    @property
    def ok(self) -> bool:
        return bool(self.reports) and not self.failures

    def table(self) -> str:
        faults: Counter[str] = Counter()
        planned: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        checks_run = checks_passed = 0
        reexec = backups = 0
        skipped: dict[str, str] = {}
        for r in self.reports:
            faults.update(r.summary["faults"])
            planned.update(f.kind for f in r.schedule)
            outcomes[r.verdict.outcome] += 1
            checks_run += len(r.verdict.checks)
            checks_passed += sum(c.ok for c in r.verdict.checks)
            reexec += r.summary["reexecutions"] or 0
            backups += r.summary["backups"] or 0
            skipped.update(r.skipped)
        n = len(self.reports)
        lines = [
            f"soak seed {self.seed}: {n} jobs in {self.seconds / 60:.1f} min"
            + (" (interrupted)" if self.interrupted else ""),
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| jobs | {n} |",
            f"| jobs passed | {n - len(self.failures)} |",
            f"| jobs failed | {len(self.failures)} |",
            f"| checks passed | {checks_passed} / {checks_run} |",
        ]
        for kind in schedule.KINDS:
            lines.append(
                f"| faults injected: {kind} | {faults[kind]} (of {planned[kind]} planned) |"
            )
        lines.append(f"| faults injected: total | {sum(faults.values())} |")
        for outcome, k in sorted(outcomes.items()):
            lines.append(f"| outcome: {outcome} | {k} |")
        lines.append(f"| re-executions | {reexec} |")
        lines.append(f"| backup tasks | {backups} |")
        for kind, why in skipped.items():
            lines.append(f"| skipped: {kind} | {why} |")
        if self.failures:
            lines += ["", "failures:"]
            for r in self.failures:
                lines.append(f"  seed {r.scenario.seed}: {'; '.join(r.verdict.problems)}")
                lines.append(f"    replay: {r.scenario.replay_command()}")
                if r.directory:
                    lines.append(f"    files:  {r.directory}")
        return "\n".join(lines)


def draw_scenario(rng: random.Random, inputs: list[str] | None, jobs: list[str]) -> Scenario:
    """One random soak job; without ``inputs``, two to eight of the books."""
    tolerated = list(schedule.TOLERATED)
    kinds = rng.sample(tolerated, rng.randint(1, 3))
    if rng.random() < 0.1:
        kinds.append(schedule.KILL_MASTER)
    if inputs is None:
        shelf = books()
        inputs = sorted(rng.sample(shelf, rng.randint(min(2, len(shelf)), len(shelf))))
    return Scenario(
        job_file=rng.choice(jobs),
        inputs=list(inputs),
        window=round(rng.uniform(3.0, 10.0), 1),
        nemeses=[k for k in schedule.KINDS if k in kinds],
        seed=rng.randrange(1, 1_000_000),
        workers=rng.choice((3, 4, 4, 5)),
        reducers=rng.randint(1, 5),
        split_size=rng.choice((128, 256, 512)) * 1024,
        output=rng.random() < 0.7,
        baseline=False,  # a soak is about answers; `run` compares times
    )


def soak(
    seed: int,
    *,
    minutes: float | None = None,
    jobs: int | None = None,
    inputs: list[str] | None = None,
    job_files: list[str] | None = None,
    echo: Callable[[str], Any] = print,
    on_report: Callable[[Report], Any] | None = None,
) -> SoakResult:
    """Run jobs until ``minutes`` have passed or ``jobs`` have run (whichever first)."""
    if minutes is None and jobs is None:
        raise ValueError("give minutes, jobs or both")
    rng = random.Random(f"zmqmr-chaos-soak/{seed}")
    job_files = job_files or list(WORKLOADS)
    result = SoakResult(seed)
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if jobs is not None and len(result.reports) >= jobs:
            break
        if minutes is not None and elapsed >= minutes * 60:
            break
        sc = draw_scenario(rng, inputs, job_files)
        try:
            report = run_scenario(sc)
        except KeyboardInterrupt:
            result.interrupted = True
            break
        result.reports.append(report)
        if on_report is not None:
            on_report(report)
        s = report.summary
        faults = ",".join(f"{k}:{n}" for k, n in sorted(s["faults"].items())) or "-"
        echo(
            f"#{len(result.reports):<4} seed {sc.seed:<7} {sc.job_file:<15} w={sc.workers} "
            f"r={sc.reducers} {','.join(sc.nemeses):<32} faults {faults:<28} "
            f"{report.verdict.outcome:<15} {s['wall_seconds']:6.1f}s "
            f"{'PASS' if report.ok else 'FAIL'}"
        )
        if not report.ok:
            echo("      " + "; ".join(report.verdict.problems))
            echo(f"      replay: {sc.replay_command()}")
    result.seconds = time.monotonic() - start
    return result
