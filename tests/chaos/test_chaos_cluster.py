"""The chaos cluster: real processes in their own groups, by name, and namespaces as root."""

from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

import zmqmr
from zmqmr.chaos import ChaosCluster
from zmqmr.chaos import netns as chaos_netns

pytestmark = pytest.mark.chaos

NETNS_OK, NETNS_WHY = chaos_netns.available()


def wait_until(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def family(pid):
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def test_each_node_is_its_own_process_group_with_its_own_data_dir():
    with ChaosCluster(workers=2) as c:
        assert set(c.nodes) == {"master", "w0", "w1"}
        groups = {os.getpgid(c.node(n).pid) for n in c.nodes}
        assert groups == {c.node(n).pid for n in c.nodes}  # each leads its own group
        assert os.getpgid(0) not in groups
        for name in c.worker_names:
            procs = wait_until(
                lambda name=name: len(family(c.node(name).pid)) >= 2 and family(c.node(name).pid)
            )
            assert {os.getpgid(p.pid) for p in procs} == {c.node(name).pid}  # executors too
            assert c.data_dir(name).startswith(c.dir)
        assert c.data_dir("w0") != c.data_dir("w1")
        assert len(c.status()["workers"]) == 2
        directory = c.dir
    assert not os.path.exists(directory)


def test_kill_takes_the_worker_and_its_executors_and_restart_brings_a_new_incarnation(books):
    with ChaosCluster(workers=2) as c:
        old = wait_until(lambda: len(family(c.node("w0").pid)) >= 2 and family(c.node("w0").pid))
        assert c.kill("w0") is True
        psutil.wait_procs(old, timeout=5)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in old)
        assert c.kill("w0") is False  # already dead
        new_pid = c.restart("w0")
        assert new_pid != old[0].pid
        wait_until(lambda: new_pid in [w["pid"] for w in c.status()["workers"]])
        job = zmqmr.Job(words_mapper, sum_reducer, inputs=books[:1], num_reducers=2)
        with c.client() as client:
            assert list(client.run(job).items()) == list(zmqmr.run_serial(job).items())


def words_mapper(key, line):
    for word in line.lower().split():
        yield word, 1


def sum_reducer(word, counts):
    return sum(counts)


def test_pause_stops_the_whole_group_and_resume_continues_it():
    with ChaosCluster(workers=1) as c:
        procs = wait_until(lambda: len(family(c.node("w0").pid)) >= 2 and family(c.node("w0").pid))
        assert c.pause("w0")
        wait_until(lambda: all(p.status() == psutil.STATUS_STOPPED for p in procs))
        assert c.resume("w0")
        wait_until(lambda: all(p.status() != psutil.STATUS_STOPPED for p in procs))


def test_the_master_restarts_at_the_same_addresses_and_workers_come_back():
    with ChaosCluster(workers=2) as c:
        address = c.address
        c.kill("master")
        with pytest.raises(zmqmr.MasterUnavailable), c.client(timeout=0.5) as client:
            client.status()
        c.restart("master")
        assert c.address == address
        wait_until(lambda: len(c.status()["workers"]) == 2, timeout=30)


@pytest.mark.skipif(not NETNS_OK, reason=f"no network namespaces: {NETNS_WHY}")
def test_workers_in_namespaces_can_be_cut_off_and_everything_is_removed_at_close(books):
    with ChaosCluster(workers=2, netns=True) as c:
        net = c.network
        assert net is not None
        ns_of = {n: os.readlink(f"/proc/{c.node(n).pid}/ns/net") for n in c.nodes}
        assert len(set(ns_of.values())) == 3  # the master in ours, each worker in its own
        assert ns_of["master"] == os.readlink("/proc/self/ns/net")
        assert c.worker_address.startswith(f"tcp://{net.host_address}:")
        shuffles = sorted(w["shuffle"] for w in c.status()["workers"])
        assert [s.split(":")[1].lstrip("/") for s in shuffles] == [net.address(0), net.address(1)]
        c.link("w1", up=False)
        wait_until(lambda: len(c.status()["workers"]) == 1)  # declared dead
        c.link("w1", up=True)
        wait_until(lambda: len(c.status()["workers"]) == 2)  # back, a new incarnation
        names = set(net.netns_names) | set(net.veths) | {net.bridge}
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not [n for n in names if n in listed or f" {n}:" in links or f" {n}@" in links]


def test_partition_is_refused_without_namespaces():
    with ChaosCluster(workers=1) as c, pytest.raises(zmqmr.ClusterError, match="namespaces"):
        c.link("w0", up=False)
