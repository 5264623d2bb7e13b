"""The launcher: one process that imports zmqmr once and forks a LocalCluster's processes.

A master or a worker started as ``python -m zmqmr ...`` spends about 0.2-0.3 s
of CPU importing before it does anything, and a LocalCluster starts three or
more of them at once on a machine of a few cores: most of its start-up. So a
LocalCluster starts ``python -m zmqmr.launcher`` instead, which imports the
master's and the worker's modules once and then forks each process it is
asked for. The child runs ``zmqmr.cli.main(args)`` as the command line would,
its output appended to its log file, its name (``ps -o comm``, psutil's
``name()``) set to ``zmqmr master`` or ``zmqmr worker``.

The launcher holds no thread, socket or ZeroMQ context when it forks: the
children make their own. It dies with the process that started it, and its
children with it (``--die-with-parent`` in their arguments). Its protocol, a
JSON object per line: it reads ``{"args": [...], "log": PATH, "env": {...}}``
on stdin and answers ``{"pid": N}`` (or ``{"error": TEXT}``) on stdout; and
whenever a child ends it writes ``{"exit": PID, "code": C}``, C as
``subprocess`` gives a return code (``-9`` for SIGKILL). EOF on stdin ends it.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import sys
import traceback
from typing import Any

PR_SET_NAME = 15


def _set_name(name: str) -> None:
    """This process's name as ``ps`` and ``top`` show it (Linux; at most 15 bytes)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        except (OSError, AttributeError):
            pass


def _write(msg: dict[str, Any]) -> None:
    data = (json.dumps(msg) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def _child(request: dict[str, Any], wakeup: tuple[int, int]) -> None:
    """In the forked child: become ``zmqmr ARGS``; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in wakeup:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.environ.clear()
        os.environ.update(request["env"])
        args = [str(a) for a in request["args"]]
        sys.argv = ["zmqmr", *args]
        _set_name(f"zmqmr {args[0]}" if args else "zmqmr")
        from . import cli

        code = cli.main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


#: What a command imports, imported before its first fork (so the master is
#: forked, and starts, while the launcher imports what only workers need).
_MODULES = {"master": "zmqmr.master", "worker": "zmqmr.worker"}
#: What a process with keys imports as it starts (its ZAP handler: zmq.auth, which
#: pulls in asyncio, about 40 ms of CPU a process).
_KEYED = "zmq.auth.thread"


def _preload(args: list[Any]) -> None:
    if type(args) is not list:
        raise TypeError(f"args must be a list, not {type(args).__name__}")
    wanted = [_MODULES.get(str(args[0])) if args else None]
    if "--keys" in args:
        wanted.append(_KEYED)
    for module in wanted:
        if module is not None and module not in sys.modules:
            importlib.import_module(module)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _write({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> int:
    from .executor import die_with_parent

    die_with_parent(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the cluster's owner
    from . import cli  # noqa: F401 - every child's, imported once

    wakeup = os.pipe()
    for fd in wakeup:
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wakeup[1], warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    pending = b""
    while True:
        try:
            ready, _, _ = select.select([0, wakeup[0]], [], [])
        except InterruptedError:
            continue
        if wakeup[0] in ready:
            try:
                os.read(wakeup[0], 4096)
            except BlockingIOError:
                pass
            _reap()
        if 0 not in ready:
            continue
        data = os.read(0, 65536)
        if not data:
            return 0
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                request = json.loads(line)
                _preload(request["args"])
                pid = os.fork()
            except (ValueError, KeyError, TypeError, OSError, ImportError) as exc:
                _write({"error": f"{type(exc).__name__}: {exc}"})
                continue
            if pid == 0:
                _child(request, wakeup)
            _write({"pid": pid})


if __name__ == "__main__":
    sys.exit(main())
