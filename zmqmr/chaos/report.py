"""The report of a chaos run: for people (``text``) and for scripts (``to_json``).

It says what ran where, each fault with its time, host and what the master
logged in answer to it, the time the job took under faults against a run of
the same job without faults, every check with its verdict, and the command
that replays the run. The verdict is PASS, FAIL, or NONDETERMINISTIC when
the job's serial answer differed between two runs (then the cluster was not
judged at all).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from . import checker, reactions, schedule
from .scenario import Scenario

PASS, FAIL, NONDETERMINISTIC = "PASS", "FAIL", "NONDETERMINISTIC"
#: Characters of a master's log line in the text report (the JSON has all of them).
WIDE = 150
#: History fields shown elsewhere in a report's line (or not worth showing).
_SHOWN = ("time", "nemesis", "target", "action", "fault", "wall", "host", "pid")


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
    baseline: dict[str, Any] | None = None  # the no-fault run: seconds, outcome, problems
    reactions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    hosts: list[str] = field(default_factory=list)  # a lab's hosts, w0 first
    master_log: bool = True  # whether the master's log could be read

    @property
    def nondeterministic(self) -> bool:
        return self.verdict.outcome == "nondeterministic"

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def word(self) -> str:
        if self.nondeterministic:
            return NONDETERMINISTIC
        return PASS if self.ok else FAIL

    def _where(self) -> str:
        sc = self.scenario
        if sc.lab:
            names = ", ".join(f"w{i}={h}" for i, h in enumerate(self.hosts))
            return f"the lab of {sc.hosts} ({names}), master {sc.master}"
        return f"{sc.workers} local workers" + (" in network namespaces" if self.netns else "")

    def _times(self) -> list[str]:
        s, b = self.summary, self.baseline
        if not s.get("ran"):
            return []
        took = f"under faults the job took {s['wall_seconds']:.2f}s"
        if b is None:
            return [took + " (no run without faults: --no-baseline)"]
        if not b.get("seconds"):
            return [took + f"; the run without faults {b.get('outcome')}"]
        ratio = s["wall_seconds"] / b["seconds"] if b["seconds"] else 0.0
        return [took + f", {b['seconds']:.2f}s without faults ({ratio:.2f}x)"]

    def text(self) -> str:
        sc, s = self.scenario, self.summary
        job = sc.job.name if sc.job is not None else sc.job_file
        lines = [
            f"chaos run: job {job} on {self._where()}; nemeses "
            f"{','.join(sc.nemeses) or 'none'}; seed {sc.seed}",
        ]
        for kind, why in self.skipped.items():
            lines.append(f"  skipped {kind}: {why}")
        lines += self._times()
        lines.append(f"schedule ({len(self.schedule)} faults):")
        injected = {r["fault"] for r in self.history if "fault" in r}
        for f in self.schedule:
            mark = "injected" if f.index in injected else "not reached"
            lines.append(f"  {f.at:6.2f}s  #{f.index} {f.kind:<11} {f.describe()}  [{mark}]")
        lines.append("history (time after the job was accepted, host, and the master's reaction):")
        for r in self.history:
            extra = {k: v for k, v in r.items() if k not in _SHOWN}
            what = r["nemesis"] or "job"
            where = f" on {r['host']}" if r.get("host") else ""
            pid = f" (pid {r['pid']})" if r.get("pid") else ""
            lines.append(
                f"  {r['time']:7.3f}s  {what:<11} {r['target']}{where}{pid}: {r['action']}"
                + (f"  {json.dumps(extra, default=str)}" if extra else "")
            )
            if r.get("fault") is not None and r is _first(self.history, r["fault"]):
                said = self.reactions.get(r["fault"], [])
                for x in said[: reactions.SHOWN]:
                    line = x["line"] if len(x["line"]) <= WIDE else x["line"][: WIDE - 3] + "..."
                    lines.append(f"             master at {x['time']:7.3f}s: {line}")
                if len(said) > reactions.SHOWN:
                    lines.append(f"             master: ... {len(said) - reactions.SHOWN} more")
                if not said and self.master_log and r["nemesis"] is not None:
                    lines.append("             master: (nothing in its log for this fault)")
        if not self.master_log:
            lines.append("  (the master's log could not be read: no reactions shown)")
        if s.get("ran"):
            faults = ", ".join(f"{k} {n}" for k, n in sorted(s["faults"].items())) or "none"
            lines.append(
                f"summary: faults injected {s['faults_total']} ({faults}); attempts "
                f"{s['attempts']} (map {s['map_attempts']}, reduce {s['reduce_attempts']}); "
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
        lines.append(f"verdict: {self.word}  (seed {sc.seed})")
        lines.append(f"replay: {sc.replay_command()}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.to_json(),
            "schedule": [f.to_json() for f in self.schedule],
            "history": self.history,
            "reactions": {str(k): v for k, v in self.reactions.items()},
            "verdict": self.word,
            "outcome": self.verdict.outcome,
            "checks": [dataclasses.asdict(c) for c in self.verdict.checks],
            "summary": self.summary,
            "baseline": self.baseline,
            "skipped": self.skipped,
            "netns": self.netns,
            "hosts": self.hosts,
            "directory": self.directory,
            "replay": self.scenario.replay_command(),
        }


def _first(history: list[dict[str, Any]], index: int) -> dict[str, Any] | None:
    for r in history:
        if r.get("fault") == index:
            return r
    return None
