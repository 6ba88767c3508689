"""The server's replies, compared byte for byte with beanstalkd 1.12's."""

from __future__ import annotations

import socket

import pytest

from greenstalk._protocol import outgoing
from greenstalk._protocol.stats import (
    JOB_TEXT_FIELDS,
    SERVER_FLAG_FIELDS,
    SERVER_TEXT_FIELDS,
    TUBE_TEXT_FIELDS,
    Stats,
    StatsJob,
    StatsTube,
    parse_list,
    parse_stats,
)
from greenstalk.testing import BeanstalkdProcess


def test_simple_replies() -> None:
    assert outgoing.inserted(5) == b"INSERTED 5\r\n"
    assert outgoing.buried_on_put(5) == b"BURIED 5\r\n"
    assert outgoing.using(b"t") == b"USING t\r\n"
    assert outgoing.watching(2) == b"WATCHING 2\r\n"
    assert outgoing.kicked(0) == b"KICKED 0\r\n"
    assert outgoing.reserved(1, b"a\r\nb") == b"RESERVED 1 4\r\na\r\nb\r\n"
    assert outgoing.found(2, b"") == b"FOUND 2 0\r\n\r\n"
    assert outgoing.ok(b"---\n") == b"OK 4\r\n---\n\r\n"


def test_cpu_times_keep_six_decimals() -> None:
    values = {"rusage-utime": 1.9999996, "rusage-stime": 0.002394}

    class Shape:
        __annotations__ = {"rusage-utime": float, "rusage-stime": float}

    assert (
        outgoing.stats_yaml(Shape, values)
        == b"---\nrusage-utime: 2.000000\nrusage-stime: 0.002394\n"
    )


@pytest.mark.parametrize(("value", "line"), [(False, b"false"), (True, b"true")])
def test_flags_are_written_as_beanstalkd_writes_them(value: bool, line: bytes) -> None:
    class Shape:
        __annotations__ = {"draining": bool}

    assert outgoing.stats_yaml(Shape, {"draining": value}) == b"---\ndraining: " + line + b"\n"


def test_missing_field_is_an_error() -> None:
    with pytest.raises(KeyError):
        outgoing.stats_yaml(StatsJob, {"id": 1})


def _data(sock: socket.socket, command: bytes) -> bytes:
    sock.sendall(command)
    reply = b""
    while b"\r\n" not in reply:
        reply += sock.recv(65536)
    head, _, data = reply.partition(b"\r\n")
    assert head.startswith(b"OK "), head
    size = int(head[3:])
    while len(data) < size + 2:
        data += sock.recv(65536)
    return data[:size]


def test_stats_and_lists_as_beanstalkd_writes_them(beanstalkd: BeanstalkdProcess) -> None:
    address = beanstalkd.address
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(b"put 5 0 10 1\r\nx\r\nwatch other\r\n")
        replies = b""
        while replies.count(b"\r\n") < 2:
            replies += sock.recv(65536)
        assert replies == b"INSERTED 1\r\nWATCHING 2\r\n"
        for command, shape, text_fields, flag_fields in [
            (b"stats\r\n", Stats, SERVER_TEXT_FIELDS, SERVER_FLAG_FIELDS),
            (b"stats-tube default\r\n", StatsTube, TUBE_TEXT_FIELDS, frozenset()),
            (b"stats-job 1\r\n", StatsJob, JOB_TEXT_FIELDS, frozenset()),
        ]:
            theirs = _data(sock, command)
            ours = outgoing.stats_yaml(shape, parse_stats(theirs, text_fields, flag_fields))
            assert ours == theirs
        for command in (b"list-tubes\r\n", b"list-tubes-watched\r\n"):
            theirs = _data(sock, command)
            assert outgoing.list_yaml(name.encode() for name in parse_list(theirs)) == theirs
