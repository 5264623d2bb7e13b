"""WorkerState driven by events and a fake clock; every assertion is on the returned commands.

No sockets, no processes: the worker's shell is what these commands would drive.
"""

from __future__ import annotations

import pytest

from zmqmr import protocol as p
from zmqmr.worker_state import (
    Clock,
    Connected,
    ExecutorExited,
    Forward,
    FromExecutor,
    FromMaster,
    Reconnect,
    RemoveAttemptFiles,
    RemoveJobFiles,
    RestartSlot,
    Run,
    Send,
    WorkerState,
)

SPEC = p.TaskSpec("wc", 2, 3, "/out", False, 1 << 20, split=p.Split("text", "/in", 0, 10))


def assign(attempt: int, job: str = "j1", task: int = 0, code: bool = True) -> p.Assign:
    blobs = [b"code"] if code else []
    return p.Assign(attempt, job, "map", task, SPEC, has_code=code, blobs=blobs)


class Worker:
    def __init__(self, slots: int = 1, **kw: float) -> None:
        self.state = WorkerState(slots, "tcp://127.0.0.1:7000", "host", 42, **kw)
        self.now = 0.0

    def __call__(self, event, at: float | None = None) -> list:
        if at is not None:
            self.now = at
        return self.state.handle(event, self.now)

    def master(self, msg: p.Message, at: float | None = None) -> list:
        return self(FromMaster(msg), at)


def runs(cmds: list) -> list[tuple[int, int, bool]]:
    """(slot, attempt, code shipped) of every Run command."""
    return [
        (c.slot, c.attempt.attempt, c.attempt.code is not None) for c in cmds if isinstance(c, Run)
    ]


def test_connecting_sends_ready_with_slots_and_held_outputs():
    w = Worker(slots=3)
    held = [p.HeldOutput("j1", 0, 7)]
    assert w(Connected(held)) == [Send(p.Ready(3, "tcp://127.0.0.1:7000", "host", 42, held))]


def test_assignments_run_on_free_slots_and_queue_behind_busy_ones():
    w = Worker(slots=2)
    w(Connected())
    assert runs(w.master(assign(1))) == [(0, 1, True)]
    assert runs(w.master(assign(2, code=False))) == [(1, 2, True)]  # another executor
    assert w.master(assign(3, code=False)) == []  # queued
    done = p.Done(1, p.Report())
    cmds = w(FromExecutor(0, done))
    assert cmds[0] == Send(done)
    assert runs(cmds) == [(0, 3, False)]  # this executor already holds the code


def test_a_done_reports_how_long_it_ran_on_its_slot_not_its_wait_in_the_queue():
    w = Worker(slots=1)
    w(Connected(), at=0.0)
    w.master(assign(1), at=1.0)
    w.master(assign(2, code=False), at=1.5)  # queued behind 1
    (sent, *_) = w(FromExecutor(0, p.Done(1, p.Report())), at=3.5)
    assert sent.msg.report.seconds == 2.5
    (sent, *_) = w(FromExecutor(0, p.Done(2, p.Report())), at=4.0)
    assert sent.msg.report.seconds == 0.5  # from 3.5, when it took the slot


def test_code_goes_to_each_executor_once_per_job():
    w = Worker(slots=2)
    w(Connected())
    w.master(assign(1))
    w.master(assign(2, code=False))
    w(FromExecutor(1, p.Done(2, p.Report())))
    assert runs(w.master(assign(3, code=False))) == [(1, 3, False)]


def test_after_a_failed_attempt_the_executor_gets_the_code_again():
    # The attempt may have failed unpickling the code: the executor does not hold it.
    w = Worker(slots=1)
    w(Connected())
    w.master(assign(1))
    error = p.ErrorInfo("ModuleNotFoundError", "No module named 'jobfile'")
    assert runs(w(FromExecutor(0, p.Failed(1, "user", error)))) == []
    assert runs(w.master(assign(2, code=False))) == [(0, 2, True)]
    assert runs(w(FromExecutor(0, p.Done(2, p.Report())))) == []
    assert runs(w.master(assign(3, code=False))) == [(0, 3, False)]


def test_a_job_without_code_fails_its_attempt_as_lost():
    w = Worker()
    w(Connected())
    (cmd,) = w.master(assign(1, code=False))
    assert isinstance(cmd, Send) and isinstance(cmd.msg, p.Failed)
    assert cmd.msg.kind == "lost" and cmd.msg.attempt == 1


def test_cancel_of_a_running_attempt_restarts_its_executor_and_removes_its_files():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    w.master(assign(2, code=False))
    cmds = w.master(p.Cancel(1))
    assert cmds[:2] == [RestartSlot(0), RemoveAttemptFiles("j1", "map", 0, 1, "/out")]
    assert runs(cmds) == [(0, 2, True)]  # a new executor needs the code again


def test_cancel_of_a_queued_attempt_only_unqueues_it():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    w.master(assign(2, code=False))
    assert w.master(p.Cancel(2)) == []
    assert runs(w(FromExecutor(0, p.Done(1, p.Report())))) == []


def test_cancel_of_a_finished_attempt_removes_its_output():
    w = Worker()
    w(Connected())
    w.master(assign(1, task=4))
    w(FromExecutor(0, p.Done(1, p.Report())))
    assert w.master(p.Cancel(1)) == [RemoveAttemptFiles("j1", "map", 4, 1, "/out")]
    assert w.master(p.Cancel(1)) == []  # once


def test_messages_from_an_attempt_the_slot_no_longer_runs_are_ignored():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    w.master(p.Cancel(1))
    assert w(FromExecutor(0, p.Done(1, p.Report()))) == []


def test_progress_is_reported_in_the_next_heartbeat():
    w = Worker(slots=2, heartbeat=1.0)
    w(Connected(), at=0.0)
    w.master(assign(1))
    w(FromExecutor(0, p.AttemptProgress(1, 0.25)))
    assert w(Clock(), at=0.5) == []
    assert w(Clock(), at=1.0) == [Send(p.Heartbeat([p.AttemptProgress(1, 0.25)], seen=1))]


def test_a_heartbeat_says_the_highest_attempt_read_since_the_welcome():
    # The master tells an ASSIGN in flight (sent after what was read) from one dropped.
    w = Worker(slots=1, heartbeat=1.0)
    w(Connected(), at=0.0)
    assert w(Clock(), at=1.0) == [Send(p.Heartbeat([], seen=-1))]
    w.master(assign(3))
    w.master(assign(7))  # queued behind 3
    (beat,) = w(Clock(), at=2.0)
    assert beat.msg.seen == 7 and [a.attempt for a in beat.msg.progress] == [3]
    w.master(p.Welcome(1.0, 10.0))  # a master again (restarted, or another)
    (beat,) = w(Clock(), at=3.0)
    assert beat.msg.seen == -1


def test_fetch_failures_are_relayed_and_the_reduce_keeps_its_slot():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    failed = p.FetchFailed(1, 3, 9, "timeout")
    assert w(FromExecutor(0, failed)) == [Send(failed)]
    loc = p.Location(3, 11, "tcp://x:1", 10)
    assert w.master(p.Relocate(1, loc)) == [Forward(0, p.Relocate(1, loc))]


def test_a_dead_executor_fails_its_attempt_as_a_crash_and_is_replaced():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    w.master(assign(2, code=False))
    cmds = w(ExecutorExited(0, "signal 9 (SIGKILL)"))
    (send,) = [c for c in cmds if isinstance(c, Send)]
    assert isinstance(send.msg, p.Failed) and send.msg.kind == "crash"
    assert "signal 9" in send.msg.error.message
    assert RestartSlot(0) in cmds and RemoveAttemptFiles("j1", "map", 0, 1, "/out") in cmds
    assert runs(cmds) == [(0, 2, True)]


def test_a_dead_executor_pins_its_crash_on_the_record_it_left_as_its_position():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    cmds = w(ExecutorExited(0, "signal 11 (SIGSEGV)", (1, 17)))
    (send,) = [c for c in cmds if isinstance(c, Send)]
    assert send.msg.kind == "crash" and send.msg.record == 17
    assert "record 17" in send.msg.error.message


@pytest.mark.parametrize("position", [None, (0, 17), (1, -1)])
def test_a_crash_is_not_pinned_on_a_record_left_by_another_attempt_or_none(position):
    w = Worker()
    w(Connected())
    w.master(assign(1))
    cmds = w(ExecutorExited(0, "exit code 3", position))
    (send,) = [c for c in cmds if isinstance(c, Send)]
    assert send.msg.kind == "crash" and send.msg.record is None


def test_drop_job_forgets_code_tells_executors_and_removes_files():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    w(FromExecutor(0, p.Done(1, p.Report())))
    cmds = w.master(p.DropJob("j1"))
    assert cmds == [Forward(0, p.DropJob("j1")), RemoveJobFiles("j1")]
    assert w.master(p.Cancel(1)) == []  # its outputs went with the job
    (lost,) = w.master(assign(2, code=False))
    assert isinstance(lost.msg, p.Failed) and lost.msg.kind == "lost"


def test_a_silent_master_drops_every_attempt_and_backs_off_doubling():
    w = Worker(slots=1, timeout=10.0, reconnect_initial=1.0, reconnect_max=4.0)
    w(Connected(), at=0.0)
    w.master(assign(1), at=0.0)
    w.master(assign(2, code=False), at=0.0)
    cmds = w(Clock(), at=10.5)
    assert cmds[:2] == [RestartSlot(0), RemoveAttemptFiles("j1", "map", 0, 1, "/out")]
    assert isinstance(cmds[-1], Reconnect) and cmds[-1].delay == 1.0
    assert w(Clock(), at=11.0) == []  # waiting out the backoff: no second reconnect
    delays = []
    for _ in range(4):
        w(Connected(), at=w.now + 1.0)
        (rc,) = [c for c in w(Clock(), at=w.now + 10.5) if isinstance(c, Reconnect)]
        delays.append(rc.delay)
    assert delays == [2.0, 4.0, 4.0, 4.0]
    w(Connected(), at=w.now + 1.0)
    w.master(p.Welcome(0.5, 5.0))
    (rc,) = [c for c in w(Clock(), at=w.now + 5.5) if isinstance(c, Reconnect)]
    assert rc.delay == 1.0  # a welcome resets the backoff; its timing governs


def test_reconnect_from_the_master_drops_attempts_at_once():
    w = Worker()
    w(Connected())
    w.master(assign(1))
    cmds = w.master(p.Reconnect())
    assert RestartSlot(0) in cmds
    assert cmds[-1] == Reconnect(0.0, "the master asks this worker to register again")


@pytest.mark.parametrize("msg", [p.Bye(), p.StatusRequest(), p.Heartbeat()])
def test_messages_a_master_does_not_send_change_nothing(msg):
    w = Worker()
    w(Connected())
    assert w.master(msg) == []


def test_the_core_imports_no_sockets_clock_or_processes():
    import zmqmr.worker_state as core

    with open(core.__file__) as f:
        source = f.read()
    for name in ("zmq", "time", "multiprocessing", "subprocess", "os"):
        assert f"import {name}" not in source


def test_a_batch_from_the_master_is_taken_in_order_and_stops_at_a_reconnect():
    w = Worker(slots=2)
    w(Connected())
    frames = p.encode_batch([assign(1), assign(2, code=False), assign(3, code=False), p.Cancel(1)])
    batch = p.decode_batch(frames)
    assert batch.errors == [] and len(batch.parts) == 4
    cmds = w(FromMaster(batch), at=1.0)
    # 1 and 2 run; 3 queues; cancelling 1 restarts its slot and starts 3 there
    assert runs(cmds) == [(0, 1, True), (1, 2, True), (0, 3, True)]
    assert RestartSlot(0) in cmds
    assert w.state.last_heard == 1.0
    rest = w(FromMaster(p.Batch([p.Reconnect(), assign(4, code=False)])))
    assert [type(c) for c in rest if isinstance(c, (Run, Reconnect))] == [Reconnect]
    assert runs(rest) == [] and not w.state.queue  # what followed the RECONNECT is not taken
