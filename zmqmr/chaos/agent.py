"""The chaos agent: one per lab machine, the hands of the nemeses there.

``zmqmr chaos run --hosts FILE`` starts one agent on every host of the hosts
file (and one where the master runs) over the ssh command of the lab scripts
(``ZMQMR_SSH``): ``ssh HOST sh -s``, fed a short sh program that finds a
Python and runs this file's source with it (``python -c``). The agent finds
the process that ``scripts/start-workers.sh`` (or ``start-master.sh``)
started from its pid file, ``RUN_DIR/ROLE-NODE.pid``, remembers its command
line, environment and directory, and then answers requests, one JSON object
per line on standard input, one answer per line on standard output (prefixed
``ZMQMR-AGENT``): kill (SIGKILL to the process group: the worker and its
executors), stop and cont (SIGSTOP, SIGCONT), restart (the same command line,
environment and directory, the pid file and log as the scripts keep them),
the map output files of a job, damaging one of them, whether anything of
the process group is stopped, and the new lines of its log.

When its standard input ends (the harness finished, was interrupted, or
died and took ssh with it), the agent sends SIGCONT to the process group
before it exits, so no fault outlives the run that injected it.

This module uses the standard library only and runs on any Python 3 the lab
has: it is sent as source, not imported there. ``damage`` and
``map_outputs`` are imported by the harness too, for its local cluster.
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib

#: The worker's subdirectory of its --data-dir (zmqmr.worker.DATA_SUBDIR).
DATA_SUBDIR = "zmqmr-maps"
#: Bytes at the end of a map output file that hold its index and footer (roughly).
TAIL = 128
PREFIX = "ZMQMR-AGENT "
DATA_IN = re.compile(r"\bdata in (\S+)\s*$")


# -- map outputs (also used by the harness's local cluster) -----------------------------


def map_outputs(data_dir: str, job_id: str | None = None) -> list[str]:
    """The finished map outputs under ``data_dir``, of ``job_id`` if given: files
    (``*.out``), and entries of packs as ``PACK#NAME`` (NAME: the output's name)."""
    found = []
    for dirpath, _, files in os.walk(data_dir):
        if job_id is not None and os.path.basename(dirpath) != job_id:
            continue
        for name in files:
            path = os.path.join(dirpath, name)
            if name.endswith(".out"):
                found.append(path)
            elif name.endswith(".pack"):
                found += [f"{path}#{entry}" for entry in _pack_entries(path)]
    return sorted(found)


#: A pack's entry header, as ``zmqmr.packs`` writes it (repeated here: this file runs
#: where zmqmr is not installed): magic, map task, attempt, length, crc32.
PACK_HEADER = struct.Struct("<8sQQQI")
PACK_LIVE = b"ZMQMRPK1"
PACK_REMOVED = b"ZMQMRPK0"


def _pack_entries(path: str) -> dict[str, tuple[int, int]]:
    """Output name -> (offset, length) of the live entries of a pack."""
    found: dict[str, tuple[int, int]] = {}
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return found
    pos = 0
    while pos + PACK_HEADER.size <= len(data):
        magic, task, attempt, length, crc = PACK_HEADER.unpack_from(data, pos)
        checked = struct.pack("<QQQ", task, attempt, length)
        end = pos + PACK_HEADER.size + length
        if magic not in (PACK_LIVE, PACK_REMOVED) or zlib.crc32(checked) != crc or end > len(data):
            break
        if magic == PACK_LIVE:
            found[f"m{task:05d}-a{attempt}.out"] = (pos + PACK_HEADER.size, length)
        pos = end
    return found


def damage(path: str, mode: str, where: float, pick: float) -> dict | None:
    """Flip a byte of, truncate or delete a map output; what was done, or None if it is gone.

    ``where`` and ``pick`` are numbers in [0, 1) drawn by the harness: a flip
    hits the tail (index and footer) when ``where`` < 1/3, else anywhere;
    ``pick`` places the offset (or the truncated length) within that range.
    An output in a pack (``PACK#NAME``) is damaged within its entry: a cut cuts
    the pack there (the entries after it are lost too), a delete removes the
    entry and zeroes its bytes (a reader that held it open finds them corrupt).
    """
    if "#" in path:
        return _damage_entry(path, mode, where, pick)
    try:
        size = os.path.getsize(path)
        if mode == "delete" or size == 0:  # an empty file cannot be flipped or cut
            os.remove(path)
            return {"size": size, "deleted": True}
        if mode == "truncate":
            new = int(pick * size)
            os.truncate(path, new)
            return {"size": size, "to": new}
        low = max(0, size - TAIL) if where < 1 / 3 else 0
        offset = min(size - 1, low + int(pick * (size - low)))
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
        return {"size": size, "offset": offset}
    except (OSError, IndexError):
        return None


def _damage_entry(path: str, mode: str, where: float, pick: float) -> dict | None:
    pack, _, name = path.partition("#")
    entry = _pack_entries(pack).get(name)
    if entry is None:
        return None
    start, size = entry
    try:
        with open(pack, "r+b") as f:
            if mode == "delete":
                f.seek(start - PACK_HEADER.size)
                f.write(PACK_REMOVED)
                f.seek(start)
                f.write(bytes(size))
                return {"size": size, "deleted": True, "pack_offset": start}
            if mode == "truncate":
                new = int(pick * size)
                f.truncate(start + new)
                return {"size": size, "to": new, "pack_offset": start}
            low = max(0, size - TAIL) if where < 1 / 3 else 0
            offset = min(size - 1, low + int(pick * (size - low)))
            f.seek(start + offset)
            byte = f.read(1)
            f.seek(start + offset)
            f.write(bytes([byte[0] ^ 0xFF]))
            return {"size": size, "offset": offset, "pack_offset": start}
    except (OSError, IndexError):
        return None


# -- processes -----------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def alive(pid: int) -> bool:
    st = _stat(pid)
    if st is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not os.path.isdir("/proc/self")  # no /proc: trust kill -0
    return st[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="surrogateescape") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_ours(pid: int, role: str) -> bool:
    """Alive and a ``zmqmr ROLE`` process (the lab scripts' rule)."""
    return alive(pid) and f"zmqmr {role}" in " ".join(cmdline(pid))


def group(pgid: int) -> list[tuple[int, str]]:
    """(pid, state) of every live process in process group ``pgid``."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] == pgid and st[0] not in ("Z", "X"):
                out.append((int(name), st[0]))
    return out


class Agent:
    def __init__(self, run_dir: str, role: str) -> None:
        self.role = role
        self.node = os.uname().nodename
        self.run_dir = run_dir
        self.pidfile = os.path.join(run_dir, f"{role}-{self.node}.pid")
        self.logfile = os.path.join(run_dir, f"{role}-{self.node}.log")
        self.pid = 0
        self.argv: list[str] = []
        self.env: dict[str, str] = {}
        self.cwd = "/"
        self.children: dict[int, subprocess.Popen] = {}
        self.stopped = False
        self.find()

    def read_pid(self) -> int:
        try:
            with open(self.pidfile) as f:
                text = f.read().strip()
        except OSError:
            return 0
        return int(text) if text.isdigit() else 0

    def find(self) -> None:
        """The process of the pid file, and how to start it again."""
        pid = self.read_pid()
        if not pid or not is_ours(pid, self.role):
            return
        self.pid = pid
        self.argv = cmdline(pid)
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                pairs = [p.split(b"=", 1) for p in f.read().split(b"\0") if b"=" in p]
            self.env = {k.decode(): v.decode(errors="surrogateescape") for k, v in pairs}
        except OSError:
            self.env = dict(os.environ)
        try:
            self.cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            self.cwd = os.path.expanduser("~")

    def running(self) -> bool:
        child = self.children.get(self.pid)
        if child is not None:
            child.poll()  # reap it, so that a dead child is not a zombie "alive"
        return bool(self.pid) and is_ours(self.pid, self.role)

    def signal_group(self, sig: int) -> bool:
        if not self.running():
            return False
        try:
            st = _stat(self.pid)
            if st is not None and st[1] == self.pid:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # -- requests ------------------------------------------------------------------

    def hello(self) -> dict:
        return {
            "node": self.node,
            "time": time.time(),
            "pid": self.pid if self.running() else 0,
            "argv": self.argv,
            "pidfile": self.pidfile,
            "log": self.logfile,
            "python": sys.version.split()[0],
        }

    def kill(self) -> dict:
        pid, was = self.pid, self.running()
        if was:
            self.signal_group(signal.SIGKILL)
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.stopped = False
        return {"pid": pid, "was_running": was, "dead": not self.running()}

    def restart(self) -> dict:
        if not self.argv:
            raise RuntimeError(f"no {self.role} was found on {self.node} to start again")
        if self.running():
            self.kill()
        with open(self.logfile, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(
                f"=== {stamp} on {self.node}: {' '.join(self.argv)} (chaos restart)\n".encode()
            )
            log.flush()
            child = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.children[child.pid] = child
        self.pid = child.pid
        tmp = self.pidfile + ".new"
        with open(tmp, "w") as f:
            f.write(f"{child.pid}\n")
        os.replace(tmp, self.pidfile)
        self.stopped = False
        return {"pid": child.pid}

    def stop(self) -> dict:
        ok = self.signal_group(signal.SIGSTOP)
        self.stopped = self.stopped or ok
        return {"signalled": ok, "pid": self.pid}

    def cont(self) -> dict:
        ok = self.signal_group(signal.SIGCONT)
        self.stopped = False
        return {"signalled": ok, "pid": self.pid}

    def status(self) -> dict:
        running = self.running()
        members = group(self.pid) if running else []
        return {
            "pid": self.pid if running else 0,
            "running": running,
            "processes": len(members),
            "stopped": [p for p, state in members if state in ("T", "t")],
        }

    def data_dir(self) -> str:
        """Where the current worker keeps map outputs: --data-dir, else what it logged."""
        argv = self.argv
        for i, a in enumerate(argv):
            if a == "--data-dir" and i + 1 < len(argv):
                return os.path.join(os.path.join(self.cwd, argv[i + 1]), DATA_SUBDIR)
            if a.startswith("--data-dir="):
                return os.path.join(os.path.join(self.cwd, a.split("=", 1)[1]), DATA_SUBDIR)
        found = ""
        try:
            with open(self.logfile, errors="replace") as f:
                for line in f:
                    m = DATA_IN.search(line)
                    if m:
                        found = m.group(1)
        except OSError:
            pass
        return found

    def outputs(self, job: str | None = None) -> dict:
        where = self.data_dir()
        return {"dir": where, "files": map_outputs(where, job) if where else []}

    def damage(self, path: str, mode: str, where: float, pick: float) -> dict:
        root = self.data_dir()
        if not root or not os.path.abspath(path).startswith(os.path.abspath(root) + os.sep):
            raise RuntimeError(f"{path} is not under the worker's data directory {root!r}")
        return {"done": damage(path, mode, where, pick)}

    def log(self, offset: int = 0, limit: int = 1 << 20) -> dict:
        try:
            with open(self.logfile, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                if offset > size:
                    offset = 0  # the log was replaced
                f.seek(offset)
                data = f.read(limit)
        except OSError:
            return {"text": "", "offset": offset, "time": time.time()}
        return {
            "text": data.decode(errors="replace"),
            "offset": offset + len(data),
            "time": time.time(),
        }

    def heal(self) -> dict:
        ok = self.signal_group(signal.SIGCONT)
        self.stopped = False
        return {"signalled": ok}


def serve(agent: Agent, stdin, stdout) -> None:
    def say(obj: dict) -> None:
        stdout.write(PREFIX + json.dumps(obj) + "\n")
        stdout.flush()

    say({"id": 0, "ok": True, **agent.hello()})
    for line in stdin:
        if not line.strip():
            continue
        rid = None
        try:
            req = json.loads(line)
            rid = req.pop("id", None)
            op = req.pop("op")
            if op not in (
                "hello",
                "kill",
                "restart",
                "stop",
                "cont",
                "status",
                "outputs",
                "damage",
                "log",
                "heal",
            ):
                raise ValueError(f"unknown request {op!r}")
            say({**getattr(agent, op)(**req), "id": rid, "ok": True})
        except Exception as exc:  # an answer, never a dead agent
            say({"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"})


def main(argv: list[str]) -> int:
    run_dir, role = argv[0], argv[1]
    agent = Agent(run_dir, role)

    def leave(signum, frame):
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, leave)
    try:
        serve(agent, sys.stdin, sys.stdout)
    finally:
        agent.heal()  # the run is over, however it ended: nothing stays stopped
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
