"""What MasterState remembers to show: timelines, failures, history, the log relay.

Driven like test_state.py: events, a fake clock, assertions on commands and views.
"""

from __future__ import annotations

from test_state import CLIENT, A, B, Cluster, assigns, error, make_spec, run_maps_on

from zmqmr import observe
from zmqmr.events import (
    AckJob,
    AskLogs,
    AttemptFailed,
    JobInfoRequest,
    LogsArrived,
    LogsRequest,
    SendJobFailed,
    SendJobInfo,
    SendLogs,
    SendResult,
    Tick,
    WorkerLeft,
)
from zmqmr.protocol import AttemptLog, ErrorInfo


def finish(c: Cluster, job_id: str = "j1", maps: int = 2) -> None:
    """Run a job to its end (its outcome waits to be collected)."""
    cmds = c.submit(job_id, make_spec(maps=maps))
    (reduce,) = assigns(run_maps_on(c, cmds), "reduce")
    c.reduce_done(reduce)
    assert job_id in c.state.finished


def collect(c: Cluster, job_id: str = "j1"):
    """Poll for the outcome and acknowledge it, as a client does."""
    reply = c.poll(job_id)
    c(AckJob(CLIENT, job_id))
    return reply


def test_timeline_marks_done_failed_lost_and_rerun_attempts():
    c = Cluster()
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    cmds = c.submit(at=1.0)
    m0, m1 = assigns(cmds)
    (retry,) = assigns(c.fail(m0, at=2.0))  # retried at once: a rerun
    c(WorkerLeft(retry.worker), at=3.0)  # lost with its worker
    detail = c.state.detail("j1", c.now)
    assert detail is not None
    by_attempt = {a.attempt: a for a in detail.attempts}
    assert by_attempt[m0.attempt].outcome == "failed"
    assert by_attempt[m0.attempt].start == 0.0 and by_attempt[m0.attempt].end == 1.0
    assert "ValueError: boom" in by_attempt[m0.attempt].error
    assert by_attempt[retry.attempt].rerun
    assert by_attempt[retry.attempt].outcome == "lost"
    assert not by_attempt[m0.attempt].rerun
    assert [f.task for f in detail.failures] == ["map task 0"]
    assert "boom" in detail.failures[0].message
    lost = c.state.status(c.now).lost_workers
    assert [w.pid for w in lost] == [100 if retry.worker == A else 101]
    assert "said goodbye" in lost[0].reason


def test_a_collected_job_moves_to_the_history_with_its_counters_and_stopped_clock():
    c = Cluster()
    c.register(A, slots=2, at=0.0)
    finish(c)
    c.now = 5.0
    assert c.state.status(c.now).jobs[0].progress.state == "succeeded"  # not collected yet
    assert isinstance(collect(c), SendResult)  # collected
    status = c.state.status(c.now)
    assert status.jobs == []
    (past,) = status.history
    assert past.id == "j1" and past.progress.state == "succeeded"
    assert past.progress.elapsed == 0.0 and past.ended_ago == 5.0
    assert past.stats["maps"] == 2
    later = c.state.status(9.0).history[0]
    assert later.progress.elapsed == past.progress.elapsed and later.ended_ago == 9.0
    (reply,) = c(JobInfoRequest(CLIENT, "j1"))
    assert isinstance(reply, SendJobInfo) and reply.detail is not None
    assert reply.detail.tasks["map_done"] == 2 and reply.detail.tasks["reduce_done"] == 1
    (unknown,) = c(JobInfoRequest(CLIENT, "nope"))
    assert unknown.detail is None


def test_history_keeps_the_latest_jobs_up_to_its_setting():
    c = Cluster(history_jobs=2)
    c.register(A, slots=2, at=0.0)
    for job_id in ("j1", "j2", "j3"):
        finish(c, job_id)
        collect(c, job_id)
    assert [j.id for j in c.state.status(c.now).history] == ["j2", "j3"]


def test_a_failed_jobs_error_keeps_the_attempts_log_tail():
    c = Cluster()
    c.register(A, at=0.0)
    spec = make_spec(maps=1, max_attempts=1)
    (m,) = assigns(c.submit(spec=spec))
    bad = ErrorInfo("ValueError", "boom", "tb", log="--- stdout ---\nabout to fail")
    c(AttemptFailed(A, m.attempt, "user", bad))
    failed = collect(c)
    assert isinstance(failed, SendJobFailed)
    assert failed.error.log == "--- stdout ---\nabout to fail"
    assert "failed once" in failed.error.message
    (past,) = c.state.status(c.now).history
    assert past.error is not None and past.error.log == bad.log


def test_logs_are_asked_of_every_worker_and_answered_when_all_have():
    c = Cluster()
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    asks = c(LogsRequest(CLIENT, "j1", "map", 3), at=1.0)
    assert sorted(a.worker for a in asks) == [A, B]
    assert all(isinstance(a, AskLogs) and (a.kind, a.task) == ("map", 3) for a in asks)
    req = asks[0].request
    log_b = AttemptLog(7, "map", 3, stdout="from b")
    assert c(LogsArrived(B, req, "j1", [log_b])) == []
    assert c(LogsArrived(B, req, "j1", [log_b])) == []  # a repeat is not an answer of A's
    log_a = AttemptLog(5, "map", 3, stdout="from a", worker="forged")
    (answer,) = c(LogsArrived(A, req, "j1", [log_a], more=2))
    assert isinstance(answer, SendLogs) and answer.client == CLIENT
    assert [(g.attempt, g.worker) for g in answer.logs] == [(5, "host:100"), (7, "host:101")]
    assert answer.more == 2 and answer.missing == []


def test_the_logs_of_many_workers_come_back_in_one_reply_the_wire_takes(monkeypatch):
    # Each worker's reply is within its bound; together they are cut, in bytes as the
    # reply will carry them (an emoji takes 12), the rest counted in ``more``.
    monkeypatch.setattr(observe, "LOGS_REPLY_BYTES", 100_000)
    c = Cluster()
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    req = c(LogsRequest(CLIENT, "j1", None, None), at=1.0)[0].request
    wide = [AttemptLog(i, "map", i, stdout="\U0001f600" * 1000) for i in range(6)]  # 12 KB each
    assert all(12_000 < g.wire_bytes() < 13_000 for g in wide)
    assert c(LogsArrived(B, req, "j1", wide[:4], more=1)) == []
    (answer,) = c(LogsArrived(A, req, "j1", wide[4:] + wide[:4]))
    assert sum(g.wire_bytes() for g in answer.logs) <= 100_000
    assert len(answer.logs) == 8 and answer.more == 1 + 2  # 4 of B's, 4 of A's 6


def test_a_silent_worker_does_not_hold_up_the_logs_past_the_wait():
    c = Cluster()
    c.register(A, at=0.0)
    c.register(B, at=0.0)
    asks = c(LogsRequest(CLIENT, "j1"), at=1.0)
    assert c.state.wake_at() == 1.0 + observe.LOGS_WAIT
    c(LogsArrived(A, asks[0].request, "j1", []), at=1.5)
    assert [x for x in c(Tick(), at=2.0) if isinstance(x, SendLogs)] == []
    (answer,) = [x for x in c(Tick(), at=1.0 + observe.LOGS_WAIT) if isinstance(x, SendLogs)]
    assert answer.missing == ["host:101"] and answer.logs == []
    assert c.state.wake_at() is None


def test_logs_of_a_cluster_without_workers_are_answered_at_once():
    c = Cluster()
    (answer,) = c(LogsRequest(CLIENT, "j1"))
    assert isinstance(answer, SendLogs) and answer.logs == [] and answer.missing == []


def test_timeline_keeps_the_latest_attempts_and_counts_the_rest(monkeypatch):
    monkeypatch.setattr(observe, "TIMELINE_ATTEMPTS", 3)
    c = Cluster(worker_job_failures=100)
    c.register(A, at=0.0)
    (m,) = assigns(c.submit(spec=make_spec(maps=1, max_attempts=10)))
    for _ in range(4):
        (m,) = assigns(c(AttemptFailed(A, m.attempt, "user", error())))
    detail = c.state.detail("j1", c.now)
    assert detail is not None
    assert len(detail.attempts) == 3 and detail.attempts_dropped == 2
    assert detail.attempts[-1].attempt == m.attempt and detail.attempts[-1].outcome == "running"


def test_the_history_comes_back_from_the_journal_and_from_a_compacted_one():
    from test_state_recovery import Durable, restarted

    from zmqmr import recovery

    c = Durable()
    c.register(A, slots=2, at=0.0)
    finish(c, "j1")
    collect(c, "j1")
    (m,) = assigns(c.submit("j2", make_spec(maps=1, max_attempts=1)))
    c.fail(m)
    collect(c, "j2")
    before = c.state.status(c.now).history
    assert [j.id for j in before] == ["j1", "j2"]
    assert [e.kind for e in c.journal if e.kind == "history"] == ["history", "history"]
    for entries in (c.journal, recovery.journal_entries(c.state)):
        again = restarted(list(entries), at=50.0)
        after = again.state.status(again.now).history
        assert [j.id for j in after] == ["j1", "j2"]
        for old, new in zip(before, after):
            assert (new.name, new.progress, new.counters, new.stats) == (
                old.name,
                old.progress,
                old.counters,
                old.stats,
            )
        assert after[1].error is not None and after[1].error.type == "ValueError"
        detail = again.state.detail("j2", again.now)
        assert detail is not None and "boom" in detail.failures[0].message
        assert detail.tasks == c.state.detail("j2", c.now).tasks
