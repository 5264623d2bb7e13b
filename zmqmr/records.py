"""Typed records for the wire: dataclasses whose fields each have a checked kind.

``Record.from_json`` builds a record from a decoded JSON object, checking
every field's type and range (ints, finite numbers in a range, bounded
strings, patterns, choices, lists and objects of bounded length, nested
records), refusing unknown and missing fields; anything else raises
``ProtocolError``. ``zmqmr.protocol`` declares every message with these.
Imports: the standard library and ``zmqmr.errors`` only.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .errors import ProtocolError

MAX_INT = 2**63 - 1
#: Bound on the names of counters, object keys and such.
MAX_NAME = 200


# -- field kinds ----------------------------------------------------------------


class Kind:
    """How one field is checked (decoding) and written (encoding)."""

    def check(self, value: Any, where: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def dump(self, value: Any) -> Any:
        return value


#: ``where`` of a first, fast pass that builds no paths; on a failure, decoding runs
#: again with paths, so the error names the field.
FAST = "?"


def _at(where: str, part: str) -> str:
    return where if where is FAST else where + part


def printable(text: str) -> str:
    """``text`` with every unprintable character escaped, for a log line or a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _fail(where: str, want: str, value: Any) -> ProtocolError:
    got = f"{value!r:.40}" if isinstance(value, (int, float, str)) else type(value).__name__
    return ProtocolError(f"{where} must be {want}, got {got}")


@dataclass(frozen=True)
class Int(Kind):
    lo: int = 0
    hi: int = MAX_INT

    def check(self, value: Any, where: str) -> int:
        if type(value) is not int or not self.lo <= value <= self.hi:
            raise _fail(where, f"an int in [{self.lo}, {self.hi}]", value)
        return value


@dataclass(frozen=True)
class Num(Kind):
    lo: float = 0.0
    hi: float = 1e12

    def check(self, value: Any, where: str) -> float:
        t = type(value)  # an int is compared as it is: too large for a float is out of range
        if not (t is int or (t is float and math.isfinite(value))):
            raise _fail(where, "a finite number", value)
        if not self.lo <= value <= self.hi:
            raise _fail(where, f"a number in [{self.lo:g}, {self.hi:g}]", value)
        return value  # type: ignore[no-any-return,unused-ignore]


@dataclass(frozen=True)
class Str(Kind):
    max_len: int = MAX_NAME
    pattern: re.Pattern[str] | None = None
    choices: frozenset[str] | None = None
    #: Only printable characters: no newline, escape or lone surrogate (names that
    #: end up in logs and on terminals).
    printable: bool = False

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str or len(value) > self.max_len:
            raise _fail(where, f"a string of at most {self.max_len} characters", value)
        if self.printable and not value.isprintable():
            raise _fail(where, "printable text", value)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise _fail(where, f"a string matching {self.pattern.pattern}", value)
        if self.choices is not None and value not in self.choices:
            raise _fail(where, f"one of {sorted(self.choices)}", value)
        return value


@dataclass(frozen=True)
class Bool(Kind):
    def check(self, value: Any, where: str) -> bool:
        if type(value) is not bool:
            raise _fail(where, "true or false", value)
        return value


@dataclass(frozen=True)
class Opt(Kind):
    kind: Kind

    def check(self, value: Any, where: str) -> Any:
        return None if value is None else self.kind.check(value, where)

    def dump(self, value: Any) -> Any:
        return None if value is None else self.kind.dump(value)


@dataclass(frozen=True)
class ListOf(Kind):
    item: Kind
    max_len: int

    def check(self, value: Any, where: str) -> list[Any]:
        if type(value) is not list or len(value) > self.max_len:
            raise _fail(where, f"a list of at most {self.max_len} items", value)
        check = self.item.check
        if where is FAST:
            return [check(v, where) for v in value]
        return [check(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def dump(self, value: Any) -> Any:
        dump = self.item.dump
        return [dump(v) for v in value]


@dataclass(frozen=True)
class Ints(Kind):
    """A list of ints in ``[lo, hi]``: a column of many, checked by C-level passes
    over it (its types, its least and greatest) rather than an item at a time."""

    max_len: int
    lo: int = 0
    hi: int = MAX_INT

    def check(self, value: Any, where: str) -> list[int]:
        if type(value) is not list or len(value) > self.max_len:
            raise _fail(where, f"a list of at most {self.max_len} ints", value)
        if value and (
            set(map(type, value)) != {int} or min(value) < self.lo or max(value) > self.hi
        ):
            raise _fail(where, f"a list of ints in [{self.lo}, {self.hi}]", value)
        return value


@dataclass(frozen=True)
class DictOf(Kind):
    """A JSON object of string keys to values of one kind."""

    value: Kind
    max_len: int

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if type(value) is not dict or len(value) > self.max_len:
            raise _fail(where, f"an object of at most {self.max_len} entries", value)
        out = {}
        for k, v in value.items():
            if len(k) > MAX_NAME:
                raise _fail(_at(where, " key"), f"at most {MAX_NAME} characters", k)
            out[k] = self.value.check(v, _at(where, f"[{k!r:.40}]"))
        return out


@dataclass(frozen=True)
class Obj(Kind):
    cls: type[Record]

    def check(self, value: Any, where: str) -> Record:
        return self.cls.from_json(value, where)

    def dump(self, value: Any) -> Any:
        return value.to_json()


R = TypeVar("R", bound="Record")


class Record:
    """A typed object of the wire: a dataclass whose fields each have a ``Kind``.

    A field with a default may be left out of the JSON; every other field must
    be there, and no field that ``FIELDS`` does not name may be.
    """

    FIELDS: ClassVar[dict[str, Kind]] = {}
    _required: ClassVar[frozenset[str]]

    @classmethod
    def _required_fields(cls) -> frozenset[str]:
        req = cls.__dict__.get("_required")
        if req is None:
            req = frozenset(
                f.name
                for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                if f.name in cls.FIELDS
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            )
            cls._required = req
        return req

    @classmethod
    def from_json(cls: type[R], value: Any, where: str = "") -> R:
        if where is FAST:
            return _fast(cls)(value)
        where = where or cls.__name__
        if type(value) is not dict:
            raise _fail(where, "an object", value)
        fields = cls.FIELDS
        for name in value:
            if name not in fields:
                raise ProtocolError(f"{where}: unknown field {name!r:.40}")
        missing = cls._required_fields() - value.keys()
        if missing:
            raise ProtocolError(f"{where}: missing field {sorted(missing)[0]!r}")
        if where is FAST:
            args = {name: fields[name].check(v, where) for name, v in value.items()}
        else:
            args = {name: fields[name].check(v, f"{where}.{name}") for name, v in value.items()}
        obj = cls(**args)
        obj.validate(where)
        return obj

    def validate(self, where: str) -> None:
        """Checks across fields; raise ProtocolError."""

    def to_json(self) -> dict[str, Any]:
        cls = type(self)
        dump = cls.__dict__.get("_fast_to_json")
        if dump is None:
            dump = _compile_to_json(cls)
            cls._fast_to_json = dump  # type: ignore[attr-defined]
        return dump(self)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Pickled (the worker <-> executor pipe) by position: a slotted dataclass's
        # default pickles field names and sets each in Python on load, several times
        # slower for the small records an attempt's messages are made of.
        cls = type(self)
        layout = _Positional.of(cls)
        if layout.keywords:
            keyword_values = layout.keyword_values(self)
            if keyword_values != layout.defaults:
                return _rebuild, (cls, layout.args(self), keyword_values)
        return cls, layout.args(self)


class _Positional:
    """A record class's fields by how its constructor takes them: ``args(obj)`` and
    ``keyword_values(obj)`` give their values as tuples (in C: ``attrgetter``)."""

    @staticmethod
    def of(cls: type) -> _Positional:
        layout: _Positional | None = cls.__dict__.get("_by_position")
        if layout is None:
            layout = _Positional(cls)
            cls._by_position = layout  # type: ignore[attr-defined]
        return layout

    def __init__(self, cls: type) -> None:
        fields = [f for f in dataclasses.fields(cls) if f.init]
        self.keywords = tuple(f.name for f in fields if f.kw_only)
        self.args = _values([f.name for f in fields if not f.kw_only])
        self.keyword_values = _values(list(self.keywords))
        self.defaults = tuple(_default(f) for f in fields if f.kw_only)


def _default(f: dataclasses.Field[Any]) -> Any:
    """A field's default value; for one without a default, a value equal to no other."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return object()


def _values(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda obj: (one(obj),)
    return operator.attrgetter(*names)


def _rebuild(cls: type, args: tuple[Any, ...], keyword_values: tuple[Any, ...]) -> Any:
    keywords = _Positional.of(cls).keywords
    return cls(*args, **dict(zip(keywords, keyword_values)))


# -- compiled fast paths ----------------------------------------------------------------
#
# Per record class, on first use, a function made of straight-line code that does
# what ``from_json(value, FAST)`` (or ``to_json``) does with the field kinds: the
# same checks, without a method call per field. Decoding a DONE or an ASSIGN is
# most of what the master spends per task. A failure raises a bare ProtocolError;
# ``protocol.decode`` then decodes again on the slow path for a message naming
# the field.


def _field_lines(name: str, kind: Kind, ref: str, required: bool, store: str) -> list[str]:
    """A compiled decoder's lines for one field: read it (if present, when optional),
    check it against ``kind`` (``ref``: its name in the decoder's globals), ``store`` it."""
    ind = "    " if required else "        "
    lines = [] if required else [f"    if {name!r} in value:"]
    lines.append(f"{ind}x = value[{name!r}]")
    lines += _inline_check(kind, ref, ind)
    lines.append(f"{ind}{store}")
    return lines


def _inline_check(kind: Kind, ref: str, ind: str) -> list[str]:
    """Lines that check (and convert) ``x`` against ``kind``, bound as ``ref``."""
    if type(kind) is Int:
        return [f"{ind}if type(x) is not int or not {kind.lo} <= x <= {kind.hi}: raise BAD()"]
    if type(kind) is Bool:
        return [f"{ind}if type(x) is not bool: raise BAD()"]
    if type(kind) is Str and kind.pattern is None and kind.choices is None:
        lines = [f"{ind}if type(x) is not str or len(x) > {kind.max_len}: raise BAD()"]
        if kind.printable:
            lines.append(f"{ind}if not x.isprintable(): raise BAD()")
        return lines
    if type(kind) is Opt:
        inner = _inline_check(kind.kind, ref + ".kind", ind + "    ")
        return [f"{ind}if x is not None:", *inner]
    if type(kind) is DictOf and type(kind.value) is Int:  # counters: no call per entry
        v = kind.value
        return [
            f"{ind}if type(x) is not dict or len(x) > {kind.max_len}: raise BAD()",
            f"{ind}for k, v in x.items():",
            f"{ind}    if len(k) > {MAX_NAME} or type(v) is not int or not {v.lo} <= v <= {v.hi}:",
            f"{ind}        raise BAD()",
        ]
    if type(kind) is Obj:  # the nested record's own compiled decoder, called directly
        return [f"{ind}x = fast({ref}.cls)(x)"]
    if type(kind) is ListOf and type(kind.item) is Obj:
        return [
            f"{ind}if type(x) is not list or len(x) > {kind.max_len}: raise BAD()",
            f"{ind}x = [f(v) for v in x] if x and (f := fast({ref}.item.cls)) else []",
        ]
    return [f"{ind}x = {ref}.check(x, FAST)"]


def _fast(cls: type[Record]) -> Any:
    """``cls``'s compiled decoder (``from_json(value, FAST)``), made on first use."""
    fast = cls.__dict__.get("_fast_from_json")
    if fast is None:
        fast = _compile_from_json(cls)
        cls._fast_from_json = fast  # type: ignore[attr-defined]
    return fast


def _compile_from_json(cls: type[Record]) -> Any:
    env: dict[str, Any] = {
        "BAD": ProtocolError,
        "FAST": FAST,
        "fast": _fast,
        "cls": cls,
        "new": object.__new__,
        "NAMES": frozenset(cls.FIELDS),
        "REQUIRED": cls._required_fields(),
    }
    lines = [
        "def from_json(value):",
        "    if type(value) is not dict: raise BAD()",
        "    keys = value.keys()",
        "    if not keys <= NAMES or not REQUIRED <= keys: raise BAD()",
    ]
    fields = _direct_fields(cls)
    if fields is None:  # built through the constructor, by keyword
        lines.append("    kw = {}")
        for i, (name, kind) in enumerate(cls.FIELDS.items()):
            env[f"k{i}"] = kind
            lines += _field_lines(name, kind, f"k{i}", name in env["REQUIRED"], f"kw[{name!r}] = x")
        lines.append("    obj = cls(**kw)")
    else:
        # Set field by field, in the order the constructor would, each absent one to
        # its default: what cls(**kw) does, without the keyword dict and the call.
        lines.append("    obj = new(cls)")
        for i, f in enumerate(fields):
            name = f.name
            if f.default is not dataclasses.MISSING:
                env[f"d{i}"] = f.default
                default = f"obj.{name} = d{i}"
            elif f.default_factory is not dataclasses.MISSING:
                env[f"d{i}"] = f.default_factory
                default = f"obj.{name} = d{i}()"
            else:
                default = ""
            if name not in cls.FIELDS:  # not on the wire: its default
                lines.append(f"    {default}")
                continue
            kind = env[f"k{i}"] = cls.FIELDS[name]
            required = name in env["REQUIRED"]
            lines += _field_lines(name, kind, f"k{i}", required, f"obj.{name} = x")
            if not required:
                lines += ["    else:", f"        {default}"]
        if hasattr(cls, "__post_init__"):
            lines.append("    obj.__post_init__()")
    if cls.validate is not Record.validate:  # something to check across fields
        lines.append("    obj.validate(FAST)")
    lines.append("    return obj")
    exec("\n".join(lines), env)  # noqa: S102 - code built from the class's own field kinds
    return env["from_json"]


def _direct_fields(cls: type[Record]) -> list[dataclasses.Field[Any]] | None:
    """``cls``'s fields in constructor order, if a decoder may set them one by one
    rather than call it: a plain dataclass (its generated ``__init__``, not frozen),
    every field set by that ``__init__``, each one the wire may leave out with a
    default. None otherwise."""
    params = getattr(cls, "__dataclass_params__", None)
    init = cls.__dict__.get("__init__")
    if params is None or params.frozen or init is None:
        return None
    if getattr(getattr(init, "__code__", None), "co_filename", None) != "<string>":
        return None  # an __init__ of its own, not the one dataclass made
    fields = list(dataclasses.fields(cls))  # type: ignore[arg-type]
    for f in fields:
        if not f.init:
            return None
        if f.name in cls._required_fields():
            continue
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            return None  # required by the constructor, optional on the wire: let it refuse
    return fields


def _inline_dump(kind: Kind, ref: str, value: str) -> str:
    if type(kind) in (Int, Num, Str, Bool, DictOf, Ints):
        return value
    if type(kind) is ListOf and type(kind.item) in (Int, Num, Str, Bool):
        return f"list({value})"
    if type(kind) is Obj:
        return f"{value}.to_json()"
    if type(kind) is Opt and type(kind.kind) is Obj:
        return f"(None if {value} is None else {value}.to_json())"
    if type(kind) is Opt and type(kind.kind) in (Int, Num, Str, Bool):
        return value
    if type(kind) is ListOf and type(kind.item) is Obj:
        return f"[v.to_json() for v in {value}]"
    return f"{ref}.dump({value})"


def _compile_to_json(cls: type[Record]) -> Any:
    env: dict[str, Any] = {}
    items = []
    for i, (name, kind) in enumerate(cls.FIELDS.items()):
        env[f"k{i}"] = kind
        items.append(f"{name!r}: {_inline_dump(kind, f'k{i}', 'self.' + name)}")
    exec(f"def to_json(self): return {{{', '.join(items)}}}", env)  # noqa: S102
    return env["to_json"]
