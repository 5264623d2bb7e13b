"""The commands of ``zmqmr`` that ask a running master: status, logs, cancel.

Part of the command line (``zmqmr.cli``, which configures logging and holds
the parser); here only what each command asks and how it prints the answer.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from .cli import fail


def _client(args: argparse.Namespace) -> Any:
    from .client import Client

    return Client(args.master, keys=args.keys, timeout=args.timeout, insecure=args.insecure)


def _job_rows(jobs: list[dict[str, Any]], history: bool) -> None:
    last = "ENDED" if history else ""
    print(
        f"  {'ID':<16} {'NAME':<24} {'STATE':<10} {'MAPS':>9} {'REDUCES':>9} {'ELAPSED':>8}"
        + (f" {last:>9}" if last else "")
    )
    for j in jobs:
        ended = j.get("ended_ago")
        print(
            f"  {j['id']:<16} {j['name'][:24]:<24} {j['state']:<10} "
            f"{j['maps_done']:>4}/{j['maps']:<4} {j['reduces_done']:>4}/{j['reduces']:<4} "
            f"{j['elapsed']:>7.1f}s"
            + (f" {_ago(ended):>9}" if history and ended is not None else "")
        )


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.job:
            return _job_status(client, args)
        status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    workers = status["workers"]
    print(f"{len(workers)} worker(s)")
    if workers:
        head = f"{'HOST':<20} {'PID':>7} {'SLOTS':>5} {'BUSY':>4} {'QUEUED':>6} {'HEARTBEAT':>10}"
        print(f"  {head}  SHUFFLE")
        for w in workers:
            print(
                f"  {w['host']:<20} {w['pid']:>7} {w['slots']:>5} {w['running']:>4} "
                f"{w.get('queued', 0):>6} {w['last_heartbeat']:>9.1f}s  {w['shuffle']}"
            )
    # A job that ended is finished, whether or not its client has collected the
    # outcome yet (the master keeps that for result_ttl): listed with the history.
    jobs = [j for j in status["jobs"] if j.get("ended_ago") is None]
    waiting = [j for j in status["jobs"] if j.get("ended_ago") is not None]
    print(f"{len(jobs)} job(s)")
    if jobs:
        _job_rows(jobs, history=False)
    finished = sorted(waiting + status.get("history", []), key=lambda j: j["ended_ago"])
    if finished:
        uncollected = f" ({len(waiting)} not yet collected by its client)" if waiting else ""
        print(f"{len(finished)} finished job(s){uncollected}, newest first")
        _job_rows(finished, history=True)
    return 0


def _job_status(client: Any, args: argparse.Namespace) -> int:
    """``zmqmr status JOB``: one job in detail."""
    status = client.status()
    job = _find_job(status["jobs"] + status.get("history", []), args.job, args.master)
    detail = client.job_info(job["id"])
    if detail is None:
        fail(f"the master at {args.master} no longer knows job {job['id']}")
    if args.json:
        print(json.dumps(detail, indent=2))
        return 0
    st = detail["status"]
    print(f"job {st['id']} ({st['name']}): {st['state']}, {st['elapsed']:.1f}s")
    if st.get("ended_ago") is not None:
        print(f"  ended {_ago(st['ended_ago'])}")
    t = detail["tasks"]
    for kind in ("map", "reduce"):
        print(
            f"  {kind} tasks: {t.get(f'{kind}_done', 0)} done, "
            f"{t.get(f'{kind}_running', 0)} running, {t.get(f'{kind}_idle', 0)} "
            f"{'not done' if st.get('ended_ago') is not None else 'idle'}"
        )
    attempts = detail["attempts"]
    outcomes: dict[str, int] = {}
    for a in attempts:
        outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
    shown = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    n_dropped = detail["attempts_dropped"]
    dropped = f" (and {n_dropped} earlier ones)" if n_dropped else ""
    print(f"attempts: {len(attempts)}{dropped}: {shown or 'none yet'}")
    if attempts:
        print(f"  {'ATTEMPT':>7} {'TASK':<12} {'WORKER':<24} {'START':>7} {'END':>7}  OUTCOME")
        for a in attempts[-args.attempts :]:
            end = f"{a['end']:.1f}s" if a.get("end") is not None else "-"
            marks = "".join(m for m, on in ((" backup", a["backup"]), (" rerun", a["rerun"])) if on)
            print(
                f"  {a['attempt']:>7} {a['kind'] + ' ' + str(a['task']):<12} "
                f"{a['worker'][:24]:<24} {a['start']:>6.1f}s {end:>7}  {a['outcome']}{marks}"
                + (f": {a['error'][:80]}" if a.get("error") else "")
            )
    failures = detail["failures"]
    if failures:
        print(f"failures: {len(failures)} (the latest)")
        for f in failures:
            print(f"  {f['type']}: {f['message']}")
            if f.get("traceback"):
                lines = f["traceback"].rstrip().splitlines()[-6:]
                print("\n".join("      " + line for line in lines))
    if st.get("error"):
        e = st["error"]
        print(f"job error: {e['type']}: {e['message']}")
    for title, values in (("counters", st.get("counters", {})), ("stats", st.get("stats", {}))):
        if values:
            print(f"{title}:")
            for name in sorted(values):
                print(f"  {name:<36} {values[name]:g}")
    return 0


_TASK = re.compile(r"(m|map|r|reduce)[\s:_-]*(\d+)", re.IGNORECASE)


def parse_task(text: str) -> tuple[str, int]:
    """``map 3``, ``map:3``, ``m3``, ``reduce-0``, ``r0`` -> (kind, index)."""
    m = _TASK.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a task; name one as map:3 or reduce:0 (or m3, r0)")
    kind = "map" if m.group(1).lower().startswith("m") else "reduce"
    return kind, int(m.group(2))


def cmd_logs(args: argparse.Namespace) -> int:
    kind, task = args.task if args.task else (None, None)
    with _client(args) as client:
        status = client.status()
        job = _find_job(status["jobs"] + status.get("history", []), args.job, args.master)
        got = client.logs(job["id"], kind, task)
    if args.json:
        print(json.dumps(got, indent=2))
        return 0
    what = f"{kind} task {task} of job {job['id']}" if kind else f"job {job['id']}"
    from .tasklogs import format_logs

    logs = got["logs"]
    sys.stdout.write(format_logs(logs))
    if not logs:
        print(f"zmqmr: no captured output for {what}", file=sys.stderr)
    if got["more"]:
        print(
            f"zmqmr: {got['more']} more attempts' logs not shown; name a task (map:3)",
            file=sys.stderr,
        )
    if got["missing"]:
        print(f"zmqmr: no answer from workers {', '.join(got['missing'])}", file=sys.stderr)
    return 0


def _find_job(jobs: list[dict[str, Any]], wanted: str, address: str) -> dict[str, Any]:
    """The job whose id is ``wanted``, or the only one whose id starts with it."""
    exact = [j for j in jobs if j["id"] == wanted]
    found = exact or [j for j in jobs if j["id"].startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if not found:
        fail(f"the master at {address} has no job {wanted!r} (zmqmr status lists its jobs)")
    fail(f"{wanted!r} is the start of {len(found)} job ids; give more of it")


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        status = client.status()  # an ended job is in the history: it says so
        job = _find_job(status["jobs"] + status.get("history", []), args.job, args.master)
        if job["state"] == "committing":
            fail(f"job {job['id']} ({job['name']}) is committing its output: too late to cancel")
        if job["state"] not in ("queued", "running"):
            fail(f"job {job['id']} ({job['name']}) has already ended: {job['state']}")
        state = client.cancel(job["id"])
    if state == "committing":
        fail(f"job {job['id']} ({job['name']}) began committing its output before the cancel")
    if state not in (None, "cancelled"):
        fail(f"job {job['id']} ({job['name']}) ended before the cancel arrived: {state}")
    print(f"cancelled job {job['id']} ({job['name']})")
    return 0
