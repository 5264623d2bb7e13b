"""The default partitioner: equal keys land in one partition, in every process, on every machine.

A key takes one of two routes, chosen by its type:

* **A stable byte encoding**, hashed with CRC-32, for the common types: ``str``,
  ``bytes``, ``None``, numbers by value (so ``1 == 1.0 == True == Fraction(1) ==
  Decimal(1)`` share one encoding), tuples of such (namedtuples too), frozensets of
  such (the elements' encodings sorted, so iteration order does not matter), enum
  members and classes. It does not depend on the process, the machine or the
  Python version.
* **Python's** ``hash()`` **under a fixed seed** for everything else: dataclasses,
  user classes with ``__eq__`` and ``__hash__``, tuples that hold them. ``hash()``
  agrees with ``==`` whenever the key's type keeps Python's rules, but a ``str``'s
  hash is salted per process, so every process must hash with one seed (as PySpark
  does): the worker starts its executors with ``PYTHONHASHSEED=0``; a process
  that runs with another seed (the client, under ``run_serial``) asks a child
  started with it. This route needs the same Python on every machine, as
  cloudpickle does anyway.

Never ``repr`` (a default repr holds an address) and never the process's own
salted ``hash()``. The user's partitioner, when a job has one, is called for
every key at every R, including R = 1, and its answer checked.

Imports: the standard library, cloudpickle (through ``pickling``); no other zmqmr module.
"""

from __future__ import annotations

import bisect
import contextlib
import enum
import itertools
import logging
import numbers
import operator
import os
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from . import pickling

log = logging.getLogger(__name__)

Partitioner = Callable[[Any, int], int]

_first = operator.itemgetter(0)
#: Key types whose ``<`` is a total order that agrees with ``==`` (``ordering.TOTAL``,
#: which imports this module): keys a range cut may sort by ``<``.
_TOTAL = frozenset({str, int, float, bytes, bool})

#: The seed under which every executor hashes keys of the hash route.
HASH_SEED = "0"


# -- the stable encoding ---------------------------------------------------------------


def _number(key: Any) -> bytes:
    # Equal numbers of any type give equal bytes: 3 == 3.0 == Fraction(3) == Decimal(3).
    try:
        as_int = int(key)
        if as_int == key:
            return b"i%d" % as_int
        as_float = float(key)
        if as_float == key or as_float != as_float:  # NaN equals nothing: any bytes do
            return b"f" + repr(as_float).encode()
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        pass
    if isinstance(key, complex) and key.imag == 0:
        return _number(key.real)
    return b"h%d" % hash(key)  # numeric hashes are not salted, and equal numbers share one


def _float(key: float) -> bytes:
    return b"i%d" % key if key.is_integer() else b"f" + repr(key).encode()


def _str(key: str) -> bytes:
    # No type prefix: the common case hashes the text itself (see Partitioning.split).
    return key.encode("utf-8", "surrogatepass")


def _sized(parts: Iterable[bytes | None]) -> list[bytes] | None:
    out = []
    for part in parts:
        if part is None:
            return None
        out.append(b"%d:" % len(part) + part)
    return out


def _tuple(key: tuple[Any, ...]) -> bytes | None:
    parts = _sized(map(encode, key))
    return None if parts is None else b"t" + b"".join(parts)


def _frozenset(key: frozenset[Any]) -> bytes | None:
    parts = _sized(map(encode, key))
    return None if parts is None else b"s" + b"".join(sorted(parts))


_EXACT: dict[type, Callable[[Any], bytes | None]] = {
    str: _str,
    int: lambda k: b"i%d" % k,
    bool: lambda k: b"i%d" % k,
    float: _float,
    bytes: lambda k: b"b" + k,
    type(None): lambda k: b"n",
    tuple: _tuple,
    frozenset: _frozenset,
    complex: _number,
}

#: Builtin types whose subclasses are encoded as the builtin when they keep its == and hash.
_BASES: tuple[tuple[type, Callable[[Any], bytes | None]], ...] = (
    (str, _str),
    (bytes, lambda k: b"b" + bytes(k)),
    (tuple, _tuple),
    (frozenset, _frozenset),
)


def _keeps(cls: type, base: type) -> bool:
    return cls.__eq__ is base.__eq__ and cls.__hash__ is base.__hash__


def encode(key: Any) -> bytes | None:
    """The stable encoding of ``key``, or None when it takes the hash route.

    Equal keys give equal bytes (or both None, provided their ``==`` agrees with
    their ``hash()``).
    """
    enc = _EXACT.get(type(key))
    if enc is not None:
        return enc(key)
    cls = type(key)
    if isinstance(key, numbers.Number):  # IntEnum, numpy scalars, Fraction, Decimal
        return _number(key)
    for base, enc in _BASES:
        if isinstance(key, base):
            return enc(key) if _keeps(cls, base) else None
    if isinstance(key, enum.Enum):
        if cls.__hash__ is not enum.Enum.__hash__ or cls.__eq__ is not object.__eq__:
            return None
        # A member is its class and value (aliases are the same member).
        value = encode(key._value_)
        name = f"{cls.__module__}.{cls.__qualname__}".encode()
        return None if value is None else b"E" + name + b":" + value
    if isinstance(key, type) and _keeps(cls, type):
        # A class hashes by address, but is the same object everywhere it is imported.
        return b"T" + f"{key.__module__}.{key.__qualname__}".encode()
    return None


def stable_hash(key: Any) -> int:
    """A hash of ``key`` that is the same in every process and on every machine."""
    data = encode(key)
    if data is None:
        return seeded_hashes([key])[0]
    return zlib.crc32(data)


def default_partitioner(key: Any, num_partitions: int) -> int:
    """The partition of ``key`` among ``num_partitions``: the same in every process."""
    return stable_hash(key) % num_partitions


# -- hash() under the fixed seed -------------------------------------------------------


def seed_is_fixed() -> bool:
    """Whether this process's ``hash()`` is the one every executor computes."""
    return sys.flags.hash_randomization == 0


#: The helper's program: read pickled lists of keys, answer their hashes. Whatever the
#: keys' modules print on import goes to stderr, so stdout carries only answers.
_HELPER = r"""
import os, pickle, struct, sys
inp = sys.stdin.buffer
out = os.fdopen(os.dup(1), "wb")
os.dup2(2, 1)
def read():
    head = inp.read(8)
    if len(head) < 8:
        return None
    return inp.read(struct.unpack("<Q", head)[0])
sys.path[:] = pickle.loads(read())
while (blob := read()) is not None:
    try:
        reply = (True, [hash(k) for k in pickle.loads(blob)])
    except BaseException as exc:
        reply = (False, f"{type(exc).__name__}: {exc}")
    data = pickle.dumps(reply)
    out.write(struct.pack("<Q", len(data)) + data)
    out.flush()
"""


class SeededHasher:
    """``hash()`` of keys as a process started with ``PYTHONHASHSEED=0`` computes it.

    In such a process (an executor) that is ``hash()`` itself. Elsewhere a child
    started with that seed answers, in batches; answers are kept per key (equal
    keys have equal hashes in both processes, so the process's own dict can hold
    them). ``close`` stops the child.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._known: dict[Any, int] = {}
        self._modules: list[Any] | None = None  # what travels by value, listed once

    def hashes(self, keys: list[Any]) -> list[int]:
        if seed_is_fixed():
            return [hash(k) for k in keys]
        known = self._known
        todo = list({k: None for k in keys if k not in known})
        if todo:
            for key, h in zip(todo, self._ask(todo)):
                known[key] = h
        return [known[k] for k in keys]

    def _ask(self, keys: list[Any]) -> list[int]:
        if self._modules is None:
            self._modules = pickling.local_modules()
        try:
            with pickling.local_modules_by_value(self._modules):
                blob = pickling.dumps_values(keys)
        except Exception as exc:
            raise TypeError(
                f"keys of type {type(keys[0]).__name__} take the hash route of the default "
                f"partitioner and must be picklable: {exc}"
            ) from exc
        proc = self._start()
        assert proc.stdin is not None and proc.stdout is not None
        try:
            _send(proc.stdin, blob)
            ok, answer = pickle.loads(_receive(proc.stdout))
        except (OSError, EOFError, struct.error, pickle.UnpicklingError) as exc:
            self.close()
            raise RuntimeError(f"the hashing helper process failed: {exc!r}") from exc
        if not ok:
            raise TypeError(f"cannot hash a key under PYTHONHASHSEED={HASH_SEED}: {answer}")
        return list(answer)

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            log.debug("starting a helper with PYTHONHASHSEED=%s to hash keys", HASH_SEED)
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONHASHSEED": HASH_SEED},
            )
            assert self._proc.stdin is not None
            _send(self._proc.stdin, pickle.dumps(list(sys.path)))
        return self._proc

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> bytes:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the helper exited")
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the helper exited mid-answer")
    return data


_active: SeededHasher | None = None
_warned = False


@contextlib.contextmanager
def seeded_hashing() -> Iterator[SeededHasher]:
    """One helper (at most) for everything hashed inside the block, stopped at its end.

    ``run_serial`` hashes a job's keys inside one, so a user's partitioner that
    calls ``default_partitioner`` costs one round trip per distinct key at most.
    """
    global _active
    previous, _active = _active, SeededHasher()
    try:
        yield _active
    finally:
        _active.close()
        _active = previous


def seeded_hashes(keys: list[Any]) -> list[int]:
    """``hash()`` of each key as every executor computes it."""
    if seed_is_fixed():
        return [hash(k) for k in keys]
    if _active is not None:
        return _active.hashes(keys)
    global _warned
    if not _warned and "zmqmr.executor" in sys.modules:
        _warned = True
        log.warning(
            "this executor runs without PYTHONHASHSEED=%s: keys of user types are "
            "hashed by a helper process, more slowly",
            HASH_SEED,
        )
    with seeded_hashing() as hasher:
        return hasher.hashes(keys)


# -- a range partitioner ------------------------------------------------------------------


class RangePartitioner:
    """Keys cut into ranges at ``boundaries``, in key order: a total-order partitioner
    (Hadoop's ``TotalOrderPartitioner``), so partition 0's keys are below partition 1's
    and the part files, one after the other, are the job's output sorted whole.

    ``RangePartitioner(["g", "n", "t"])`` is a partitioner for R = 4: keys below
    ``"g"`` go to 0, keys from ``"g"`` up to (not including) ``"n"`` to 1, and so
    on: partition ``i`` is the keys ``k`` with ``boundaries[i-1] <= k <
    boundaries[i]``. Called with another R it raises ValueError.

    zmqmr knows it keeps key order: a map task sorts its output once and cuts
    it at the boundaries (with bisect) instead of calling it for every key.
    """

    def __init__(self, boundaries: Iterable[Any]) -> None:
        self.boundaries = list(boundaries)
        try:
            ordered = all(a < b for a, b in itertools.pairwise(self.boundaries))
        except TypeError as exc:
            raise TypeError(f"range boundaries must be mutually orderable: {exc}") from None
        if not ordered:
            raise ValueError("range boundaries must be strictly increasing")

    def __call__(self, key: Any, num_partitions: int) -> int:
        if num_partitions != len(self.boundaries) + 1:
            raise self._wrong_r(num_partitions)
        return bisect.bisect_right(self.boundaries, key)

    def _wrong_r(self, num_partitions: int) -> ValueError:
        return ValueError(
            f"a RangePartitioner with {len(self.boundaries)} boundaries cuts keys into "
            f"{len(self.boundaries) + 1} partitions; the job has num_reducers={num_partitions}"
        )

    def cut(self, items: list[tuple[Any, Any]], num_partitions: int) -> list[list[Any]]:
        """``(key, x)`` items sorted by key, in their R partitions (slices at the boundaries)."""
        if num_partitions != len(self.boundaries) + 1:
            raise self._wrong_r(num_partitions)
        # A boundary is the first key of its partition: the cut goes before keys equal to it.
        cuts = [0, *(bisect.bisect_left(items, b, key=_first) for b in self.boundaries)]
        cuts.append(len(items))
        return [items[a:b] for a, b in itertools.pairwise(cuts)]

    def __repr__(self) -> str:
        return f"RangePartitioner({self.boundaries!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is RangePartitioner and other.boundaries == self.boundaries

    __hash__ = None  # type: ignore[assignment]


# -- partitioning a job's keys -------------------------------------------------------------


class Partitioning:
    """``key -> partition`` for one job: the user's partitioner, checked, or the default.

    The user's partitioner is called for every key at every R (so one that
    answers 5 fails at R = 1 too); the default sends everything to 0 at R = 1.
    """

    def __init__(self, partitioner: Partitioner | None, num_partitions: int) -> None:
        self.partitioner = partitioner
        self.num_partitions = num_partitions

    def __call__(self, key: Any) -> int:
        if self.partitioner is not None:
            return self._checked(key)
        if self.num_partitions == 1:
            return 0
        return default_partitioner(key, self.num_partitions)

    def _checked(self, key: Any) -> int:
        p = self.partitioner(key, self.num_partitions)  # type: ignore[misc]
        if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < self.num_partitions:
            raise self._bad(key, p)
        return p

    def _bad(self, key: Any, p: Any) -> ValueError:
        return ValueError(
            f"partitioner returned {p!r} for key {key!r:.80}; it must return an int in "
            f"[0, {self.num_partitions})"
        )

    def _split_by_user(self, items: list[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]]:
        """``split`` with the user's partitioner: called once per item, its answers
        checked and the items distributed in C-level passes where R is small."""
        n = self.num_partitions
        ps = list(map(self.partitioner, map(_first, items), itertools.repeat(n)))  # type: ignore[arg-type]
        if not (set(map(type, ps)) <= {int} and (not ps or (min(ps) >= 0 and max(ps) < n))):
            for item, p in zip(items, ps):
                if type(p) is not int or not 0 <= p < n:
                    raise self._bad(item[0], p)
        if n <= 8:  # R passes of compress() cost less than one Python loop
            return [
                list(itertools.compress(items, map(operator.eq, ps, itertools.repeat(r))))
                for r in range(n)
            ]
        parts: list[list[tuple[Any, Any]]] = [[] for _ in range(n)]
        for item, p in zip(items, ps):
            parts[p].append(item)
        return parts

    def split_sorted(self, items: list[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]] | None:
        """``(key, x)`` items in R lists each sorted by key, where the partitioner is known
        to keep key order (``RangePartitioner``): one sort (stable, in place), then a
        cut at the boundaries. None where it is not, or where the keys' order is not
        ``<`` (then ``split`` and a sort of each list give the same lists)."""
        if type(self.partitioner) is not RangePartitioner:
            return None
        if not set(map(type, map(_first, items))) <= _TOTAL:
            return None
        try:
            items.sort(key=_first)
        except TypeError:  # keys that do not compare: ``split`` and the sorts say which
            return None
        return self.partitioner.cut(items, self.num_partitions)

    def split(self, items: Iterable[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]]:
        """``(key, x)`` items in R lists by their key's partition (in no set order within one)."""
        n = self.num_partitions
        if self.partitioner is not None:
            return self._split_by_user(list(items))
        parts: list[list[tuple[Any, Any]]] = [[] for _ in range(n)]
        if n == 1:
            parts[0] = list(items)
            return parts
        crc = zlib.crc32
        hashed: list[tuple[Any, Any]] = []
        for item in items:
            key = item[0]
            if type(key) is str:  # the common case, without a detour through encode()
                parts[crc(key.encode("utf-8", "surrogatepass")) % n].append(item)
                continue
            data = encode(key)
            if data is None:
                hashed.append(item)
            else:
                parts[crc(data) % n].append(item)
        if hashed:
            hashes = seeded_hashes([item[0] for item in hashed])
            for item, h in zip(hashed, hashes):
                parts[h % n].append(item)
        return parts
