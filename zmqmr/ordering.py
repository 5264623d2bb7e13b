"""The order keys are sorted and merged in: ``<`` where it is a total order, a total one where not.

Grouping sorted streams puts equal keys side by side only if the order is
total. ``<`` is for the keys jobs use (str, numbers, bytes, tuples of them),
but not for ``frozenset``: its ``<`` is the subset order, under which a sort
or a merge may leave equal sets apart. So a key that holds a frozenset (itself,
or inside a tuple) is ordered by ``order_key``: the set by its stable encoding
(``partitioning.encode``, the same bytes in every process, so a map task and a
reducer on other machines agree), a tuple element by element; every other
key is its own order key, so the output of a job whose keys order totally is
sorted by ``<`` as before.

In a merge, a key whose order key is not itself travels wrapped in
``Ordered``, which compares with plain keys and with other wrapped ones by
order key; ``reduce_groups`` and ``merged`` unwrap it. Keys that cannot be
ordered against each other raise the TypeError ``sorted`` would, naming the
keys' own types.

Imports: the standard library and ``partitioning``.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from .partitioning import encode

#: Key types whose ``<`` is a total order among themselves and agrees with ``==``.
TOTAL = frozenset({str, int, float, bytes, bool})

_first = itemgetter(0)


class SetOrder:
    """A frozenset's place in a total order: its stable encoding, else its sorted elements."""

    __slots__ = ("rank",)

    def __init__(self, key: frozenset[Any]) -> None:
        data = encode(key)
        if data is not None:
            self.rank: tuple[Any, ...] = (0, data)
        else:  # elements of user types: by their own order, which must be total then
            self.rank = (1, len(key), tuple(sorted(order_key(e) for e in key)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SetOrder) and self.rank == other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, SetOrder):
            return NotImplemented
        return self.rank < other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, SetOrder):
            return NotImplemented
        return self.rank > other.rank

    __hash__ = None  # type: ignore[assignment]


def order_key(key: Any) -> Any:
    """What ``key`` is sorted by: itself unless it holds a frozenset."""
    if type(key) in TOTAL:
        return key
    if isinstance(key, frozenset):
        return SetOrder(key)
    if isinstance(key, tuple):
        parts = [order_key(k) for k in key]
        if all(p is k for p, k in zip(parts, key)):
            return key
        return tuple(parts)
    return key


def _order_of(x: Any) -> Any:
    return x.order if type(x) is Ordered else order_key(x)


def _key_of(x: Any) -> Any:
    return x.key if type(x) is Ordered else x


def _clash(a: Any, b: Any) -> TypeError:
    return TypeError(
        f"'<' not supported between instances of {type(_key_of(a)).__name__!r} "
        f"and {type(_key_of(b)).__name__!r}"
    )


class Ordered:
    """A key whose order key is not itself, as it travels through a merge."""

    __slots__ = ("key", "order")

    def __init__(self, key: Any, order: Any) -> None:
        self.key = key
        self.order = order

    def __eq__(self, other: object) -> bool:
        return bool(self.key == _key_of(other))

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: object) -> bool:
        try:
            return bool(self.order < _order_of(other))
        except TypeError:
            raise _clash(self, other) from None

    def __gt__(self, other: object) -> bool:
        try:
            return bool(_order_of(other) < self.order)
        except TypeError:
            raise _clash(other, self) from None

    def __le__(self, other: object) -> bool:
        return not self.__gt__(other)

    def __ge__(self, other: object) -> bool:
        return not self.__lt__(other)

    def __repr__(self) -> str:
        return f"Ordered({self.key!r})"


def is_total(keys: Any) -> bool:
    """Whether every key in ``keys`` is of a type in TOTAL (so is its own order key)."""
    return set(map(type, keys)) <= TOTAL


def sort_items(items: list[tuple[Any, Any]]) -> None:
    """Sort ``(key, x)`` items by their keys' order key, in place (TypeError if unorderable)."""
    if is_total(map(_first, items)):
        items.sort(key=_first)
    else:
        items.sort(key=lambda item: order_key(item[0]))


class OrderedParts:
    """Decoded ``blocks`` (lists of groups sorted by order key), each ready for a merge
    by ``<``: a key that is not its own order key is wrapped in ``Ordered``.

    ``wrapped`` says whether a part read so far had a key wrapped: a merge of
    streams none of which wrapped one has no key to unwrap (``userfn.merged``).
    """

    __slots__ = ("blocks", "wrapped")

    def __init__(self, blocks: Any) -> None:
        self.blocks = iter(blocks)
        self.wrapped = False

    def __iter__(self) -> OrderedParts:
        return self

    def __next__(self) -> list[Any]:
        groups = next(self.blocks)
        if is_total(map(_first, groups)):
            return groups
        self.wrapped = True
        wrapped = []
        for group in groups:
            key = group[0]
            rank = order_key(key)
            wrapped.append(group if rank is key else (Ordered(key, rank), group[1]))
        return wrapped


ordered_parts = OrderedParts


def ordered_groups(blocks: Any) -> Any:
    """The groups of ``ordered_parts(blocks)``, one at a time."""
    for groups in ordered_parts(blocks):
        yield from groups
