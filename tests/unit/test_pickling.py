"""Shipped functions keep their file names and source lines in remote tracebacks."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import cloudpickle

from zmqmr import pickling

USER_MODULE = """\
import re

WORD = re.compile(r"[a-z]+")


def helper(word):
    if word == "boom":
        raise ValueError("the helper saw " + word)
    return word


def mapper(key, line):
    for word in WORD.findall(line):
        yield helper(word), 1


def outer():
    def inner(x):
        return 1 // x
    return inner
"""

# Runs in a fresh interpreter, where the user's file no longer exists.
RECEIVER = textwrap.dedent(
    """
    import pickle, sys, traceback
    fns = pickle.loads(sys.stdin.buffer.read())
    for name, call in (("mapper", lambda: list(fns["mapper"](0, "a boom"))),
                       ("inner", lambda: fns["inner"](0))):
        try:
            call()
        except Exception as exc:
            print("".join(traceback.format_exception(exc)))
            print("=====")
    """
)


@contextlib.contextmanager
def _local_module(tmp_path, name: str, source: str) -> Iterator[Any]:
    """``source`` as the module ``name``, imported from a file outside any package (as a
    script's or a test's own module is) and in ``sys.modules`` while the block runs."""
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[name]


def _load_user_module(tmp_path):
    path = tmp_path / "userjob.py"
    path.write_text(USER_MODULE)
    spec = importlib.util.spec_from_file_location("userjob_for_pickling", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, str(path)


def _ship(tmp_path):
    mod, path = _load_user_module(tmp_path)
    cloudpickle.register_pickle_by_value(sys.modules.setdefault(mod.__name__, mod))
    try:
        blob = pickling.dumps({"mapper": mod.mapper, "inner": mod.outer()})
    finally:
        cloudpickle.unregister_pickle_by_value(mod)
        del sys.modules[mod.__name__]
    return blob, path


def test_remote_traceback_names_the_users_file_line_and_source(tmp_path):
    blob, path = _ship(tmp_path)
    os.remove(path)  # the receiver must get the source from the pickle, not the disk
    out = subprocess.run(
        [sys.executable, "-c", RECEIVER], input=blob, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    mapper_tb, inner_tb, _ = out.split("=====")
    assert f'File "{path}", line 8, in helper' in mapper_tb
    assert 'raise ValueError("the helper saw " + word)' in mapper_tb
    assert f'File "{path}", line 14, in mapper' in mapper_tb
    assert "yield helper(word), 1" in mapper_tb
    assert "<dynamic-code>" not in mapper_tb
    # a nested function's code object travels inside its parent's constants
    assert f'File "{path}", line 19, in inner' in inner_tb
    assert "return 1 // x" in inner_tb


def test_shipped_functions_still_behave_the_same(tmp_path):
    blob, _ = _ship(tmp_path)
    fns = pickle.loads(blob)
    assert list(fns["mapper"](0, "one two")) == [("one", 1), ("two", 1)]
    assert fns["inner"](1) == 1


def test_a_function_without_readable_source_still_ships():
    namespace: dict = {}
    exec(compile("def f(x):\n    return x + 1\n", "<no-such-file>", "exec"), namespace)
    fn = pickle.loads(pickling.dumps(namespace["f"]))
    assert fn(1) == 2
    assert fn.__code__.co_filename == "<no-such-file>"


# -- values of classes shipped by value -------------------------------------------------

VALUE_MODULE = """\
import dataclasses
import enum


class Point:
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x, self.y = x, y


class Secret:
    __slots__ = ("__code", "name")

    def __init__(self, code, name):
        self.__code, self.name = code, name

    def code(self):
        return self.__code


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    left: int
    right: str


class Color(enum.Enum):
    RED = 1
    GREEN = 2
    CRIMSON = 1  # an alias of RED


class Perm(enum.Flag):
    R = 4
    W = 2
    RW = 6  # a named combination
"""

# A worker: gets the classes by value, makes values of them, sends them back.
VALUE_WORKER = textwrap.dedent(
    """
    import pickle, sys
    from zmqmr import pickling
    mod = pickle.loads(sys.stdin.buffer.read())
    made = [mod["Point"](1, 2), mod["Secret"](7, "s"), mod["Pair"](3, "r")]
    print([hasattr(v, "__dict__") for v in made], file=sys.stderr)
    Color, Perm = mod["Color"], mod["Perm"]
    print(Color.CRIMSON is Color.RED, list(Perm.__members__), file=sys.stderr)
    made += [Color.CRIMSON, Color.GREEN, Perm.RW, Perm.R]
    sys.stdout.buffer.write(pickling.dumps_values(made))
    """
)


def test_values_of_classes_shipped_by_value_come_back_as_the_clients_classes(tmp_path):
    with _local_module(tmp_path, "valuejob_for_pickling", VALUE_MODULE) as mod:
        with pickling.local_modules_by_value():
            blob = pickling.dumps(
                {n: getattr(mod, n) for n in ("Point", "Secret", "Pair", "Color", "Perm")}
            )
        out = subprocess.run(
            [sys.executable, "-c", VALUE_WORKER],
            input=blob,
            capture_output=True,
            check=True,
            timeout=60,
        )
        # on the worker, the classes kept their slots (no instance has a __dict__)
        # and the enums their aliases
        assert out.stderr.decode().splitlines() == [
            "[False, False, False]",
            "True ['R', 'W', 'RW']",
        ]
        point, secret, pair, crimson, green, rw, r = pickle.loads(out.stdout)
    assert type(point) is mod.Point and (point.x, point.y) == (1, 2)
    assert type(secret) is mod.Secret and (secret.code(), secret.name) == (7, "s")
    assert type(pair) is mod.Pair and pair == mod.Pair(3, "r")
    assert (crimson, green, rw, r) == (mod.Color.RED, mod.Color.GREEN, mod.Perm.RW, mod.Perm.R)
    assert crimson is mod.Color.RED and rw is mod.Perm.R | mod.Perm.W


def test_local_modules_travel_by_value_only_inside_the_block(tmp_path):
    with _local_module(tmp_path, "bymodule_for_pickling", "class Thing:\n    pass\n") as mod:
        with pickling.local_modules_by_value():
            inside = pickling.dumps_values(mod.Thing)
        outside = pickling.dumps_values(mod.Thing)
    assert b"_make_skeleton_class" in inside  # the class itself travels
    assert b"_make_skeleton_class" not in outside  # a reference to bymodule_for_pickling.Thing


def test_threads_pickling_at_once_all_ship_local_modules_by_value(tmp_path):
    # cloudpickle's by-value registry is global: one thread leaving the block must
    # not make another's pickle refer to the module by name.
    import threading

    blobs: list[bytes] = []

    with _local_module(tmp_path, "threadmodule_for_pickling", "class Thing:\n    pass\n") as mod:

        def ship() -> None:
            for _ in range(50):
                with pickling.local_modules_by_value():
                    blobs.append(pickling.dumps_values(mod.Thing))

        threads = [threading.Thread(target=ship) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(blobs) == 300
    assert all(b"_make_skeleton_class" in b for b in blobs)
