"""A reduce's result blocks with a part file: counted from the lines while the lines
are the records, read back and encoded only if they may fit, the same blocks as
records encoded as they come (``reduceside.ResultBlocks``)."""

from __future__ import annotations

import pytest

from zmqmr import mapoutput, reduceside

B = mapoutput.BLOCK_GROUPS


def expected(records, limit):
    """The blocks of ``records`` BLOCK_GROUPS at a time, or None past ``limit`` bytes."""
    blocks = [mapoutput.encode_block(records[i : i + B]) for i in range(0, len(records), B)]
    blob = b"".join(blocks)
    return None if len(blob) > limit else blob


def run(tmp_path, batches, limit, part_file=True, exact=None):
    """The batches through ResultBlocks as a reduce hands them over; the blob (and with
    ``exact``, a list, whether the file's lines are the records is appended to it)."""
    path = tmp_path / "part"
    out = open(path, "w", encoding="utf-8", errors="surrogateescape") if part_file else None
    results = reduceside.ResultBlocks(limit, out, str(path))
    try:
        for keys, values in batches:
            lines = "".join([f"{k}\t{v}\n" for k, v in zip(keys, values)])
            all_str = reduceside._all_str(keys, values)
            results.add(keys, values, lines if part_file else None, all_str)
            if out is not None:
                out.write(lines)
        blob = results.finish()
    finally:
        if out is not None:
            out.close()
    if exact is not None:
        exact.append(results.exact)
    return blob


def lines_of(path):
    """The part file read as ``JobResult.text_items`` reads it."""
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        return [tuple(line[:-1].partition("\t")[::2]) for line in f]


def str_batches(n, size=700, start=0):
    spans = [range(a, min(a + size, n)) for a in range(start, n, size)]
    return [([f"k{i:07d}" for i in r], [f"v{i}" * 3 for i in r]) for r in spans]


def records_of(batches):
    return [(k, v) for keys, values in batches for k, v in zip(keys, values)]


@pytest.mark.parametrize("n", [0, 1, B - 1, B, 3 * B + 17])
def test_lines_that_are_the_records_give_the_blocks_of_the_records(tmp_path, n):
    batches = str_batches(n)
    assert run(tmp_path, batches, 1 << 30) == expected(records_of(batches), 1 << 30)


def test_a_batch_that_is_not_its_lines_reads_back_the_lines_before_it(tmp_path):
    # str records, then batches the lines cannot give back, then str records again.
    odd = [
        (["m1", "m2"], [1, 2]),  # an int value
        (["m3"], ["a\tb"]),  # a tab in a value
        (["m4"], ["caf\u00e9"]),  # not ASCII
        (["m5"], ["\udc80x"]),  # a surrogate the file writes as one byte
        (["m6"], ["r\rr"]),  # a carriage return, kept as it is
    ]
    batches = str_batches(B + 5) + odd + str_batches(B + 2 * B, start=B + 5)
    records = records_of(batches)
    assert run(tmp_path, batches, 1 << 30) == expected(records, 1 << 30)
    assert run(tmp_path, batches, 1 << 30, part_file=False) == expected(records, 1 << 30)


def test_blocks_past_the_limit_are_none_either_way(tmp_path):
    batches = str_batches(3 * B)
    size = len(expected(records_of(batches), 1 << 30))
    chars = sum(len(k) + len(v) + 2 for k, v in records_of(batches))
    assert chars < size  # a record encodes to more bytes than its line
    for limit in (chars - 1, chars, (chars + size) // 2, size - 1, size):
        want = expected(records_of(batches), limit)
        assert run(tmp_path, batches, limit) == want
        assert run(tmp_path, batches, limit, part_file=False) == want


def test_results_whose_lines_pass_the_limit_are_never_encoded(tmp_path, monkeypatch):
    encoded = []
    real = mapoutput.encode_block
    monkeypatch.setattr(mapoutput, "encode_block", lambda r: encoded.append(len(r)) or real(r))
    batches = str_batches(20 * B)
    assert run(tmp_path, batches, 64 << 10) is None
    assert encoded == []
    # Without a part file the same records are encoded until they pass the limit.
    assert run(tmp_path, batches, 64 << 10, part_file=False) is None
    assert encoded


class Shout(str):
    """A str whose format differs from its characters."""

    def __format__(self, spec):
        return self.upper()


@pytest.mark.parametrize(
    "keys, values",
    [
        ([], []),
        (["a", "b\tc", ""], ["x", "", "y\nz"]),
        ([f"k{i:05d}" for i in range(3000)], [f"v{i}" * (i % 7) for i in range(3000)]),
        (["a", "b"], [1, 2.5]),
        ([1, (2, 3)], ["x", None]),
        (["a", Shout("b")], ["x", "y"]),
        (["a", "b"], [Shout("x"), "é\udcff"]),
    ],
)
def test_a_batchs_lines_are_each_record_formatted_by_an_f_string(keys, values):
    want = "".join([f"{k}\t{v}\n" for k, v in zip(keys, values)])
    assert reduceside._lines(keys, values, reduceside._all_str(keys, values)) == want


ODD_BUT_EXACT = [
    (["n1"], ["caf\u00e9"]),  # not ASCII
    (["n2"], ["\udc80x"]),  # a surrogate the file writes as one byte
    (["n3"], ["r\rr"]),  # a carriage return: read back with newline="\\n"
    (["n4"], ["a\u2028b\x0cc"]),  # what str.splitlines would split on
    (["n5"], [""]),
]


@pytest.mark.parametrize("limit", [1 << 30, 64 << 10, 10])
def test_str_lines_without_tab_or_newline_are_the_records_past_the_limit_too(tmp_path, limit):
    batches = str_batches(3 * B) + ODD_BUT_EXACT + str_batches(5 * B, start=3 * B)
    exact: list[bool] = []
    blob = run(tmp_path, batches, limit, exact=exact)
    assert exact == [True]
    assert lines_of(tmp_path / "part") == records_of(batches)
    assert blob == expected(records_of(batches), limit)


@pytest.mark.parametrize(
    "odd",
    [
        (["m1", "m2"], [1, "2"]),  # an int value: its line says "1"
        (["m3"], ["a\tb"]),  # a tab in a value
        (["m\t4"], ["b"]),  # a tab in a key
        (["m5"], ["a\nb"]),  # a newline in a value
        ([5], ["x"]),  # an int key
        ([Shout("m6")], ["x"]),  # a str subclass
    ],
)
@pytest.mark.parametrize("where", ["first", "after the limit"])
def test_one_record_whose_line_is_not_itself_makes_the_file_not_the_results(
    tmp_path, odd, where
):
    batches = [odd, *str_batches(4 * B)] if where == "first" else [*str_batches(4 * B), odd]
    exact: list[bool] = []
    blob = run(tmp_path, batches, 16 << 10, exact=exact)
    assert blob is None and exact == [False]


def test_without_a_part_file_nothing_is_exact(tmp_path):
    exact: list[bool] = []
    run(tmp_path, str_batches(10), 1 << 30, part_file=False, exact=exact)
    assert exact == [False]
