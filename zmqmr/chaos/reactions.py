"""The master's reaction to each fault, read from its log.

The master logs its decisions at INFO (the ``Note`` commands of
``zmqmr.state``): a worker declared gone and what it lost, a map task that
will run again and why, a backup launched, a task retried, a worker that gets
no more of a job's tasks, a worker that joined. ``attribute`` gives each such
line of the run to the fault it answers:

* a kill, pause, slow or partition of a worker: lines that name that worker
  as the master does, ``NODE:PID``, for any pid the fault saw (a worker that
  joins under the pid a kill restarted it with answers that kill);
* a damaged map output: ``map task N will run again`` for the task whose
  file it damaged;
* a slow worker: also the backups launched while it was slow (a backup's line
  names the worker it runs on, not the straggler);
* a killed master: what the restarted master logged (workers joining again,
  jobs it recovered or forgot).

A line goes to the latest fault, started before it, that it matches, a
match on a task or a time window before a match on a worker's name (a reduce
preempted on a paused worker because a damaged map must run again answers
the damage). Imports the standard library only.
"""

from __future__ import annotations

import re
from typing import Any

#: The logger and level of the master's decisions in its log.
MASTER_INFO = "zmqmr.master INFO "
#: Lines shown per fault in a report (the JSON report has all of them).
SHOWN = 6
_MAP_FILE = re.compile(r"m(\d+)-a\d+\.out$")
#: Where a backup goes is not a reaction to a fault on that worker.
_BACKUP_ON = re.compile(r"backup of .+? on \S+")


def decisions(lines: list[tuple[float, str]], since: float) -> list[tuple[float, str]]:
    """The master's INFO lines from ``since`` (Unix time) on, without logger and level."""
    return [
        (t, text[len(MASTER_INFO) :])
        for t, text in lines
        if text.startswith(MASTER_INFO) and t >= since - 0.5
    ]


def _matchers(fault: dict[str, Any], records: list[dict[str, Any]], node: str) -> list[Any]:
    kind = fault["nemesis"]
    if kind == "corrupt":
        tasks = set()
        for r in records:
            m = _MAP_FILE.search(str(r.get("file", "")))
            if m:
                tasks.add(int(m.group(1)))
        return [
            f"map task {n} {verb} run again" for n in sorted(tasks) for verb in ("will", "must")
        ]
    if kind == "kill-master":
        return ["joined with", "recover", "does not know job", "state"]
    pids = {int(r["pid"]) for r in records if r.get("pid")}
    found: list[Any] = [f"{node}:{pid}" for pid in sorted(pids)]
    if kind == "slow":
        end = max(r["wall"] for r in records) + 1.0
        found.append(("backup of", fault["wall"], end))
    return found


def _matches(text: str, t: float, matcher: Any) -> bool:
    if isinstance(matcher, tuple):
        word, start, end = matcher
        return word in text and start <= t <= end
    if ":" in matcher:  # NODE:PID
        text = _BACKUP_ON.sub("backup", text)
    return bool(matcher in text)


def _is_worker(matcher: Any) -> bool:
    return isinstance(matcher, str) and ":" in matcher


def _restarted(recs: list[dict[str, Any]], node: str) -> list[str]:
    """``NODE:PID`` of the worker a kill fault started again."""
    return [f"{node}:{r['pid']}" for r in recs if r["action"] == "restart" and r.get("pid")]


def attribute(
    history: list[dict[str, Any]],
    lines: list[tuple[float, str]],
    nodes: dict[str, str],
) -> dict[int, list[dict[str, Any]]]:
    """Fault index -> the master's lines that answer it: ``{"time", "wall", "line"}``.

    ``history`` is the run's records (``time`` relative to the job's
    acceptance, ``wall`` Unix time); ``nodes`` maps a target to the name the
    master gives its machine.
    """
    by_fault: dict[int, list[dict[str, Any]]] = {}
    for r in history:
        if r.get("fault") is not None:
            by_fault.setdefault(r["fault"], []).append(r)
    if not by_fault:
        return {}
    zero = min(r["wall"] - r["time"] for r in history)
    starts = sorted(by_fault.items(), key=lambda kv: kv[1][0]["wall"])
    match = {i: _matchers(recs[0], recs, nodes.get(recs[0]["target"], "")) for i, recs in starts}
    out: dict[int, list[dict[str, Any]]] = {i: [] for i, _ in starts}
    first = starts[0][1][0]["wall"]
    restarts = {i: _restarted(recs, nodes.get(recs[0]["target"], "")) for i, recs in starts}
    for t, text in decisions(lines, first):
        # A worker that joins under a restarted pid answers the kill that restarted it.
        joined = [
            i for i, names in restarts.items() if "joined" in text and any(n in text for n in names)
        ]
        if joined:
            out[joined[-1]].append({"time": round(t - zero, 3), "wall": round(t, 3), "line": text})
            continue
        # What names a task or a time window is surer than what names a worker.
        for by_worker in (False, True):
            hit = [
                i
                for i, recs in starts
                if recs[0]["wall"] - 0.5 <= t
                and any(_is_worker(m) == by_worker and _matches(text, t, m) for m in match[i])
            ]
            if hit:
                out[hit[-1]].append({"time": round(t - zero, 3), "wall": round(t, 3), "line": text})
                break
    return out
