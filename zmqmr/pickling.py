"""Pickling the job's functions so that remote tracebacks name the user's files.

cloudpickle 3.1 and later give every code object it ships by value the file
name ``<dynamic-code>`` (so that pickles are reproducible), and a worker has no
copy of the user's source anyway: a traceback from a task would lose both the
file name and the source line. The pickler here wraps each code object it
ships with its real file name and the source lines it spans. Unpickling (an
ordinary ``pickle.loads`` on the worker) puts the file name back and the lines
into ``linecache``, so ``traceback`` prints them as it would on the user's
machine, on every cloudpickle version.

Imports: the standard library and cloudpickle; nothing of zmqmr.
"""

from __future__ import annotations

import io
import linecache
import pickle
import types
from collections.abc import Callable
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


class _Pickler(cloudpickle.Pickler):
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
