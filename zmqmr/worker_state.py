"""WorkerState: what a worker decides, as a pure state machine.

The worker's shell (worker.py) owns the sockets, the executor processes and
the files; it hands every happening in as an event and carries out the
commands that come back, as the master's shell does with ``MasterState``.
This core imports neither ``zmq`` nor ``time`` nor ``multiprocessing``: the
clock is passed in, and unit tests drive it with a fake one.

What it decides:

* Assignments run on a free slot at once, else wait in a queue (the master
  sends at most ``prefetch`` queued attempts per slot, ``small_task_prefetch``
  for small tasks), and a slot that frees takes the next at once: so a heartbeat
  that lists fewer attempts than there are slots tells the master the queue is
  empty. Each executor is sent a job's code once.
* A cancelled attempt's executor is restarted (killing it is the only sure
  way to stop user code) and its files removed; a cancelled attempt that had
  already finished (a losing backup) has its output removed.
* A dead executor fails its attempt as a crash, pinned on the record it was
  mapping when it left one (skip_bad_records); the slot gets a new executor.
* Heartbeats every interval carry the running attempts' progress; a master
  silent for ``worker_timeout`` means every attempt is dropped (the master
  has given them to others) and the worker registers again after a backoff
  that doubles up to ``reconnect_max`` (the Paranoid Pirate worker's rule).

Imports: the standard library and ``zmqmr.protocol`` only.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from . import protocol as p

# -- events ---------------------------------------------------------------------


@dataclass(slots=True)
class Connected:
    """A new socket to the master is open; ``held`` are the map outputs on disk."""

    held: list[p.HeldOutput] = field(default_factory=list)


@dataclass(slots=True)
class FromMaster:
    """A message from the master, or a batch of them (taken in order)."""

    msg: p.Message | p.Batch


@dataclass(slots=True)
class FromExecutor:
    slot: int
    msg: p.AttemptProgress | p.Done | p.Failed | p.FetchFailed


@dataclass(slots=True)
class ExecutorExited:
    slot: int
    how: str  # "signal 9 (SIGKILL)", "exit code 1"
    #: The executor's last position: (attempt, index of the record it was mapping).
    position: tuple[int, int] | None = None


@dataclass(slots=True)
class Clock:
    """Time passes: heartbeats and the master's silence are checked."""


WorkerEvent = Connected | FromMaster | FromExecutor | ExecutorExited | Clock


# -- commands --------------------------------------------------------------------


@dataclass(slots=True)
class Send:
    """Send a message to the master."""

    msg: p.Message


@dataclass(slots=True)
class Run:
    """Hand this attempt to the executor of ``slot``."""

    slot: int
    attempt: p.RunAttempt


@dataclass(slots=True)
class Forward:
    """Pass a message to the executor of ``slot`` (a relocation, a job to forget)."""

    slot: int
    msg: p.Relocate | p.DropJob


@dataclass(slots=True)
class RestartSlot:
    """Kill the executor of ``slot`` (if alive) and start a new one."""

    slot: int


@dataclass(slots=True)
class RemoveAttemptFiles:
    """Remove what an attempt may have left: map output and spills, reduce temporaries."""

    job: str
    kind: str
    task: int
    attempt: int
    output_dir: str | None


@dataclass(slots=True)
class RemoveJobFiles:
    """The job ended: remove its map outputs and close files held open for it."""

    job: str


@dataclass(slots=True)
class SendLogs:
    """Read the logs of a job's attempts (one task's) from disk and send them to the master."""

    request: int
    job: str
    kind: str | None
    task: int | None


@dataclass(slots=True)
class Reconnect:
    """Close the master socket; open a new one after ``delay`` seconds (then: Connected)."""

    delay: float
    reason: str


WorkerCommand = (
    Send | Run | Forward | RestartSlot | RemoveAttemptFiles | RemoveJobFiles | SendLogs | Reconnect
)


# -- the state ------------------------------------------------------------------


@dataclass(slots=True)
class Slot:
    """One executor and the attempt it runs."""

    assign: p.Assign | None = None
    jobs: set[str] = field(default_factory=set)  # jobs whose code this executor holds
    progress: float = 0.0
    started: float = 0.0  # when ``assign`` took the slot (its report's seconds count from)


@dataclass(slots=True)
class Finished:
    job: str
    kind: str
    task: int
    output_dir: str | None


class WorkerState:
    """Slots, queued attempts, job code, and the connection's timing."""

    def __init__(
        self,
        slots: int,
        shuffle: str,
        host: str,
        pid: int,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 32.0,
        heartbeat: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self.slots = [Slot() for _ in range(slots)]
        self.shuffle, self.host, self.pid = shuffle, host[: p.MAX_NAME], pid
        self.reconnect_initial = reconnect_initial
        self.reconnect_max = reconnect_max
        self.backoff = reconnect_initial
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.code: dict[str, bytes] = {}
        self.queue: deque[p.Assign] = deque()
        #: The highest attempt id of the ASSIGNs read since the last WELCOME (Heartbeat.seen).
        self.seen = -1
        self.finished: dict[int, Finished] = {}
        self.welcomed = False
        self.connected = False  # between a Reconnect and the next Connected: nothing to send
        self.last_heard = 0.0
        self.next_heartbeat = 0.0
        self._now = 0.0  # the clock of the event being handled

    def handle(self, event: WorkerEvent, now: float) -> list[WorkerCommand]:
        out: list[WorkerCommand] = []
        self._now = now
        match event:
            case Connected():
                self.connected = True
                self.welcomed = False
                self.last_heard = now
                self.next_heartbeat = now + self.heartbeat
                ready = p.Ready(len(self.slots), self.shuffle, self.host, self.pid, event.held)
                out.append(Send(ready))
            case FromMaster():
                self.last_heard = now
                if isinstance(event.msg, p.Batch):
                    for msg in event.msg.parts:
                        self._from_master(msg, now, out)
                        if isinstance(msg, p.Reconnect):
                            break  # told to register again: the rest was for the old one
                else:
                    self._from_master(event.msg, now, out)
            case FromExecutor():
                self._from_executor(event.slot, event.msg, out)
            case ExecutorExited():
                self._exited(event.slot, event.how, event.position, out)
            case Clock():
                self._clock(now, out)
        return out

    def wake_at(self) -> float | None:
        """When the shell should hand in a Clock at the latest (None: not connected)."""
        if not self.connected:
            return None
        return min(self.next_heartbeat, self.last_heard + self.timeout)

    # -- the master ---------------------------------------------------------------

    def _from_master(self, msg: p.Message, now: float, out: list[WorkerCommand]) -> None:
        match msg:
            case p.Welcome():
                self.welcomed = True
                self.seen = -1  # a master's ids: this one's may start again
                self.backoff = self.reconnect_initial
                self.heartbeat = msg.heartbeat_interval
                self.timeout = msg.worker_timeout
            case p.Heartbeat():
                pass
            case p.Assign():
                self.seen = max(self.seen, msg.attempt)
                if msg.code is not None:
                    self.code[msg.job] = msg.code
                self.queue.append(msg)
                self._start_queued(out)
            case p.Cancel():
                self._cancel(msg.attempt, out)
            case p.Relocate():
                for i, slot in enumerate(self.slots):
                    if slot.assign is not None and slot.assign.attempt == msg.attempt:
                        out.append(Forward(i, msg))
            case p.DropJob():
                self._drop_job(msg, out)
            case p.AskLogs():
                out.append(SendLogs(msg.request, msg.job, msg.kind, msg.task))
            case p.Reconnect():
                self._drop_attempts(out)
                self.connected = False
                out.append(Reconnect(0.0, "the master asks this worker to register again"))
            case _:
                pass  # a message only a client or a worker sends: nothing to do

    def _start_queued(self, out: list[WorkerCommand]) -> None:
        for i, slot in enumerate(self.slots):
            if not self.queue:
                return
            if slot.assign is not None:
                continue
            a = self.queue.popleft()
            code = self.code.get(a.job)
            if code is None:
                error = p.ErrorInfo("MissingCode", "this worker lost the job's code")
                out.append(Send(p.Failed(a.attempt, "lost", error)))
                continue
            slot.assign, slot.progress, slot.started = a, 0.0, self._now
            ship = None if a.job in slot.jobs else code
            slot.jobs.add(a.job)
            run = p.RunAttempt(a.attempt, a.job, a.kind, a.task, a.spec, ship, a.records)
            out.append(Run(i, run))

    def _files(self, a: p.Assign) -> RemoveAttemptFiles:
        return RemoveAttemptFiles(a.job, a.kind, a.task, a.attempt, a.spec.output_dir)

    def _cancel(self, attempt: int, out: list[WorkerCommand]) -> None:
        for i, slot in enumerate(self.slots):
            if slot.assign is not None and slot.assign.attempt == attempt:
                self._restart(i, out)
                self._start_queued(out)
                return
        queued = [a for a in self.queue if a.attempt != attempt]
        if len(queued) != len(self.queue):
            self.queue = deque(queued)
            return
        done = self.finished.pop(attempt, None)
        if done is not None:  # a finished attempt that lost: remove its output
            out.append(RemoveAttemptFiles(done.job, done.kind, done.task, attempt, done.output_dir))

    def _restart(self, i: int, out: list[WorkerCommand]) -> None:
        """Stop slot ``i``'s attempt: a new executor, and the attempt's files removed."""
        slot = self.slots[i]
        assert slot.assign is not None
        out.append(RestartSlot(i))
        out.append(self._files(slot.assign))
        self.slots[i] = Slot()

    def _drop_attempts(self, out: list[WorkerCommand]) -> None:
        """Forget every running and queued attempt: the master has given them to others."""
        for i, slot in enumerate(self.slots):
            if slot.assign is not None:
                self._restart(i, out)
        self.queue.clear()

    def _drop_job(self, msg: p.DropJob, out: list[WorkerCommand]) -> None:
        self.code.pop(msg.job, None)
        for i, slot in enumerate(self.slots):
            if msg.job in slot.jobs:
                slot.jobs.discard(msg.job)
                out.append(Forward(i, msg))
        self.finished = {a: f for a, f in self.finished.items() if f.job != msg.job}
        out.append(RemoveJobFiles(msg.job))

    # -- executors -------------------------------------------------------------------

    def _from_executor(
        self, i: int, msg: p.AttemptProgress | p.Done | p.Failed | p.FetchFailed, out: list
    ) -> None:
        slot = self.slots[i]
        a = slot.assign
        if a is None or msg.attempt != a.attempt:
            return  # from an attempt this slot no longer runs
        if isinstance(msg, p.AttemptProgress):
            slot.progress = msg.fraction
            return
        if isinstance(msg, p.Done):  # how long it ran here, for the master's scheduling
            msg.report.seconds = max(0.0, self._now - slot.started)
        out.append(Send(msg))
        if isinstance(msg, p.FetchFailed):
            return  # the reduce waits for a relocation
        if isinstance(msg, p.Done):
            self.finished[a.attempt] = Finished(a.job, a.kind, a.task, a.spec.output_dir)
        else:  # it may have failed unpickling the job's code: ship the code again next time
            slot.jobs.discard(a.job)
        slot.assign = None
        self._start_queued(out)

    def _exited(
        self, i: int, how: str, position: tuple[int, int] | None, out: list[WorkerCommand]
    ) -> None:
        slot = self.slots[i]
        a = slot.assign
        if a is not None:
            message = f"the executor running {a.kind} task {a.task} died with {how}"
            record = None
            if position is not None and position[0] == a.attempt and position[1] >= 0:
                record = position[1]  # pinned on the record, as an exception would be
                message += f" while mapping record {record} of its split"
            error = p.ErrorInfo("ExecutorDied", message)
            out.append(Send(p.Failed(a.attempt, "crash", error, record)))
            out.append(self._files(a))
        out.append(RestartSlot(i))
        self.slots[i] = Slot()
        self._start_queued(out)

    # -- the clock --------------------------------------------------------------------

    def _clock(self, now: float, out: list[WorkerCommand]) -> None:
        if not self.connected:
            return
        if now - self.last_heard > self.timeout:
            self._drop_attempts(out)
            self.connected = False
            out.append(
                Reconnect(self.backoff, f"the master was silent for {now - self.last_heard:.1f}s")
            )
            self.backoff = min(self.backoff * 2, self.reconnect_max)
            return
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.heartbeat
            progress = [
                p.AttemptProgress(s.assign.attempt, s.progress)
                for s in self.slots
                if s.assign is not None
            ]
            out.append(Send(p.Heartbeat(progress, self.seen)))
