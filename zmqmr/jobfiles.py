"""Job files: a module defining ``mapper`` (or ``split_mapper``) and ``reducer``,
maybe ``combiner``, ``partitioner`` and ``JOB = dict(...)`` of settings.

``zmqmr run`` and the chaos harness load them here. A mistake in one (a missing
function, a wrong setting, an error on import) ends as ``zmqmr.cli.fail`` ends:
one message on stderr (the job file's own traceback included) and exit status 1.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
import typing
from collections.abc import Mapping
from types import ModuleType
from typing import Any, NoReturn


# zmqmr.cli imports this module at its top, so its helpers are looked up when called.
def fail(message: str) -> NoReturn:
    from .cli import fail

    fail(message)


def _typed(values: Mapping[str, Any], types: Mapping[str, Any], source: str, what: str) -> Any:
    from .cli import _typed

    return _typed(values, types, source, what)


#: Job arguments that are not settings: the functions (module-level names of a
#: job file) and the inputs (the command line's).
_NOT_SETTINGS = (
    "self",
    "mapper",
    "split_mapper",
    "reducer",
    "combiner",
    "partitioner",
    "inputs",
)


def job_setting_types() -> dict[str, Any]:
    """Name -> declared type of every ``Job`` setting (what ``JOB`` and ``--set`` may give)."""
    from .job import Job

    hints = typing.get_type_hints(Job.__init__)
    names = inspect.signature(Job.__init__).parameters
    return {name: hints[name] for name in names if name not in _NOT_SETTINGS}


def _user_traceback(exc: BaseException, path: str) -> str:
    """The traceback of an error raised while importing ``path``, from its first frame on.

    The frames before it (this module, importlib) are zmqmr's, not the
    user's; a syntax error has none of the user's and shows as Python shows it.
    """
    tb = exc.__traceback__
    while tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename) != path:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def load_job_file(path: str) -> ModuleType:
    """Import a job file (a module defining mapper, reducer, maybe combiner/partitioner)."""
    if not os.path.isfile(path):
        fail(
            f"job file {path!r} does not exist"
            if not os.path.exists(path)
            else f"job file {path!r} is not a file"
        )
    given, path = path, os.path.abspath(path)
    name = "zmqmr_jobfile_" + "".join(
        c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(path))[0]
    )
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        fail(f"cannot load {given!r} as Python (a job file is a .py file)")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        fail(f"the job file {given} failed to import:\n{_user_traceback(exc, path)}")
    has_mapper = callable(getattr(module, "mapper", None))
    has_split_mapper = callable(getattr(module, "split_mapper", None))
    if has_mapper == has_split_mapper:
        fail(f"{given} must define a function mapper() or split_mapper() (one of them)")
    if not callable(getattr(module, "reducer", None)):
        fail(f"{given} must define a function reducer()")
    return module


def job_from_file(
    path: str,
    inputs: list[str],
    reducers: int | None = None,
    output: str | None = None,
    split_size: int | None = None,
    settings: Mapping[str, Any] | None = None,
) -> Any:
    """The Job a job file defines, on ``inputs``.

    Settings come from, last one winning: the Job's defaults, the file's
    ``JOB = dict(...)``, ``reducers``/``output``/``split_size`` when given
    (``-r``, ``-o``, ``--split-size``), and ``settings`` (``--set``).
    """
    from .job import Job

    mod = load_job_file(path)
    types = job_setting_types()
    values: dict[str, Any] = {"name": os.path.splitext(os.path.basename(path))[0]}
    declared = getattr(mod, "JOB", None)
    if declared is not None:
        if not isinstance(declared, Mapping):
            fail(f"{path}: JOB must be a dict of Job settings, got {type(declared).__name__}")
        for name in set(declared) & set(_NOT_SETTINGS):
            where = "on the command line" if name == "inputs" else f"as {name}() at module level"
            fail(f"{path}: JOB cannot hold {name!r}; give it {where}")
        values.update(_typed(declared, types, f"{path}: JOB", "Job setting"))
    flags = {"num_reducers": reducers, "output_dir": output, "split_size": split_size}
    values.update({k: v for k, v in flags.items() if v is not None})
    values.update(settings or {})
    return Job(
        mapper=getattr(mod, "mapper", None),
        split_mapper=getattr(mod, "split_mapper", None),
        reducer=mod.reducer,
        inputs=inputs,
        combiner=getattr(mod, "combiner", None),
        partitioner=getattr(mod, "partitioner", None),
        **values,
    )
