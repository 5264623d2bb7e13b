"""A plain copy of the repository runs the README's commands with nothing beside it.

The copy holds exactly the files git tracks, in a directory of its own, so a
path that reaches outside the repository (``../shared``, a file someone
forgot to add) fails here as it would in a fresh clone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import BOOKS, REPO, count_words


def tracked_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 0, f"the tests need a git checkout: {out.stderr.decode()}"
    return [f for f in out.stdout.decode().split("\0") if f]


@pytest.fixture(scope="module")
def plain_copy(tmp_path_factory):
    """``<tmp>/zmqmr``: every tracked file, and nothing else in ``<tmp>``."""
    top = tmp_path_factory.mktemp("clone")
    copy = top / "zmqmr"
    for name in tracked_files():
        src = os.path.join(REPO, name)
        if not os.path.lexists(src):  # deleted in the work tree, not yet committed
            continue
        dst = copy / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)
    assert sorted(os.listdir(top)) == ["zmqmr"]
    return copy


def copy_env(copy, tmp) -> dict[str, str]:
    """The copy importable as ``zmqmr`` (ahead of any installed one), a TMPDIR of its own."""
    env = dict(os.environ, PYTHONPATH=str(copy), TMPDIR=str(tmp))
    env.pop("PYTHONHOME", None)
    return env


def test_the_readme_first_command_runs_from_a_plain_copy(plain_copy, tmp_path):
    env = copy_env(plain_copy, tmp_path)
    where = subprocess.run(
        [sys.executable, "-c", "import zmqmr; print(zmqmr.__file__)"],
        cwd=plain_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert where.stdout.strip() == str(plain_copy / "zmqmr" / "__init__.py"), where.stderr

    proc = subprocess.run(
        [sys.executable, "examples/wordcount.py"],
        cwd=plain_copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    # The script checks the cluster against run_serial; check the script against a
    # count made here, over the copy's own books.
    books = sorted((plain_copy / "examples" / "data" / "gutenberg").glob("*.txt"))
    assert [b.name for b in books] == [os.path.basename(b) for b in BOOKS]
    expected = count_words(books)
    assert f"cluster and run_serial agree: True ({len(expected)} distinct words)" in proc.stdout
    top = re.findall(r"^\s+(\d+)  ([a-z]+)$", proc.stdout, re.MULTILINE)
    assert len(top) == 10
    assert {word: int(n) for n, word in top} == {w: expected[w] for _, w in top}
    assert [int(n) for n, _ in top] == sorted(expected.values(), reverse=True)[:10]
    assert list(tmp_path.iterdir()) == [], "the embedded cluster left files behind"


def pytest_in(root, env, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_the_readme_test_command_runs_from_a_plain_copy(plain_copy, tmp_path):
    """Every test module imports there, and tests that read the books pass there."""
    # A session of its own: the copy's leak checks must not count this session's processes.
    env = dict(copy_env(plain_copy, tmp_path), ZMQMR_TEST_SESSION=f"copy-{os.getpid()}")

    def collected(root, env):
        out = pytest_in(root, env, "--collect-only", "-q")
        assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
        return sorted(line for line in out.stdout.splitlines() if "::" in line)

    there = collected(plain_copy, env)
    assert len(there) > 100
    assert there == collected(REPO, dict(os.environ))

    # The books fixture (tests/conftest.py) and the chaos suite's books (zmqmr/chaos/books).
    chosen = [
        "tests/integration/test_cluster.py::test_wordcount_on_books_equals_serial_run",
        "tests/chaos/test_chaos_checker.py::"
        "test_a_job_that_is_wrong_on_the_cluster_is_reported_as_a_failure",
    ]
    n = sum(1 for item in there if item.split("[")[0] in chosen)
    assert n >= len(chosen)
    out = pytest_in(plain_copy, env, "-q", *chosen)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert re.search(rf"^{n} passed in ", out.stdout, re.MULTILINE), out.stdout
