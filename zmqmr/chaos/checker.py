"""The checker: the job's outcome under faults against ``zmqmr.run_serial(job)``.

A run passes when the job succeeded and

* its records equal the serial run's: every key exactly once, equal values,
  partition 0 first and sorted by key within each partition;
* its counters equal the serial run's: every user counter, and each
  ``zmqmr.*`` counter the serial run also produces;
* with ``output_dir``: the directory holds exactly ``part-00000`` ..
  ``part-(R-1)``, each with the serial run's records of its partition as
  ``key<TAB>value`` lines, and ``_SUCCESS``, and no ``_temporary`` nor other
  temporary file, both when the job ended and
  after a grace period in which paused or cut-off attempts could still write
  (a part file must not change after the job ended);
* it ended within its time bound.

When the schedule killed a master without a journal, a clear error at the
client (``MasterUnavailable``, another ``ClusterError`` or ``JobFailed``)
within a bound of the master's death passes too: that master keeps jobs in
memory and cannot recover them. A master with a journal (``recovers``) must
finish the job exactly like any other run. A hang, a wrong answer or any other
error never passes.

The checker knows nothing of processes or sockets: it judges what the runner
saw, so it can be tested on made-up outcomes.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmqmr
from zmqmr import partitioning

#: The zmqmr.* counters a serial run produces; the cluster's must equal them.
SERIAL_COUNTERS = (
    "zmqmr.map_input_records",
    "zmqmr.map_output_records",
    "zmqmr.reduce_input_groups",
    "zmqmr.reduce_output_records",
)
#: Errors that count as a clear failure when the master was killed.
CLEAR_FAILURES: tuple[type[BaseException], ...] = (zmqmr.ClusterError, zmqmr.JobFailed)
#: Examples shown per kind of difference.
SAMPLES = 3


@dataclass
class Outcome:
    """What the client saw: a result or an error, and when (seconds after acceptance)."""

    result: zmqmr.JobResult | None = None
    error: BaseException | None = None
    seconds: float = 0.0
    hung: bool = False


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    outcome: str = ""  # "succeeded", "failed clearly", "failed", "hung", "not submitted"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def add(self, name: str, problems: list[str], fine: str = "") -> None:
        self.checks.append(Check(name, not problems, "; ".join(problems) if problems else fine))


def _sample(items: list[Any]) -> str:
    shown = ", ".join(repr(x)[:80] for x in items[:SAMPLES])
    return shown + (", ..." if len(items) > SAMPLES else "")


def diff_records(expected: list[tuple[Any, Any]], got: list[tuple[Any, Any]]) -> list[str]:
    """What is wrong with ``got`` as the records of a job whose answer is ``expected``."""
    if got == expected:
        return []
    problems = []
    counts = Counter(k for k, _ in got)
    duplicated = [k for k, n in counts.items() if n > 1]
    want = dict(expected)
    have: dict[Any, Any] = {}
    for k, v in got:
        have.setdefault(k, v)
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    wrong = [(k, want[k], have[k]) for k in want if k in have and have[k] != want[k]]
    if duplicated:
        problems.append(f"{len(duplicated)} key(s) more than once, e.g. {_sample(duplicated)}")
    if missing:
        problems.append(f"{len(missing)} key(s) missing, e.g. {_sample(missing)}")
    if extra:
        problems.append(f"{len(extra)} key(s) not in the serial run, e.g. {_sample(extra)}")
    if wrong:
        shown = ", ".join(f"{k!r:.40}: {w!r:.40} expected, {h!r:.40} got" for k, w, h in wrong[:3])
        problems.append(f"{len(wrong)} value(s) differ, e.g. {shown}")
    if not problems:
        problems.append("the right records in the wrong order")
    return problems


def diff_counters(expected: dict[str, int], got: dict[str, int]) -> list[str]:
    names = {n for n in (*expected, *got) if not n.startswith("zmqmr.")}
    names |= {n for n in SERIAL_COUNTERS if n in expected}
    return [
        f"{n} = {got.get(n)} (serial run: {expected.get(n)})"
        for n in sorted(names)
        if got.get(n) != expected.get(n)
    ]


def is_temporary(name: str) -> bool:
    return name == "_temporary" or name.startswith(".part-") or name.endswith(".tmp")


def snapshot(output_dir: str) -> dict[str, str]:
    """Every file in ``output_dir`` -> a SHA-256 of its bytes."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(output_dir))
    except OSError:
        return out
    for name in names:
        try:
            with open(os.path.join(output_dir, name), "rb") as f:
                out[name] = hashlib.sha256(f.read()).hexdigest()
        except OSError:
            out[name] = "unreadable"
    return out


def diff_output_dir(
    output_dir: str,
    expected: list[tuple[Any, Any]],
    num_reducers: int,
    partitioner: Callable[[Any, int], int] | None = None,
) -> list[str]:
    """Part files against the serial records: names, partitions, contents, no temporaries."""
    part = partitioner or zmqmr.default_partitioner
    want_lines: list[list[tuple[str, str]]] = [[] for _ in range(num_reducers)]
    with partitioning.seeded_hashing():  # one helper for keys hashed under the executors' seed
        for k, v in expected:
            want_lines[part(k, num_reducers)].append((str(k), str(v)))
    want_names = [f"part-{i:05d}" for i in range(num_reducers)] + ["_SUCCESS"]
    try:
        names = sorted(os.listdir(output_dir))
    except OSError as exc:
        return [f"cannot list {output_dir}: {exc}"]
    problems = []
    temps = [n for n in names if is_temporary(n)]
    if temps:
        problems.append(f"temporary files left: {_sample(temps)}")
    missing = [n for n in want_names if n not in names]
    if missing:
        problems.append(f"part files missing: {_sample(missing)}")
    strays = [n for n in names if n not in want_names and n not in temps]
    if strays:
        problems.append(f"unexpected files: {_sample(strays)}")
    for i, name in enumerate(want_names[:-1]):
        if name in missing:
            continue
        want = "".join(f"{k}\t{v}\n" for k, v in want_lines[i])
        with open(os.path.join(output_dir, name), encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
        if text == want:
            continue
        got = [tuple(line.split("\t", 1)) for line in text.splitlines()]
        why = diff_records(want_lines[i], [(g[0], g[-1]) for g in got])
        problems.append(f"{name}: " + "; ".join(why))
    return problems


def check(
    expected: zmqmr.JobResult,
    outcome: Outcome,
    *,
    bound: float,
    num_reducers: int = 1,
    partitioner: Callable[[Any, int], int] | None = None,
    output_dir: str | None = None,
    late_snapshots: tuple[dict[str, str], dict[str, str]] | None = None,
    master_killed_at: float | None = None,
    failure_bound: float = 10.0,
    recovers: bool = False,
) -> Verdict:
    """Judge one run. ``expected`` is ``zmqmr.run_serial(job)``.

    ``master_killed_at`` (seconds after acceptance) says the schedule killed
    the master: a clear error within ``failure_bound`` seconds of it passes.
    ``late_snapshots`` are the output directory when the job ended and after
    the grace period (see ``snapshot``).
    """
    v = Verdict()
    if outcome.hung:
        v.outcome = "hung"
        v.add("ended", [f"no outcome within {outcome.seconds:.1f}s: the job hung"])
        return v
    v.add(
        "ended",
        [f"took {outcome.seconds:.1f}s, over the {bound:g}s bound"]
        if outcome.seconds > bound
        else [],
        f"in {outcome.seconds:.1f}s (bound {bound:g}s)",
    )
    if outcome.error is not None:
        err = outcome.error
        what = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if master_killed_at is not None and not recovers and isinstance(err, CLEAR_FAILURES):
            v.outcome = "failed clearly"
            late = outcome.seconds - master_killed_at
            v.add(
                "clear failure",
                [f"{what} came {late:.1f}s after the master died (bound {failure_bound:g}s)"]
                if late > failure_bound
                else [],
                f"{what} {late:.1f}s after the master died",
            )
        else:
            v.outcome = "failed"
            v.add("succeeded", [f"the job failed: {what}"])
        return v
    if outcome.result is None:
        v.outcome = "not submitted"
        v.add("succeeded", ["the job was never accepted"])
        return v
    v.outcome = "succeeded"
    result = outcome.result
    want = list(expected.items())
    try:
        got = list(result.items())
    except Exception as exc:  # a result that cannot be read is a wrong answer too
        v.add("records", [f"cannot read the result: {exc!r}"])
    else:
        v.add("records", diff_records(want, got), f"{len(got)} records equal the serial run's")
    v.add("counters", diff_counters(expected.counters, result.counters), "equal")
    if output_dir is not None:
        problems = diff_output_dir(output_dir, want, num_reducers, partitioner)
        want_files = [os.path.join(output_dir, f"part-{i:05d}") for i in range(num_reducers)]
        if [os.path.abspath(p) for p in result.output_files] != want_files:
            problems.append(f"output_files is {_sample(result.output_files)}")
        v.add("output files", problems, f"{num_reducers} part files, no temporaries")
        if late_snapshots is not None:
            at_end, later = late_snapshots
            changes = [
                f"{name} {'appeared' if name not in at_end else 'changed'}"
                for name in sorted(later)
                if later[name] != at_end.get(name)
            ]
            changes += [f"{name} vanished" for name in sorted(at_end) if name not in later]
            v.add("no late writes", changes, "nothing changed after the job ended")
    return v


def journaled_maps_reused(kills: list[dict[str, Any]], stats: dict[str, float]) -> list[str]:
    """Problems if maps the journal knew as done ran again after a master restart.

    ``kills`` are the history's kill records of the master, each with what its
    journal held (``map_attempts``, ``maps_done``). After each kill at most the
    maps not yet done may run again (backups aside); with no worker fault in the
    run, more means a completed map on a surviving worker ran twice.
    """
    problems = []
    for k in kills:
        after = stats.get("map_attempts", 0) - k["map_attempts"] - stats.get("backups_launched", 0)
        allowed = stats.get("maps", 0) - k["maps_done"]
        if after > allowed:
            problems.append(
                f"{after:g} map attempts after the kill at {k['time']:.2f}s, but only "
                f"{allowed:g} maps were not journaled as done"
            )
    return problems


def summarize(outcome: Outcome, faults: Counter[str] | dict[str, int]) -> dict[str, Any]:
    """The numbers a report shows: faults, attempts, re-executions, backups, wall time."""
    stats = outcome.result.stats if outcome.result is not None else {}
    return {
        "faults": dict(faults),
        "faults_total": sum(faults.values()),
        "attempts": stats.get("map_attempts", 0) + stats.get("reduce_attempts", 0),
        "map_attempts": stats.get("map_attempts", 0),
        "reduce_attempts": stats.get("reduce_attempts", 0),
        "maps": stats.get("maps"),
        "reduces": stats.get("reduces"),
        "reexecutions": stats.get("reexecutions", 0),
        "reexecuted_maps": stats.get("reexecuted_maps", 0),
        "lost_attempts": stats.get("lost_attempts", 0),
        "failed_attempts": stats.get("failed_attempts", 0),
        "fetch_failures": stats.get("fetch_failures", 0),
        "backups": stats.get("backups_launched", 0),
        "backups_won": stats.get("backups_won", 0),
        "wall_seconds": round(outcome.seconds, 3),
    }
