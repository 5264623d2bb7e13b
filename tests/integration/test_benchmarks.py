"""The benchmark scripts run end to end at a small size, and their answer checks hold.

Speed is not asserted here (these machines are shared and noisy); what is
checked is that every contender runs and that all answers agree, which the
scripts themselves verify and report through their exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO

ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``benchmarks/NAME`` with ``args``; fail the test, showing its output, if it fails."""
    out = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", name), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_wordcount_benchmark_runs_every_contender_and_they_agree(tmp_path):
    out = run_script(
        "wordcount.py",
        *("--size", "2MB", "--corpus", str(tmp_path / "corpus.txt"), "--split-size", "512KB"),
        *("--repeat", "1", "--only", "serial,pool,zmqmr,zmqmr-py"),
    )
    assert "answers: all 4 runs agree" in out.stdout
    for name in ("serial", "pool", "zmqmr", "zmqmr-py"):
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines()), name
    assert "C counting loop on" in out.stdout and "C counting loop off" in out.stdout


def test_faults_benchmark_gets_the_right_answer_with_a_killed_worker():
    out = run_script("faults.py", "--copies", "1", "--only", "none,kill")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("none ", "kill "))]
    assert len(lines) == 2 and all("answer right" in ln for ln in lines), out.stdout


def test_faults_benchmark_resumes_a_killed_master_without_rerunning_journaled_maps():
    out = run_script("faults.py", "--copies", "1", "--only", "kill-master")
    lines = out.stdout.splitlines()
    (row,) = [ln for ln in lines if ln.startswith("kill-master ")]
    assert "answer right" in row, out.stdout
    (counts,) = [ln for ln in lines if "map attempts:" in ln]
    before_done = int(counts.split("(")[1].split()[0])
    after = int(counts.split("),")[1].split()[0])
    maps = int(counts.split("restart,")[1].split()[0])
    assert after <= maps - before_done, out.stdout


def test_mapside_benchmark_calls_every_mapper_once_per_record_with_the_right_counts():
    out = run_script("mapside.py", "--size", "1MB", "--repeat", "1")
    rows = [ln.split() for ln in out.stdout.splitlines()]
    calls = {row[0]: row[3] for row in rows if row and row[0] in ("ones", "ones-py", "floats")}
    assert calls == {"ones": "1.00", "ones-py": "1.00", "floats": "1.00"}, out.stdout
    assert any(row and row[0] == "switching" for row in rows), out.stdout


def test_wordcount_benchmark_split_mapper_and_regex_rows_agree_with_serial_and_pool(tmp_path):
    out = run_script(
        "wordcount.py",
        *("--size", "1MB", "--corpus", str(tmp_path / "corpus.txt"), "--split-size", "256KB"),
        *("--repeat", "1", "--only", "serial,zmqmr-split,serial-re,pool-re,zmqmr-re"),
    )
    assert "answers: all 5 runs agree" in out.stdout
    rows = {ln.split()[0]: ln.split() for ln in out.stdout.splitlines() if ln.strip()}
    for name in ("zmqmr-split", "serial-re", "pool-re", "zmqmr-re"):
        assert name in rows, name
    assert rows["serial-re"][2] == "1.00" and rows["pool-re"][3] == "1.00", out.stdout


def test_sort_benchmark_outputs_are_identical_sorted_and_the_input_records(tmp_path):
    out = run_script(
        "sort.py",
        *("--size", "2MB", "--input", str(tmp_path / "input.txt"), "--split-size", "512KB"),
        *("--repeat", "1"),
    )
    assert "answers: all 3 runs agree, sorted, the input's 20,971 records exactly" in out.stdout
    assert (tmp_path / "input.txt").stat().st_size == 20_971 * 100
    for name in ("serial", "pool", "zmqmr"):
        assert any(line.startswith(name + " ") for line in out.stdout.splitlines()), name


def test_sort_benchmark_timeline_lists_every_attempt_once_on_its_worker(tmp_path):
    out = run_script(
        "sort.py",
        *("--size", "2MB", "--input", str(tmp_path / "input.txt"), "--split-size", "512KB"),
        *("--repeat", "1", "--only", "zmqmr", "--timeline"),
    )
    assert "answers: all 1 runs agree" in out.stdout
    lines = out.stdout.splitlines()
    workers = [ln for ln in lines if ln.strip().startswith(("w0:", "w1:"))]
    assert len(workers) == 2 and all("busy" in ln and "idle" in ln for ln in workers), out.stdout
    cells = [c.split()[0] for ln in lines if ln.startswith(" " * 10) for c in ln.split(", ")]
    assert sorted(cells) == ["m0", "m1", "m2", "m3", "r0", "r1", "r2", "r3"], out.stdout


@pytest.mark.parametrize("partitioner", ["range", "fn"])
def test_sort_benchmarks_tasks_in_process_give_serials_part_files(tmp_path, partitioner):
    path = str(tmp_path / "input.txt")
    run_script("sort.py", "--generate", path, "--size", "1MB")
    out = run_script(
        "sort.py",
        *("--input", path, "--tasks", "2", "--split-size", "256KB"),
        *("--partitioner", partitioner, "--profile"),
    )
    assert "answers: the part files are serial's" in out.stdout
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith(("map ", "reduce "))] == [
        "map 0", "map 1", "reduce 0", "reduce 1", "reduce 2", "reduce 3"
    ]  # fmt: skip
    assert out.stdout.count("function calls") == 2  # the first map's and reduce's profiles


def test_commit_benchmark_checks_every_output_dir():
    out = run_script("commit.py", "--reducers", "3", "--books", "1")
    assert "answers: every output dir equals run_serial" in out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith("3 ")]
    assert [row[1] for row in rows] == ["new", "overwrite"]


def test_memory_benchmark_prints_peak_rss_per_process_and_gets_both_answers_right():
    out = run_script("memory.py", "--shuffle", "8MB", "--hot", "200k")
    assert out.stdout.count("answer right") == 2, out.stdout
    assert out.stdout.count("largest executor:") == 2, out.stdout
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.startswith("executor")]
    assert len(rows) >= 4 and all(float(row[3]) > 0 for row in rows), out.stdout  # peak RSS


def test_scale_benchmark_local_part_checks_its_answer_and_prints_each_process():
    out = run_script("scale.py", "--only", "local", "--local-maps", "100", "--local-warmup", "4")
    assert "answer equals run_serial's" in out.stdout, out.stdout
    rows = {ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()}
    for name in ("master", "worker-0", "worker-1", "worker-0/executor-0", "worker-1/executor-0"):
        assert name in rows, out.stdout


def test_scale_benchmark_cluster_part_runs_a_job_on_fake_workers_of_several_slots():
    out = run_script(
        "scale.py",
        "--only",
        "cluster",
        "--workers",
        "6",
        "--slots",
        "3",
        "--maps",
        "120",
        "--reduces",
        "4",
        "--idle",
        "0.2",
    )
    assert "120 maps + 4 reduces on 6 fake workers of 3 slots" in out.stdout, out.stdout
    assert "us/task" in out.stdout, out.stdout


def test_scale_benchmark_executor_part_runs_every_attempt_to_its_report(tmp_path):
    out = run_script(
        "scale.py", "--only", "executor", "--executor-maps", "50", "--executor-dir", str(tmp_path)
    )
    assert "49 one-record map attempts" in out.stdout, out.stdout
    assert "us per attempt" in out.stdout and not os.listdir(tmp_path), out.stdout


def test_reducepath_benchmark_checks_every_reduce_it_times():
    out = run_script("reducepath.py", "--rs", "4,16", "--maps", "6", "--keys", "16")
    lines = [line for line in out.stdout.splitlines() if line.startswith("R = ")]
    assert [line.split(":")[0] for line in lines] == ["R = 4", "R = 16"]
    assert "96 segments (1 keys each)" in lines[1]  # 6 maps x 16 partitions, a key each
