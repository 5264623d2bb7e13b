"""The zmqmr command as people type it: flags anywhere, sizes, job files, settings, errors.

Every command runs as a real process (``python -m zmqmr``); errors a user can
cause must end in one message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import BOOKS_DIR, REPO, count_words, free_port

import zmqmr
from zmqmr.job import make_splits

ZMQMR = [sys.executable, "-m", "zmqmr"]
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
WORDCOUNT = os.path.join(REPO, "examples", "wordcount.py")
BOOK = os.path.join(BOOKS_DIR, "pg-metamorphosis.txt")  # 139 kB
SUMMARY = re.compile(r"^zmqmr: (\d+) map and (\d+) reduce tasks in ", re.MULTILINE)


def zmqmr_cmd(*args, timeout=90, env=None, cwd=REPO):
    return subprocess.run(
        ZMQMR + [str(a) for a in args],
        cwd=cwd,
        env=env or ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write(path, source):
    path.write_text(textwrap.dedent(source))
    return str(path)


def test_version_is_the_package_version():
    out = zmqmr_cmd("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"zmqmr {zmqmr.__version__}"
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        pyproject = f.read()
    assert f'version = "{zmqmr.__version__}"' in pyproject


@pytest.mark.parametrize("command", ["master", "worker", "run", "status", "cancel", "keygen"])
def test_every_subcommand_documents_verbose_and_quiet(command):
    out = zmqmr_cmd(command, "--help")
    assert out.returncode == 0
    assert "-v, --verbose" in out.stdout and "-q, --quiet" in out.stdout


@pytest.mark.parametrize(
    "before, after, logged, summary",
    [
        ([], [], False, True),
        ([], ["-v"], True, True),
        (["-v"], [], True, True),
        ([], ["-q"], False, False),
        (["-q"], [], False, False),
        (["-v"], ["-q"], False, False),  # they add up: -v -q is the default level, and quiet
    ],
    ids=["plain", "run -v", "-v run", "run -q", "-q run", "-v run -q"],
)
def test_verbose_and_quiet_work_before_and_after_the_subcommand(before, after, logged, summary):
    out = zmqmr_cmd(*before, "run", WORDCOUNT, BOOK, *after)
    assert out.returncode == 0, out.stderr
    assert ("local cluster: master at tcp://127.0.0.1:" in out.stderr) == logged, out.stderr
    assert bool(SUMMARY.search(out.stderr)) == summary, out.stderr
    assert out.stdout.count("\n") == len(count_words([BOOK]))


def _maps(out) -> int:
    assert out.returncode == 0, out.stderr
    return int(SUMMARY.search(out.stderr).group(1))


def test_sizes_take_suffixes_on_the_command_line(tmp_path):
    def planned(split_size):
        job = zmqmr.Job(len, len, [BOOK], split_size=split_size)
        return len(make_splits(job)[0])

    assert planned(64 * 1024) >= 3
    for spelling in ["65536", "64k", "64KiB", "64KB"]:
        assert _maps(zmqmr_cmd("run", WORDCOUNT, BOOK, "--split-size", spelling)) == planned(
            64 * 1024
        )
    # --set takes a size too, and wins over --split-size
    both = zmqmr_cmd("run", WORDCOUNT, BOOK, "--split-size", "64k", "--set", "split_size=1MB")
    assert _maps(both) == 1
    # a cluster setting of the embedded cluster: results over 1 KiB cannot come back
    small = zmqmr_cmd("run", WORDCOUNT, BOOK, "--set", "result_limit=1k")
    assert small.returncode == 1 and "ResultTooLarge" in small.stderr, small.stderr


# -- job files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, user_lines",
    [
        ("def mapper(k, v:\n    pass\n", ["line 1", "def mapper(k, v:", "SyntaxError"]),
        (
            "LIMIT = {}\n\ndef mapper(k, v):\n    yield v, 1\n\nreducer = LIMIT['words']\n",
            ["line 6, in <module>", "reducer = LIMIT['words']", "KeyError: 'words'"],
        ),
        (
            "import helper_for_the_job\n",
            ['helper_for_the_job.py", line 2, in <module>', "ZeroDivisionError"],
        ),
    ],
    ids=["syntax error", "exception at import", "exception in a module it imports"],
)
def test_an_error_in_a_job_file_shows_the_users_traceback_only(tmp_path, source, user_lines):
    write(tmp_path / "helper_for_the_job.py", "x = 1\ny = x / 0\n")
    job = write(tmp_path / "job.py", source)
    env = {**ENV, "PYTHONPATH": ENV["PYTHONPATH"] + os.pathsep + str(tmp_path)}
    out = zmqmr_cmd("run", job, BOOK, env=env)
    assert out.returncode == 1
    assert out.stderr.startswith(f"zmqmr: the job file {job} failed to import:\n")
    for line in user_lines:
        assert line in out.stderr, out.stderr
    for theirs in ("zmqmr/cli.py", "importlib", "<frozen", "exec_module"):
        assert theirs not in out.stderr, out.stderr


def attempts_job(tmp_path) -> str:
    """A job file whose mapper notes every call and fails on the record ``bad``."""
    return write(
        tmp_path / "attempts.py",
        """\
        import os

        JOB = dict(max_attempts=3, num_reducers=3, name="noted")

        def mapper(key, line):
            with open(os.environ["ATTEMPTS_FILE"], "a") as f:
                f.write(line + "\\n")
            if line == "bad":
                raise ValueError("a bad record")
            yield line, 1

        def reducer(word, counts):
            return sum(counts)
        """,
    )


def calls(path, line) -> int:
    return path.read_text().split().count(line) if path.exists() else 0


def test_a_job_file_sets_job_settings_and_set_overrides_them(tmp_path):
    job = attempts_job(tmp_path)
    bad = tmp_path / "bad.txt"
    bad.write_text("bad\n")
    marks = tmp_path / "marks"
    env = {**ENV, "ATTEMPTS_FILE": str(marks)}

    out = zmqmr_cmd("run", job, bad, "-q", env=env)  # JOB: max_attempts=3
    assert out.returncode == 1 and "JobFailed" in out.stderr and "a bad record" in out.stderr
    assert calls(marks, "bad") == 3
    marks.unlink()
    out = zmqmr_cmd("run", job, bad, "-q", "--set", "max_attempts=2", env=env)
    assert out.returncode == 1 and calls(marks, "bad") == 2

    # bools from text: the bad record is skipped after it failed twice
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("a\nbad\nb\na\n")
    out = zmqmr_cmd("run", job, mixed, "--set", "skip_bad_records=yes", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "a\t2\nb\t1\n"

    # JOB says 3 reducers; -r overrides it, --set overrides -r
    for extra, parts in [([], 3), (["-r", "2"], 2), (["-r", "2", "--set", "num_reducers=1"], 1)]:
        outdir = tmp_path / f"out{parts}"
        out = zmqmr_cmd("run", job, BOOK, "-o", outdir, "-q", *extra, env=env)
        assert out.returncode == 0, out.stderr
        assert sorted(os.listdir(outdir)) == ["_SUCCESS"] + [f"part-{i:05d}" for i in range(parts)]
    # an output dir that holds files is replaced only with --overwrite
    again = ["run", job, BOOK, "-o", tmp_path / "out3", "-q", "-r", "1"]
    out = zmqmr_cmd(*again, env=env)
    assert out.returncode == 1 and "already holds files" in out.stderr
    out = zmqmr_cmd(*again, "--overwrite", env=env)
    assert out.returncode == 0, out.stderr
    assert sorted(os.listdir(tmp_path / "out3")) == ["_SUCCESS", "part-00000"]


@pytest.mark.parametrize(
    "job_source, message",
    [
        ("JOB = dict(reducers=3)\n", "JOB: unknown Job setting 'reducers'; known: max_attempts"),
        ("JOB = dict(max_attempts='often')\n", "JOB: max_attempts needs a whole number"),
        ("JOB = dict(speculative=1)\n", "JOB: speculative needs true or false, got 1"),
        ("JOB = dict(inputs=['x'])\n", "JOB cannot hold 'inputs'; give it on the command line"),
        ("JOB = [('num_reducers', 2)]\n", "JOB must be a dict of Job settings, got list"),
    ],
)
def test_a_bad_job_dict_is_one_message(tmp_path, job_source, message):
    job = write(
        tmp_path / "job.py",
        "def mapper(k, v):\n    yield v, 1\n\nreducer = mapper\n" + job_source,
    )
    out = zmqmr_cmd("run", job, BOOK)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


# -- errors a user can cause -----------------------------------------------------------------


# {port} is a free port, filled in when the test runs (test ids must not change).
BAD, TCP, HINT = (
    "127.0.0.1:{port}",
    "tcp://127.0.0.1:{port}",
    "did you mean tcp://127.0.0.1:{port}?",
)


def _error_cases():
    bad, tcp, hint, port = BAD, TCP, HINT, "{port}"
    return [
        (["worker", "--master", bad], 2, hint),
        (["status", "--master", bad], 2, hint),
        (["cancel", "abc", "--master", bad], 2, hint),
        (["run", WORDCOUNT, BOOK, "--master", bad], 2, hint),
        (["master", "--bind", f"0.0.0.0:{port}"], 2, "is not a ZeroMQ address"),
        (["master", "--client-bind", "inproc://x"], 2, "inproc:// cannot reach another"),
        (["worker", "--master", tcp, "--data-dir", "/etc/passwd"], 1, "is not a directory"),
        (["worker", "--master", tcp, "--data-dir", "/etc/passwd/x"], 1, "cannot be made"),
        (["worker", "--master", tcp, "--slots", "0"], 2, "must be positive"),
        (["worker", "--master", tcp, "--set", "fetch_chunk=big"], 1, "fetch_chunk needs"),
        (["worker", "--master", tcp, "--set", "slots"], 1, "--set takes NAME=VALUE"),
        (["master", "--worker-timeout", "0.5"], 1, "must exceed heartbeat_interval"),
        (["master", "--heartbeat-interval", "-1"], 2, "must be positive"),
        (["master", "--keys", "/nonexistent/keys"], 1, "does not exist"),
        (["run", WORDCOUNT, BOOK, "--split-size", "lots"], 2, "is not a size"),
        (["run", WORDCOUNT, BOOK, "-r", "0"], 2, "must be positive"),
        (["run", "/nonexistent/job.py", BOOK], 1, "does not exist"),
        (["run", BOOKS_DIR, BOOK], 1, "is not a file"),
        (["run", BOOK, BOOK], 1, "as Python"),
        (["run", WORDCOUNT, "/nonexistent/input.txt"], 1, "does not exist"),
        (["run", WORDCOUNT, BOOK, "-o", "/etc/passwd"], 1, "not writable"),
        (["run", WORDCOUNT, BOOK, "--keys", "/nonexistent/keys"], 1, "does not exist"),
        (["run", WORDCOUNT, BOOK, "--set", "bogus=1"], 1, "unknown Job setting 'bogus'"),
        (["run", WORDCOUNT, BOOK, "--master", tcp, "--set", "slots=2"], 1, "a cluster setting"),
        (["status", "--master", tcp, "--timeout", "0.3"], 1, "MasterUnavailable"),
        (["status", "--timeout", "0"], 2, "must be positive"),
        (["keygen", "/etc/passwd/keys"], 1, "Not a directory"),
        (["frobnicate"], 2, "invalid choice"),
        (["worker"], 2, "the following arguments are required: --master"),
    ]


def _case_id(value) -> str:
    """A short id that is the same wherever the repository is (the plain-copy test compares)."""
    return repr(value).replace(REPO + os.sep, "")[:60]


@pytest.mark.parametrize("args, code, message", _error_cases(), ids=_case_id)
def test_a_users_mistake_is_one_message_and_a_nonzero_exit(args, code, message):
    port = free_port()
    args = [a.replace("{port}", str(port)) for a in args]
    message = message.replace("{port}", str(port))
    t = time.monotonic()
    out = zmqmr_cmd(*args, timeout=30)
    assert out.returncode == code, out.stderr
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert time.monotonic() - t < 15  # at once: nothing waited on a socket


def test_a_reader_that_goes_away_ends_the_output_quietly():
    with zmqmr.LocalCluster(workers=1) as cluster:
        keys = ["--keys", cluster.keys] if cluster.keys else []
        proc = subprocess.Popen(
            ZMQMR + ["status", "--json", "--master", cluster.address, *keys],
            cwd=REPO,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.close()  # as `zmqmr status --json | head -c 0` would
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGPIPE, err
    assert err == "", err


def test_the_chaos_commands_output_ends_quietly_when_its_reader_has_gone():
    read, write = os.pipe()
    os.close(read)  # gone before the first line: the write fails with EPIPE
    try:
        proc = subprocess.run(
            ZMQMR + ["chaos", "nemeses"], cwd=REPO, env=ENV, stdout=write,
            stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write)
    assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_an_error_is_named_by_its_public_class():
    from zmqmr.cli import _public_name
    from zmqmr.errors import MasterRefused, MasterUnavailable

    class _Detail(MasterRefused):
        pass

    assert _public_name(_Detail("no")) == "MasterRefused"
    assert _public_name(MasterRefused("no")) == "MasterRefused"
    assert _public_name(MasterUnavailable("no")) == "MasterUnavailable"
