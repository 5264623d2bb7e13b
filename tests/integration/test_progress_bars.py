"""Client.run shows tqdm progress bars on a terminal (a pty here) and nothing without one."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import textwrap

from conftest import BOOKS, REPO

SCRIPT = textwrap.dedent(
    """
    import re, sys
    from collections import Counter
    import zmqmr

    def mapper(key, line):
        for w in re.findall(r"[a-z]+", line.lower()):
            yield w, 1

    def reducer(w, counts):
        return sum(counts)

    books = sys.argv[1:]
    expected = Counter()
    for path in books:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                expected.update(re.findall(r"[a-z]+", line.lower()))
    job = zmqmr.Job(mapper, reducer, inputs=books, num_reducers=2, split_size=200_000)
    with zmqmr.LocalCluster(workers=2, heartbeat_interval=0.2) as cluster:
        result = cluster.client().run(job)
    print("CORRECT" if dict(result.items()) == dict(expected) else "WRONG", flush=True)
    """
)


def _run(tmp_path, on_pty: bool) -> str:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": REPO, "COLUMNS": "120"}
    cmd = [sys.executable, str(script), *BOOKS[:2]]
    if not on_pty:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
        assert out.returncode == 0, out.stderr
        return out.stdout + out.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 240)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        proc.wait(60)
    assert proc.returncode == 0, b"".join(chunks)[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_run_on_a_terminal_shows_map_and_reduce_bars_with_rate(tmp_path):
    text = _run(tmp_path, on_pty=True)
    assert "CORRECT" in text
    name = "__main__.mapper"
    assert f"{name}" in text and " map" in text and " reduce" in text
    assert "100%" in text
    assert "task/s" in text or "s/task" in text  # tqdm's rate
    assert "\r" in text or "\x1b[" in text  # redrawn in place


def test_run_without_a_terminal_shows_no_progress(tmp_path):
    text = _run(tmp_path, on_pty=False)
    assert "CORRECT" in text
    assert "task/s" not in text and "s/task" not in text and "%|" not in text
