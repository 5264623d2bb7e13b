"""zmqmr/config.py: sizes, settings given as text, and the endpoint check (no sockets)."""

from __future__ import annotations

import os
import pathlib

import pytest

from zmqmr.config import (
    ClusterSettings,
    WorkerSettings,
    check_endpoint,
    coerce,
    parse_size,
    setting_types,
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@pytest.mark.parametrize(
    "text, size",
    [
        ("512", 512),
        ("512B", 512),
        ("512k", 512 * KiB),
        ("512K", 512 * KiB),
        ("512kb", 512 * KiB),
        ("512KiB", 512 * KiB),
        ("64MB", 64 * MiB),
        ("64mb", 64 * MiB),
        ("64M", 64 * MiB),
        ("1MiB", MiB),
        ("1Mi", MiB),
        ("1.5G", 3 * GiB // 2),
        (" 2 GB ", 2 * GiB),
        ("1T", 1 << 40),
        ("0.5k", 512),
        ("0", 0),
    ],
)
def test_sizes_take_binary_suffixes_however_spelt(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "MB", "-1", "1e3", "lots", "1.3", "64 M B", "1PB"])
def test_anything_else_is_not_a_size(text):
    with pytest.raises(ValueError, match="size|whole number"):
        parse_size(text)


@pytest.mark.parametrize(
    "value, kind, expected",
    [
        ("3", int, 3),
        ("100_000", int, 100_000),
        ("1MB", int, MiB),
        ("0.25", float, 0.25),
        ("2", float, 2.0),
        ("none", float | None, None),
        ("None", float | None, None),
        ("30", float | None, 30.0),
        ("true", bool, True),
        ("Yes", bool, True),
        ("off", bool, False),
        ("0", bool, False),
        ("none", str | None, None),
        ("wc", str | None, "wc"),
        ("123", str | None, "123"),  # text stays text where text is wanted
        (3, float, 3),
        (True, bool, True),
        (None, int | None, None),
        (pathlib.Path("out"), str | os.PathLike[str] | None, pathlib.Path("out")),
    ],
)
def test_coerce_reads_text_as_the_setting_wants_it(value, kind, expected):
    got = coerce(value, kind)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "value, kind",
    [
        ("abc", int),
        ("2.5", int),
        ("maybe", bool),
        ("nan", float),
        ("none", int),
        (True, int),  # a bool is not a count
        (1.5, int),
        ("1MB", float | None),
        (3, str | None),
        ([1], int),
    ],
)
def test_coerce_refuses_what_the_setting_cannot_hold_and_says_what_it_wants(value, kind):
    with pytest.raises(ValueError, match="needs "):
        coerce(value, kind)


def test_setting_types_are_the_dataclass_declarations():
    types = setting_types(WorkerSettings)
    assert types["slots"] is int and types["fetch_timeout"] is float
    assert set(setting_types(ClusterSettings)) == ClusterSettings.field_names()


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:5556", "tcp://lab-01:5555", "tcp://[::1]:65535", "ipc:///tmp/zmqmr.sock"],
)
def test_endpoints_a_peer_can_connect_to_pass(address):
    assert check_endpoint(address, "--master") == address


@pytest.mark.parametrize(
    "address", ["tcp://*:5555", "tcp://127.0.0.1:*", "tcp://0.0.0.0:0", "tcp://eth0:5555"]
)
def test_wildcards_pass_only_for_a_bind(address):
    assert check_endpoint(address, "--bind", bind=True) == address
    if address != "tcp://eth0:5555":
        with pytest.raises(ValueError):
            check_endpoint(address, "--master")


@pytest.mark.parametrize(
    "address, hint",
    [
        ("127.0.0.1:5556", "did you mean tcp://127.0.0.1:5556?"),
        ("localhost:5555", "did you mean tcp://localhost:5555?"),
        ("inproc://master", "inproc:// cannot reach another process"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:99999", "expected tcp://HOST:PORT"),
        ("tcp://127.0.0.1:5556 ", "expected tcp://HOST:PORT"),
        ("tcp://:5556", "expected tcp://HOST:PORT"),
        ("udp://127.0.0.1:5556", "expected tcp://HOST:PORT"),
        ("ipc://", "ipc://PATH"),
        ("", "expected tcp://HOST:PORT"),
        (5556, "expected tcp://HOST:PORT"),
    ],
)
def test_a_malformed_endpoint_fails_at_once_showing_the_expected_form(address, hint):
    with pytest.raises(ValueError) as info:
        check_endpoint(address, "the master's address")
    message = str(info.value)
    assert message.startswith(f"the master's address {address!r} is not a ZeroMQ address")
    assert hint in message
