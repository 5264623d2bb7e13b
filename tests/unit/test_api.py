"""The public API is what DESIGN.md §1 promises: names, Job's signature, run_serial, validation."""

from __future__ import annotations

import inspect
import os

import pytest

import zmqmr
from zmqmr.config import MAX_SPLIT_SIZE, MIN_SPLIT_SIZE

#: The names DESIGN.md §1 documents, which tests outside the project rely on.
CONTRACT_NAMES = {
    "Job",
    "WholeFiles",
    "LocalCluster",
    "Client",
    "JobHandle",
    "JobResult",
    "run_serial",
    "increment",
    "default_partitioner",
    # the exception tree of zmqmr/errors.py
    "ZmqmrError",
    "JobError",
    "JobSubmitError",
    "JobFailed",
    "JobCancelled",
    "ResultTooLarge",
    "ClusterError",
    "MasterUnavailable",
    "ProtocolError",
    "ShuffleError",
    "CorruptOutput",
}


def test_all_holds_the_contract_names():
    missing = CONTRACT_NAMES - set(zmqmr.__all__)
    assert not missing, f"missing from zmqmr.__all__: {sorted(missing)}"


def test_every_name_in_all_exists_and_is_listed_once():
    assert len(zmqmr.__all__) == len(set(zmqmr.__all__))
    for name in zmqmr.__all__:
        assert hasattr(zmqmr, name), name


def test_the_type_checkers_imports_are_the_public_names():
    # zmqmr/__init__.py names each public name twice: under TYPE_CHECKING, for the
    # type checker, and in _HOMES, for the lazy import. They must agree.
    import ast

    with open(zmqmr.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    imported = {
        a.name: n.module for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    assert imported == zmqmr._HOMES


def test_every_public_name_is_its_home_modules_object():
    import importlib

    for name, home in zmqmr._HOMES.items():
        assert name in zmqmr.__all__, name
        assert getattr(zmqmr, name) is getattr(importlib.import_module(f"zmqmr.{home}"), name)
    assert set(zmqmr.__all__) - set(zmqmr._HOMES) == {"__version__"}
    with pytest.raises(AttributeError):
        zmqmr.no_such_name  # noqa: B018
    namespace: dict[str, object] = {}
    exec("from zmqmr import *", namespace)
    assert namespace["LocalCluster"] is zmqmr.LocalCluster


@pytest.mark.parametrize(
    ("imports", "absent"),
    [
        ("zmqmr.executor, zmqmr.worker, zmqmr.master", "zmqmr.client zmqmr.local zmqmr.serial"),
        ("zmqmr.__main__, zmqmr.worker", "zmqmr.dashboard http.server zmqmr.master"),
    ],
    ids=["server processes: no client", "worker process: no dashboard"],
)
def test_a_process_imports_only_the_modules_of_its_role(imports, absent):
    """An executor, a worker or the master imports its own modules, not the client's;
    ``python -m zmqmr worker`` imports neither the master nor its dashboard."""
    import subprocess
    import sys

    code = (
        f"import sys, {imports}; print(' '.join(m for m in {absent.split()!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_errors_form_the_documented_tree():
    assert issubclass(zmqmr.JobSubmitError, zmqmr.JobError)
    assert issubclass(zmqmr.JobFailed, zmqmr.JobError)
    assert issubclass(zmqmr.JobCancelled, zmqmr.JobError)
    assert issubclass(zmqmr.ResultTooLarge, zmqmr.JobError)
    assert issubclass(zmqmr.MasterUnavailable, zmqmr.ClusterError)
    assert issubclass(zmqmr.CorruptOutput, zmqmr.ShuffleError)
    for name in ("JobError", "ClusterError", "ProtocolError", "ShuffleError"):
        assert issubclass(getattr(zmqmr, name), zmqmr.ZmqmrError)


def test_job_failed_carries_the_remote_traceback():
    err = zmqmr.JobFailed(
        "map task 0 failed", "ValueError", "boom", "Traceback...\nValueError: boom", "map task 0"
    )
    assert (err.remote_type, err.remote_message, err.task) == ("ValueError", "boom", "map task 0")
    assert "ValueError: boom" in str(err)


#: Job's parameters as DESIGN.md §1 lists them, in order, with their defaults. Since
#: ``split_mapper`` may stand in for ``mapper``, the first three have a default of
#: None and ``validate`` requires them (tested in test_split_mapper.py).
JOB_CONTRACT = [
    ("mapper", None),
    ("reducer", None),
    ("inputs", None),
    ("num_reducers", 1),
    ("combiner", None),
    ("partitioner", None),
    ("output_dir", None),
    ("name", None),
    ("split_size", None),  # planned for the cluster unless given
    ("max_attempts", 4),
    ("speculative", True),
    ("skip_bad_records", False),
]


def test_job_signature_matches_the_contract():
    params = inspect.signature(zmqmr.Job).parameters
    names = list(params)
    assert names[: len(JOB_CONTRACT)] == [n for n, _ in JOB_CONTRACT]
    for name, default in JOB_CONTRACT:
        assert params[name].default == default, name
        assert params[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    # anything added after the contract must be optional
    for extra in names[len(JOB_CONTRACT) :]:
        assert params[extra].default is not inspect.Parameter.empty, extra
    assert params["split_mapper"].default is None


def test_planned_split_sizes_are_a_reasonable_number_of_bytes():
    assert 64 * 1024 <= MIN_SPLIT_SIZE < MAX_SPLIT_SIZE <= 256 * 1024 * 1024


def test_client_and_local_cluster_signatures_match_the_contract():
    client = inspect.signature(zmqmr.Client).parameters
    assert list(client)[:2] == ["address", "keys"] and client["keys"].default is None
    local = inspect.signature(zmqmr.LocalCluster).parameters
    assert "workers" in local
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in local.values())
    increment = inspect.signature(zmqmr.increment).parameters
    assert list(increment) == ["name", "n"] and increment["n"].default == 1


# -- run_serial ------------------------------------------------------------------------


def words(key, line):
    for w in line.split():
        zmqmr.increment("words")
        yield w, 1


def total(key, counts):
    return sum(counts)


def test_run_serial_counts_words_of_in_memory_records():
    records = [(1, "the cat sat"), (2, "the dog"), (3, ""), (4, "cat the")]
    job = zmqmr.Job(words, total, records, num_reducers=3)
    result = zmqmr.run_serial(job)
    assert result.to_dict() == {"the": 3, "cat": 2, "sat": 1, "dog": 1}
    assert result.counters["words"] == 7
    assert result.counters["zmqmr.map_input_records"] == 4


def test_run_serial_orders_by_partition_then_key():
    records = [(i, " ".join(f"w{j}" for j in range(i, i + 5))) for i in range(20)]
    job = zmqmr.Job(words, total, records, num_reducers=4)
    items = list(zmqmr.run_serial(job).items())
    order = [(zmqmr.default_partitioner(k, 4), k) for k, _ in items]
    assert order == sorted(order)
    assert len({p for p, _ in order}) > 1


def test_run_serial_reads_text_files_with_path_and_offset_keys(tmp_path):
    path = tmp_path / "in.txt"
    path.write_bytes(b"ab\ncd\n")

    def echo(key, line):
        yield key, line

    result = zmqmr.run_serial(zmqmr.Job(echo, lambda k, vs: list(vs), [str(path)], split_size=2))
    assert result.to_dict() == {(str(path), 0): ["ab"], (str(path), 3): ["cd"]}


def test_run_serial_uses_a_custom_partitioner():
    job = zmqmr.Job(
        words,
        total,
        [(1, "a b c d")],
        num_reducers=2,
        partitioner=lambda key, n: 0 if key in "ab" else 1,
    )
    assert [k for k, _ in zmqmr.run_serial(job).items()] == ["a", "b", "c", "d"]


def test_run_serial_names_unorderable_key_types():
    def mixed(key, value):
        yield value, 1

    job = zmqmr.Job(mixed, total, [(1, 1), (2, "one")])
    with pytest.raises(TypeError, match="int") as info:
        zmqmr.run_serial(job)
    assert "str" in str(info.value)


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_attempts", 0),
        ("max_attempts", True),
        ("num_reducers", 0),
        ("num_reducers", 2.0),
        ("split_size", 0),
        ("task_timeout", -1.0),
        ("task_timeout", 0),
        ("name", 5),
        ("mapper", "not callable"),
        ("combiner", 3),
        ("partitioner", "x"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, str) else v,
)
def test_validate_names_the_bad_setting(setting, value):
    kwargs = {"mapper": words, "reducer": total, "inputs": [(1, "a")], setting: value}
    job = zmqmr.Job(**kwargs)
    with pytest.raises(zmqmr.JobSubmitError, match=setting):
        job.validate()
    with pytest.raises(zmqmr.JobSubmitError, match=setting):
        zmqmr.run_serial(job)


def test_valid_job_passes_validation_and_is_named_after_its_mapper_and_input():
    job = zmqmr.Job(words, total, [(1, "a"), (2, "b")], task_timeout=2.5)
    job.validate()
    assert job.name == f"{__name__}.words 2 records"
    paths = zmqmr.Job(words, total, ["books/a.txt", "books/b.txt"])
    assert paths.name == f"{__name__}.words books/a.txt (+1)"
    assert zmqmr.Job(words, total, "b/*.txt").name == f"{__name__}.words b/*.txt"
    whole = zmqmr.Job(words, total, zmqmr.WholeFiles(["x.txt"]))
    assert whole.name == f"{__name__}.words x.txt"
    assert zmqmr.Job(words, total, [], name="custom").name == "custom"
    odd = zmqmr.Job(words, total, ["\x1b[2J" + "x" * 300])
    assert odd.name.isprintable() and len(odd.name) <= 200


def test_local_cluster_caches_the_package_bytecode_for_its_processes():
    # Every process a LocalCluster starts imports zmqmr; without bytecode on disk
    # (PYTHONDONTWRITEBYTECODE, a fresh editable install) each would compile it again.
    import importlib.util

    from zmqmr import local

    pyc = importlib.util.cache_from_source(local.__file__)
    if os.path.exists(pyc):
        os.remove(pyc)
    local._cache_bytecode()
    assert os.path.exists(pyc)
    assert os.path.getmtime(pyc) >= os.path.getmtime(local.__file__)
