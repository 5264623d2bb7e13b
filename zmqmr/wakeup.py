"""A stop flag that a poll loop sees at once: ``StopEvent``.

The master, a worker and a shuffle server each loop on a poll with a timeout
(up to a second) and check a ``threading.Event`` between polls. Setting the
event from a signal handler or another thread then took effect only when the
poll timed out, so every ``zmqmr master`` or ``worker`` took that long to stop
on SIGTERM (a LocalCluster's ``close`` about 0.4 s). A ``StopEvent`` is that
event and a socket pair: ``set`` also writes a byte, and a loop that registers
``fileno()`` in its poller wakes then. Imports: the standard library only.
"""

from __future__ import annotations

import socket
import threading


class StopEvent(threading.Event):
    """A ``threading.Event`` whose ``fileno()`` turns readable once it is set."""

    def __init__(self) -> None:
        super().__init__()
        # Socket objects, not raw fds: after close() a late set() (a signal at
        # exit) fails on the closed object instead of writing to a reused fd.
        self._recv, self._send = socket.socketpair()
        self._recv.setblocking(False)
        self._send.setblocking(False)

    def set(self) -> None:
        super().set()
        try:
            self._send.send(b"\0")
        except OSError:  # closed, or a byte already waits (the buffer is full)
            pass

    def clear(self) -> None:
        super().clear()
        try:
            while self._recv.recv(4096):
                pass
        except OSError:  # drained (would block), or closed
            pass

    def fileno(self) -> int:
        """The fd to poll for reading (-1 once closed)."""
        return self._recv.fileno()

    def close(self) -> None:
        self._recv.close()
        self._send.close()

    def __del__(self) -> None:  # an owner that never got to close it (its start failed)
        if hasattr(self, "_send"):  # not when socketpair() itself failed in __init__
            self.close()
