"""The lab scripts (scripts/*.sh) against real sshd's on 'lab machines'.

Each lab machine is a network namespace with its own address on a private
10.x/24 and its own host name (a UTS namespace), running its own sshd that
lets in one test key. The namespaces hang off a bridge in a namespace of its
own, so the machines reach each other (reducers fetch from other workers)
without IP forwarding or firewall rules on this machine; this side has the
.1 address on the same segment, where the master listens. Namespaces share
the file system, so the 'remote' Python is this venv's and the books are at
the same paths.

Needs root (namespaces, sshd) and openssh-server, which is installed with
apt-get when /usr/sbin/sshd is missing (CI runs as root on a fresh machine);
otherwise every test here skips and says why.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import pytest
from conftest import BOOKS, REPO, count_words, free_port, wc_mapper, wc_reducer

import zmqmr

SCRIPTS = os.path.join(REPO, "scripts")
SSHD = "/usr/sbin/sshd"
LABS = 2  # lab machines, each with an sshd
ZMQMR = [sys.executable, "-m", "zmqmr"]


def _run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _ip(*args: str) -> None:
    p = _run(["ip", *args], timeout=20)
    if p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")


def _why_not_root() -> str | None:
    if not sys.platform.startswith("linux"):
        return "the lab scripts' test needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root to create network namespaces and run sshd (CI runs as root)"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"needs the {tool!r} command"
    return None


def _ensure_sshd() -> str | None:
    """Install openssh-server if sshd is missing; the reason it is unusable, or None."""
    if os.path.exists(SSHD) and shutil.which("ssh") and shutil.which("ssh-keygen"):
        return None
    if shutil.which("apt-get") is None:
        return f"{SSHD} is missing and there is no apt-get to install openssh-server"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Keep the package's post-install from starting an sshd on this machine's
    # port 22: invoke-rc.d asks policy-rc.d, and 101 means "not now".
    policy = "/usr/sbin/policy-rc.d"
    made_policy = not os.path.exists(policy)
    if made_policy:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "openssh-server"],
        ):
            try:
                p = _run(cmd, timeout=400, env=env)
            except subprocess.TimeoutExpired:
                return f"{' '.join(cmd)} took too long; cannot install openssh-server"
            if p.returncode != 0:
                tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
                return f"cannot install openssh-server ({' '.join(cmd)}): {' / '.join(tail)}"
    finally:
        if made_policy:
            os.unlink(policy)
    if not os.path.exists(SSHD) or shutil.which("ssh") is None:
        return "openssh-server installed, but sshd or ssh is still missing"
    return None


def _free_subnet() -> str:
    """A 10.x.y (/24) that no interface or route of this machine uses."""
    used = _run(["ip", "-4", "-o", "addr"]).stdout + _run(["ip", "-4", "route"]).stdout
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        net = f"10.{rng.randrange(64, 250)}.{rng.randrange(1, 250)}"
        if f" {net}." not in used and f"\n{net}." not in "\n" + used:
            return net
    raise RuntimeError("no free 10.x.y.0/24 found")


@dataclass
class Lab:
    tmp: str
    net: str  # e.g. "10.123.45": this side is .1, machine i is .(10 + i)
    namespaces: list[str]  # the lab machines
    hostnames: list[str]
    ssh: str  # ZMQMR_SSH with the test key
    master: str = ""  # the master's worker address
    client: str = ""  # the master's client address
    insecure: list[str] = field(default_factory=list)
    sshd: list[subprocess.Popen] = field(default_factory=list)

    def address(self, i: int) -> str:
        return f"{self.net}.{10 + i}"

    @property
    def nobody(self) -> str:
        """An address on the lab's segment where no machine answers."""
        return f"{self.net}.99"

    def hosts_file(self, name: str, text: str) -> str:
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def script(
        self, name: str, *args: str, ssh: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "ZMQMR_SSH": ssh or self.ssh}
        return _run([os.path.join(SCRIPTS, name), *args], timeout=timeout, env=env)

    def start_workers(self, hosts: str, *args: str, **kw) -> subprocess.CompletedProcess:
        run_dir = os.path.join(self.tmp, "run")
        common = ["--master", self.master, "--python", sys.executable, "--run-dir", run_dir]
        return self.script("start-workers.sh", hosts, *common, *self.insecure, *args, **kw)

    def stop_workers(self, hosts: str, *args: str) -> subprocess.CompletedProcess:
        return self.script(
            "stop-workers.sh", hosts, "--run-dir", os.path.join(self.tmp, "run"), *args
        )

    def status(self) -> dict:
        p = _run([*ZMQMR, "status", "--json", "--master", self.client, *self.insecure], timeout=30)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def workers(self) -> list[psutil.Process]:
        """Live `zmqmr worker` processes of this lab (whatever started them)."""
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or [])
            if "zmqmr worker" in cmd and self.master in cmd:
                found.append(proc)
        return found

    def processes_in(self, ns: str) -> set[int]:
        out = _run(["ip", "netns", "pids", ns], timeout=10).stdout.split()
        return {int(p) for p in out if p.isdigit()}

    def sshd_log(self) -> str:
        logs = []
        for i in range(len(self.namespaces)):
            with contextlib.suppress(OSError), open(os.path.join(self.tmp, f"sshd{i}.log")) as f:
                logs.append(f"--- sshd on {self.hostnames[i]}:\n{f.read()[-2000:]}")
        return "\n".join(logs)


def _run_job(client: zmqmr.Client, job: zmqmr.Job, *run_dirs: str):
    """Run a job, or fail within a minute with what the master and workers say."""
    handle = client.submit(job)
    try:
        return handle.wait(timeout=60, progress=False)
    except TimeoutError:
        logs = []
        for run_dir in run_dirs:
            for name in sorted(os.listdir(run_dir)):
                if name.endswith(".log"):
                    with open(os.path.join(run_dir, name)) as f:
                        logs.append(f"--- {name}:\n{f.read()[-3000:]}")
        why = f"progress {handle.progress()}\nstatus {client.status()}\n" + "\n".join(logs)
        handle.cancel()
        raise AssertionError(f"the job did not finish in 60s\n{why}") from None


def _lines(out: str) -> dict[str, str]:
    """start/stop-workers.sh output: host -> what was said about it."""
    said = {}
    for line in out.splitlines():
        host, sep, rest = line.partition(": ")
        if sep:
            said[host] = rest
    return said


def _wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _start_sshd(lab: Lab, i: int, tmp: str) -> str | None:
    """Start machine i's sshd; why it is unusable, or None."""
    ns, addr = lab.namespaces[i], lab.address(i)
    config = os.path.join(tmp, f"sshd{i}.conf")
    with open(config, "w") as f:
        f.write(
            f"ListenAddress {addr}\n"
            "Port 22\n"
            f"HostKey {tmp}/host_key\n"
            f"PidFile {tmp}/sshd{i}.pid\n"
            f"AuthorizedKeysFile {tmp}/authorized_keys\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitUserEnvironment no\n"
            "AllowTcpForwarding no\n"
            "X11Forwarding no\n"
            "PrintMotd no\n"
            "LogLevel VERBOSE\n"
        )
    # A host name of its own (UTS namespace): pid and log files are per machine.
    become = (
        "import os, socket, sys; socket.sethostname(sys.argv[1]); "
        "os.execv(sys.argv[2], sys.argv[2:])"
    )
    with open(os.path.join(tmp, f"sshd{i}.log"), "w") as log:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--uts", "--", sys.executable, "-c", become]
            + [lab.hostnames[i], SSHD, "-D", "-e", "-f", config],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    lab.sshd.append(proc)

    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((addr, 22)) == 0:
                break
        time.sleep(0.1)
    else:
        return f"sshd on {addr} did not start:\n{lab.sshd_log()}"
    # a login with the test key (root may be locked for sshd without PAM, say)
    p = _run([*lab.ssh.split(), addr, "true"], timeout=30)
    if p.returncode != 0:
        return f"cannot log in to the test sshd: {p.stderr.strip()}\n{lab.sshd_log()}"
    return None


@contextlib.contextmanager
def build_lab(tmp: str, labs: int = LABS, master_args: tuple[str, ...] = ()) -> Iterator[Lab]:
    """``labs`` lab machines with their sshd, and a master started with start-master.sh
    (``master_args`` go to zmqmr master); skips the test when that cannot be done."""
    why = _why_not_root() or _ensure_sshd()
    if why:
        pytest.skip(why)
    tag = f"zt{os.getpid() % 10000}{next(_labs)}"  # interface names: at most 15 characters
    lan_ns = f"{tag}-lan"
    lab = Lab(
        tmp=tmp,
        net=_free_subnet(),
        namespaces=[f"{tag}-lab{i}" for i in range(labs)],
        hostnames=[f"zlab{i}" for i in range(labs)],
        ssh=" ".join(
            [
                "ssh -F /dev/null",
                f"-i {tmp}/id_test",
                "-o IdentitiesOnly=yes -o BatchMode=yes -o ConnectTimeout=2",
                "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            ]
        ),
    )
    made: list[str] = []
    try:
        # the lab's LAN: a bridge in a namespace of its own; this side at .1
        _ip("netns", "add", lan_ns)
        made.append(lan_ns)
        _ip("-n", lan_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", lan_ns, "link", "set", "br0", "up")
        _ip("link", "add", f"{tag}h", "type", "veth", "peer", "name", "up0", "netns", lan_ns)
        _ip("-n", lan_ns, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{lab.net}.1/24", "dev", f"{tag}h")
        _ip("link", "set", f"{tag}h", "up")
        for i, ns in enumerate(lab.namespaces):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip(*f"-n {ns} link add eth0 type veth peer name p{i} netns {lan_ns}".split())
            _ip("-n", lan_ns, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{lab.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
    except RuntimeError as exc:
        _teardown(lab, made, tag)
        pytest.skip(f"cannot build the lab's network namespaces: {exc}")
    try:
        for name in ("host_key", "id_test", "id_stranger"):
            p = _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/{name}"])
            assert p.returncode == 0, p.stderr
        shutil.copy(f"{tmp}/id_test.pub", f"{tmp}/authorized_keys")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        for i in range(labs):
            why = _start_sshd(lab, i, tmp)
            if why:
                pytest.skip(f"no usable sshd: {why}")

        help_text = _run([*ZMQMR, "master", "--help"]).stdout
        lab.insecure = ["--insecure"] if "--insecure" in help_text else []
        lab.master = f"tcp://{lab.net}.1:{free_port()}"
        lab.client = f"tcp://127.0.0.1:{free_port()}"
        run_dir = os.path.join(tmp, "master-run")
        args = ["--bind", lab.master, "--client-bind", lab.client, "--run-dir", run_dir]
        args += ["--python", sys.executable, *lab.insecure, "--", *master_args]
        p = lab.script("start-master.sh", *args)
        assert p.returncode == 0 and p.stdout.startswith("master: started"), p.stdout + p.stderr
        yield lab
    finally:
        _teardown(lab, made, tag)


_labs = itertools.count()


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[Lab]:
    with build_lab(str(tmp_path_factory.mktemp("lab"))) as lab:
        yield lab


def _teardown(lab: Lab, made: list[str], tag: str) -> None:
    """Stop everything this module started, whatever state it is in."""
    if lab.master:
        run_dir = os.path.join(lab.tmp, "master-run")
        lab.script("start-master.sh", "--stop", "--grace", "5", "--run-dir", run_dir)
    for ns in made:  # sshd's, workers, executors: everything in the namespaces
        for pid in lab.processes_in(ns):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    for proc in lab.sshd:
        proc.kill()
        proc.wait(10)
    for proc in lab.workers():  # a worker somehow outside the namespaces
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for ns in reversed(made):
        _run(["ip", "netns", "delete", ns], timeout=20)
    if os.path.exists(f"/sys/class/net/{tag}h"):
        _run(["ip", "link", "delete", f"{tag}h"], timeout=20)


@pytest.fixture(scope="module")
def hosts(lab: Lab) -> str:
    """Comments, a blank line, a slot count, a default, and a machine that is not there."""
    return lab.hosts_file(
        "hosts",
        "# the lab: HOST [SLOTS]\n"
        "\n"
        f"{lab.address(0)}   2      # two executors\n"
        f"  {lab.address(1)}\n"
        f"{lab.nobody}  # switched off\n",
    )


@pytest.fixture(scope="module")
def first_start(lab: Lab, hosts: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    p = lab.start_workers(hosts, "--slots", "3")
    return p, time.monotonic() - t0


@pytest.mark.timeout(900)  # the first test may install openssh-server
def test_start_workers_starts_each_host_and_reports_the_missing_one(lab, first_start):
    p, seconds = first_start
    said = _lines(p.stdout)
    context = f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}\n{lab.sshd_log()}"
    assert p.returncode == 1, context
    assert list(said) == [lab.address(0), lab.address(1), lab.nobody], context
    for i in range(LABS):
        assert said[lab.address(i)].startswith("started (pid "), context
        assert f" on {lab.hostnames[i]}," in said[lab.address(i)], context
    assert said[lab.nobody].startswith("failed: ssh exited 255: "), context
    assert lab.nobody in said[lab.nobody], context
    assert seconds < 15, f"hosts are contacted at once; this took {seconds:.1f}s"
    # the pid and log files are on each machine, named after it
    for name in lab.hostnames:
        with open(os.path.join(lab.tmp, "run", f"worker-{name}.pid")) as f:
            pid = int(f.read())
        assert "zmqmr worker" in " ".join(psutil.Process(pid).cmdline())
        assert os.path.exists(os.path.join(lab.tmp, "run", f"worker-{name}.log"))


def test_slot_counts_from_the_hosts_file_and_from_slots(lab, first_start):
    def registered():
        workers = lab.status()["workers"]
        return workers if len(workers) == LABS else None

    workers = _wait_for(registered, 20, f"{LABS} workers to register")
    assert {w["host"]: w["slots"] for w in workers} == {
        lab.hostnames[0]: 2,  # from the hosts file
        lab.hostnames[1]: 3,  # --slots
    }


def test_a_second_start_reports_already_running(lab, hosts, first_start):
    pids = {w.pid for w in lab.workers()}
    assert len(pids) == LABS
    p = lab.start_workers(hosts)
    said = _lines(p.stdout)
    assert p.returncode == 1, p.stdout + p.stderr  # the switched-off machine again
    for i in range(LABS):
        assert said[lab.address(i)].startswith("already running (pid "), p.stdout
    assert {w.pid for w in lab.workers()} == pids, "a second worker was started"


def test_word_count_runs_on_the_lab(lab, first_start):
    _wait_for(lambda: len(lab.status()["workers"]) == LABS, 20, "the workers")
    job = zmqmr.Job(
        wc_mapper,
        wc_reducer,
        inputs=BOOKS,
        combiner=wc_reducer,
        num_reducers=3,
        split_size=256 * 1024,  # a dozen map tasks or so: both machines get some
    )
    with zmqmr.Client(lab.client, timeout=30, insecure=bool(lab.insecure)) as client:
        result = _run_job(client, job, *(os.path.join(lab.tmp, d) for d in ("run", "master-run")))
    assert dict(result.items()) == count_words(BOOKS)
    # reducers fetched from the shuffle servers on the machines' own addresses
    assert result.stats["fetch_failures"] == 0 and result.stats["reexecuted_maps"] == 0
    shuffles = sorted(w["shuffle"].rsplit(":", 1)[0] for w in lab.status()["workers"])
    assert shuffles == [f"tcp://{lab.address(i)}" for i in range(LABS)]


def test_a_lab_with_keys(lab, first_start):
    """CURVE everywhere, as docs/operations.md says: the master has the whole key
    directory, workers and clients all of it but master.key_secret. (A second
    worker per machine: these scripts keep their files in another --run-dir.)"""
    if not lab.insecure:
        pytest.skip("this zmqmr has no CURVE yet (no --insecure, --keys refused)")
    keys = os.path.join(lab.tmp, "keys")
    p = _run([*ZMQMR, "keygen", keys])
    assert p.returncode == 0, p.stderr
    members = os.path.join(lab.tmp, "member-keys")
    os.mkdir(members, 0o700)
    for name in ("master.key", "member.key", "member.key_secret"):
        shutil.copy2(os.path.join(keys, name), members)
    master, client = f"tcp://{lab.net}.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    run_dir = os.path.join(lab.tmp, "run-keys")
    common = ["--python", sys.executable, "--run-dir", run_dir]
    p = lab.script(
        "start-master.sh", "--bind", master, "--client-bind", client, "--keys", keys, *common
    )
    assert p.returncode == 0 and p.stdout.startswith("master: started"), p.stdout + p.stderr
    hosts = lab.hosts_file("hosts-keys", "".join(f"{lab.address(i)}\n" for i in range(LABS)))
    try:
        p = lab.script("start-workers.sh", hosts, "--master", master, "--keys", members, *common)
        assert p.returncode == 0, p.stdout + p.stderr
        with zmqmr.Client(client, keys=members, timeout=30) as c:
            _wait_for(lambda: len(c.status()["workers"]) == LABS, 20, "the workers with keys")
            job = zmqmr.Job(
                wc_mapper, wc_reducer, inputs=BOOKS[:3], num_reducers=2, split_size=128 * 1024
            )
            assert dict(_run_job(c, job, run_dir).items()) == count_words(BOOKS[:3])
        # without the keys, the master does not answer
        with pytest.raises(zmqmr.MasterUnavailable), zmqmr.Client(client, timeout=2) as c:
            c.status()
    finally:
        p = lab.script("stop-workers.sh", hosts, "--run-dir", run_dir)
        lab.script("start-master.sh", "--stop", "--run-dir", run_dir)
    assert p.returncode == 0 and p.stdout.count(": stopped (pid ") == LABS, p.stdout


def test_a_refused_login_and_a_missing_python_are_reported(lab, first_start):
    one = lab.hosts_file("one", f"{lab.address(0)}\n")
    stranger = lab.ssh.replace("id_test", "id_stranger")
    p = lab.start_workers(one, ssh=stranger)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "failed: ssh exited 255: " in p.stdout and "Permission denied" in p.stdout, p.stdout
    # No worker runs under this run directory, so the Python is looked for.
    elsewhere = os.path.join(lab.tmp, "elsewhere")
    python = "/nonexistent/python3"
    p = lab.script(
        "start-workers.sh", one, "--master", lab.master, "--python", python, "--run-dir", elsewhere
    )
    assert p.returncode == 1, p.stdout + p.stderr
    said = _lines(p.stdout)[lab.address(0)]
    assert said == f"failed: no Python at /nonexistent/python3 on {lab.hostnames[0]} (use --python)"
    assert len(lab.workers()) == LABS


def test_stop_workers_leaves_no_worker_behind(lab, hosts, first_start):
    sshd_pids = [p.pid for p in lab.sshd]
    p = lab.stop_workers(hosts, "--grace", "10")
    said = _lines(p.stdout)
    assert p.returncode == 1, p.stdout + p.stderr  # the switched-off machine
    for i in range(LABS):
        assert said[lab.address(i)].startswith("stopped (pid "), p.stdout
    assert said[lab.nobody].startswith("failed: ssh exited 255: "), p.stdout
    assert lab.workers() == []
    # nothing but sshd is left on the lab machines: no executor either
    for ns in lab.namespaces:
        _wait_for(lambda ns=ns: lab.processes_in(ns) <= set(sshd_pids), 10, f"an empty {ns}")
    for name in lab.hostnames:
        assert not os.path.exists(os.path.join(lab.tmp, "run", f"worker-{name}.pid"))
    # and once more: nothing to stop
    p = lab.stop_workers(hosts)
    said = _lines(p.stdout)
    for i in range(LABS):
        assert said[lab.address(i)].startswith("not running"), p.stdout
