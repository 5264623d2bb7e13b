"""Capturing an attempt's output: bounded tails, files beside the map outputs, reading back."""

from __future__ import annotations

import json
import logging
import os
import sys

from zmqmr import tasklogs


def test_a_tail_keeps_the_last_characters_and_counts_the_dropped_ones():
    t = tasklogs.Tail(limit=10)
    for i in range(30):
        t.write(f"{i % 10}")
    assert t.getvalue() == "0123456789"
    assert t.dropped == 20
    t.write("x" * 25)
    assert t.getvalue() == "x" * 10 and t.dropped == 45


def test_capture_takes_prints_stderr_and_log_records_and_restores_them(tmp_path):
    data_dir = tmp_path / "zmqmr-maps"
    root = tasklogs.logs_root(str(data_dir))
    assert root == str(tmp_path / "zmqmr-logs")
    out, err = sys.stdout, sys.stderr
    with tasklogs.Capture(root, "job1", "map", 3, 17) as cap:
        print("hello from the mapper")
        print("oops", file=sys.stderr)
        logging.getLogger("user").info("a record")
        cap.flush("done")
    assert sys.stdout is out and sys.stderr is err
    (log,), more = tasklogs.read_logs(root, "job1")
    assert more == 0
    assert (log.kind, log.task, log.attempt, log.outcome) == ("map", 3, 17, "done")
    assert log.stdout == "hello from the mapper\n" and log.stderr == "oops\n"
    assert "user INFO a record" in log.log
    tail = cap.error_tail()
    assert "--- stdout ---\nhello from the mapper" in tail and "--- log ---" in tail


def test_an_attempt_that_wrote_nothing_leaves_no_file(tmp_path):
    with tasklogs.Capture(str(tmp_path), "job1", "reduce", 0, 1) as cap:
        cap.flush("done")
    assert not os.path.exists(tmp_path / "job1")


def test_read_logs_picks_one_task_and_skips_what_is_not_an_attempt_log(tmp_path):
    root = str(tmp_path)
    for kind, task, attempt in (("map", 1, 4), ("map", 0, 2), ("reduce", 0, 9), ("map", 1, 3)):
        with tasklogs.Capture(root, "j", kind, task, attempt) as cap:
            print(f"{kind}{task}a{attempt}")
            cap.flush("done")
    (tmp_path / "j" / "junk.json").write_text("{}")
    (tmp_path / "j" / "map-00005-a1.json").write_text(json.dumps({"attempt": "x"}))
    logs, _ = tasklogs.read_logs(root, "j")
    assert [(g.kind, g.task, g.attempt) for g in logs] == [
        ("map", 0, 2),
        ("map", 1, 3),
        ("map", 1, 4),
        ("reduce", 0, 9),
    ]
    one, _ = tasklogs.read_logs(root, "j", "map", 1)
    assert [g.stdout for g in one] == ["map1a3\n", "map1a4\n"]
    assert tasklogs.read_logs(root, "../etc") == ([], 0)


def test_prune_keeps_the_logs_of_the_latest_jobs(tmp_path):
    for i in range(5):
        d = tmp_path / f"job{i}"
        d.mkdir()
        os.utime(d, (1000 + i, 1000 + i))
    tasklogs.prune(str(tmp_path), keep=2)
    assert sorted(os.listdir(tmp_path)) == ["job3", "job4"]


def test_read_logs_bounds_a_reply_by_its_bytes_on_the_wire(tmp_path, monkeypatch):
    monkeypatch.setattr(tasklogs, "MAX_REPLY_BYTES", 50_000)
    root = str(tmp_path)
    for task in range(10):
        with tasklogs.Capture(root, "j", "map", task, 1) as cap:
            print("\U0001f600" * 2000)  # 2,001 characters, 24 KB as JSON
            cap.flush("done")
    logs, more = tasklogs.read_logs(root, "j")
    assert len(logs) == 3 and more == 7  # the third passes the bound: then no more
    assert sum(g.wire_bytes() for g in logs[:2]) < 50_000 < sum(g.wire_bytes() for g in logs)
