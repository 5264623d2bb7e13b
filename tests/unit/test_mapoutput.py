"""Map output files: blocks, checksums, the index; no sockets (see
tests/integration/test_shuffle_server.py for the server and the fetch)."""

from __future__ import annotations

import array
import dataclasses
import os
from fractions import Fraction
from typing import Any

import pytest
from conftest import write_output

from zmqmr.errors import CorruptOutput, ShuffleError
from zmqmr.layout import job_dir, map_output_path
from zmqmr.mapoutput import (
    BLOCK_BYTES,
    BLOCK_HEADER,
    CODEC_PICKLE,
    FOOTER,
    INDEX_ENTRY,
    PART_GROUPS,
    PART_VALUES,
    MapOutputWriter,
    decode_parts,
    encode_block,
    encode_groups,
    file_segment_groups,
    iter_blocks,
    segment_groups,
    verify_file_segment,
    verify_segment,
)
from zmqmr.outputreader import OutputReader, read_index, read_segment
from zmqmr.shuffle import local_segment


@dataclasses.dataclass(frozen=True, order=True)
class Point:
    x: int
    y: int


def read_partition(path: str, p: int) -> list[Any]:
    _, data = read_segment(path, p)
    return list(segment_groups(data))


def read_everything(path: str) -> None:
    """Read the index and decode every segment, as a reducer would."""
    for p in range(len(read_index(path))):
        read_partition(path, p)


# -- the file format -------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 3, 10])
def test_segments_round_trip_including_empty_partitions(tmp_path, r):
    path = str(tmp_path / "m.out")
    written = write_output(path, r)
    segments = read_index(path)
    assert len(segments) == r
    for p in range(r):
        assert read_partition(path, p) == written[p]
        assert segments[p].groups == len(written[p])
        if not written[p]:
            assert segments[p].length == 0
    assert [s.offset + s.length for s in segments[:-1]] == [s.offset for s in segments[1:]]


def test_close_fills_partitions_never_written_with_empty_segments(tmp_path):
    path = str(tmp_path / "m.out")
    w = MapOutputWriter(path, 4)
    w.write_segment([("a", [1])])
    segments = w.close()
    assert [s.groups for s in segments] == [1, 0, 0, 0]
    assert read_index(path) == segments
    assert w.bytes_written == os.path.getsize(path)


def test_file_appears_only_when_closed_and_abort_leaves_nothing(tmp_path):
    path = str(tmp_path / "m.out")
    w = MapOutputWriter(path, 1)
    w.write_segment([("a", [1])])
    assert not os.path.exists(path)
    w.close()
    assert os.path.exists(path)
    w2 = MapOutputWriter(str(tmp_path / "n.out"), 1)
    w2.write_segment([("a", [1])])
    w2.abort()
    assert os.listdir(tmp_path) == ["m.out"]


def test_more_segments_than_partitions_is_refused(tmp_path):
    w = MapOutputWriter(str(tmp_path / "m.out"), 1)
    w.write_segment([])
    with pytest.raises(ValueError):
        w.write_segment([])
    w.abort()


def as_lists(groups):
    """Groups with their values as lists (a part of one-value groups decodes them as tuples)."""
    return [(k, list(vs)) for k, vs in groups]


def _blocks_of(tmp_path, groups):
    path = str(tmp_path / "m.out")
    w = MapOutputWriter(path, 1)
    w.write_segment(iter(groups))
    w.close()
    _, data = read_segment(path, 0)
    return data, [len(payload) for _, payload in iter_blocks(data)]


def test_blocks_are_cut_by_bytes_at_about_block_bytes(tmp_path):
    groups = [(f"k{i:06d}", ["x" * 1000]) for i in range(8000)]  # about 8 MB
    data, sizes = _blocks_of(tmp_path, groups)
    assert as_lists(segment_groups(data)) == groups
    assert 6 <= len(sizes) <= 16, sizes
    assert max(sizes) < 1.5 * BLOCK_BYTES, sizes


def test_a_blocks_groups_are_decoded_a_part_at_a_time(tmp_path):
    groups = [(i, [i]) for i in range(PART_GROUPS * 5 + 3)]
    data, sizes = _blocks_of(tmp_path, groups)
    assert as_lists(segment_groups(data)) == groups
    parts = [part for codec, payload in iter_blocks(data) for part in decode_parts(codec, payload)]
    assert len(parts) >= 6 and max(map(len, parts)) <= PART_GROUPS
    assert as_lists(g for part in parts for g in part) == groups


def test_a_key_with_more_values_than_a_block_spans_consecutive_groups(tmp_path):
    values = [f"value {i}" for i in range(200_000)]
    groups = [("a", [1]), ("hot", values), ("z", [2, 3])]
    data, sizes = _blocks_of(tmp_path, groups)
    got = list(segment_groups(data))
    assert len(sizes) >= 2  # about 2.6 MB
    assert got[0] == ("a", [1]) and got[-1] == ("z", [2, 3])
    middle = got[1:-1]
    assert {k for k, _ in middle} == {"hot"} and len(middle) > 5
    assert [v for _, vs in middle for v in vs] == values
    assert max(len(vs) for _, vs in middle) <= PART_VALUES


def test_a_value_larger_than_a_block_gets_a_block_of_its_own(tmp_path):
    big = "y" * (3 * BLOCK_BYTES)
    groups = [("a", ["small", big, "small"]), ("b", [big])]
    data, sizes = _blocks_of(tmp_path, groups)
    got = list(segment_groups(data))
    assert [(k, v) for k, vs in got for v in vs] == [
        ("a", "small"),
        ("a", big),
        ("a", "small"),
        ("b", big),
    ]


def test_read_segment_serves_byte_ranges(tmp_path):
    path = str(tmp_path / "m.out")
    write_output(path, 3)
    total, whole = read_segment(path, 2)
    assert total == len(whole)
    assert read_segment(path, 2, 5, 7) == (total, whole[5:12])
    assert read_segment(path, 2, total - 3, 100) == (total, whole[-3:])
    assert read_segment(path, 2, total) == (total, b"")
    with pytest.raises(ShuffleError):
        read_segment(path, 2, total + 1)
    with pytest.raises(ShuffleError):
        read_segment(path, 3)


def test_file_segment_groups_equals_segment_groups(tmp_path):
    path = str(tmp_path / "m.out")
    write_output(path, 10, lambda r, p: [(i, [p] * (i % 4)) for i in range(p * 700)])
    for p, seg in enumerate(read_index(path)):
        from_file = list(file_segment_groups(path, seg.offset, seg.length))
        assert from_file == read_partition(path, p)
        verify_file_segment(path, seg.offset, seg.length)


# -- codecs ----------------------------------------------------------------------------


def codec_of(block: bytes) -> int:
    return BLOCK_HEADER.unpack_from(block)[0]


def test_plain_types_round_trip_exactly():
    groups = [
        ("k", [1, 2.5, None, True, b"raw", "text", (1, ("n", 2)), [3], {"d": 1}, 10**40]),
        (("tuple", 1), [frozenset({1}), {2, 3}, complex(1, 2)]),
    ]
    block = encode_block(groups)
    assert codec_of(block) == CODEC_PICKLE
    assert list(segment_groups(block)) == groups


@pytest.mark.parametrize(
    "value",
    [Fraction(1, 3), Point(1, 2), [Point(3, 4)], ("t", Fraction(2))],
    ids=["Fraction", "dataclass", "list-of-dataclass", "tuple-with-Fraction"],
)
def test_custom_objects_round_trip(value):
    groups = [("k", [value])]
    block = encode_block(groups)
    assert codec_of(block) == CODEC_PICKLE
    assert list(segment_groups(block)) == groups


def test_local_functions_fall_back_to_cloudpickle():
    def local(x: int) -> int:
        return x + 1

    (((key, (fn,)),)) = list(segment_groups(encode_block([("k", [local])])))
    assert key == "k" and fn(1) == 2


@pytest.mark.parametrize(
    "value", [bytearray(b"abc"), array.array("i", [1, 2, 3])], ids=["bytearray", "array"]
)
def test_buffer_objects_come_back_as_the_same_type_and_value(value):
    # a value that is an array (or a numpy array) must not come back as its raw
    # bytes, as it would through marshal
    (((_, (back,)),)) = list(segment_groups(encode_block([("k", [value])])))
    assert type(back) is type(value)
    assert back == value


# -- corruption ------------------------------------------------------------------------


@pytest.fixture
def small_output(tmp_path) -> tuple[str, bytes]:
    path = str(tmp_path / "m.out")
    write_output(path, 3, lambda r, p: [(f"k{p}{i}", [i]) for i in range(2)] if p != 1 else [])
    with open(path, "rb") as f:
        return path, f.read()


def regions(data: bytes, path: str) -> dict[str, range]:
    index_offset = FOOTER.unpack_from(data, len(data) - FOOTER.size)[0]
    return {
        "segment": range(0, index_offset),
        "index": range(index_offset, len(data) - FOOTER.size),
        "footer": range(len(data) - FOOTER.size, len(data)),
    }


@pytest.mark.parametrize("region", ["segment", "index", "footer"])
@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF], ids=["bit0", "bit7", "byte"])
def test_flipped_byte_anywhere_is_detected_as_corrupt_output(small_output, region, mask):
    path, data = small_output
    span = regions(data, path)[region]
    assert len(span) > 0
    undetected = []
    for i in span:
        flipped = bytearray(data)
        flipped[i] ^= mask
        with open(path, "wb") as f:
            f.write(flipped)
        try:
            read_everything(path)
        except CorruptOutput:
            continue
        except Exception as exc:  # decoded corrupt data instead of refusing it
            undetected.append((i, f"{type(exc).__name__}: {exc}"))
        else:
            undetected.append((i, "read without error"))
    assert not undetected, f"flips not reported as CorruptOutput (byte, outcome): {undetected}"


@pytest.mark.parametrize("mask", [0x01, 0xFF], ids=["bit0", "byte"])
def test_flipped_byte_in_a_spilled_segment_is_detected(small_output, tmp_path, mask):
    path, data = small_output
    seg = read_index(path)[0]
    undetected = []
    for i in range(seg.offset, seg.offset + seg.length):
        flipped = bytearray(data)
        flipped[i] ^= mask
        spill = tmp_path / "spill"
        spill.write_bytes(bytes(flipped[seg.offset : seg.offset + seg.length]))
        for check in (verify_file_segment, lambda *a: list(file_segment_groups(*a))):
            try:
                check(str(spill), 0, seg.length)
            except CorruptOutput:
                continue
            except Exception as exc:
                undetected.append((i, f"{type(exc).__name__}: {exc}"))
            else:
                undetected.append((i, "read without error"))
    assert not undetected, f"flips not reported as CorruptOutput: {undetected}"


def test_truncated_file_is_corrupt_output(small_output):
    path, data = small_output
    for n in range(len(data)):
        with open(path, "wb") as f:
            f.write(data[:n])
        with pytest.raises(CorruptOutput):
            read_everything(path)


def test_truncated_segment_data_is_corrupt_output(small_output):
    path, _ = small_output
    _, data = read_segment(path, 0)
    for n in range(1, len(data)):
        with pytest.raises(CorruptOutput):
            verify_segment(data[:n])


def test_index_entries_pointing_past_the_index_are_corrupt(tmp_path):
    import struct
    import zlib

    path = str(tmp_path / "m.out")
    index = INDEX_ENTRY.pack(0, 1000, 1)
    with open(path, "wb") as f:
        f.write(index)
        f.write(FOOTER.pack(0, zlib.crc32(index), b"ZMQMRIX1"))
    with pytest.raises(CorruptOutput, match="past the index"):
        read_index(path)
    assert struct.calcsize("<QI8s") == FOOTER.size


def test_local_segment_reads_own_output_and_reports_missing_file_as_shuffle_error(tmp_path):
    path = str(tmp_path / "m.out")
    written = write_output(path, 3)
    assert list(local_segment(path, 2).groups()) == written[2]
    with pytest.raises(ShuffleError) as info:
        local_segment(str(tmp_path / "gone.out"), 0)
    assert not isinstance(info.value, CorruptOutput)


# -- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", ["../x", "a/b", "", ".", "..", "x" * 65, "j 1", "j\x00"])
def test_job_ids_with_path_characters_are_refused(tmp_path, job_id):
    with pytest.raises(ValueError):
        job_dir(str(tmp_path), job_id)
    with pytest.raises(ValueError):
        map_output_path(str(tmp_path), job_id, 0, 1)


def test_map_output_path_lives_under_the_job_dir(tmp_path):
    path = map_output_path(str(tmp_path), "job-1_a", 3, 17)
    assert os.path.dirname(path) == os.path.join(str(tmp_path), "job-1_a")
    assert path != map_output_path(str(tmp_path), "job-1_a", 3, 18)


# -- the server and the fetch ----------------------------------------------------------


@pytest.mark.parametrize("with_reader", [False, True])
def test_a_local_segment_read_in_place_gives_the_same_groups_without_loading_them(
    tmp_path, with_reader
):
    path = str(tmp_path / "m.out")
    write_output(path, 4, lambda r, p: [(i, [p, "x" * 100]) for i in range(p * 3000)])
    reader = OutputReader() if with_reader else None
    try:
        for p in range(4):
            loaded = local_segment(path, p, reader)
            in_place = local_segment(path, p, reader, in_place=True)
            assert in_place.data is None and in_place.path == path and in_place.in_place
            assert list(in_place.groups()) == list(loaded.groups()) == read_partition(path, p)
        with pytest.raises(ShuffleError):
            local_segment(path, 4, reader, in_place=True)
        with open(path, "r+b") as f:  # a flipped byte in partition 3 is caught at once
            seg = read_index(path)[3]
            f.seek(seg.offset + seg.length // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0xFF]))
        if reader is not None:
            reader.forget()
        with pytest.raises(CorruptOutput):
            local_segment(path, 3, reader, in_place=True)
    finally:
        if reader is not None:
            reader.forget()


def test_encoding_a_hot_keys_runs_reads_few_of_them_ahead():
    # The runs of a hot key come from a merge on disk: taking PART_GROUPS of
    # them at once would hold millions of values in memory.
    pulled = 0

    def runs():
        nonlocal pulled
        for _ in range(200):
            pulled += 1
            yield "hot", list(range(10_000))

    blocks = encode_groups(runs())
    next(blocks)
    assert pulled <= 3 * BLOCK_BYTES // (10_000 * 2), pulled
    rest = sum(1 for _ in blocks)
    assert pulled == 200 and rest > 1
