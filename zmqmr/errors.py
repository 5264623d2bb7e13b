"""The exception tree of zmqmr.

    ZmqmrError
    ├── JobError                 the job itself is wrong or failed
    │   ├── JobSubmitError       refused before it ran: bad inputs, settings, pickling
    │   ├── JobFailed            a task failed max_attempts times; carries the user's traceback
    │   ├── JobCancelled         cancelled by a client
    │   └── ResultTooLarge       results exceed the limit for return through the master
    ├── ClusterError             the cluster cannot be reached or broke down
    │   ├── MasterUnavailable    no answer from the master within the client's timeout
    │   └── JobLost              the master no longer knows the job (restarted without a state dir)
    ├── SecurityError            keys missing or unusable; an unsafe bind refused
    ├── ProtocolError            a malformed message (dropped by whoever receives it)
    └── ShuffleError             a map output could not be fetched or failed its checksum
        └── CorruptOutput        a map output failed its checksum or was truncated

Only the standard library is imported here.
"""

from __future__ import annotations


class ZmqmrError(Exception):
    """Base of every error zmqmr raises."""


class JobError(ZmqmrError):
    """The job is wrong, or it failed."""


class JobSubmitError(JobError, ValueError):
    """The job was refused before it ran (inputs, settings, pickling)."""


class JobFailed(JobError):
    """A task failed too often; the error carries the user's exception.

    ``remote_type``, ``remote_message`` and ``remote_traceback`` are those of
    the exception raised in the user's function on the worker; ``log_tail`` is
    the end of what that attempt printed and logged.
    """

    def __init__(
        self,
        message: str,
        remote_type: str = "",
        remote_message: str = "",
        remote_traceback: str = "",
        task: str = "",
        log_tail: str = "",
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.task = task
        self.log_tail = log_tail
        full = message
        if remote_traceback:
            full = f"{message}\n\nRemote traceback ({task}):\n{remote_traceback.rstrip()}"
        if log_tail.strip():
            full = f"{full}\n\nOutput of the failed attempt (its tail):\n{log_tail.rstrip()}"
        super().__init__(full)


class JobCancelled(JobError):
    """The job was cancelled."""


class ResultTooLarge(JobError):
    """The results are too large to return through the master; set output_dir."""


class ClusterError(ZmqmrError):
    """The cluster cannot be reached or broke down."""


class MasterUnavailable(ClusterError):
    """The master did not answer within the client's timeout."""


class MasterRefused(MasterUnavailable):
    """The master refused this client at the CURVE handshake (not one of its keys):
    asking again will not help."""


class JobLost(ClusterError):
    """The master does not know the job any more: it was restarted without a state
    directory, or the job's result expired or was collected already."""


class SecurityError(ZmqmrError, ValueError):
    """Keys are missing or unusable, or a bind beyond loopback lacks keys."""


class ProtocolError(ZmqmrError):
    """A malformed message; the receiver logs it and drops it."""


class ShuffleError(ZmqmrError):
    """A map output could not be fetched."""


class CorruptOutput(ShuffleError):
    """A map output failed its checksum, or was truncated."""
