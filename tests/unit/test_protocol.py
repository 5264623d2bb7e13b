"""The wire format: every message type round-trips, and anything malformed is a ProtocolError.

Property-based: strategies are derived from each message's field kinds, so a
message type added to ``zmqmr.protocol`` is covered without a line here.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmqmr import protocol as p
from zmqmr import records
from zmqmr.errors import ProtocolError
from zmqmr.records import FAST

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


def valid(kind: records.Kind) -> st.SearchStrategy[Any]:
    """Values that ``kind`` accepts (small ones: the point is shape, not size)."""
    if isinstance(kind, records.Int):
        return st.integers(max(kind.lo, -(2**63)), min(kind.hi, 2**63 - 1))
    if isinstance(kind, records.Num):
        return st.floats(kind.lo, kind.hi, allow_nan=False, allow_infinity=False)
    if isinstance(kind, records.Str):
        if kind.choices is not None:
            return st.sampled_from(sorted(kind.choices))
        if kind.pattern is not None:
            return st.from_regex(kind.pattern, fullmatch=True)
        text = st.text(max_size=min(kind.max_len, 20))
        return text.filter(str.isprintable) if kind.printable else text
    if isinstance(kind, records.Bool):
        return st.booleans()
    if isinstance(kind, records.Opt):
        return st.none() | valid(kind.kind)
    if isinstance(kind, records.ListOf):
        return st.lists(valid(kind.item), max_size=min(kind.max_len, 3))
    if isinstance(kind, records.Ints):
        return st.lists(st.integers(kind.lo, min(kind.hi, 2**63 - 1)), max_size=3)
    if isinstance(kind, records.DictOf):
        return st.dictionaries(st.text(max_size=10), valid(kind.value), max_size=3)
    if isinstance(kind, records.Obj):
        return record(kind.cls)
    raise AssertionError(kind)


SPLITS = st.one_of(
    st.builds(
        lambda a, b: p.Split("text", "/in.txt", min(a, b), max(a, b)),
        st.integers(0, 10**12),
        st.integers(0, 10**12),
    ),
    st.builds(lambda ps: p.Split("files", paths=ps), st.lists(st.text(max_size=9), min_size=1)),
    st.just(p.Split("records", blob=0, count=3, first=0)),
)


#: A reduce's locations: columns of one length, each map task once, servers that exist.
LOCATIONS = st.lists(
    st.builds(
        p.Location,
        st.integers(0, 50),
        st.integers(0, 2**63 - 1),
        st.sampled_from(["tcp://a:1", "tcp://b:2", "ipc:///x"]),
        st.integers(0, 2**63 - 1),
        st.integers(0, 2**63 - 1),
    ),
    max_size=4,
    unique_by=lambda loc: loc.map_task,
).map(p.Locations.of)


def record(cls: type[records.Record]) -> st.SearchStrategy[Any]:
    if cls is p.Split:  # its fields depend on its kind
        return SPLITS
    if cls is p.Locations:
        return LOCATIONS
    fields = {name: valid(kind) for name, kind in cls.FIELDS.items()}
    if cls is p.TaskSpec:  # every location's map task is one of the job's
        fields["num_maps"] = st.integers(51, p.MAX_MAP_TASKS)
    if cls is p.JobSpec:
        fields["splits"] = st.lists(SPLITS, min_size=1, max_size=3)
    if cls in (p.Fetch, p.Chunks):  # columns of one length, each map task once
        columns = [c for c, kind in cls.FIELDS.items() if isinstance(kind, records.Ints)]
        rows = st.lists(
            st.tuples(*(valid(cls.FIELDS[c]).map(lambda v: v[:1] or [0]) for c in columns)),
            min_size=cls is p.Fetch,
            max_size=3,
            unique_by=lambda row: row[0][0],
        )
        for c in columns:
            del fields[c]
        return st.tuples(st.fixed_dictionaries(fields), rows).map(
            lambda kw_rows: cls(
                **kw_rows[0], **{c: [r[i][0] for r in kw_rows[1]] for i, c in enumerate(columns)}
            )
        )
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


def with_blobs(cls: type[p.Message], msg: p.Message) -> p.Message:
    """Give ``msg`` blobs that agree with its header."""
    lo, _ = cls.BLOBS
    if isinstance(msg, p.Assign):
        msg.blobs = [b"x"] * (msg.has_code + msg.has_records)
    elif isinstance(msg, p.Submit):
        blobs = 1 + max([s.blob + 1 for s in msg.spec.splits if s.kind == "records"], default=0)
        msg.blobs = [b"code"] + [b"r"] * (blobs - 1)
    elif isinstance(msg, p.Chunks):
        # each part within its segment: offset + length <= total
        msg.offsets = [min(o, t) for o, t in zip(msg.offsets, msg.totals)]
        msg.lengths = [min(n % 5, t - o) for n, o, t in zip(msg.lengths, msg.offsets, msg.totals)]
        msg.blobs = [b"d" * sum(msg.lengths)]
    else:
        msg.blobs = [b"b"] * lo
    return msg


MESSAGES = st.sampled_from(sorted(p.MESSAGES.values(), key=lambda c: c.TYPE)).flatmap(
    lambda cls: record(cls).map(lambda m: with_blobs(cls, m))
)


@FUZZ
@given(MESSAGES)
def test_every_message_round_trips(msg):
    frames = p.encode(msg)
    assert frames[0] == p.VERSION and frames[1] == msg.TYPE.encode()
    assert p.decode(frames) == msg


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=5)
    | st.sampled_from([10**400, -(10**30), 2**63, -1, 1e308, "", "../x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    value[path[0]] = _replace(value[path[0]], path[1:], new)
    return value


@FUZZ
@given(MESSAGES, st.data(), JSON)
def test_a_field_of_any_wrong_value_is_a_protocol_error_never_a_crash(msg, data, new):
    header = json.loads(p.encode(msg)[2])
    path = data.draw(st.sampled_from(_paths(header)[1:] or [()]))
    mutated = _replace(header, path, new)
    frames = [p.VERSION, msg.TYPE.encode(), json.dumps(mutated).encode(), *msg.blobs]
    try:
        got = p.decode(frames)
    except ProtocolError:
        return
    assert isinstance(got, type(msg))  # the new value happened to be valid


def _outcome(cls: type[records.Record], header: Any, where: str) -> Any:
    try:
        return cls.from_json(header, where)
    except ProtocolError:
        return ProtocolError


@FUZZ
@given(MESSAGES, st.data(), JSON)
def test_the_compiled_fast_decoder_agrees_with_the_checked_one(msg, data, new):
    """``from_json(.., FAST)`` runs code compiled from the field kinds: it must accept
    and refuse exactly what the field-by-field checks do."""
    cls = type(msg)
    header = json.loads(p.encode(msg)[2])
    assert _outcome(cls, header, FAST) == _outcome(cls, header, cls.TYPE) != ProtocolError
    path = data.draw(st.sampled_from(_paths(header)[1:] or [()]))
    mutated = _replace(header, path, new)
    assert _outcome(cls, mutated, FAST) == _outcome(cls, mutated, cls.TYPE)


@FUZZ
@given(MESSAGES, st.data())
def test_unknown_and_missing_fields_are_refused(msg, data):
    header = json.loads(p.encode(msg)[2])
    extra = {**header, "surprise": 1}
    with pytest.raises(ProtocolError, match="unknown field"):
        p.decode([p.VERSION, msg.TYPE.encode(), json.dumps(extra).encode(), *msg.blobs])
    required = sorted(type(msg)._required_fields())
    if required:
        name = data.draw(st.sampled_from(required))
        del header[name]
        with pytest.raises(ProtocolError, match="missing field"):
            p.decode([p.VERSION, msg.TYPE.encode(), json.dumps(header).encode(), *msg.blobs])


@FUZZ
@given(st.lists(st.binary(max_size=40), max_size=6))
def test_random_frames_are_a_protocol_error(frames):
    with pytest.raises(ProtocolError):
        p.decode(frames)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant):
    header = f'{{"progress":[{{"attempt":1,"fraction":{constant}}}]}}'.encode()
    with pytest.raises(ProtocolError, match="not a number"):
        p.decode([p.VERSION, b"HEARTBEAT", header])


def test_deep_nesting_is_a_protocol_error():
    header = ("[" * 100_000 + "]" * 100_000).encode()
    with pytest.raises(ProtocolError):
        p.decode([p.VERSION, b"HEARTBEAT", header])


@pytest.mark.parametrize("job", ["../../x", "", "a/b", "x" * 65, "a b", "é"])
def test_job_ids_outside_the_safe_alphabet_are_refused(job):
    spec = {"name": "n", "num_reducers": 1, "splits": [{"kind": "files", "paths": ["/a"]}]}
    header = json.dumps({"job": job, "spec": spec}).encode()
    with pytest.raises(ProtocolError, match="job"):
        p.decode([p.VERSION, b"SUBMIT", header, b"code"])


@pytest.mark.parametrize(
    "spec, problem",
    [
        ({"name": ["a"], "num_reducers": 1}, "name"),
        ({"name": "x" * 201, "num_reducers": 1}, "name"),
        ({"name": "n", "num_reducers": 0}, "num_reducers"),
        ({"name": "n", "num_reducers": True}, "num_reducers"),
        ({"name": "n", "num_reducers": 1, "max_attempts": 10**30}, "max_attempts"),
        ({"name": "n", "num_reducers": 1, "task_timeout": -1}, "task_timeout"),
    ],
)
def test_bad_job_settings_are_refused_at_the_edge(spec, problem):
    spec = {"splits": [{"kind": "files", "paths": ["/a"]}], **spec}
    header = json.dumps({"job": "j1", "spec": spec}).encode()
    with pytest.raises(ProtocolError, match=problem):
        p.decode([p.VERSION, b"SUBMIT", header, b"code"])


@pytest.mark.parametrize(
    "split, problem",
    [
        ({"kind": "text", "path": "/a", "start": 5, "end": 1}, "past end"),
        ({"kind": "text", "path": "/a"}, "needs 'start'"),
        ({"kind": "files", "paths": []}, "at least one path"),
        ({"kind": "records", "blob": 3}, "not sent"),
        ({"kind": "tape"}, "kind"),
    ],
)
def test_inconsistent_splits_are_refused(split, problem):
    spec = {"name": "n", "num_reducers": 1, "splits": [split]}
    header = json.dumps({"job": "j1", "spec": spec}).encode()
    with pytest.raises(ProtocolError, match=problem):
        p.decode([p.VERSION, b"SUBMIT", header, b"code", b"records-0"])


def test_a_counter_that_is_a_string_is_refused_in_done():
    header = json.dumps({"attempt": 1, "report": {"counters": {"c": "7"}}}).encode()
    with pytest.raises(ProtocolError, match="counters"):
        p.decode([p.VERSION, b"DONE", header])


def test_blob_count_must_agree_with_the_header():
    spec = p.TaskSpec("n", 1, 1, None, False, 0)
    msg = p.Assign(1, "j", "map", 0, spec, has_code=True, blobs=[])
    frames = [p.VERSION, b"ASSIGN", json.dumps(msg.to_json()).encode()]
    with pytest.raises(ProtocolError, match="blobs"):
        p.decode(frames)
    with pytest.raises(ProtocolError, match="blob frames"):
        p.encode(p.Heartbeat(blobs=[b"x"]))


def test_error_info_make_cuts_texts_to_what_the_wire_takes():
    err = p.ErrorInfo.make("E" * 1000, "m" * (p.MAX_TEXT + 10), "t" * (p.MAX_TEXT + 10) + "END")
    decoded = p.decode(p.encode(p.JobFailed("j", err)))
    assert isinstance(decoded, p.JobFailed)
    assert decoded.error.traceback.endswith("END")  # the tail of a traceback is what matters
    assert len(decoded.error.type) == records.MAX_NAME


@pytest.mark.parametrize("char", ["x", "\u00e9", "\U0001f600"])
def test_an_error_made_anywhere_is_cut_to_what_every_peer_takes(char):
    # The master words a task's failure around the user's message, already at its
    # longest: the error it makes is cut too, and its messages still decode.
    user = p.ErrorInfo.make("ValueError", char * 10**6, "t" * 10**6 + "END", log=char * 10**6)
    assert len(user.message) == len(user.log) == len(user.traceback) == p.ERROR_TEXT
    worded = p.ErrorInfo(
        user.type, f"map task 0 failed once; last error: {user.type}: {user.message}",
        user.traceback, task="map task 0", user_message=user.message, log=user.log + "TAIL",
    )  # fmt: skip
    assert worded.message.startswith("map task 0 failed once") and worded.log.endswith("TAIL")
    frames = p.encode(p.JobFailed("j", worded))
    assert sum(map(len, frames)) < 12 * 4 * p.ERROR_TEXT + 4096  # 12 bytes a character at most
    decoded = p.decode(frames)
    assert isinstance(decoded, p.JobFailed) and decoded.error == worded
    shown = worded.trimmed(p.STATUS_ERROR_TEXT)
    assert len(shown.message) == p.STATUS_ERROR_TEXT and shown.traceback.endswith("END")
    assert len(worded.message) == p.ERROR_TEXT  # the copy is trimmed, not the error


def test_numbers_keep_their_type():
    msg = p.decode(p.encode(p.Poll("j", 2)))
    assert isinstance(msg, p.Poll) and msg.wait == 2 and not math.isnan(msg.wait)


@pytest.mark.parametrize("host", ["liar\n2026 INFO forged", "\x1b[31mred", "\ud800", "nul\x00"])
def test_names_shown_to_people_must_be_printable(host):
    header = json.dumps({"slots": 1, "shuffle": "tcp://a:1", "host": host, "pid": 1}).encode()
    with pytest.raises(ProtocolError, match="printable"):
        p.decode([p.VERSION, b"READY", header])


def test_a_huge_int_where_a_number_goes_is_out_of_range_not_an_overflow():
    header = json.dumps({"progress": [{"attempt": 1, "fraction": 10**400}]}).encode()
    with pytest.raises(ProtocolError, match="fraction"):
        p.decode([p.VERSION, b"HEARTBEAT", header])


def test_a_rejection_can_answer_a_submit_whose_job_id_is_invalid():
    frames = [p.VERSION, b"SUBMIT", json.dumps({"job": "../../x", "spec": {}}).encode(), b"c"]
    with pytest.raises(ProtocolError):
        p.decode(frames)
    assert p.job_of(frames) == "../../x"
    reply = p.decode(p.encode(p.Rejected("../../x", p.ErrorInfo("JobSubmitError", "bad id"))))
    assert isinstance(reply, p.Rejected) and reply.job == "../../x"


# -- batches -------------------------------------------------------------------------------

BATCHABLE = MESSAGES.filter(lambda m: m.TYPE not in p.ALONE)


@FUZZ
@given(st.lists(BATCHABLE, min_size=2, max_size=6))
def test_a_batch_round_trips_its_parts_in_order(msgs):
    frames = p.encode_batch(msgs)
    assert frames[:2] == [p.VERSION, p.BATCH] and len(frames) == 4
    batch = p.decode_batch(frames)
    assert batch.parts == msgs and batch.errors == []
    assert [p.decode_batch(f).parts for f in p.pack(msgs)] == [msgs]  # small: one batch


def _mutations(frames: list[bytes]) -> st.SearchStrategy[list[bytes]]:
    """``frames`` with one frame cut, grown, flipped or swapped, or its header changed."""
    header = json.loads(frames[2])

    def edit_header(path_new):
        path, new = path_new
        return [*frames[:2], json.dumps(_replace(header, path, new)).encode(), *frames[3:]]

    paths = _paths(header)
    edits = [
        st.tuples(st.sampled_from(paths), JSON).map(edit_header),
        st.tuples(st.integers(0, len(frames) - 1), st.integers(0, 64)).map(
            lambda ic: [f[: ic[1]] if j == ic[0] else f for j, f in enumerate(frames)]
        ),
        st.tuples(st.integers(0, len(frames) - 1), st.binary(min_size=1, max_size=8)).map(
            lambda ib: [f + ib[1] if j == ib[0] else f for j, f in enumerate(frames)]
        ),
        st.integers(0, len(frames)).map(lambda n: frames[:n]),
        st.just([*frames, b"extra"]),
    ]
    return st.one_of(edits)


@FUZZ
@given(st.lists(BATCHABLE, min_size=2, max_size=4), st.data())
def test_a_mutated_batch_is_a_protocol_error_or_refused_parts_never_a_crash(msgs, data):
    frames = data.draw(_mutations(p.encode_batch(msgs)))
    try:
        batch = p.decode_batch(frames)
    except ProtocolError:
        return
    assert len(batch.parts) + len(batch.errors) in (1, len(msgs))
    for msg in batch.parts:  # whatever was kept is whole: it encodes again as it came
        assert p.decode(p.encode(msg)) == msg


def test_a_malformed_part_is_refused_and_the_others_kept():
    good = p.encode_batch([p.Cancel(1), p.Cancel(2), p.Cancel(3)])
    items = json.loads(good[2])
    items[1][1]["attempt"] = "two"
    batch = p.decode_batch([*good[:2], json.dumps(items).encode(), good[3]])
    assert batch.parts == [p.Cancel(1), p.Cancel(3)]
    assert len(batch.errors) == 1 and batch.errors[0].startswith("BATCH part 1: CANCEL.attempt")


@pytest.mark.parametrize(
    "header, body, problem",
    [
        ('[["CANCEL",{"attempt":1},[5]]]', b"abc", "add up to 5, the body has 3"),
        ('[["CANCEL",{"attempt":1},[-1]]]', b"", "blob length"),
        ('[["CANCEL",{"attempt":1}]]', b"", r"\[type, header, \[blob lengths\]\]"),
        ("{}", b"", "a list of 1"),
        ("[]", b"", "a list of 1"),
        (json.dumps([["CANCEL", {"attempt": 1}, []]] * (p.MAX_BATCH + 1)), b"", "a list of 1"),
        ("[" * 100_000 + "]" * 100_000, b"", "not JSON"),
    ],
)
def test_a_malformed_envelope_is_a_protocol_error(header, body, problem):
    with pytest.raises(ProtocolError, match=problem):
        p.decode_batch([p.VERSION, p.BATCH, header.encode(), body])


def test_a_batch_in_a_batch_and_a_batch_where_one_message_goes_are_refused():
    inner = p.encode_batch([p.Cancel(1), p.Cancel(2)])
    nested = json.dumps([["BATCH", json.loads(inner[2]), []], ["CANCEL", {"attempt": 3}, []]])
    batch = p.decode_batch([p.VERSION, p.BATCH, nested.encode(), b""])
    assert batch.parts == [p.Cancel(3)] and "unknown message type 'BATCH'" in batch.errors[0]
    with pytest.raises(ProtocolError, match="a BATCH where one message was expected"):
        p.decode(inner)


def test_a_part_must_carry_the_blobs_its_type_takes():
    frames = [
        p.VERSION,
        p.BATCH,
        b'[["CANCEL",{"attempt":1},[1]],["DONE",{"attempt":2,"report":{}},[1,1]]]',
        b"xyz",
    ]
    batch = p.decode_batch(frames)
    assert batch.parts == [] and len(batch.errors) == 2
    assert "CANCEL: 1 blob frames, expected 0..0" in batch.errors[0]


def test_pack_keeps_order_and_sends_big_and_registering_messages_alone():
    big = p.Done(2, p.Report(), blobs=[b"x" * (p.BATCH_BLOB_BYTES + 1)])
    msgs = [p.Cancel(1), big, p.Cancel(3), p.Welcome(1.0, 10.0), p.Cancel(4), p.Cancel(5)]
    packed = p.pack(msgs)
    assert [f[1] for f in packed] == [b"CANCEL", b"DONE", b"CANCEL", b"WELCOME", b"BATCH"]
    assert [m for f in packed for m in p.decode_batch(f).parts] == msgs
    assert len(p.pack([p.Cancel(i) for i in range(p.MAX_BATCH + 1)])) == 2
    assert p.pack([]) == []


def test_a_single_message_reads_as_a_batch_of_one():
    assert p.decode_batch(p.encode(p.Cancel(7))).parts == [p.Cancel(7)]
    with pytest.raises(ProtocolError):
        p.decode_batch([p.VERSION, b"CANCEL", b'{"attempt":-1}'])


def test_every_module_sends_frames_through_protocol_send_frames():
    """One way onto a socket: no module but protocol.py calls send_multipart."""
    import ast
    import pathlib

    import zmqmr

    package = pathlib.Path(zmqmr.__file__).parent
    callers = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "send_multipart"
            ):
                callers.append(f"{path.relative_to(package)}:{node.lineno}")
    assert callers == []


# -- a reduce's locations, by column ------------------------------------------------------


def _reduce_assign(**columns: Any) -> list[bytes]:
    locations = p.Locations.of(
        [p.Location(3, 1, "tcp://a:1", 10, 2), p.Location(5, 2, "tcp://b:2", 7, 1)]
    )
    header = json.loads(
        p.encode(
            p.Assign(
                9,
                "j",
                "reduce",
                0,
                p.TaskSpec("n", 2, 6, None, False, 0, partition=0, locations=locations),
            )
        )[2]
    )
    header["spec"]["locations"].update(columns)
    return [p.VERSION, b"ASSIGN", json.dumps(header).encode()]


def test_a_reduce_assignment_carries_its_locations_by_column_and_gives_them_back_as_records():
    msg = p.decode(_reduce_assign())
    assert isinstance(msg, p.Assign)
    assert list(msg.spec.locations) == [
        p.Location(3, 1, "tcp://a:1", 10, 2),
        p.Location(5, 2, "tcp://b:2", 7, 1),
    ]
    assert json.loads(_reduce_assign()[2])["spec"]["locations"] == {
        "addresses": ["tcp://a:1", "tcp://b:2"],
        "maps": [3, 5],
        "attempts": [1, 2],
        "servers": [0, 1],
        "sizes": [10, 7],
        "groups": [2, 1],
    }


@pytest.mark.parametrize(
    "columns, problem",
    [
        ({"sizes": [10]}, "different lengths"),
        ({"maps": [3, 3]}, "located twice"),
        ({"servers": [0, 2]}, "server index"),
        ({"maps": [3, 6]}, "past num_maps"),
        ({"sizes": [10, -1]}, "sizes"),
        ({"attempts": [1, True]}, "attempts"),
        ({"groups": [1.0, 1]}, "groups"),
        ({"maps": [3, 2**63]}, "maps"),
        ({"maps": "35"}, "maps"),
        ({"addresses": ["tcp://a:1", 7]}, "addresses"),
    ],
)
def test_bad_location_columns_are_refused(columns, problem):
    with pytest.raises(ProtocolError, match=problem):
        p.decode(_reduce_assign(**columns))


# -- fetches and their answers, by column ---------------------------------------------------


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"attempts": [1]}, "different lengths"),
        ({"maps": [4, 4]}, "asked for twice"),
        ({"maps": [], "attempts": [], "offsets": []}, "no parts"),
        ({"offsets": [0, -5]}, "offsets"),
        ({"maps": [4, p.MAX_MAP_TASKS]}, "maps"),
        ({"attempts": [1, None]}, "attempts"),
    ],
)
def test_bad_fetch_columns_are_refused(fields, problem):
    header = {"job": "j", "partition": 0, "maps": [4, 5], "attempts": [1, 1], "offsets": [0, 9]}
    header.update({"max_bytes": 100}, **fields)
    with pytest.raises(ProtocolError, match=problem):
        p.decode([p.VERSION, b"FETCH", json.dumps(header).encode()])


def test_a_chunks_blob_must_hold_exactly_its_parts_bytes():
    good = p.Chunks([4, 5], [0, 10], [3, 30], [3, 2], blobs=[b"abcde"])
    assert p.decode(p.encode(good)) == good
    for blob in (b"abcd", b"abcdef"):
        with pytest.raises(ProtocolError, match="bytes of parts"):
            p.decode([*p.encode(good)[:3], blob])
    with pytest.raises(ProtocolError, match="blob"):
        p.decode(p.encode(good)[:3])  # no blob at all
    header = json.loads(p.encode(good)[2])
    header["totals"] = [3]
    with pytest.raises(ProtocolError, match="different lengths"):
        p.decode([p.VERSION, b"CHUNKS", json.dumps(header).encode(), b"abcde"])
    for change, problem in [
        ({"maps": [4, 4]}, "answered twice"),
        ({"totals": [3, 11]}, "past its segment's end"),  # bytes 10..11 of an 11-byte one
        ({"offsets": [1, 10]}, "past its segment's end"),
    ]:
        bad = {**json.loads(p.encode(good)[2]), **change}
        with pytest.raises(ProtocolError, match=problem):
            p.decode([p.VERSION, b"CHUNKS", json.dumps(bad).encode(), b"abcde"])


# A map attempt's ASSIGN is written from its job's cached shared text plus the fields
# that differ (the master's commonest message); it must read back as the same message.
MAP_ASSIGNS = st.builds(
    lambda attempt, job, task, spec, split, code, recs: p.Assign(
        attempt,
        job,
        "map",
        task,
        p.TaskSpec(**{**spec, "split": split}),
        has_code=code,
        has_records=recs,
        blobs=[b"x"] * (code + recs),
    ),
    valid(records.Int()),
    valid(p.JOB),
    valid(records.Int()),
    st.fixed_dictionaries({n: valid(p.TaskSpec.FIELDS[n]) for n in p._SHARED_SPEC_FIELDS}),
    SPLITS,
    st.booleans(),
    st.booleans(),
)


@FUZZ
@given(st.lists(MAP_ASSIGNS, min_size=1, max_size=4))
def test_a_map_assign_written_from_the_jobs_shared_text_reads_back_whole(msgs):
    for msg in msgs:
        frames = p.encode(msg)
        assert p._assign_text(msg) is not None  # the shared-text path was taken
        assert json.loads(frames[2]) == {  # the same header as field by field, less defaults
            k: v for k, v in msg.to_json().items() if k != "spec"
        } | {"spec": {k: v for k, v in msg.spec.to_json().items() if k in p._SHARED_SPEC_FIELDS}
             | {"split": msg.spec.split.to_json()}}  # fmt: skip
        assert p.decode(frames) == msg
    batch = p.decode_batch(p.encode_batch(msgs))
    assert batch.parts == msgs and batch.errors == []


@FUZZ
@given(MAP_ASSIGNS, st.data())
def test_a_mutated_map_assign_is_a_protocol_error_never_a_crash(msg, data):
    frames = data.draw(_mutations(p.encode(msg)))
    try:
        got = p.decode(frames)
    except ProtocolError:
        return
    assert p.decode(p.encode(got)) == got


def test_an_assign_that_is_not_the_common_shape_is_written_field_by_field():
    spec = p.TaskSpec("n", 2, 3, None, False, 10, split=p.Split("records", blob=0))
    plain = p.Assign(1, "j", "map", 0, spec, has_records=True, blobs=[b"r"])
    assert p._assign_text(plain) is not None
    for split in (  # records splits written without the JSON encoder, or with it
        p.Split("records", blob=3, count=2, first=7),
        p.Split("records", blob=3, first=7),
        p.Split("records", blob=3, path="/stray", start=1),
    ):
        spec.split = split
        assert p.decode(p.encode(plain)) == plain
        assert json.loads(p._assign_text(plain))["spec"]["split"] == split.to_json()
    for other in (
        p.Assign(1, "j", "reduce", 0, p.TaskSpec("n", 2, 3, None, False, 10, partition=1)),
        p.Assign(
            1,
            "j",
            "map",
            0,
            p.TaskSpec("n", 2, 3, None, False, 10, split=spec.split, skip=[4], track_records=True),
        ),  # fmt: skip
    ):
        assert p._assign_text(other) is None
        assert p.decode(p.encode(other)) == other
    not_an_int = p.Assign(True, "j", "map", 0, spec)  # written as JSON writes it, then refused
    assert p._assign_text(not_an_int) is None
    with pytest.raises(ProtocolError, match="attempt"):
        p.decode(p.encode(not_an_int))


def test_the_shared_spec_texts_are_bounded():
    for i in range(p._SHARED_SPECS_MAX + 10):
        spec = p.TaskSpec(f"job{i}", 1, 1, None, False, 10, split=p.Split("records", blob=0))
        p.encode(p.Assign(1, f"j{i}", "map", 0, spec))
    assert 0 < len(p._SHARED_SPECS) <= p._SHARED_SPECS_MAX


# -- a DONE's report, written without its defaults ----------------------------------------


@FUZZ
@given(record(p.Done), st.data(), JSON)
def test_a_done_leaves_the_report_fields_at_their_defaults_out(msg, data, new):
    msg.blobs = data.draw(st.sampled_from([[], [b"result"]]))
    frames = p.encode(msg)
    header = json.loads(frames[2])
    full = msg.to_json()
    defaults = p.Report().to_json()
    assert header["attempt"] == full["attempt"]
    assert header["report"] == {  # every field that differs from its default, no other
        k: v
        for k, v in full["report"].items()
        if type(v) is not type(defaults[k]) or v != defaults[k]
    }
    assert p.decode(frames) == msg
    written_whole = [p.VERSION, b"DONE", json.dumps(full).encode(), *msg.blobs]
    assert p.decode(written_whole) == msg  # a peer may still write every field
    name = data.draw(st.sampled_from(sorted(defaults)))
    header["report"][name] = new  # a field left out, put back with any value: checked
    try:
        got = p.decode([p.VERSION, b"DONE", json.dumps(header).encode(), *msg.blobs])
    except ProtocolError:
        return
    assert getattr(got.report, name) == new


@pytest.mark.parametrize(
    "frames",
    [[b""], [b"one"], [b"id", b"", b"x" * 100_000], [b"%d" % i for i in range(40)]],
)
def test_recv_frames_reads_one_whole_message_and_no_more(frames):
    import zmq

    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        a.bind("inproc://recv-frames")
        b.connect("inproc://recv-frames")
        p.send_frames(a, frames)
        p.send_frames(a, [b"next"])
        assert p.recv_frames(b) == frames
        assert p.recv_frames(b) == [b"next"]
        with pytest.raises(zmq.Again):
            p.recv_frames(b, int(zmq.NOBLOCK))
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


def test_the_fast_assign_text_knows_every_field():
    """``_assign_text`` writes the job's shared spec fields and the split, and refuses
    (returns None for) a spec with any other field set: a field added to TaskSpec or
    Assign must be added to one or the other, or a fast ASSIGN drops it silently."""
    refused = {"skip", "track_records", "partition", "locations"}
    assert set(p.TaskSpec.FIELDS) == {*p._SHARED_SPEC_FIELDS, "split", *refused}
    assert set(p.Assign.FIELDS) == {
        "attempt",
        "job",
        "kind",
        "task",
        "spec",
        "has_code",
        "has_records",
    }


GOOD_ENDPOINTS = ["tcp://127.0.0.1:5555", "tcp://[::1]:1", "tcp://lab-3.example:65535",
                  "tcp://0.0.0.0:40000", "ipc:///tmp/zmqmr shuffle"]  # fmt: skip
BAD_ENDPOINTS = ["", "not an address", "tcp://*:5555", "tcp://h:*", "tcp://127.0.0.1:0",
                 "tcp://h:65536", "tcp://:1", "tcp://h", "tcp://h/x:1", " tcp://h:1",
                 "tcp://h:1\n", "inproc://x", "ipc://", "ipc:// x", "udp://h:1"]  # fmt: skip


@pytest.mark.parametrize("address", GOOD_ENDPOINTS + BAD_ENDPOINTS)
def test_a_ready_carries_an_address_a_reducer_can_connect_to(address):
    """What the master hands reducers as a worker's shuffle server: check_endpoint's
    connectable form, so a READY that could not be served is refused at the edge."""
    from zmqmr.config import check_endpoint

    header = json.dumps({"slots": 1, "shuffle": address, "host": "h", "pid": 1}).encode()
    if address in GOOD_ENDPOINTS:
        assert check_endpoint(address, "shuffle") == address
        assert p.decode([p.VERSION, b"READY", header]).shuffle == address
        return
    with pytest.raises(ValueError):
        check_endpoint(address, "shuffle")
    with pytest.raises(ProtocolError, match="shuffle"):
        p.decode([p.VERSION, b"READY", header])
