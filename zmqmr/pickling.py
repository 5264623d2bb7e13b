"""Pickling the job's functions (remote tracebacks name the user's files) and user values.

cloudpickle 3.1 and later give every code object it ships by value the file
name ``<dynamic-code>`` (so that pickles are reproducible), and a worker has no
copy of the user's source anyway: a traceback from a task would lose both the
file name and the source line. The pickler here wraps each code object it
ships with its real file name and the source lines it spans. Unpickling (an
ordinary ``pickle.loads`` on the worker) puts the file name back and the lines
into ``linecache``, so ``traceback`` prints them as it would on the user's
machine, on every cloudpickle version.

Classes shipped by value keep their ``__slots__`` and enums their aliases:
cloudpickle rebuilds a slotted class from a skeleton made without slots (on a
worker its instances grow a ``__dict__``) and an enum without its aliases;
pickled back to the client, which maps them onto its own classes, such values
failed to load. Values that need cloudpickle (results, map outputs, records
of classes from a job file) go through ``dumps_values``, which has the same
fixes.

Imports: the standard library and cloudpickle; nothing of zmqmr.
"""

from __future__ import annotations

import contextlib
import enum
import io
import linecache
import os
import pickle
import site
import sys
import sysconfig
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any

import cloudpickle

# file name -> its lines as shipped, sparse (lines no code spans are empty)
_shipped: dict[str, list[str]] = {}


def _span(code: types.CodeType) -> tuple[int, list[str]] | None:
    """The first line number of ``code`` and the source lines it spans, if readable."""
    lines = linecache.getlines(code.co_filename)
    if not lines:
        return None
    numbers = [n for _, _, n in code.co_lines() if n is not None]
    first = min([code.co_firstlineno, *numbers])
    last = max([code.co_firstlineno, *numbers])
    return first, lines[first - 1 : last]


def _remember(filename: str, first: int, lines: list[str]) -> None:
    held = _shipped.setdefault(filename, [])
    end = first - 1 + len(lines)
    if len(held) < end:
        held.extend("\n" for _ in range(end - len(held)))
    held[first - 1 : end] = lines
    # mtime None: linecache.checkcache keeps the entry instead of reading the disk,
    # where the worker may hold another version of the file, or none.
    linecache.cache[filename] = (sum(map(len, held)), None, held, filename)


def _rebuild_code(
    make: Callable[..., types.CodeType],
    args: tuple[Any, ...],
    filename: str,
    source: tuple[int, list[str]] | None,
) -> types.CodeType:
    code = make(*args)
    if code.co_filename != filename:
        code = code.replace(co_filename=filename)
    if source is not None:
        _remember(filename, *source)
    return code


_make_skeleton_class = getattr(cloudpickle.cloudpickle, "_make_skeleton_class", None)
_make_skeleton_enum = getattr(cloudpickle.cloudpickle, "_make_skeleton_enum", None)


def _keep_slots(cls: type, reduced: Any) -> Any:
    """cloudpickle's reduction of a class shipped by value, rebuilt with its ``__slots__``."""
    if (
        _make_skeleton_class is None
        or not isinstance(reduced, tuple)
        or len(reduced) < 3
        or reduced[0] is not _make_skeleton_class
    ):
        return reduced
    make, args, (clsdict, slotstate), *rest = reduced
    type_kwargs = {**args[3], "__slots__": cls.__dict__["__slots__"]}
    # The new class makes its own slot descriptors; the old class's (a mangled
    # ``__name`` slot stays in the state) must not be set on it.
    clsdict = {
        k: v
        for k, v in clsdict.items()
        if not (isinstance(v, types.MemberDescriptorType) and v.__objclass__ is cls)
    }
    return (make, (*args[:3], type_kwargs, *args[4:]), (clsdict, slotstate), *rest)


def _keep_aliases(cls: type[enum.Enum], reduced: Any) -> Any:
    """cloudpickle's reduction of an enum shipped by value, rebuilt with its aliases.

    cloudpickle rebuilds the members that iterating the enum gives, which leaves
    out aliases, and sets the aliases afterwards as plain attributes: on a class
    it rebuilt that makes them attributes rather than members, and on the
    class it finds tracked (the client's own, when a value comes back) setting
    a member fails with "cannot reassign member".
    """
    if (
        _make_skeleton_enum is None
        or not isinstance(reduced, tuple)
        or len(reduced) < 3
        or reduced[0] is not _make_skeleton_enum
    ):
        return reduced
    make, args, (clsdict, slotstate), *rest = reduced
    names = cls.__members__
    members = {name: member.value for name, member in names.items()}
    clsdict = {k: v for k, v in clsdict.items() if k not in names}
    return (make, (*args[:3], members, *args[4:]), (clsdict, slotstate), *rest)


class _ValuePickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduced = super().reducer_override(obj)
        if isinstance(obj, type):
            if "__slots__" in obj.__dict__:
                return _keep_slots(obj, reduced)
            if issubclass(obj, enum.Enum) and len(obj.__members__) > len(obj):
                return _keep_aliases(obj, reduced)
        return reduced


class _Pickler(_ValuePickler):
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            make, args = self.dispatch_table[types.CodeType](obj)
            return _rebuild_code, (make, args, obj.co_filename, _span(obj))
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, with every shipped code object's file and source."""
    with io.BytesIO() as buf:
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buf.getvalue()


def dumps_values(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, with the classes it ships by value keeping their slots."""
    with io.BytesIO() as buf:
        _ValuePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buf.getvalue()


# -- what travels by value ------------------------------------------------------------


def _installed_roots() -> list[str]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # zmqmr itself
    return [os.path.realpath(r) + os.sep for r in roots if r]


def local_modules() -> list[Any]:
    """Loaded modules that workers may not be able to import: they travel by value."""
    roots = _installed_roots()
    out = []
    for name, mod in list(sys.modules.items()):
        if name == "__main__" or mod is None:
            continue
        path = getattr(mod, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if any(real.startswith(r) for r in roots):
            continue
        out.append(mod)
    return out


#: cloudpickle's by-value registry is one set for the process: a thread leaving the
#: block would unregister the modules another thread is pickling (which then
#: travel by reference, and fail to import on the workers).
_BY_VALUE = threading.RLock()


@contextlib.contextmanager
def local_modules_by_value(modules: list[Any] | None = None) -> Iterator[None]:
    """Inside the block, cloudpickle ships what modules outside installed packages
    define (a script, a notebook, a test module, a job file) by value, installed
    ones by reference. ``modules``: those modules, if already listed by
    ``local_modules()`` (listing them scans every loaded module). One thread at a
    time is inside."""
    with _BY_VALUE, _registered(modules):
        yield


@contextlib.contextmanager
def _registered(modules: list[Any] | None) -> Iterator[None]:
    registered = []
    try:
        for mod in local_modules() if modules is None else modules:
            try:
                cloudpickle.register_pickle_by_value(mod)
                registered.append(mod)
            except (ValueError, TypeError):
                pass
        yield
    finally:
        for mod in registered:
            try:
                cloudpickle.unregister_pickle_by_value(mod)
            except (ValueError, TypeError):
                pass
