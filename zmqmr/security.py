"""Keys, CURVE and the ZAP gatekeeper; which key directory a process uses.

A job is code: whoever can submit one runs anything as the workers' user, and
on a shared machine every account can reach 127.0.0.1. So every process
speaks CURVE by default, with the key pairs of the user's key directory:
``--keys DIR`` if given, else ``$ZMQMR_KEYS``, else ``~/.zmqmr/keys``, made
with mode 0700 and fresh key pairs on first use (as Jupyter makes a token for
a local server). ``--insecure`` without ``--keys`` turns CURVE off, with a
warning. Default keys serve this machine only: binding beyond loopback takes
an explicit ``--keys DIR`` (the directory every machine shares) or
``--insecure``. A key directory (``zmqmr keygen DIR``) holds:

    DIR/master.key          the master's public key (workers and clients need it)
    DIR/master.key_secret   the master's key pair (the master only)
    DIR/member.key          the members' public key
    DIR/member.key_secret   the members' key pair (workers and clients)

The master's ROUTER sockets are CURVE servers with the master's pair; each
worker's shuffle server is a CURVE server with the member pair; workers,
clients and reducers are CURVE clients with the member pair. A ZAP handler in
each serving process lets in only the public keys found in DIR, and logs
every refusal; a peer without CURVE fails the handshake before any frame
reaches the application.
"""

from __future__ import annotations

import glob
import ipaddress
import logging
import os
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import zmq

from .config import check_endpoint
from .errors import SecurityError

log = logging.getLogger(__name__)

ZAP_DOMAIN = "zmqmr"
MASTER, MEMBER = "master", "member"


@dataclass(frozen=True)
class Keys:
    directory: str
    public: bytes  # this process's own pair
    secret: bytes
    master_public: bytes
    member_public: bytes
    authorised: frozenset[bytes]  # z85 public keys allowed in

    def server(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server with this process's pair (bind after this)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.curve_server = True

    def client(self, sock: zmq.Socket[Any], server_public: bytes) -> None:
        """Make ``sock`` a CURVE client of a server with ``server_public`` (connect after)."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = server_public


def load_keys(directory: str, role: str) -> Keys:
    """The keys of ``role`` (``"master"`` or ``"member"``) from a key directory."""
    # Imported here, with keys only: zmq.auth pulls in asyncio (~40 ms a process).
    from zmq.auth import load_certificate

    directory = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
        raise SecurityError(
            f"key directory {directory!r} does not exist (make one with zmqmr keygen)"
        )
    _check_mode(directory, 0o022, "key directory", "anyone who can write there can let a key in")

    def read(name: str, secret: bool) -> tuple[bytes, bytes | None]:
        path = os.path.join(directory, name + (".key_secret" if secret else ".key"))
        if not os.path.isfile(path):
            raise SecurityError(f"{path} is missing (make keys with zmqmr keygen {directory})")
        if secret:
            _check_mode(path, 0o077, "secret key", "whoever can read it can join the cluster")
        try:
            return load_certificate(path)
        except (OSError, ValueError) as exc:
            raise SecurityError(f"{path} is not a key file: {exc}") from exc

    master_public, _ = read(MASTER, False)
    member_public, _ = read(MEMBER, False)
    public, secret = read(role, True)
    if secret is None:
        raise SecurityError(f"{directory}/{role}.key_secret holds no secret key")
    authorised = set()
    for path in glob.glob(os.path.join(directory, "*.key")):
        _check_mode(path, 0o022, "public key", "whoever can write it can replace the key")
        try:
            authorised.add(load_certificate(path)[0])
        except (OSError, ValueError):
            log.warning("ignoring %s: not a public key file", path)
    return Keys(directory, public, secret, master_public, member_public, frozenset(authorised))


def _check_mode(path: str, others: int, what: str, why: str) -> None:
    """Refuse a key file or directory that another account owns or whose mode grants
    ``others`` bits (group and world), as ssh refuses an unprotected private key."""
    st = os.stat(path)
    if st.st_uid not in (os.getuid(), 0):
        raise SecurityError(
            f"{what} {path} belongs to another user (uid {st.st_uid}): {why}; "
            "use keys of your own (zmqmr keygen DIR)"
        )
    loose = stat.S_IMODE(st.st_mode) & others
    if loose:
        raise SecurityError(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: {why} "
            f"(chmod {'go-rwx' if others == 0o077 else 'go-w'} {path})"
        )


def default_keys_dir() -> str:
    """Where the default keys live: ``$ZMQMR_KEYS``, else ``~/.zmqmr/keys``."""
    directory = os.environ.get("ZMQMR_KEYS") or os.path.join("~", ".zmqmr", "keys")
    return os.path.abspath(os.path.expanduser(directory))


def write_keys(directory: str) -> list[str]:
    """Make the master's and the members' key pairs in ``directory``; the paths written.

    Secret keys get mode 0600. Refuses to overwrite any key already there.
    """
    import zmq.auth

    os.makedirs(directory, mode=0o700, exist_ok=True)  # load_keys refuses a writable one
    for name in (MASTER, MEMBER):
        for suffix in (".key", ".key_secret"):
            if os.path.exists(os.path.join(directory, name + suffix)):
                raise SecurityError(f"{directory}/{name}{suffix} exists; not overwriting")
    written = []
    for name in (MASTER, MEMBER):
        public, secret = zmq.auth.create_certificates(directory, name)
        os.chmod(public, 0o644)  # whatever the umask: no one else may write either
        os.chmod(secret, 0o600)
        written += [public, secret]
    return written


def default_keys() -> str:
    """The default key directory, made with mode 0700 and fresh key pairs on first use."""
    directory = default_keys_dir()
    if os.path.isdir(directory):
        return directory
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        # Made aside and renamed into place: a process starting at the same moment
        # sees the whole directory or none of it, and the one that loses the race
        # uses the winner's keys.
        tmp = tempfile.mkdtemp(prefix=".keys-", dir=parent)  # mode 0700
        try:
            write_keys(tmp)
            os.rename(tmp, directory)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(directory):
                raise
        else:
            log.info("made CURVE key pairs in %s (mode 0700), for this user only", directory)
    except OSError as exc:
        raise SecurityError(
            f"cannot make the default key directory {directory}: {exc.strerror}; "
            "give one with --keys DIR (or ZMQMR_KEYS=DIR), made with zmqmr keygen DIR"
        ) from None
    return directory


_warned_insecure = False


def warn_insecure(what: str) -> None:
    """Say, once per process, that CURVE is off and what that lets others do."""
    global _warned_insecure
    if not _warned_insecure:
        _warned_insecure = True
        log.warning(
            "INSECURE: %s: CURVE is off, so any account that can reach the cluster's ports "
            "(on this machine: every account) can run code as the cluster's user",
            what,
        )


def key_dir(keys: str | None, insecure: bool, what: str) -> str | None:
    """The key directory a process uses: ``keys``; none if ``insecure``; else the default.

    Given keys win over ``insecure``, which only turns the default keys off.
    """
    if keys:
        return os.path.abspath(os.path.expanduser(keys))
    if insecure:
        warn_insecure(what)
        return None
    return default_keys()


def check_default_keys_bind(addresses: list[str], shown: list[str] | None = None) -> None:
    """Refuse default keys for a bind beyond loopback: other machines do not have them.
    ``shown``: each address as the error names it (as the user gave it)."""
    for address, name in zip(addresses, shown or addresses):
        if not is_loopback(address):
            raise SecurityError(
                f"{name} is reachable from other machines, which need the same keys: "
                "give the key directory they share with --keys DIR (zmqmr keygen DIR), "
                "or, on a network you trust completely, --insecure"
            )


#: Seconds between two log lines of refused keys (the rest are counted in the next).
REFUSED_LOG_EVERY = 10.0


class Gatekeeper:
    """The ZAP handler of one process: only keys in the directory get in."""

    def __init__(self, ctx: zmq.Context[Any], keys: Keys) -> None:
        self.keys = keys
        self.refused = 0
        self._logged = 0  # refusals told of in the log so far
        self._next_log = 0.0
        from zmq.auth.thread import ThreadAuthenticator

        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
        self.auth.start()
        self.auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys.authorised:
            return True
        self.refused += 1
        now = time.monotonic()
        if now >= self._next_log:  # a line per REFUSED_LOG_EVERY at most: peers can flood
            unlogged = self.refused - self._logged - 1
            log.warning(
                "refused a peer whose CURVE key %s is not in %s%s",
                key.decode(errors="replace"),
                self.keys.directory,
                f" (and {unlogged} more since the last such line)" if unlogged else "",
            )
            self._logged = self.refused
            self._next_log = now + REFUSED_LOG_EVERY
        return False

    def stop(self) -> None:
        self.auth.stop()


def is_loopback(address: str) -> bool:
    """Whether a ZeroMQ endpoint only accepts connections from this machine."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or an interface: assume reachable from outside


def check_bind(address: str, keys: Keys | None, insecure: bool, what: str) -> None:
    """Refuse a malformed ``address``, and one beyond loopback without keys unless insecure."""
    check_endpoint(address, what, bind=True)
    if keys is not None or is_loopback(address):
        return
    if not insecure:
        raise SecurityError(
            f"refusing to bind {what} to {address} without keys: anyone who can reach it "
            "could run code as you. Use --keys DIR (zmqmr keygen DIR) or, on a network you "
            "trust completely, --insecure"
        )
    log.warning(
        "INSECURE: %s listens on %s without CURVE; anyone who can reach it can run "
        "code as this user",
        what,
        address,
    )


_HANDSHAKE_FAILURES: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "it refused this peer's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (keys on one side only?)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed",
}


class HandshakeWatch:
    """Remembers why a connecting socket's security handshake failed, if it did."""

    def __init__(self, sock: zmq.Socket[Any], reconnects: bool = False) -> None:
        self._sock = sock
        events = 0
        for event in _HANDSHAKE_FAILURES:
            events |= event
        if reconnects:  # also notice a connection lost and made again (a restarted peer)
            events |= zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        self._monitor: zmq.Socket[Any] | None = sock.get_monitor_socket(events)
        self.reason: str | None = None
        self._lost = False
        self._back = False

    def drain(self) -> list[str]:
        """Why each handshake failed since the last call (a server sees one per peer)."""
        from zmq.utils.monitor import recv_monitor_message

        reasons = []
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind = int(event["event"])
            if kind == zmq.EVENT_DISCONNECTED:
                self._lost = True
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and self._lost:
                # Made again and let in: a TCP connection whose handshake is then
                # refused (wrong keys) is not a peer back.
                self._lost, self._back = False, True
            reason = _HANDSHAKE_FAILURES.get(kind)
            if reason is not None:
                reasons.append(reason)
                self.reason = reason
        return reasons

    @property
    def monitor(self) -> zmq.Socket[Any] | None:
        """The monitor socket, readable when an event awaits ``drain`` (None once closed)."""
        return self._monitor

    def reconnected(self) -> bool:
        """Whether the connection was lost and made again since the last call: whatever
        was sent before may be lost with the peer that went away."""
        self.drain()
        back, self._back = self._back, False
        return back

    def failure(self) -> str | None:
        """Why the handshake failed (so far), or None."""
        self.drain()
        return self.reason

    def close(self) -> None:
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(0)
            self._monitor = None
