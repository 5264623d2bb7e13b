"""The examples in examples/: as job files on a LocalCluster, as scripts, and through the CLI.

Each job is checked twice: against ``zmqmr.run_serial`` (same records, same
order) and against an answer computed here without zmqmr, so a bug shared by
the cluster and the oracle, or in the example itself, still shows.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from decimal import Decimal

import pytest
from conftest import BOOKS_DIR

import zmqmr
from zmqmr.cli import load_job_file

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")
# Two short books: enough text for several map tasks, quick to count here.
TWO_BOOKS = [
    os.path.join(BOOKS_DIR, "pg-being_ernest.txt"),
    os.path.join(BOOKS_DIR, "pg-metamorphosis.txt"),
]
SPLIT_SIZE = 48 * 1024  # cuts each book into a few splits, so maps and combiners run many times
WORD = re.compile(r"[a-z]+")


@pytest.fixture(scope="module")
def cluster():
    for path in TWO_BOOKS:
        assert os.path.isfile(path), f"missing input book {path}"
    with zmqmr.LocalCluster(workers=2) as c:
        yield c


@pytest.fixture(params=[1, 3], ids=lambda r: f"R{r}")
def reducers(request):
    return request.param


def load(name):
    """Import an example the way ``zmqmr run`` does."""
    return load_job_file(os.path.join(EXAMPLES, f"{name}.py"))


def job_of(module, inputs, reducers):
    return zmqmr.Job(
        mapper=getattr(module, "mapper", None),
        split_mapper=getattr(module, "split_mapper", None),
        reducer=module.reducer,
        combiner=getattr(module, "combiner", None),
        partitioner=getattr(module, "partitioner", None),
        inputs=inputs,
        num_reducers=reducers,
        split_size=SPLIT_SIZE,
    )


def run_checked(cluster, job):
    """Run on the cluster, assert the records (and their order) equal run_serial's."""
    result = cluster.client().run(job, progress=False)
    items = list(result.items())
    serial = zmqmr.run_serial(job)
    assert items == list(serial.items())
    return result, items


def read_lines(paths):
    for path in paths:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            offset = 0
            for line in f:
                yield path, offset, line.rstrip("\n")
                offset += len(line.encode("utf-8", "surrogateescape"))


def count_words(paths):
    return Counter(w for _, _, line in read_lines(paths) for w in WORD.findall(line.lower()))


# -- each example as a job file on the shared cluster ------------------------------------


def test_wordcount(cluster, reducers):
    result, items = run_checked(cluster, job_of(load("wordcount"), TWO_BOOKS, reducers))
    assert dict(items) == count_words(TWO_BOOKS)
    assert result.stats["maps"] > len(TWO_BOOKS)


def test_wordcount_with_in_mapper_combining(cluster, reducers):
    result, items = run_checked(cluster, job_of(load("wordcount_inmapper"), TWO_BOOKS, reducers))
    assert dict(items) == count_words(TWO_BOOKS)
    maps = result.stats["maps"]
    assert maps > len(TWO_BOOKS)
    lines = sum(1 for _ in read_lines(TWO_BOOKS))
    assert result.counters["lines"] == result.counters["zmqmr.map_input_records"] == lines
    # One pair per distinct word per split, not one per occurrence.
    assert result.counters["zmqmr.map_output_records"] <= maps * len(dict(items))
    assert result.counters["zmqmr.map_output_records"] < sum(count_words(TWO_BOOKS).values())


def test_inverted_index(cluster, reducers):
    module = load("inverted_index")
    assert module.combiner is not None  # the combiner's output must feed the reducer
    _, items = run_checked(cluster, job_of(module, TWO_BOOKS, reducers))
    expected = defaultdict(set)
    for path, _, line in read_lines(TWO_BOOKS):
        for word in WORD.findall(line.lower()):
            expected[word].add(os.path.basename(path))
    assert dict(items) == {w: sorted(names) for w, names in expected.items()}
    assert dict(items)["gregor"] == ["pg-metamorphosis.txt"]


def grep_expected(pattern, paths):
    regex = re.compile(pattern)
    return {
        (os.path.basename(path), offset): line
        for path, offset, line in read_lines(paths)
        if regex.search(line)
    }


def test_grep_default_pattern(cluster, reducers, monkeypatch):
    monkeypatch.delenv("ZMQMR_GREP_PATTERN", raising=False)
    module = load("grep")
    _, items = run_checked(cluster, job_of(module, TWO_BOOKS, reducers))
    expected = grep_expected(module.DEFAULT_PATTERN, TWO_BOOKS)
    assert expected, "the default pattern should match something in the books"
    assert dict(items) == expected


def test_grep_pattern_from_environment_reaches_the_workers(cluster, monkeypatch):
    # The workers started before this variable was set, so they can only see
    # the pattern if it travels inside the pickled mapper.
    monkeypatch.setenv("ZMQMR_GREP_PATTERN", r"(?i)\bgregor\b")
    module = load("grep")
    assert module.PATTERN.pattern == r"(?i)\bgregor\b"
    _, items = run_checked(cluster, job_of(module, TWO_BOOKS, 3))
    expected = grep_expected(r"(?i)\bgregor\b", TWO_BOOKS)
    assert len(expected) > 100
    assert dict(items) == expected
    assert {name for name, _ in dict(items)} == {"pg-metamorphosis.txt"}


def test_reverse_links(cluster, reducers, tmp_path):
    module = load("reverse_links")
    paths = module.generate(str(tmp_path))
    _, items = run_checked(cluster, job_of(module, paths, reducers))
    expected = defaultdict(set)
    for _, _, line in read_lines(paths):
        source, targets = line.split("\t")
        for target in targets.split():
            expected[target].add(source)
    assert dict(items) == {t: sorted(s) for t, s in expected.items()}
    assert len(items) > 1000


def test_sales(cluster, reducers, tmp_path):
    module = load("sales")
    paths = module.generate(str(tmp_path), rows=6000)
    _, items = run_checked(cluster, job_of(module, paths, reducers))
    expected = Counter()
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                cents = Decimal(row["unit_price"]) * 100 * int(row["quantity"])
                expected[row["store"], row["product"]] += int(cents)
    assert dict(items) == dict(expected)
    assert all(type(v) is int for _, v in items)


def test_weblog(cluster, reducers, tmp_path):
    module = load("weblog")
    paths = module.generate(str(tmp_path), lines=8000, malformed_every=101)
    result, items = run_checked(cluster, job_of(module, paths, reducers))
    expected = Counter()
    malformed = 0
    for _, _, line in read_lines(paths):
        parts = line.split()
        if len(parts) != 10:
            malformed += 1
            continue
        method, url, status = parts[5].lstrip('"'), parts[6], parts[8]
        path = url.partition("?")[0]
        expected.update([("status", status), ("method", method), ("endpoint", path)])
        if int(status) >= 500:
            expected["error_endpoint", path] += 1
    assert malformed == 8000 // 101
    assert dict(items) == dict(expected)
    assert result.counters["weblog.malformed"] == malformed


# -- the examples as scripts, and the CLI --------------------------------------------------


def run_in_repo(args, tmp_path):
    """Run a command from the repository root with its own TMPDIR; check it empties."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    proc = subprocess.run(
        args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    assert list(tmpdir.iterdir()) == [], "temporary files left behind"
    return proc.stdout


@pytest.mark.parametrize("example", ["wordcount", "wordcount_inmapper", "weblog"])
def test_example_script_agrees_with_run_serial(example, tmp_path):
    out = run_in_repo([sys.executable, f"examples/{example}.py"], tmp_path)
    assert "cluster and run_serial agree: True" in out
    if example.startswith("wordcount"):
        # The default inputs are all the books, found relative to the file.
        counts = count_words(sorted(glob.glob(os.path.join(BOOKS_DIR, "*.txt"))))
        assert f"({len(counts)} distinct words)" in out


def cli_run(tmp_path, *extra, example="wordcount"):
    args = [sys.executable, "-m", "zmqmr", "run", f"examples/{example}.py", *TWO_BOOKS]
    return run_in_repo([*args, "-r", "3", *extra], tmp_path)


@pytest.mark.parametrize("example", ["wordcount", "wordcount_inmapper"])
def test_cli_prints_records_in_partition_and_key_order(tmp_path, example):
    out = cli_run(tmp_path, example=example)
    pairs = [line.split("\t") for line in out.splitlines()]
    assert {k: int(v) for k, v in pairs} == count_words(TWO_BOOKS)
    assert len(pairs) == len({k for k, _ in pairs})
    order = [(zmqmr.default_partitioner(k, 3), k) for k, _ in pairs]
    assert order == sorted(order)


def test_cli_writes_sorted_part_files(tmp_path):
    out_dir = tmp_path / "out"
    out = cli_run(tmp_path, "-o", str(out_dir))
    parts = [out_dir / f"part-{i:05d}" for i in range(3)]
    assert sorted(out.split()) == [str(p) for p in parts]
    assert sorted(p.name for p in out_dir.iterdir()) == ["_SUCCESS"] + [p.name for p in parts]
    counts = {}
    for i, part in enumerate(parts):
        keys = []
        for line in part.read_text().splitlines():
            key, value = line.split("\t")
            assert zmqmr.default_partitioner(key, 3) == i
            keys.append(key)
            counts[key] = int(value)
        assert keys == sorted(keys)
        assert len(keys) == len(set(keys))
    assert counts == count_words(TWO_BOOKS)
