"""The default key directory: where it is, how it is made, who may use it (no sockets)."""

from __future__ import annotations

import logging
import os
import re
import stat
import threading

import pytest

from zmqmr import security
from zmqmr.errors import SecurityError
from zmqmr.security import (
    MASTER,
    MEMBER,
    check_default_keys_bind,
    default_keys,
    default_keys_dir,
    key_dir,
    load_keys,
)

KEY_FILES = ["master.key", "master.key_secret", "member.key", "member.key_secret"]


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A HOME of the test's own, and no ZMQMR_KEYS: the defaults as a user has them."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ZMQMR_KEYS", raising=False)
    return tmp_path


def test_the_default_is_zmqmr_keys_else_dot_zmqmr_in_home(home, monkeypatch):
    assert default_keys_dir() == str(home / ".zmqmr" / "keys")
    monkeypatch.setenv("ZMQMR_KEYS", str(home / "elsewhere"))
    assert default_keys_dir() == str(home / "elsewhere")


def test_first_use_makes_the_directory_for_this_user_only(home):
    directory = default_keys()
    assert directory == str(home / ".zmqmr" / "keys")
    assert sorted(os.listdir(directory)) == KEY_FILES
    assert mode(home / ".zmqmr") == 0o700 and mode(directory) == 0o700
    assert mode(os.path.join(directory, "master.key_secret")) == 0o600
    assert mode(os.path.join(directory, "member.key_secret")) == 0o600
    master, member = load_keys(directory, MASTER), load_keys(directory, MEMBER)
    assert master.public == member.master_public != member.public
    assert master.authorised == member.authorised == {master.public, member.public}


def test_later_uses_keep_the_keys_made_first(home):
    first = load_keys(default_keys(), MEMBER)
    again = load_keys(default_keys(), MEMBER)
    assert (again.public, again.secret) == (first.public, first.secret)


def test_processes_starting_at_once_all_get_the_same_whole_directory(home):
    got: list[str] = []
    errors: list[BaseException] = []

    def use():
        try:
            got.append(default_keys())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(got)) == 1
    assert sorted(os.listdir(got[0])) == KEY_FILES
    assert os.listdir(home / ".zmqmr") == ["keys"]  # no half-made directory left aside


def test_a_default_that_cannot_be_made_is_one_clear_error(home, monkeypatch):
    (home / "file").write_text("")
    monkeypatch.setenv("ZMQMR_KEYS", str(home / "file" / "keys"))
    with pytest.raises(SecurityError, match="cannot make the default key directory .*--keys"):
        default_keys()


def test_given_keys_win_insecure_turns_the_default_off_and_warns_once(home, caplog, monkeypatch):
    monkeypatch.setattr(security, "_warned_insecure", False)
    assert key_dir("~/mine", insecure=True, what="a client") == str(home / "mine")
    assert not (home / ".zmqmr").exists()
    with caplog.at_level(logging.WARNING, logger="zmqmr.security"):
        assert key_dir(None, insecure=True, what="a client") is None
        assert key_dir(None, insecure=True, what="a client") is None
    warnings = [r.getMessage() for r in caplog.records if "INSECURE" in r.getMessage()]
    assert len(warnings) == 1 and "a client: CURVE is off" in warnings[0]
    assert not (home / ".zmqmr").exists()
    assert key_dir(None, insecure=False, what="a client") == str(home / ".zmqmr" / "keys")


@pytest.mark.parametrize(
    "address, allowed",
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://localhost:*", True),
        ("ipc:///tmp/zmqmr.sock", True),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://*:5555", False),
        ("tcp://10.1.2.3:5555", False),
    ],
)
def test_default_keys_serve_loopback_only(address, allowed):
    if allowed:
        check_default_keys_bind([address])
    else:
        with pytest.raises(SecurityError, match="--keys DIR .*--insecure"):
            check_default_keys_bind(["tcp://127.0.0.1:1", address])


@pytest.fixture
def keydir(tmp_path):
    directory = str(tmp_path / "keys")
    security.write_keys(directory)
    return directory


@pytest.mark.parametrize(
    ("name", "chmod", "says"),
    [
        ("", 0o775, "anyone who can write there can let a key in (chmod go-w"),
        ("", 0o757, "anyone who can write there"),
        ("member.key_secret", 0o640, "whoever can read it can join the cluster (chmod go-rwx"),
        ("master.key", 0o666, "whoever can write it can replace the key"),
    ],
)
def test_keys_that_others_could_read_or_write_are_refused_saying_how_to_fix_them(
    keydir, name, chmod, says
):
    load_keys(keydir, MEMBER)  # as made: fine
    path = os.path.join(keydir, name) if name else keydir
    os.chmod(path, chmod)
    with pytest.raises(SecurityError, match=re.escape(says)):
        load_keys(keydir, MEMBER)
    os.chmod(path, 0o700 if not name else 0o600)  # fixed as the message says: loads again
    load_keys(keydir, MEMBER)


def test_keys_made_under_a_loose_umask_are_still_for_this_user_only(tmp_path):
    old = os.umask(0o002)  # Debian's default for users with a group of their own
    try:
        directory = str(tmp_path / "team-keys")
        security.write_keys(directory)
    finally:
        os.umask(old)
    assert mode(directory) == 0o700
    assert {name: mode(os.path.join(directory, name)) for name in KEY_FILES} == {
        "master.key": 0o644,
        "master.key_secret": 0o600,
        "member.key": 0o644,
        "member.key_secret": 0o600,
    }
    load_keys(directory, MASTER)


def test_a_key_directory_of_another_user_is_refused(keydir):
    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    os.chown(keydir, 4242, -1)
    with pytest.raises(SecurityError, match="belongs to another user"):
        load_keys(keydir, MEMBER)
