"""The master's result store: bounded in memory, the rest in files, damage read as lost."""

from __future__ import annotations

import os

from zmqmr.results import ResultStore

KB = 1024


def test_results_beyond_the_limit_go_to_disk_not_memory(tmp_path):
    store = ResultStore(limit=100 * KB)
    blobs = {f"j{i}": [os.urandom(30 * KB), b"", os.urandom(10 * KB)] for i in range(10)}
    for job_id, b in blobs.items():
        store.put(job_id, b)
    assert store.in_memory <= 100 * KB  # 10 results of 40 KiB: two in memory, eight on disk
    assert store.in_memory == 2 * 40 * KB
    for job_id, b in blobs.items():
        assert store.get(job_id) == b
    store.drop("j0")
    store.drop("j9")
    assert store.get("j0") is None and store.get("j9") is None
    assert store.in_memory == 40 * KB
    spill = store._dir
    assert spill is not None and os.path.isdir(spill)
    store.close()
    assert not os.path.exists(spill)  # the temporary spill directory goes with the store


def test_a_durable_store_writes_every_result_and_finds_it_again(tmp_path):
    store = ResultStore(limit=1 << 20, directory=str(tmp_path / "results"))
    store.put("j1", [b"abc", b"defg"])
    assert os.path.exists(tmp_path / "results" / "j1")  # in memory too, but also on disk
    store.close()
    assert os.path.exists(tmp_path / "results" / "j1")  # a state dir's files stay
    again = ResultStore(limit=1 << 20, directory=str(tmp_path / "results"))
    assert again.get("j1") == [b"abc", b"defg"]
    again.put("j2", [b"x"])
    again.retain({"j2"})
    assert again.get("j1") is None and again.get("j2") == [b"x"]


def test_a_damaged_result_file_reads_as_missing_not_as_wrong_bytes(tmp_path):
    store = ResultStore(limit=1, directory=str(tmp_path))
    store.put("j1", [b"important result " * 100])
    path = tmp_path / "j1"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    assert store.get("j1") is None
