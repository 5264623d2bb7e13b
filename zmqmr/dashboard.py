"""The master's dashboard: a read-only web page and its JSON, served beside the poll loop.

The HTTP server runs in threads of its own and never touches ``MasterState``.
The poll loop publishes a snapshot of the cluster's status (what ``zmqmr
status --json`` prints) at most every ``SNAPSHOT_EVERY`` seconds, and only
while someone has looked lately; the page and ``/api/status`` serve the last
one. One job's detail (its attempt timeline) and attempt logs are asked of
the master like any client asks, over its client port with the master's own
CURVE key pair, one request at a time and cached for a moment. So a slow,
stuck or hostile HTTP client costs a thread of its own (at most
``MAX_CONNECTIONS``, each timed out after ``CLIENT_TIMEOUT``) and never
stalls scheduling.

Like every other port it admits the cluster's user only: with keys, every
URL must carry ``token=``, derived from the master's secret key (as Jupyter's
token), which ``zmqmr master`` prints and ``LocalCluster.dashboard_url``
includes. Binding beyond loopback follows the rule of the other ports.
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import logging
import re
import selectors
import socket
import threading
import time
import urllib.parse
from importlib import resources
from typing import Any

import zmq

from . import protocol
from .config import DEFAULT_HTTP  # noqa: F401 - the master names it dashboard.DEFAULT_HTTP
from .security import Keys
from .tasklogs import format_logs
from .wakeup import StopEvent

log = logging.getLogger(__name__)

#: The loop publishes a snapshot at most this often, while one was asked for
#: within ``WANTED_FOR`` seconds.
SNAPSHOT_EVERY = 0.5
WANTED_FOR = 30.0
MAX_CONNECTIONS = 32
CLIENT_TIMEOUT = 10.0
#: How long a job's detail or logs, once asked of the master, are served again.
CACHE_SECONDS = 1.0
REQUEST_TIMEOUT = 8.0


#: Digits as int() reads them: ASCII only (``"²".isdigit()`` is true, ``int("²")`` fails).
_PORT = re.compile(r"[0-9]{1,5}")
_TASK = re.compile(r"[0-9]{1,9}")


def parse_http(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` -> (host, port); ``off`` -> None. Raises ValueError."""
    if text.strip().lower() in ("off", "none", "no", "false"):
        return None
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:8787) or off")
    if any(c.isspace() or c == "/" for c in host):
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:8787) or off")
    return host, int(port)


def endpoint(host: str, port: int) -> str:
    """The address as the other ports' rules read it (tcp://HOST:PORT)."""
    return f"tcp://{host}:{port}"


def token_for(keys: Keys | None) -> str | None:
    """The dashboard's token: derived from the master's secret key; None without keys."""
    if keys is None:
        return None
    return hmac.new(keys.secret, b"zmqmr-dashboard", hashlib.sha256).hexdigest()[:32]


def _page() -> bytes:
    return resources.files("zmqmr").joinpath("dashboard.html").read_bytes()


class _Asker:
    """Requests to the master's client port from the dashboard's threads, one at a time."""

    def __init__(self, ctx: zmq.Context[Any], address: str, keys: Keys | None) -> None:
        self.ctx, self.address, self.keys = ctx, address, keys
        self.lock = threading.Lock()
        self.sock: zmq.Socket[Any] | None = None
        self.cache: dict[tuple[str, ...], tuple[float, Any]] = {}
        self.closed = False

    def ask(self, key: tuple[str, ...], msg: protocol.Message, answer: type) -> Any:
        with self.lock:
            if self.closed:
                raise TimeoutError("the master is stopping")
            hit = self.cache.get(key)
            if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
                return hit[1]
            if self.sock is None:
                sock = self.ctx.socket(zmq.DEALER)
                sock.linger = 0
                if self.keys is not None:
                    self.keys.client(sock, self.keys.master_public)
                sock.connect(self.address)
                self.sock = sock
            protocol.send_frames(self.sock, protocol.encode(msg))
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self.sock.poll(int(left * 1000) + 1):
                    self.sock.close(0)  # a late answer must not meet the next request
                    self.sock = None
                    raise TimeoutError("no answer from the master")
                try:
                    reply = protocol.decode(self.sock.recv_multipart())
                except protocol.ProtocolError:
                    continue
                if isinstance(reply, answer) and getattr(reply, "job", None) == key[1]:
                    break
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[key] = (time.monotonic(), reply)
            return reply

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.sock is not None:
                self.sock.close(0)
                self.sock = None


class Dashboard:
    """The HTTP server; ``publish`` is the only call the poll loop makes."""

    def __init__(
        self,
        host: str,
        port: int,
        ctx: zmq.Context[Any],
        client_address: str,
        keys: Keys | None,
        fallback: bool = False,
    ) -> None:
        self.token = token_for(keys)
        self.asker = _Asker(ctx, client_address, keys)
        self._snapshot: bytes = b"{}"
        self._snapshot_at = -1e9
        # One snapshot at once (a first look finds data), more only once someone looks:
        # a snapshot of a big cluster is milliseconds of the loop (12 ms at 1,000 workers).
        self._wanted_at = time.monotonic() - WANTED_FOR + SNAPSHOT_EVERY
        self._fresh = threading.Condition()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.page = _page()
        try:
            self.server = _Server((host, port), _Handler, self)
        except OSError as exc:
            if not fallback:
                raise
            log.warning(
                "the dashboard cannot have %s:%d (%s); it takes a free port", host, port, exc
            )
            self.server = _Server((host, 0), _Handler, self)
        bound_host, bound_port = self.server.server_address[:2]
        bound = bound_host.decode() if isinstance(bound_host, bytes) else str(bound_host)
        shown = f"[{bound}]" if ":" in bound else bound
        self.address = f"http://{shown}:{bound_port}/"
        self.url = self.address + (f"?token={self.token}" if self.token else "")
        self.server.timeout = 0  # handle_request: a connection gone before accept() costs no wait
        self._stop = StopEvent()
        self.thread = threading.Thread(target=self._serve, daemon=True, name="zmqmr-dashboard")

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.asker.close()
        self._stop.set()
        self.thread.join(5)
        self.server.server_close()
        self._stop.close()

    def _serve(self) -> None:
        """``serve_forever``, except that ``stop`` wakes it at once (``shutdown`` waits out
        serve_forever's poll interval, and the master's exit with it)."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.server, selectors.EVENT_READ)
            sel.register(self._stop.fileno(), selectors.EVENT_READ)
            while not self._stop.is_set():
                if any(key.fileobj is self.server for key, _ in sel.select()):
                    self.server.handle_request()

    # -- the loop's side ----------------------------------------------------------

    def wants(self, now: float) -> bool:
        """Whether the loop should publish a snapshot now."""
        return now - self._snapshot_at >= SNAPSHOT_EVERY and now - self._wanted_at < WANTED_FOR

    def publish(self, status: dict[str, Any], now: float) -> None:
        snap = {"status": status, "time": time.time()}
        body = json.dumps(snap, separators=(",", ":")).encode()
        with self._fresh:
            self._snapshot, self._snapshot_at = body, now
            self._fresh.notify_all()

    # -- the server's side ----------------------------------------------------------

    def snapshot(self) -> bytes:
        """The latest snapshot; after a quiet spell, waits a moment for a fresh one."""
        now = time.monotonic()
        stale = now - self._wanted_at >= WANTED_FOR or now - self._snapshot_at > 2.0
        self._wanted_at = now
        if stale:
            with self._fresh:
                self._fresh.wait_for(lambda: time.monotonic() - self._snapshot_at < 2.0, 2.0)
        return self._snapshot

    def allowed(self, query: dict[str, list[str]]) -> bool:
        if self.token is None:
            return True
        given = query.get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: Any, dashboard: Dashboard) -> None:
        self.dashboard = dashboard
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.dashboard._slots.acquire(blocking=False):  # too many at once: refuse
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.dashboard._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.dashboard._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("dashboard request from %s failed", client_address, exc_info=True)


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def _refuse(request: socket.socket) -> None:
    """Tell a connection over the limit to come back (503), never waiting on it: what
    it sent so far is read first, so closing it sends no reset ahead of the answer."""
    try:
        request.setblocking(False)
        try:
            request.recv(65536)
        except BlockingIOError:
            pass
        request.send(_BUSY)
    except OSError:
        pass


_CSP = "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    timeout = CLIENT_TIMEOUT
    protocol_version = "HTTP/1.1"
    server_version = "zmqmr"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard: " + format, *args)

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value: Any, code: int = 200) -> None:
        self._send(code, json.dumps(value, separators=(",", ":")).encode(), "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        d = self.server.dashboard
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not d.allowed(query):
            self._send(403, b"a token is needed: use the URL zmqmr master printed\n", "text/plain")
            return
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        try:
            if not parts:  # the page, with the latest snapshot in it: it shows at once
                snap = d.snapshot().replace(b"<", b"\\u003c")
                page = d.page.replace(b"/*SNAPSHOT*/null", snap, 1)
                self._send(200, page, "text/html; charset=utf-8")
            elif parts == ["api", "status"]:
                self._send(200, d.snapshot(), "application/json")
            elif len(parts) == 3 and parts[:2] == ["api", "job"]:
                self._job(parts[2])
            elif len(parts) == 3 and parts[:2] == ["api", "logs"]:
                self._logs(parts[2], query, text=False)
            elif len(parts) == 2 and parts[0] == "logs":
                self._logs(parts[1], query, text=True)
            else:
                self._send(404, b"not found\n", "text/plain")
        except TimeoutError as exc:
            self._json({"error": str(exc)}, 503)

    def _job(self, job_id: str) -> None:
        if not protocol.JOB_ID.fullmatch(job_id):
            self._json({"error": "no such job"}, 404)
            return
        d = self.server.dashboard
        reply = d.asker.ask(("job", job_id), protocol.JobInfo(job_id), protocol.JobInfoReply)
        if reply.detail is None:
            self._json({"error": f"the master does not know job {job_id}"}, 404)
            return
        detail = reply.detail.to_json()
        detail["status"].update(detail["status"].pop("progress"))
        self._json(detail)

    def _logs(self, job_id: str, query: dict[str, list[str]], text: bool) -> None:
        kind = query.get("kind", [None])[0]
        task_text = query.get("task", [None])[0]
        if (
            not protocol.JOB_ID.fullmatch(job_id)
            or kind not in (None, "map", "reduce")
            or (task_text is not None and not _TASK.fullmatch(task_text))
        ):
            self._json({"error": "bad request"}, 400)
            return
        task = int(task_text) if task_text is not None else None
        d = self.server.dashboard
        msg = protocol.GetLogs(job_id, kind, task)
        key = ("logs", job_id, str(kind), str(task))
        reply = d.asker.ask(key, msg, protocol.Logs)
        got = {"logs": [g.to_json() for g in reply.logs], "more": reply.more}
        got["missing"] = reply.missing
        if not text:
            self._json(got)
            return
        body = format_logs(got["logs"]) or "no captured output\n"
        if reply.more:
            body += f"[{reply.more} more attempts' logs not shown: name a task]\n"
        if reply.missing:
            body += f"[no answer from workers {', '.join(reply.missing)}]\n"
        self._send(200, body.encode("utf-8", "replace"), "text/plain; charset=utf-8")
