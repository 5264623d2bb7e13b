"""The journal file: entries round-trip, a torn tail is cut, other damage is refused by name,
an older format is refused, and a directory serves one master (a lock).

Real files in tmp_path; no sockets.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

import pytest

from zmqmr import journal
from zmqmr.journal import Entry, Journal, StateDirError, encode_entry


def write(directory: str, entries: list[Entry]) -> Journal:
    j = Journal(directory)
    j.replay()
    j.rewrite([])
    for e in entries:
        j.append(e)
    j.sync()
    return j


ENTRIES = [
    Entry("job", {"job": "j1", "spec": {"name": "wc"}}, [b"code", b"", b"records" * 100]),
    Entry("attempt", {"job": "j1", "kind": "map", "id": 7}),
    Entry("end", {"job": "j1", "status": "succeeded"}),
]


def test_entries_come_back_in_order_with_their_blobs(tmp_path):
    write(str(tmp_path), ENTRIES).close()
    j = Journal(str(tmp_path))
    assert j.replay() == ENTRIES
    j.close()


def test_nothing_is_on_disk_before_sync(tmp_path):
    j = write(str(tmp_path), [])
    size = os.path.getsize(j.path)
    j.append(ENTRIES[0])
    assert j.dirty and os.path.getsize(j.path) == size
    j.sync()
    assert not j.dirty and os.path.getsize(j.path) == size + len(encode_entry(ENTRIES[0]))
    j.close()


@pytest.mark.parametrize("cut", [1, 4, 9, 20])
def test_a_torn_last_entry_is_ignored(tmp_path, cut):
    write(str(tmp_path), ENTRIES).close()
    path = str(tmp_path / "journal")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - cut)
    j = Journal(str(tmp_path))
    assert j.replay() == ENTRIES[:2]
    j.close()


def test_a_last_entry_torn_in_place_fails_its_checksum_and_is_ignored(tmp_path):
    write(str(tmp_path), ENTRIES).close()
    path = str(tmp_path / "journal")
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"\xff")
    j = Journal(str(tmp_path))
    assert j.replay() == ENTRIES[:2]
    j.close()


def test_damage_before_the_last_entry_is_refused_naming_the_file(tmp_path):
    write(str(tmp_path), ENTRIES).close()
    path = str(tmp_path / "journal")
    first = len(journal.MAGIC) + 4
    with open(path, "r+b") as f:
        f.seek(first + 8 + 10)  # inside the first entry's payload
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))
    j = Journal(str(tmp_path))
    with pytest.raises(StateDirError, match="journal is damaged.*checksum") as info:
        j.replay()
    assert path in str(info.value)
    j.close()


def test_a_journal_of_another_format_version_is_refused_not_misread(tmp_path):
    write(str(tmp_path), ENTRIES).close()
    path = str(tmp_path / "journal")
    with open(path, "r+b") as f:
        f.seek(len(journal.MAGIC))
        f.write(struct.pack(">I", journal.VERSION + 1))
    j = Journal(str(tmp_path))
    with pytest.raises(StateDirError, match=f"format version {journal.VERSION + 1}"):
        j.replay()
    j.close()


def test_a_foreign_file_named_journal_is_refused(tmp_path):
    (tmp_path / "journal").write_bytes(b"hello, this is not a journal at all\n")
    j = Journal(str(tmp_path))
    with pytest.raises(StateDirError, match="is not a zmqmr journal"):
        j.replay()
    j.close()


def test_a_directory_of_other_files_is_refused(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(StateDirError, match="not a zmqmr state directory.*thesis.tex"):
        Journal(str(tmp_path))
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_an_unusable_path_is_refused_clearly(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateDirError, match="cannot use .* as a state directory"):
        Journal(str(tmp_path / "file" / "sub"))


def test_a_second_master_cannot_open_a_held_directory(tmp_path):
    j = Journal(str(tmp_path))
    with pytest.raises(StateDirError, match="held by another master"):
        Journal(str(tmp_path))
    j.close()
    Journal(str(tmp_path)).close()  # free again once closed


def test_the_lock_holds_against_another_process(tmp_path):
    j = Journal(str(tmp_path))
    code = (
        "import sys; from zmqmr.journal import Journal, StateDirError\n"
        "try:\n    Journal(sys.argv[1])\nexcept StateDirError as e:\n    print(e); sys.exit(3)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    j.close()
    assert out.returncode == 3 and "held by another master" in out.stdout


def test_rewrite_replaces_the_history_atomically(tmp_path):
    j = write(str(tmp_path), ENTRIES)
    j.rewrite([ENTRIES[2]])
    j.append(ENTRIES[1])
    j.sync()
    j.close()
    j = Journal(str(tmp_path))
    assert j.replay() == [ENTRIES[2], ENTRIES[1]]
    assert not os.path.exists(str(tmp_path / "journal.tmp"))
    j.close()
