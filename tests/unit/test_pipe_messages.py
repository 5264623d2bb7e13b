"""The worker <-> executor pipe's messages pickle by position (records.Record's
``__reduce__``) and come back equal, in this process and in a fresh one."""

from __future__ import annotations

import pickle
import subprocess
import sys

from zmqmr import protocol as p

ROOT = __file__.rsplit("/tests/", 1)[0]


def messages() -> list[object]:
    split = p.Split("records", blob=3, count=1, first=3)
    spec = p.TaskSpec("job", 2, 10, None, True, 1 << 20, split=split, skip=[4], partition=None)
    reduce_spec = p.TaskSpec(
        "job", 2, 10, "/out", False, 0, partition=1,
        locations=[p.Location(0, 7, "tcp://127.0.0.1:5000", 120, 3)],
    )  # fmt: skip
    report = p.Report(
        counters={"zmqmr.map_input_records": 1}, segments=[p.Segment(1, 120, 1)], bytes=200
    )
    return [
        p.RunAttempt(7, "job", "map", 3, spec, b"code", b"records"),
        p.RunAttempt(8, "job", "reduce", 1, reduce_spec, None, None),
        p.Done(7, report),
        p.Done(8, p.Report(output_file="/out/part-00001"), blobs=[b"results"]),
        p.Failed(9, "user", p.ErrorInfo.make("ValueError", "bad", "tb", log="x"), 4),
        p.AttemptProgress(7, 0.5),
        p.FetchFailed(8, 0, 7, "gone"),
        p.Relocate(8, p.Location(0, 9, "tcp://127.0.0.1:5001", 120, 3)),
        p.DropJob("job"),
    ]


def test_pipe_messages_come_back_equal():
    for msg in messages():
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        assert pickle.loads(data) == msg, msg
        assert b"attempt" not in data and b"counters" not in data  # no field names


def test_pipe_messages_unpickle_in_a_process_that_made_none():
    data = pickle.dumps(messages(), protocol=pickle.HIGHEST_PROTOCOL)
    code = (
        "import pickle, sys; msgs = pickle.loads(sys.stdin.buffer.read()); "
        "print(';'.join(repr(m) for m in msgs))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input=data, capture_output=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == ";".join(repr(m) for m in messages())
