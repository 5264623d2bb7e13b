"""Input splits: every line read exactly once, at the right byte offset, whatever the split size."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import random
import threading
from pathlib import Path

import pytest

from zmqmr import inputs
from zmqmr.errors import JobSubmitError
from zmqmr.inputs import (
    WholeFiles,
    open_split,
    read_split,
    record_splits,
    resolve_paths,
    text_splits,
    whole_file_splits,
)
from zmqmr.job import Job, make_splits


def direct_lines(path: str) -> list[tuple[tuple[str, int], str]]:
    """The records of a file read without zmqmr: ((path, byte offset), line without its
    \\n and a \\r before it)."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl
        line = data[pos:end].removesuffix(b"\r")
        out.append(((path, pos), line.decode("utf-8", "surrogateescape")))
        pos = end + 1
    return out


def read_all(path: str, split_size: int) -> list[tuple[tuple[str, int], str]]:
    """Every split's records, concatenated in split order; each record within its split."""
    out = []
    for desc in text_splits([path], split_size):
        records = open_split(desc)
        for (p, offset), _ in records:
            assert p == path
            assert desc["start"] <= offset < max(desc["end"], 1), (desc, offset)
        out += records
    return out


def write(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


CONTENTS = {
    "final_newline": b"alpha\nbeta\n\ngamma delta\nepsilon\n",
    "no_final_newline": b"alpha\nbeta\n\ngamma delta\nepsilon",
    "empty": b"",
    "only_newlines": b"\n\n\n\n\n",
    "one_line_no_newline": b"just one line",
    "crlf": b"one\r\ntwo\r\n\r\nthree\r\n",
    "utf8": "naïve café\nüber\n日本語のテキスト\n\nend".encode(),
    "invalid_utf8": b"ok\n\xff\xfe bad\nmid\xc3\n\x80tail",
    "long_lines": b"x" * 50 + b"\n" + b"y" * 3 + b"\n" + b"z" * 70,
}


@pytest.mark.parametrize("name", sorted(CONTENTS))
@pytest.mark.parametrize("split_size", [1, 2, 3, 7, 64, "size", "larger"])
def test_every_line_is_read_once_in_order_with_its_byte_offset(tmp_path, name, split_size):
    data = CONTENTS[name]
    path = write(tmp_path, "in.txt", data)
    if split_size == "size":
        split_size = max(1, len(data))
    elif split_size == "larger":
        split_size = len(data) + 100
    assert read_all(path, split_size) == direct_lines(path)


def test_crlf_lines_lose_the_carriage_return_and_keep_their_byte_offsets(tmp_path):
    path = write(tmp_path, "crlf.txt", CONTENTS["crlf"])
    for split_size in (1, 3, 1000):
        assert read_all(path, split_size) == [
            ((path, 0), "one"),
            ((path, 5), "two"),
            ((path, 10), ""),
            ((path, 12), "three"),
        ]


@pytest.mark.parametrize("text", ["ascii", "utf-8"])
def test_only_a_carriage_return_that_ends_a_line_is_dropped(tmp_path, text):
    word = "x" if text == "ascii" else "é"
    data = f"a\rb\r\n{word}\n\r\r\nlf\nlast\r".encode()
    path = write(tmp_path, "mixed.txt", data)
    values = [v for _, v in read_all(path, 4)]
    assert values == ["a\rb", word, "\r", "lf", "last"]


def test_offsets_are_byte_offsets_for_non_ascii_text(tmp_path):
    path = write(tmp_path, "u.txt", "é\nx\n日本\ny".encode())
    assert read_all(path, 2) == [
        ((path, 0), "é"),
        ((path, 3), "x"),
        ((path, 5), "日本"),
        ((path, 12), "y"),
    ]


def test_invalid_utf8_round_trips_through_surrogateescape(tmp_path):
    path = write(tmp_path, "bad.txt", CONTENTS["invalid_utf8"])
    values = [v for _, v in read_all(path, 4)]
    assert values[1] == "\udcff\udcfe bad"
    encoded = b"\n".join(v.encode("utf-8", "surrogateescape") for v in values)
    assert encoded == CONTENTS["invalid_utf8"]


def test_empty_file_has_one_split_and_no_record(tmp_path):
    path = write(tmp_path, "empty.txt", b"")
    assert text_splits([path], 10) == [{"kind": "text", "path": path, "start": 0, "end": 0}]
    assert read_all(path, 10) == []


def test_only_newlines_are_empty_records(tmp_path):
    path = write(tmp_path, "nl.txt", b"\n\n\n")
    assert read_all(path, 1) == [((path, 0), ""), ((path, 1), ""), ((path, 2), "")]


def test_splits_cover_each_file_in_split_size_ranges(tmp_path):
    a = write(tmp_path, "a.txt", b"0123456789" * 3)
    b = write(tmp_path, "b.txt", b"xy\n")
    splits = text_splits([a, b], 7)
    assert [(s["path"], s["start"], s["end"]) for s in splits] == [
        (a, 0, 7),
        (a, 7, 14),
        (a, 14, 21),
        (a, 21, 28),
        (a, 28, 30),
        (b, 0, 3),
    ]
    assert len(text_splits([a], 1)) == 30
    assert len(text_splits([a], 30)) == 1 and len(text_splits([a], 1000)) == 1


@pytest.fixture(params=["speedups", "pure"])
def keys_made(request, monkeypatch):
    """Text records' keys made by the C iterator (``line_keys``) or by itertools."""
    if request.param == "pure":
        monkeypatch.setattr(inputs, "speedups", None)
    else:
        assert inputs.speedups is not None, "zmqmr._speedups was not compiled"
    return request.param


@pytest.mark.parametrize("read_chunk", [1, 2, 5, 13, 1024 * 1024])
def test_random_contents_and_split_sizes_read_like_the_file(
    tmp_path, monkeypatch, read_chunk, keys_made
):
    # hypothesis is not installed here: a seeded random loop plays its part; tiny
    # read chunks put chunk boundaries inside lines, at newlines and past split ends
    monkeypatch.setattr("zmqmr.inputs.READ_CHUNK", read_chunk)
    rng = random.Random(20240501 + read_chunk)
    pieces = [b"a", b"bc", b" ", b"\n", b"\n", b"\r\n", b"\r", b"\x00"]
    pieces += ["é".encode(), "日".encode(), b"\xff"]
    path = str(tmp_path / "random.txt")
    for case in range(400):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 60)))
        with open(path, "wb") as f:
            f.write(data)
        split_size = rng.randrange(1, 70)
        expected = direct_lines(path)
        got = read_all(path, split_size)
        assert got == expected, f"case {case}: data={data!r} split_size={split_size}"


def test_keys_a_consumer_keeps_keep_their_offsets(tmp_path, keys_made):
    # line_keys reuses a key tuple only when nothing but itself holds it: keys kept
    # (every third here, and the one held across each step) keep their offsets
    data = b"".join(b"w" * (i % 7) + b"\n" for i in range(3000))
    path = write(tmp_path, "keys.txt", data)
    want = [k for k, _ in direct_lines(path)]
    kept = {}
    previous = None
    split = {"kind": "text", "path": path, "start": 0, "end": len(data)}
    for i, (key, _) in enumerate(read_split(split)):
        assert previous is None or previous == want[i - 1]
        if i % 3 == 0:
            kept[i] = key
        previous = key
    assert len(kept) == 1000
    assert all(key == want[i] for i, key in kept.items())


# -- compressed and binary files --------------------------------------------------------

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}
TEXT = "first line\r\nsecond, naïve\n\n" + "long " * 300 + "\nno newline at the end\r"


def decompressed_lines(path: str, data: bytes) -> list[tuple[tuple[str, int], str]]:
    """What a compressed file's records must be: the lines of ``data``, the text it holds."""
    plain = path + ".plain"
    with open(plain, "wb") as f:
        f.write(data)
    return [((path, offset), line) for (_, offset), line in direct_lines(plain)]


@pytest.mark.parametrize("suffix", list(COMPRESS))
@pytest.mark.parametrize("read_chunk", [3, 64, 1024 * 1024])
def test_compressed_files_are_one_split_read_decompressed(
    tmp_path, monkeypatch, suffix, read_chunk
):
    monkeypatch.setattr("zmqmr.inputs.READ_CHUNK", read_chunk)
    data = TEXT.encode()
    path = write(tmp_path, "book.txt" + suffix, COMPRESS[suffix](data))
    size = os.path.getsize(path)
    (split,) = text_splits([path], 10)  # a split size far below the file's: still one split
    assert split == {"kind": "text", "path": path, "start": 0, "end": size}
    reader = read_split(split)
    records = list(reader)
    assert records == decompressed_lines(path, data)
    assert [v for _, v in records][:2] == ["first line", "second, naïve"]
    assert records[-1][1] == "no newline at the end"
    assert reader.fraction() == 1.0


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_a_split_of_a_compressed_file_past_its_start_reads_nothing(tmp_path, suffix):
    path = write(tmp_path, "b" + suffix, COMPRESS[suffix](b"one\ntwo\n"))
    size = os.path.getsize(path)
    assert open_split({"kind": "text", "path": path, "start": 0, "end": 1})[1:] == [
        ((path, 4), "two")
    ]
    assert open_split({"kind": "text", "path": path, "start": 1, "end": size}) == []


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_empty_compressed_files_hold_no_record(tmp_path, suffix):
    empty_stream = write(tmp_path, "a.txt" + suffix, COMPRESS[suffix](b""))
    no_bytes = write(tmp_path, "b.txt" + suffix, b"")
    for path in (empty_stream, no_bytes):
        assert [r for d in text_splits([path], 1 << 20) for r in open_split(d)] == []


def test_concatenated_gzip_members_are_read_as_one_text(tmp_path):
    path = write(tmp_path, "two.gz", gzip.compress(b"a\nb") + gzip.compress(b"c\nd\n"))
    assert open_split(text_splits([path], 1 << 20)[0]) == [
        ((path, 0), "a"),
        ((path, 2), "bc"),
        ((path, 5), "d"),
    ]


def test_the_suffix_decides_and_case_does_not_matter(tmp_path):
    upper = write(tmp_path, "LOG.GZ", gzip.compress(b"x\r\n"))
    assert open_split(text_splits([upper], 1)[0]) == [((upper, 0), "x")]
    # gzip bytes under another name are just bytes, read as lines like any file
    raw = gzip.compress(b"x\n" * 100)
    other = write(tmp_path, "log.dat", raw)
    assert [r for d in text_splits([other], 16) for r in open_split(d)] == direct_lines(other)


def test_binary_files_are_read_as_lines_like_any_file(tmp_path):
    data = bytes(random.Random(7).randrange(256) for _ in range(5000))
    path = write(tmp_path, "image.png", data)
    for split_size in (1, 97, 1 << 20):
        assert read_all(path, split_size) == direct_lines(path)


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_whole_files_are_read_decompressed(tmp_path, suffix):
    path = write(tmp_path, "doc.txt" + suffix, COMPRESS[suffix](TEXT.encode()))
    ((key, value),) = open_split({"kind": "files", "paths": [path]})
    assert key == path and value == TEXT


# -- resolving paths -------------------------------------------------------------------


def test_resolve_paths_expands_globs_sorted_to_absolute_paths(tmp_path, monkeypatch):
    for name in ("b.txt", "a.txt", "c.log"):
        write(tmp_path, name, b"x\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_paths(["*.txt", "c.log"]) == [
        str(tmp_path / "a.txt"),
        str(tmp_path / "b.txt"),
        str(tmp_path / "c.log"),
    ]
    assert resolve_paths("c.log") == [str(tmp_path / "c.log")]


def test_missing_path_is_refused_by_name(tmp_path):
    missing = str(tmp_path / "nope.txt")
    with pytest.raises(JobSubmitError, match="nope.txt"):
        resolve_paths([missing])


def test_glob_matching_nothing_is_refused_by_name(tmp_path):
    with pytest.raises(JobSubmitError, match=r"\*\.csv"):
        resolve_paths([str(tmp_path / "*.csv")])


def test_directory_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(JobSubmitError, match="directory"):
        resolve_paths([str(tmp_path / "sub")])
    with pytest.raises(JobSubmitError, match="directory"):
        resolve_paths([str(tmp_path / "*")])


def test_no_inputs_is_refused():
    with pytest.raises(JobSubmitError, match="no inputs"):
        resolve_paths([])


# -- whole files -----------------------------------------------------------------------


def test_whole_files_are_grouped_by_size_and_read_whole(tmp_path):
    paths = [write(tmp_path, f"f{i}.txt", f"file {i}\nline two\xe9\n".encode()) for i in range(3)]
    size = os.path.getsize(paths[0])
    splits = whole_file_splits(paths, 2 * size)
    assert splits == [{"kind": "files", "paths": paths[:2]}, {"kind": "files", "paths": paths[2:]}]
    records = [r for d in splits for r in open_split(d)]
    assert records == [(p, Path(p).read_text(encoding="utf-8")) for p in paths]
    assert len(whole_file_splits(paths, 1)) == 3


def test_whole_files_input_of_a_job_resolves_globs(tmp_path):
    paths = [write(tmp_path, f"f{i}.txt", b"x\n") for i in range(2)]
    job = Job(lambda k, v: [], lambda k, vs: 0, WholeFiles(str(tmp_path / "*.txt")))
    descs, blobs = make_splits(job)
    assert blobs == []
    assert [p for d in descs for p in d["paths"]] == paths
    assert WholeFiles("one").paths == ["one"]


def test_whole_files_keep_invalid_utf8(tmp_path):
    path = write(tmp_path, "bin.txt", b"a\xffb")
    ((key, value),) = open_split({"kind": "files", "paths": [path]})
    assert key == path and value.encode("utf-8", "surrogateescape") == b"a\xffb"


# -- in-memory records ---------------------------------------------------------------------


def test_records_are_cut_into_splits_that_hold_every_record_in_order():
    records = [(i, f"value {i} " * 3) for i in range(200)]
    descs, blobs = record_splits(records, 256)
    assert len(descs) == len(blobs) > 1
    chunks = [open_split(desc, blob) for desc, blob in zip(descs, blobs)]
    assert all(chunks)
    assert [r for chunk in chunks for r in chunk] == records


def test_records_fitting_one_split_make_one_split():
    descs, blobs = record_splits([("a", 1), ["b", 2]], 1 << 20)
    assert descs == [{"kind": "records"}]
    assert open_split(descs[0], blobs[0]) == [("a", 1), ("b", 2)]


def test_small_split_size_gives_at_most_one_split_per_record():
    descs, blobs = record_splits([(i, i) for i in range(5)], 1)
    assert [open_split(d, b) for d, b in zip(descs, blobs)] == [[(i, i)] for i in range(5)]


@pytest.mark.parametrize("bad", [("k", "v", "extra"), "ab", 5, None, ("only",)], ids=repr)
def test_record_that_is_not_a_pair_is_refused_by_index(bad):
    with pytest.raises(JobSubmitError, match="record 2"):
        record_splits([("a", 1), ("b", 2), bad], 1024)


def test_empty_record_list_is_refused():
    with pytest.raises(JobSubmitError, match="empty"):
        record_splits([], 1024)


def test_records_that_cannot_be_pickled_are_refused():
    with pytest.raises(JobSubmitError, match="pickled"):
        record_splits([("lock", threading.Lock())], 1024)


def test_records_with_lambdas_travel_by_cloudpickle():
    descs, blobs = record_splits([("f", lambda: 42)], 1024)
    ((key, fn),) = open_split(descs[0], blobs[0])
    assert key == "f" and fn() == 42


def test_reader_reports_the_fraction_of_its_split_consumed(tmp_path, monkeypatch):
    monkeypatch.setattr("zmqmr.inputs.READ_CHUNK", 10)
    path = write(tmp_path, "f.txt", b"".join(b"line %02d\n" % i for i in range(20)))
    reader = read_split({"kind": "text", "path": path, "start": 0, "end": 160})
    seen = []
    for _ in reader:
        seen.append(reader.fraction())
    assert len(seen) == 20 and seen == sorted(seen) and 0 < seen[10] < 1
    assert reader.fraction() == 1.0


def test_open_split_refuses_unknown_kind_and_records_without_blob():
    with pytest.raises(ValueError, match="kind"):
        open_split({"kind": "tape"})
    with pytest.raises(ValueError, match="blob"):
        open_split({"kind": "records"})
