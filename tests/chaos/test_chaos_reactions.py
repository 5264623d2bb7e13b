"""The master's log lines given to the faults they answer; hosts files; log time stamps."""

from __future__ import annotations

import time

import pytest

import zmqmr
from zmqmr.chaos.lab import parse_hosts, parse_log
from zmqmr.chaos.reactions import attribute

pytestmark = pytest.mark.chaos

T0 = 1_800_000_000.0  # the job's acceptance, Unix time


def rec(t, nemesis, target, action, fault=None, **kw):
    r = {"time": t, "nemesis": nemesis, "target": target, "action": action, "wall": T0 + t}
    if fault is not None:
        r["fault"] = fault
    r.update(kw)
    return r


HISTORY = [
    rec(0.0, None, "job", "submitted"),
    rec(0.3, "kill", "w2", "kill", 0, pid=4533),
    rec(1.0, "pause", "w1", "pause", 1, pid=4529),
    rec(1.8, "pause", "w1", "resume", 1, pid=4529),
    rec(2.0, "corrupt", "w0", "watch", 2, pid=4528),
    rec(2.0, "corrupt", "w0", "truncate", 2, pid=4528, file="j1/m00002-a31.out"),
    rec(2.2, "kill", "w2", "restart", 0, pid=4945),
    rec(3.0, "slow", "w0", "slow", 3, pid=4528),
    rec(6.0, "slow", "w0", "normal", 3, pid=4528),
]
NODES = {"w0": "vm", "w1": "vm", "w2": "vm"}


def master(t, text):
    return (T0 + t, "zmqmr.master INFO " + text)


def test_each_line_goes_to_the_fault_it_answers():
    lines = [
        master(0.1, "job j1 (wordcount) accepted: 6 maps, 4 reduces [submit-1]"),
        master(1.9, "worker vm:4533 is gone: 2 running attempts and 0 map outputs lost [tick]"),
        master(2.7, "worker vm:4945 joined with 1 slots: READY [ready]"),
        master(3.5, "job j1: backup of map task 4 on vm:4529: no progress for 3.8s [tick]"),
        master(4.0, "job j1: reduce task 3 preempted on vm:4529: map task 2 must run again"),
        master(4.0, "job j1: map task 2 will run again: a reducer could not fetch it: bad footer"),
        (T0 + 4.1, "zmqmr.worker WARNING not the master's"),
        master(9.0, "job j1: backup of map task 5 on vm:4529: too late for the slow fault"),
    ]
    said = attribute(HISTORY, lines, NODES)
    got = {i: [x["line"].split(":")[0] for x in v] for i, v in said.items()}
    assert got == {
        0: ["worker vm", "worker vm"],  # gone, and joined again under the restarted pid
        1: [],  # the preemption names the paused worker, but answers the damage
        2: ["job j1", "job j1"],
        3: ["job j1"],  # the backup launched while w0 was slow
    }, said
    assert said[2][0]["time"] == pytest.approx(4.0, abs=0.01)
    assert "preempted" in said[2][0]["line"] and "will run again" in said[2][1]["line"]


def test_no_faults_no_reactions():
    assert attribute([rec(0.0, None, "job", "submitted")], [master(1, "x")], NODES) == {}


def test_log_time_stamps_are_read_as_local_time_and_moved_by_the_clock_offset():
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(T0))
    [(t, text)] = parse_log(f"{stamp},250 zmqmr.master INFO hello\nnot a log line\n", clock=2.0)
    assert t == pytest.approx(T0 + 0.25 - 2.0) and text == "zmqmr.master INFO hello"


def test_hosts_files_as_the_scripts_read_them(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("# lab\n\nlab-01  2  # two\n  lab-02\nlab-01\n")
    assert parse_hosts(str(path)) == ["lab-01", "lab-02"]
    path.write_text("lab-01 two\n")
    with pytest.raises(zmqmr.ClusterError, match="expected 'HOST \\[SLOTS\\]'"):
        parse_hosts(str(path))
    path.write_text("# nobody\n")
    with pytest.raises(zmqmr.ClusterError, match="no hosts"):
        parse_hosts(str(path))
