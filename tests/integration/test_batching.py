"""Batches on the wire between the master and a worker, with a real job that must be exact.

The master runs in its own process (a LocalCluster of no workers); a real
``zmqmr.Worker`` runs in a process of its own whose protocol functions count
what it reads from and sends to the master, and print the counts when it
stops: several messages per ZeroMQ message, both ways, and the job's answer
is still ``run_serial``'s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from conftest import REPO

import zmqmr

#: A worker whose protocol counts, per ZeroMQ message, the parts it read and sent.
WATCHED_WORKER = """
import json, signal, sys
from zmqmr import protocol as p
from zmqmr.config import WorkerSettings
from zmqmr.worker import Worker

received, sent = [], []
decode_batch, pack = p.decode_batch, p.pack

def counting_decode(frames):
    batch = decode_batch(frames)
    received.append(len(batch.parts))
    return batch

def counting_pack(msgs):
    packed = pack(msgs)
    sent.extend(len(decode_batch(f).parts) for f in packed)
    return packed

p.decode_batch, p.pack = counting_decode, counting_pack
worker = Worker(sys.argv[1], data_dir=sys.argv[2], settings=WorkerSettings(slots=4), insecure=True)
signal.signal(signal.SIGTERM, lambda *_: worker.stop_event.set())
worker.run()
print(json.dumps({"received": received, "sent": sent}))
"""


def _square(key: int, value: int) -> Any:
    return [(value % 7, value * value)]


def _total(key: int, values: Any) -> int:
    return sum(values)


@pytest.mark.timeout(180)
def test_a_job_runs_exact_with_batches_both_ways(tmp_path):
    job = zmqmr.Job(_square, _total, inputs=[(i, i) for i in range(300)], num_reducers=3)
    job.split_size = 1  # 300 one-record map tasks: many small assignments at once
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with zmqmr.LocalCluster(workers=0, insecure=True, heartbeat_interval=0.5) as cluster:
        proc = subprocess.Popen(
            [sys.executable, "-c", WATCHED_WORKER, cluster.worker_address, str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
        )
        try:
            cluster.wait_for_workers(1, 60)
            result = cluster.client().run(job, progress=False)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    counts = json.loads(out.decode().strip().splitlines()[-1])
    received, sent = counts["received"], counts["sent"]
    assert dict(result.items()) == dict(zmqmr.run_serial(job).items())
    assert result.stats["maps"] == 300 and result.stats["failed_attempts"] == 0
    assert max(received) > 1, f"the master sent no batch: {received[:50]}"
    assert max(sent) > 1, f"the worker sent no batch: {sent[:50]}"
