"""StopEvent: a stop flag that wakes a poll at once (zmqmr.wakeup), and the loops
that stop on it: every poll here would wait forever if set() did not wake it."""

from __future__ import annotations

import threading

import pytest
import zmq

from zmqmr.wakeup import StopEvent

pytestmark = pytest.mark.timeout(30)


def test_set_from_another_thread_wakes_a_poll_with_no_timeout() -> None:
    stop = StopEvent()
    try:
        poller = zmq.Poller()
        poller.register(stop.fileno(), zmq.POLLIN)
        threading.Timer(0.05, stop.set).start()
        events = dict(poller.poll())  # no timeout: returns only when woken
        assert events == {stop.fileno(): zmq.POLLIN}
        assert stop.is_set()
    finally:
        stop.close()


def test_clear_drains_so_the_next_poll_waits_again() -> None:
    stop = StopEvent()
    try:
        for _ in range(3):
            stop.set()  # a byte each: clear() drains them all
        poller = zmq.Poller()
        poller.register(stop.fileno(), zmq.POLLIN)
        assert poller.poll(0)
        stop.clear()
        assert not stop.is_set()
        assert poller.poll(0) == []
        stop.set()
        assert poller.poll(0)
    finally:
        stop.close()


def test_many_sets_never_block_and_a_set_after_close_is_harmless() -> None:
    stop = StopEvent()
    for _ in range(100_000):  # far past the socket buffer: the extra bytes are dropped
        stop.set()
    stop.close()
    assert stop.fileno() == -1
    stop.set()  # a signal handler may fire after close(): no error, no write elsewhere
    stop.close()
    assert stop.is_set()


def test_the_dashboard_thread_ends_on_stop() -> None:
    from zmqmr.dashboard import Dashboard

    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        board = Dashboard("127.0.0.1", 0, ctx, "tcp://127.0.0.1:1", None)
        board.start()
        board.stop()  # the serving loop has no timeout: only the wake ends it
        assert not board.thread.is_alive()
    finally:
        ctx.term()


def test_a_failed_construction_leaves_no_error_at_collection(monkeypatch) -> None:
    import gc
    import socket
    import sys

    def no_sockets() -> None:
        raise OSError(24, "Too many open files")

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    monkeypatch.setattr(socket, "socketpair", no_sockets)
    with pytest.raises(OSError, match="Too many open files"):
        StopEvent()
    gc.collect()  # the half-built object's __del__ runs here at the latest
    assert unraisable == []
