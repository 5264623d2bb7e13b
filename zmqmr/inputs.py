"""Input splits: text files cut at line boundaries, whole files, in-memory records.

A split is described by a small JSON-able dict that travels in the job spec;
in-memory records travel as a pickled blob beside it. ``open_split`` turns a
description back into records on the worker (and in ``run_serial``), so the
cluster and the serial oracle read exactly the same records.

Text rule: a split ``[start, end)`` owns every line that *starts* in it. So a
split after the first skips to just past the first newline at or after
``start - 1``, and reads through the line that crosses ``end``. Every line of
a file is read exactly once, whatever the split size. Lines end at ``\n``; a
``\r`` before it (CRLF files) is not part of the line. Any other file, binary
or not, is read as lines the same way.

Compressed text (``.gz``, ``.bz2``, ``.xz``, told by the suffix) cannot be cut:
such a file is one split ``[0, size)``, read decompressed by the split that
starts at 0 (a split of it that starts later reads nothing, so its lines are
still read once). Its keys are offsets in the decompressed text. Whole files
are read decompressed too.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import itertools
import lzma
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import IO, Any

from . import native, pickling
from .config import MAPS_PER_SLOT, MAX_MAP_TASKS, MAX_SPLIT_SIZE, MIN_SPLIT_SIZE
from .errors import JobSubmitError

#: Without it text records' keys are made with itertools, more slowly.
speedups: Any = native.load()

Record = tuple[Any, Any]
SplitDesc = dict[str, Any]


class WholeFiles:
    """Input of one record per file: key the path, value the file's whole text."""

    def __init__(self, paths: str | Iterable[str]) -> None:
        self.paths = [paths] if isinstance(paths, str) else list(paths)

    def __repr__(self) -> str:
        return f"WholeFiles({self.paths!r})"


def resolve_paths(patterns: Sequence[str]) -> list[str]:
    """Absolute paths for paths and globs; a missing path or an empty glob is an error."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise JobSubmitError("no inputs given")
    out: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise JobSubmitError(f"input {pattern!r} is not a path")
        expanded = os.path.expanduser(pattern)
        if glob.has_magic(expanded):
            matches = sorted(glob.glob(expanded))
            if not matches:
                raise JobSubmitError(f"input glob {pattern!r} matches no file")
        else:
            matches = [expanded]
        for path in matches:
            if os.path.isdir(path):
                raise JobSubmitError(f"input {path!r} is a directory; give files or a glob")
            if not os.path.isfile(path):
                raise JobSubmitError(f"input {path!r} does not exist")
            out.append(os.path.abspath(path))
    return out


#: Opens a raw file decompressed; the caller closes what it returns.
Opener = Callable[[IO[bytes]], io.BufferedIOBase]
#: Readers of compressed files by suffix.
DECOMPRESSORS: dict[str, Opener] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),  # noqa: SIM115
    ".bz2": lambda raw: bz2.BZ2File(raw, "rb"),  # noqa: SIM115
    ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),  # noqa: SIM115
}


def decompressor(path: str) -> Opener | None:
    """How to read ``path`` decompressed, or None when it is read as it is."""
    return DECOMPRESSORS.get(os.path.splitext(path)[1].lower())


def text_splits(paths: Sequence[str], split_size: int) -> list[SplitDesc]:
    """Byte-range splits of about ``split_size`` over each file; an empty or compressed one
    is one split."""
    splits: list[SplitDesc] = []
    for path in paths:
        size = os.path.getsize(path)
        step = size if decompressor(path) is not None else split_size
        starts = range(0, size, step) if size else [0]
        for start in starts:
            end = min(start + step, size)
            splits.append({"kind": "text", "path": path, "start": start, "end": end})
    return splits


def count_text_splits(paths: Sequence[str], split_size: int) -> int:
    """How many splits ``text_splits(paths, split_size)`` makes, without making them."""
    count = 0
    for path in paths:
        size = os.path.getsize(path)
        count += 1 if size == 0 or decompressor(path) is not None else -(-size // split_size)
    return count


def plan_text_split_size(paths: Sequence[str], slots: int) -> int:
    """The split size for text ``paths`` on a cluster of ``slots`` slots.

    About MAPS_PER_SLOT splits per slot, none under MIN_SPLIT_SIZE or over
    MAX_SPLIT_SIZE; larger when MAX_MAP_TASKS needs it (a file is one split at
    least, so the files' number is the floor). Compressed files are one split
    each and do not count.
    """
    total = sum(os.path.getsize(p) for p in paths if decompressor(p) is None)
    size = -(-total // (MAPS_PER_SLOT * slots))
    size = min(max(size, MIN_SPLIT_SIZE), MAX_SPLIT_SIZE)
    room = MAX_MAP_TASKS - len(paths)
    if room > 0 and count_text_splits(paths, size) > MAX_MAP_TASKS:
        # ceil(s / size) <= s / size + 1 per file: at most room + len(paths) splits
        size = max(size, -(-total // room))
    return size


def whole_file_groups(paths: Sequence[str], max_tasks: int) -> list[SplitDesc]:
    """One file per split, or as few files per split as keep them to ``max_tasks``."""
    per = max(1, -(-len(paths) // max_tasks))
    return [{"kind": "files", "paths": list(paths[i : i + per])} for i in range(0, len(paths), per)]


def check_task_count(
    count: int, limit: int | None, split_size: int | None, files: int | None = None
) -> None:
    """Raise JobSubmitError when a plan of ``count`` map tasks exceeds ``limit``."""
    if limit is None or count <= limit:
        return
    if split_size is not None:
        raise JobSubmitError(
            f"split_size={split_size:,} cuts the inputs into {count:,} map tasks, more than "
            f"the {limit:,} a job may have: raise split_size (or leave it unset to plan splits)"
        )
    raise JobSubmitError(
        f"the inputs are {files:,} files, which make {count:,} map tasks at least (a text "
        f"file is one split at least, whatever split_size), more than the {limit:,} a job "
        "may have: merge small files, or read them as WholeFiles"
    )


def whole_file_splits(paths: Sequence[str], split_size: int) -> list[SplitDesc]:
    """Groups of whole files of about ``split_size`` bytes each."""
    splits: list[SplitDesc] = []
    group: list[str] = []
    size = 0
    for path in paths:
        group.append(path)
        size += os.path.getsize(path)
        if size >= split_size:
            splits.append({"kind": "files", "paths": group})
            group, size = [], 0
    if group:
        splits.append({"kind": "files", "paths": group})
    return splits


def dumps_records(records: list[Record]) -> bytes:
    try:
        return pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return pickling.dumps_values(records)


def record_splits(
    records: Sequence[Any],
    split_bytes: int,
    min_splits: int = 1,
    max_splits: int | None = None,
    split_size: int | None = None,
) -> tuple[list[SplitDesc], list[bytes]]:
    """In-memory records cut into splits of about ``split_bytes`` pickled bytes each,
    and into ``min_splits`` at least when there are that many records.

    More than ``max_splits`` is a JobSubmitError that names ``split_size`` (the
    job's setting that gave ``split_bytes``, None if unset).
    """
    checked: list[Record] = []
    for i, rec in enumerate(records):
        if not isinstance(rec, (tuple, list)) or len(rec) != 2:
            raise JobSubmitError(
                f"input record {i} is {type(rec).__name__} {rec!r:.80}; "
                "in-memory inputs must be (key, value) pairs"
            )
        checked.append((rec[0], rec[1]))
    if not checked:
        raise JobSubmitError("inputs: the list of records is empty")
    try:
        whole = dumps_records(checked)
    except Exception as exc:
        raise JobSubmitError(f"inputs: records cannot be pickled: {exc!r}") from exc
    nsplits = max(1, min(len(checked), max(min_splits, -(-len(whole) // split_bytes))))
    check_task_count(nsplits, max_splits, split_size)
    per = -(-len(checked) // nsplits)
    descs: list[SplitDesc] = []
    blobs: list[bytes] = []
    for i in range(0, len(checked), per):
        chunk = checked[i : i + per]
        descs.append({"kind": "records"})  # job.make_splits numbers its blob
        blobs.append(dumps_records(chunk))
    return descs, blobs


#: Text splits are read this many bytes at a time, so memory does not grow with split size.
READ_CHUNK = 1024 * 1024
#: Records per batch for whole files and in-memory records (a text batch is one chunk).
BATCH_RECORDS = 8192

#: A batch of records: its keys (an iterable, read once) and its values (a list, as
#: long as the keys).
Batch = tuple[Iterable[Any], list[Any]]
_plus_one = (1).__add__


class SplitReader:
    """The records of one split, read lazily in batches; ``fraction`` says how far it has got.

    ``batches()`` yields ``(keys, values)`` lists (the executor's form: no
    record tuples are built); iterating yields ``(key, value)`` records.
    """

    def __init__(self, batches: Iterator[Batch], total: int) -> None:
        self._batches = batches
        self.total = max(1, total)
        self.done = 0  # bytes (text) or records (others) consumed

    def batches(self) -> Iterator[Batch]:
        return self._batches

    def __iter__(self) -> Iterator[Record]:
        for keys, values in self._batches:
            yield from zip(keys, values)

    def fraction(self) -> float:
        return min(1.0, self.done / self.total)


def _text_batches(reader: SplitReader, path: str, start: int, end: int) -> Iterator[Batch]:
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            pos = start - 1 + len(f.readline())
        else:
            pos = 0
        f.seek(pos)
        while pos < end:
            data = f.read(min(READ_CHUNK, end - pos))
            if not data:
                return
            if not data.endswith(b"\n"):
                cut = data.rfind(b"\n")
                if pos + len(data) >= end or cut < 0:
                    data += f.readline()  # finish the line (the one crossing end, or a long one)
                else:
                    data = data[: cut + 1]  # whole lines only; the rest is read next time
                    f.seek(pos + len(data))
            batch = _lines(path, pos, data)
            pos += len(data)
            reader.done = pos - start
            yield batch


def _compressed_batches(
    reader: SplitReader,
    path: str,
    start: int,
    opener: Opener,
) -> Iterator[Batch]:
    if start > 0 or os.path.getsize(path) == 0:
        return  # the split at 0 reads the whole file; an empty file holds no line
    with open(path, "rb") as raw, opener(raw) as f:
        pos = 0  # in the decompressed text
        held: list[bytes] = []  # the start of a line that has not ended yet
        while True:
            data = f.read(READ_CHUNK)
            if not data:
                break
            cut = data.rfind(b"\n")
            if cut < 0:
                held.append(data)
                continue
            lines = b"".join([*held, data[: cut + 1]])
            held = [data[cut + 1 :]]
            batch = _lines(path, pos, lines)
            pos += len(lines)
            reader.done = raw.tell()
            yield batch
        rest = b"".join(held)
        if rest:
            yield _lines(path, pos, rest)
        reader.done = reader.total


def _lines(path: str, pos: int, data: bytes) -> Batch:
    """The records of ``data``: whole lines, the first at byte ``pos`` (the last may lack
    its newline)."""
    # A multi-byte UTF-8 sequence never contains b"\n", so decoding the chunk
    # and splitting it gives the same lines as splitting and decoding each.
    if data.isascii():
        lines = data.decode("ascii").split("\n")
        sized: list[Any] = lines  # a character is a byte
    else:
        lines = data.decode("utf-8", "surrogateescape").split("\n")
        sized = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    # Byte offsets: pos, then each previous offset plus its line and newline; the
    # keys are made as they are read.
    keys: Iterable[Any]
    if speedups is not None:
        keys = speedups.line_keys(path, pos, sized if sized is lines else sized[: len(lines)])
    else:
        offsets = itertools.accumulate(map(_plus_one, map(len, sized)), initial=pos)
        keys = zip(itertools.repeat(path, len(lines)), offsets)
    if b"\r" in data:  # CRLF: the \r belongs to the line ending (offsets counted it above)
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return keys, lines


def _list_batches(reader: SplitReader, records: Iterable[Record], size: int) -> Iterator[Batch]:
    it = iter(records)
    while batch := list(itertools.islice(it, size)):
        keys = [r[0] for r in batch]
        values = [r[1] for r in batch]
        reader.done += len(batch)
        yield keys, values


def read_text_split(path: str, start: int, end: int) -> list[Record]:
    """Records ``((path, byte_offset), line)`` of the lines starting in ``[start, end)``."""
    return open_split({"kind": "text", "path": path, "start": start, "end": end})


def read_whole_file(path: str) -> str:
    """The whole text of ``path``, decompressed when its suffix says it is compressed."""
    opener = decompressor(path)
    with open(path, "rb") as f:
        if opener is None or os.path.getsize(path) == 0:
            return f.read().decode("utf-8", "surrogateescape")
        with opener(f) as unpacked:
            return unpacked.read().decode("utf-8", "surrogateescape")


def open_split(desc: SplitDesc, blob: bytes | None = None) -> list[Record]:
    """The records of one split, in order."""
    return list(read_split(desc, blob))


def read_split(desc: SplitDesc, blob: bytes | None = None) -> SplitReader:
    """The records of one split, in order, read as they are consumed."""
    kind = desc.get("kind")
    if kind == "text":
        start, end = int(desc["start"]), int(desc["end"])
        reader = SplitReader(iter(()), end - start)
        opener = decompressor(desc["path"])
        if opener is None:
            reader._batches = _text_batches(reader, desc["path"], start, end)
        else:
            reader._batches = _compressed_batches(reader, desc["path"], start, opener)
        return reader
    if kind == "files":
        paths = desc["paths"]
        reader = SplitReader(iter(()), len(paths))
        files = ((p, read_whole_file(p)) for p in paths)
        reader._batches = _list_batches(reader, files, 1)  # a file at a time: files are big
        return reader
    if kind == "records":
        if blob is None:
            raise ValueError("a records split needs its blob")
        records = pickle.loads(blob)
        reader = SplitReader(iter(()), len(records))
        reader._batches = _list_batches(reader, records, BATCH_RECORDS)
        return reader
    raise ValueError(f"unknown split kind {kind!r}")
