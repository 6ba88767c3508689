"""How the sync client copes when the server or the connection misbehaves.

Most tests talk to :class:`tests.fakeserver.FakeServer`, which answers by a
script; the timing rules of ``reserve`` are checked against a real
beanstalkd. Every wait is bounded: the fake server gives up and closes the
connection after a few seconds, and the clients have socket timeouts.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import greenstalk
from greenstalk import (
    ClientConnectionError,
    ClientTimeoutError,
    CommandNotSentError,
    ProtocolError,
    UnknownResponseError,
)
from greenstalk.testing import BeanstalkdProcess

from .fakeserver import (
    Close,
    Drip,
    Expect,
    FakeServer,
    ReadSlowly,
    Send,
    Silent,
    Stall,
    Step,
    Wait,
)

AnyClient = greenstalk.Client[Any]
Call = Callable[[AnyClient], object]
Serve = Callable[..., "tuple[FakeServer, AnyClient]"]

PUT_X = b"put 65536 0 60 1\r\nx\r\n"
RESERVE = b"reserve\r\n"


def put_command(body: bytes) -> bytes:
    return b"put 65536 0 60 %d\r\n%s\r\n" % (len(body), body)


# Every public method that talks to the server, with valid arguments.
CALLS: dict[str, Call] = {
    "put": lambda c: c.put(b"x"),
    "put_many": lambda c: c.put_many([b"x", b"y"]),
    "put_many_empty": lambda c: c.put_many([]),
    "use": lambda c: c.use("t"),
    "reserve": lambda c: c.reserve(),
    "reserve_timeout": lambda c: c.reserve(timeout=0),
    "reserve_job": lambda c: c.reserve_job(1),
    "delete": lambda c: c.delete(1),
    "release": lambda c: c.release(1),
    "bury": lambda c: c.bury(1),
    "touch": lambda c: c.touch(greenstalk.Job(1, b"x")),
    "watch": lambda c: c.watch("t"),
    "ignore": lambda c: c.ignore("t"),
    "peek": lambda c: c.peek(1),
    "peek_ready": lambda c: c.peek_ready(),
    "peek_delayed": lambda c: c.peek_delayed(),
    "peek_buried": lambda c: c.peek_buried(),
    "kick": lambda c: c.kick(1),
    "kick_job": lambda c: c.kick_job(1),
    "stats_job": lambda c: c.stats_job(1),
    "stats_tube": lambda c: c.stats_tube("t"),
    "stats": lambda c: c.stats(),
    "tubes": lambda c: c.tubes(),
    "using": lambda c: c.using(),
    "watching": lambda c: c.watching(),
    "pause_tube": lambda c: c.pause_tube("t", 1),
}


def assert_refuses_use(client: AnyClient, calls: list[str] | None = None) -> None:
    """The client is closed and every call says so: the command was not sent."""
    assert client.closed
    assert repr(client).startswith("greenstalk.Client(")
    for name in calls or ["put", "reserve"]:
        with pytest.raises(ClientConnectionError) as info:
            CALLS[name](client)
        assert type(info.value) is CommandNotSentError, name
        assert "the connection is closed" in str(info.value), name
    client.close()  # still a no-op
    assert client.closed


@pytest.fixture(params=["tcp", "unix", "socketpair"])
def transport(request: pytest.FixtureRequest) -> str:
    """How the client reaches the fake server."""
    return str(request.param)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """``serve(script, transport="tcp", **client_kwargs)``: a fake server and a client on it.

    At teardown the client is closed, the server stopped, and a script that
    went wrong fails the test.
    """
    with contextlib.ExitStack() as stack:
        count = 0

        def start(
            script: list[Step], transport: str = "tcp", **kwargs: Any
        ) -> tuple[FakeServer, AnyClient]:
            nonlocal count
            count += 1
            address: greenstalk.Address
            if transport == "socketpair":
                ours, theirs = socket.socketpair()
                stack.callback(ours.close)
                server = FakeServer(script, connection=theirs)
                address = ours
            elif transport == "unix":
                server = FakeServer(script, unix_path=tmp_path / f"fake{count}.sock")
            else:
                server = FakeServer(script)
            stack.callback(server.check)
            stack.callback(server.stop)
            server.start()
            if transport != "socketpair":
                address = server.address
            client: AnyClient = greenstalk.Client(address, **kwargs)
            stack.callback(client.close)
            return server, client

        yield start


def raises_exactly(error_type: type[BaseException], call: Callable[[], object]) -> BaseException:
    with pytest.raises(error_type) as info:
        call()
    assert type(info.value) is error_type, repr(info.value)
    return info.value


# -- the server closes the connection --------------------------------------


def test_server_closes_before_reply(serve: Serve, transport: str) -> None:
    server, client = serve([Expect(PUT_X), Close()], transport, socket_timeout=5)
    error = raises_exactly(ClientConnectionError, lambda: client.put(b"x"))
    assert isinstance(error, ConnectionError)
    assert "the server closed the connection" in str(error)
    assert "middle" not in str(error)
    server.join()
    assert server.completed
    assert_refuses_use(client)


def test_server_resets_before_reply(serve: Serve) -> None:
    server, client = serve([Expect(PUT_X), Close(reset=True)], socket_timeout=5)
    raises_exactly(ClientConnectionError, lambda: client.put(b"x"))
    server.join()
    assert server.completed
    assert_refuses_use(client)


def test_server_closes_at_once(serve: Serve, transport: str) -> None:
    """The server hangs up before the first command: sending or reading fails."""
    server, client = serve([Close(reset=True)], transport, socket_timeout=5)
    server.join()
    with pytest.raises(ClientConnectionError):  # CommandNotSentError if the send failed
        client.put(b"x")
    assert_refuses_use(client)


@pytest.mark.parametrize(
    ("call", "command", "partial"),
    [
        ("put", PUT_X, b"INSERT"),
        ("put", PUT_X, b"INSERTED 1\r"),
        ("reserve", RESERVE, b"RESERVED 1 10\r\n"),
        ("reserve", RESERVE, b"RESERVED 1 10\r\nhel"),
        ("reserve", RESERVE, b"RESERVED 1 10\r\nhello worl"),
        ("reserve", RESERVE, b"RESERVED 1 10\r\nhello worl\r"),
        ("stats", b"stats\r\n", b"OK 100\r\n---\nid: 1\n"),
    ],
    ids=["line", "line-cr", "header", "body", "body-full", "body-cr", "stats"],
)
def test_server_closes_mid_reply(
    serve: Serve, transport: str, call: str, command: bytes, partial: bytes
) -> None:
    server, client = serve([Expect(command), Send(partial), Close()], transport, socket_timeout=5)
    error = raises_exactly(ClientConnectionError, lambda: CALLS[call](client))
    assert "in the middle of a reply" in str(error)
    server.join()
    assert server.completed
    assert_refuses_use(client)


def test_constructor_fails_on_closed_connection() -> None:
    """The tube set-up runs in the constructor: a failure there raises, and closes."""
    ours, theirs = socket.socketpair()
    with ours, FakeServer([Expect(b"use t\r\n"), Close()], connection=theirs) as server:
        raises_exactly(ClientConnectionError, lambda: greenstalk.Client(ours, use="t"))
        assert ours.fileno() == -1  # the client closed the socket it was given
    server.join()
    assert server.completed


def test_constructor_fails_on_garbage() -> None:
    ours, theirs = socket.socketpair()
    script: list[Step] = [
        Expect(b"watch t\r\nignore default\r\n"),
        Send(b"WATCHING 2\r\nDELETED\r\n"),
    ]
    with ours, FakeServer(script, connection=theirs) as server:
        raises_exactly(UnknownResponseError, lambda: greenstalk.Client(ours, watch="t"))
        assert ours.fileno() == -1
    server.join()
    assert server.completed


def test_constructor_times_out() -> None:
    ours, theirs = socket.socketpair()
    with ours, FakeServer([Expect(b"use t\r\n"), Silent(until_closed=True)], connection=theirs):
        raises_exactly(
            ClientTimeoutError, lambda: greenstalk.Client(ours, use="t", socket_timeout=0.2)
        )
        assert ours.fileno() == -1


# -- socket timeouts ---------------------------------------------------------


def test_socket_timeout_closes_the_connection(serve: Serve, transport: str) -> None:
    server, client = serve(
        [Expect(PUT_X), Silent(until_closed=True)], transport, socket_timeout=0.2
    )
    error = raises_exactly(ClientTimeoutError, lambda: client.put(b"x"))
    assert isinstance(error, TimeoutError)
    assert isinstance(error, ConnectionError)
    assert "connection closed" in str(error)
    server.join()
    assert server.peer_closed  # the client hung up; the server saw it
    assert_refuses_use(client)


def test_late_reply_is_not_read_as_the_next_answer(serve: Serve, transport: str) -> None:
    late = threading.Event()
    script: list[Step] = [Expect(PUT_X), Wait(late), Send(b"INSERTED 1\r\n"), Silent()]
    server, client = serve(script, transport, socket_timeout=0.2)
    raises_exactly(ClientTimeoutError, lambda: client.put(b"x"))
    late.set()
    server.join()
    # Were the connection kept, this put would return 1, the previous put's id.
    assert_refuses_use(client, ["put"])


@pytest.mark.parametrize(
    ("call", "command", "partial"),
    [
        ("put", PUT_X, b""),
        ("put", PUT_X, b"INSERTED 1"),
        ("peek", b"peek 1\r\n", b"FOUND 1 10\r\nhel"),
        ("stats", b"stats\r\n", b"OK 100\r\n---\n"),
    ],
    ids=["nothing", "line", "body", "stats"],
)
def test_socket_timeout_mid_reply(serve: Serve, call: str, command: bytes, partial: bytes) -> None:
    script: list[Step] = [Expect(command), Send(partial), Silent(until_closed=True)]
    server, client = serve(script, "socketpair", socket_timeout=0.2)
    raises_exactly(ClientTimeoutError, lambda: CALLS[call](client))
    server.join()
    assert_refuses_use(client)


def test_reserve_with_timeout_is_bounded(serve: Serve) -> None:
    """reserve(timeout=n) waits n + socket_timeout for a silent server, not forever."""
    server, client = serve(
        [Expect(b"reserve-with-timeout 1\r\n"), Silent(until_closed=True)],
        "socketpair",
        socket_timeout=0.2,
    )
    start = time.monotonic()
    raises_exactly(ClientTimeoutError, lambda: client.reserve(timeout=1))
    assert time.monotonic() - start >= 1.1
    server.join()
    assert_refuses_use(client)


def test_reserve_poll_is_bounded(serve: Serve) -> None:
    server, client = serve(
        [Expect(b"reserve-with-timeout 0\r\n"), Silent(until_closed=True)],
        "socketpair",
        socket_timeout=0.2,
    )
    raises_exactly(ClientTimeoutError, lambda: client.reserve(timeout=0))
    server.join()


def test_reserve_waits_past_socket_timeout(serve: Serve) -> None:
    """A reply that comes after socket_timeout but within the reserve timeout is read."""
    script: list[Step] = [
        Expect(b"reserve-with-timeout 3\r\n"),
        Stall(1.0),
        Send(b"RESERVED 3 1\r\nx\r\n"),
        Expect(b"delete 3\r\n"),
        Send(b"DELETED\r\n"),
    ]
    server, client = serve(script, "socketpair", socket_timeout=0.5)
    job = client.reserve(timeout=3)
    assert (job.id, job.body) == (3, b"x")
    client.delete(job)
    assert not client.closed
    server.join()
    assert server.completed


@pytest.mark.parametrize("adopted", [False, True], ids=["kernel-bound", "python-bound"])
def test_a_reserve_lengthens_the_socket_timeout_for_itself_only(adopted: bool) -> None:
    """The reserve's reply may come after socket_timeout; the next command's may not.

    A client that opened its own socket has the kernel keep the bound
    (SO_RCVTIMEO); a socket handed in keeps Python's timeouts.
    """
    script: list[Step] = [
        Expect(b"reserve-with-timeout 1\r\n"),
        Stall(0.6),
        Send(b"RESERVED 1 1\r\nx\r\n"),
        Expect(b"reserve\r\n"),
        Stall(0.6),
        Send(b"RESERVED 2 1\r\ny\r\n"),
        Expect(PUT_X),
        Silent(until_closed=True),
    ]
    ours, theirs = socket.socketpair()
    with contextlib.ExitStack() as stack:
        stack.enter_context(ours)
        if adopted:
            server = stack.enter_context(FakeServer(script, connection=theirs))
            client = greenstalk.Client(ours, socket_timeout=0.3)
        else:
            theirs.close()
            server = stack.enter_context(FakeServer(script))
            client = greenstalk.Client(server.address, socket_timeout=0.3)
            sock = client._socket
            assert sock is not None
            if sys.platform == "linux":  # blocking, with the bound kept by the kernel
                assert sock.gettimeout() is None
                timeval = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
                assert struct.unpack("@ll", timeval) == (0, 300000)
        assert client.reserve(timeout=1).id == 1
        assert client.reserve().id == 2
        started = time.monotonic()
        raises_exactly(ClientTimeoutError, lambda: client.put(b"x"))
        assert time.monotonic() - started < 1
        assert_refuses_use(client)
        server.join()
    assert server.completed


def test_real_reserve_timeout_longer_than_socket_timeout(beanstalkd: BeanstalkdProcess) -> None:
    with greenstalk.Client(beanstalkd.address, socket_timeout=0.2) as client:
        start = time.monotonic()
        raises_exactly(greenstalk.TimedOutError, lambda: client.reserve(timeout=1))
        assert time.monotonic() - start >= 0.9
        assert not client.closed
        job_id = client.put(b"after")
        assert client.reserve(timeout=0).id == job_id


@pytest.mark.parametrize("reserve_timeout", [2, None])
def test_real_reserve_gets_a_delayed_job(
    beanstalkd: BeanstalkdProcess, reserve_timeout: int | None
) -> None:
    """A job that becomes ready after socket_timeout but within the reserve wait arrives."""
    with greenstalk.Client(beanstalkd.address, socket_timeout=0.3) as client:
        job_id = client.put(b"later", delay=1)
        start = time.monotonic()
        job = client.reserve(timeout=reserve_timeout)
        assert time.monotonic() - start >= 0.5
        assert (job.id, job.body) == (job_id, b"later")
        client.delete(job)
        assert not client.closed


def test_real_reserve_gets_a_job_put_by_another_client(beanstalkd: BeanstalkdProcess) -> None:
    with greenstalk.Client(beanstalkd.address, socket_timeout=0.3) as consumer:
        watching = consumer.stats()["current-waiting"]
        ids: list[int] = []

        def produce() -> None:
            with greenstalk.Client(beanstalkd.address, socket_timeout=5) as producer:
                # Put only once the consumer waits, with no sleep: poll the stats.
                deadline = time.monotonic() + 5
                while producer.stats()["current-waiting"] == watching:
                    assert time.monotonic() < deadline
                # Ready one second later: after the consumer's socket_timeout.
                ids.append(producer.put(b"from another client", delay=1))

        thread = threading.Thread(target=produce)
        thread.start()
        try:
            job = consumer.reserve(timeout=3)
        finally:
            thread.join(10)
        assert not thread.is_alive()
        assert (job.id, job.body) == (ids[0], b"from another client")


# -- socket_timeout bounds a whole command ------------------------------------

# A valid stats reply (the fields' values do not matter to the client).
STATS_YAML = b"---\ncurrent-jobs-ready: 0\ncurrent-jobs-reserved: 0\ntotal-jobs: 0\n"
STATS_REPLY = b"OK %d\r\n%s\r\n" % (len(STATS_YAML), STATS_YAML)
# (call, command, reply): replies long enough to take several seconds when
# dripped a byte at a time.
DRIPPED: dict[str, tuple[bytes, bytes]] = {
    "stats": (b"stats\r\n", STATS_REPLY),
    "put": (PUT_X, b"INSERTED 1234567890123456789" + b"0" * 40 + b"\r\n"),
    "put_many": (put_command(b"x") + put_command(b"y"), b"INSERTED 1\r\nINSERTED 2\r\n" * 3),
}


@pytest.mark.parametrize("call", list(DRIPPED))
def test_socket_timeout_bounds_a_dripping_reply(serve: Serve, transport: str, call: str) -> None:
    """A server that sends its reply a byte at a time, each within socket_timeout of the
    last, still has socket_timeout for the whole reply, not for each byte."""
    command, reply = DRIPPED[call]
    script: list[Step] = [Expect(command), Drip(reply, 0.05), Silent()]
    server, client = serve(script, transport, socket_timeout=0.5)
    started = time.monotonic()
    raises_exactly(ClientTimeoutError, lambda: CALLS[call](client))
    assert 0.45 < time.monotonic() - started < 1.5
    assert_refuses_use(client)
    server.join()


def test_a_reserve_is_bounded_by_its_timeout_plus_socket_timeout(serve: Serve) -> None:
    body = b"x" * 40
    script: list[Step] = [
        Expect(b"reserve-with-timeout 1\r\n"),
        Drip(b"RESERVED 1 40\r\n" + body + b"\r\n", 0.05),
        Silent(),
    ]
    _, client = serve(script, "tcp", socket_timeout=0.3)
    started = time.monotonic()
    raises_exactly(ClientTimeoutError, lambda: client.reserve(timeout=1))
    assert 1.25 < time.monotonic() - started < 2.3


def test_a_reply_in_several_reads_leaves_the_next_command_its_whole_timeout(
    serve: Serve, transport: str
) -> None:
    """Cutting the socket's bound to the time left for one reply must not shorten the next's."""
    # The reply takes 0.55 s, leaving 0.45 s; the next reply comes after 0.7 s.
    script: list[Step] = [
        Expect(PUT_X),
        Drip(b"INSERTED 1\r\n", 0.05),
        Expect(PUT_X),
        Stall(0.7),
        Send(b"INSERTED 2\r\n"),
    ]
    server, client = serve(script, transport, socket_timeout=1)
    assert client.put(b"x") == 1
    assert client.put(b"x") == 2
    server.join()
    assert server.completed


@pytest.mark.parametrize("transport", ["unix", "socketpair"])
def test_socket_timeout_bounds_sending_to_a_slow_reader(serve: Serve, transport: str) -> None:
    """A server that reads a large put slowly, but steadily, gets socket_timeout for all of it."""
    body = b"x" * (8 << 20)
    script: list[Step] = [ReadSlowly(len(body), 65536, 0.02), Silent()]
    _, client = serve(script, transport, socket_timeout=0.5)
    started = time.monotonic()
    raises_exactly(ClientTimeoutError, lambda: client.put(body))
    assert time.monotonic() - started < 1.5
    assert_refuses_use(client)


def test_a_large_put_within_socket_timeout_is_sent(serve: Serve) -> None:
    """Sending in several parts when the socket buffer is full works, and keeps the bound."""
    body = b"y" * (4 << 20)
    script: list[Step] = [
        Expect(put_command(body)),
        Send(b"INSERTED 1\r\n"),
        Expect(PUT_X),
        Stall(0.3),
        Send(b"INSERTED 2\r\n"),
    ]
    server, client = serve(script, "unix", socket_timeout=5)
    assert client.put(body) == 1
    assert client.put(b"x") == 2
    server.join()
    assert server.completed


# -- garbage from the server -------------------------------------------------

GARBAGE: list[tuple[str, str, bytes, bytes, type[ClientConnectionError]]] = [
    # (id, call, command, reply, error)
    ("unknown-status", "put", PUT_X, b"FOO\r\n", UnknownResponseError),
    ("empty-line", "put", PUT_X, b"\r\n", UnknownResponseError),
    ("deleted-to-put", "put", PUT_X, b"DELETED\r\n", UnknownResponseError),
    ("inserted-no-id", "put", PUT_X, b"INSERTED\r\n", ProtocolError),
    ("inserted-bad-id", "put", PUT_X, b"INSERTED x\r\n", ProtocolError),
    ("inserted-negative", "put", PUT_X, b"INSERTED -1\r\n", ProtocolError),
    ("inserted-two-ids", "put", PUT_X, b"INSERTED 1 2\r\n", ProtocolError),
    ("inserted-two-spaces", "put", PUT_X, b"INSERTED  1\r\n", ProtocolError),
    ("buried-bad-id", "put", PUT_X, b"BURIED x\r\n", UnknownResponseError),
    ("lowercase", "put", PUT_X, b"inserted 1\r\n", UnknownResponseError),
    ("not-found-with-value", "delete", b"delete 1\r\n", b"NOT_FOUND 1\r\n", UnknownResponseError),
    ("inserted-to-delete", "delete", b"delete 1\r\n", b"INSERTED 1\r\n", UnknownResponseError),
    ("deleted-with-value", "delete", b"delete 1\r\n", b"DELETED 1\r\n", UnknownResponseError),
    ("found-to-reserve", "reserve", RESERVE, b"FOUND 1 1\r\nx\r\n", UnknownResponseError),
    ("reserved-to-peek", "peek", b"peek 1\r\n", b"RESERVED 1 1\r\nx\r\n", UnknownResponseError),
    ("reserved-no-size", "reserve", RESERVE, b"RESERVED 1\r\n", ProtocolError),
    ("reserved-bad-size", "reserve", RESERVE, b"RESERVED 1 x\r\nx\r\n", ProtocolError),
    ("reserved-negative-size", "reserve", RESERVE, b"RESERVED 1 -1\r\n", ProtocolError),
    ("reserved-extra-value", "reserve", RESERVE, b"RESERVED 1 1 1\r\nx\r\n", ProtocolError),
    ("reserved-bad-id", "reserve", RESERVE, b"RESERVED x 1\r\nx\r\n", ProtocolError),
    ("reserved-huge-size", "reserve", RESERVE, b"RESERVED 1 " + b"9" * 21 + b"\r\n", ProtocolError),
    # beanstalkd sends at most 1 GiB (its largest -z): a larger size is
    # garbage, not a reason to wait for and buffer gigabytes.
    ("reserved-size-over-u32", "reserve", RESERVE, b"RESERVED 1 4294967296\r\n", ProtocolError),
    ("reserved-size-over-1gib", "reserve", RESERVE, b"RESERVED 1 1073741825\r\n", ProtocolError),
    ("found-size-over-1gib", "peek", b"peek 1\r\n", b"FOUND 1 1073741825\r\n", ProtocolError),
    ("ok-size-over-1gib", "stats", b"stats\r\n", b"OK 4294967295\r\n", ProtocolError),
    ("body-no-crlf", "reserve", RESERVE, b"RESERVED 1 5\r\nhelloXX", ProtocolError),
    ("body-lf-cr", "reserve", RESERVE, b"RESERVED 1 5\r\nhello\n\r", ProtocolError),
    ("body-too-long", "reserve", RESERVE, b"RESERVED 1 3\r\nhello\r\n", ProtocolError),
    ("ok-bad-size", "stats", b"stats\r\n", b"OK x\r\n", ProtocolError),
    ("stats-not-yaml", "stats", b"stats\r\n", b"OK 5\r\nhello\r\n", ProtocolError),
    ("stats-bad-line", "stats", b"stats\r\n", b"OK 8\r\n---\nfoo\n\r\n", ProtocolError),
    ("tubes-bad-line", "tubes", b"list-tubes\r\n", b"OK 8\r\n---\nfoo\n\r\n", ProtocolError),
    ("using-no-tube", "using", b"list-tube-used\r\n", b"USING\r\n", UnknownResponseError),
    ("using-two-tubes", "using", b"list-tube-used\r\n", b"USING a b\r\n", UnknownResponseError),
    ("using-non-ascii", "using", b"list-tube-used\r\n", b"USING \xff\r\n", ProtocolError),
    ("watching-bad-count", "watch", b"watch t\r\n", b"WATCHING x\r\n", ProtocolError),
    ("kicked-to-kick-job", "kick_job", b"kick-job 1\r\n", b"KICKED 1\r\n", UnknownResponseError),
    # A line over 1024 bytes is garbage, whether or not its CRLF has come yet.
    ("long-line-no-crlf", "put", PUT_X, b"A" * 1100, ProtocolError),
    ("long-line", "put", PUT_X, b"A" * 1100 + b"\r\n", ProtocolError),
    ("long-inserted", "put", PUT_X, b"INSERTED " + b"0" * 1100 + b"1\r\n", ProtocolError),
    (
        "long-using",
        "using",
        b"list-tube-used\r\n",
        b"USING " + b"a" * 1100 + b"\r\n",
        ProtocolError,
    ),
]


@pytest.mark.parametrize(
    ("call", "command", "reply", "error"),
    [case[1:] for case in GARBAGE],
    ids=[case[0] for case in GARBAGE],
)
def test_garbage_reply(
    serve: Serve,
    call: str,
    command: bytes,
    reply: bytes,
    error: type[ClientConnectionError],
) -> None:
    # The server stays connected: the error must come from the bytes alone.
    # (One transport: the other tests show that framing does not depend on it.)
    script: list[Step] = [Expect(command), Send(reply), Silent(timeout=3)]
    server, client = serve(script, "socketpair", socket_timeout=2)
    raised = raises_exactly(error, lambda: CALLS[call](client))
    assert isinstance(raised, ConnectionError)
    server.join()
    assert server.peer_closed
    assert_refuses_use(client)


HTTP_REPLY = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nBad Request"
)


@pytest.mark.parametrize(
    "pieces", [[HTTP_REPLY], [HTTP_REPLY[:26], HTTP_REPLY[26:]], [HTTP_REPLY[:30]]],
    ids=["whole", "line-first", "line-and-a-bit"],
)
def test_a_peer_that_is_not_beanstalkd(serve: Serve, pieces: list[bytes]) -> None:
    """An HTTP server's answer is not read as replies to no command: the error quotes it."""
    script: list[Step] = [Expect(PUT_X), *(Send(piece) for piece in pieces), Silent(timeout=3)]
    _, client = serve(script, "socketpair", socket_timeout=2)
    error = raises_exactly(UnknownResponseError, lambda: client.put(b"x"))
    assert str(error) == (
        "the server sent b'HTTP/1.1 400 Bad Request': is this a beanstalkd server?"
    )
    assert_refuses_use(client)


def test_a_peer_that_speaks_first_is_not_beanstalkd(serve: Serve) -> None:
    """A banner the peer sends before any command (SMTP, SSH) meets the first command."""
    script: list[Step] = [Send(b"220 mail.example.org ESMTP\r\n"), Expect(PUT_X), Silent()]
    _, client = serve(script, "socketpair", socket_timeout=2)
    error = raises_exactly(UnknownResponseError, lambda: client.put(b"x"))
    assert str(error) == (
        "the server sent b'220 mail.example.org ESMTP': is this a beanstalkd server?"
    )


def test_a_real_http_server_is_not_beanstalkd() -> None:
    with http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler
    ) as http_server:
        thread = threading.Thread(target=http_server.serve_forever, args=(0.05,))
        thread.start()
        try:
            address = http_server.server_address
            with greenstalk.Client((str(address[0]), address[1]), socket_timeout=5) as client:
                # It takes the put for an HTTP/0.9 request: an HTML page, then it hangs up.
                error = raises_exactly(ProtocolError, lambda: client.put(b"x"))
        finally:
            http_server.shutdown()
            thread.join(10)
    assert str(error).startswith("the server sent b'<!DOCTYPE HTML")  # its error page
    assert str(error).endswith("... and closed the connection: is this a beanstalkd server?")


def test_unknown_response_error_fields(serve: Serve) -> None:
    _, client = serve([Expect(PUT_X), Send(b"DELETED 1 2\r\n")], "socketpair", socket_timeout=2)
    raised = raises_exactly(UnknownResponseError, lambda: client.put(b"x"))
    assert isinstance(raised, UnknownResponseError)
    assert (raised.status, raised.values) == (b"DELETED", [b"1", b"2"])
    # A ConnectionError is an OSError: two arguments would read as errno and strerror.
    assert raised.errno is None
    assert "DELETED" in str(raised)
    assert not str(raised).startswith("[Errno")


def test_unsolicited_reply_is_garbage(serve: Serve) -> None:
    """A reply nobody asked for must not become the answer to the next command."""
    script: list[Step] = [Expect(PUT_X), Send(b"INSERTED 1\r\nINSERTED 2\r\n"), Silent()]
    _, client = serve(script, "socketpair", socket_timeout=2)
    raises_exactly(ProtocolError, lambda: client.put(b"x"))
    assert_refuses_use(client)


@pytest.mark.parametrize(
    "extra",
    [b"INSERTED 2\r\n", b"INS", b"RESERVED 2 5\r\nhel", b"A" * 1100],
    ids=["reply", "partial-line", "partial-body", "garbage"],
)
def test_bytes_after_the_reply_are_garbage(serve: Serve, extra: bytes) -> None:
    """Bytes that answer no command, arriving with a reply, fail that call at once:
    no further command is sent on the connection (and none waits for a reply)."""
    script: list[Step] = [Expect(PUT_X), Send(b"INSERTED 1\r\n" + extra), Silent(timeout=3)]
    server, client = serve(script, "socketpair", socket_timeout=2)
    raises_exactly(ProtocolError, lambda: client.put(b"x"))
    assert_refuses_use(client)
    server.join()
    assert server.received == PUT_X


def test_unsolicited_reply_to_put_many_is_garbage(serve: Serve) -> None:
    bodies = [b"a", b"b"]
    script: list[Step] = [
        Expect(b"".join(put_command(body) for body in bodies)),
        Send(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n"),
        Silent(),
    ]
    _, client = serve(script, "socketpair", socket_timeout=2)
    raises_exactly(ProtocolError, lambda: client.put_many(bodies))
    assert_refuses_use(client)


def test_server_errors_keep_the_connection(serve: Serve, transport: str) -> None:
    """Error replies are answers, not faults: the client stays usable."""
    script: list[Step] = [
        Expect(PUT_X),
        Send(b"JOB_TOO_BIG\r\n"),
        Expect(PUT_X),
        Send(b"BURIED 7\r\n"),
        Expect(b"delete 7\r\n"),
        Send(b"NOT_FOUND\r\n"),
        Expect(b"reserve-with-timeout 0\r\n"),
        Send(b"TIMED_OUT\r\n"),
        Expect(PUT_X),
        Send(b"INSERTED 8\r\n"),
    ]
    server, client = serve(script, transport, socket_timeout=2)
    raises_exactly(greenstalk.JobTooBigError, lambda: client.put(b"x"))
    buried = raises_exactly(greenstalk.BuriedWithJobIDError, lambda: client.put(b"x"))
    assert isinstance(buried, greenstalk.BuriedWithJobIDError)
    assert buried.id == 7
    raises_exactly(greenstalk.NotFoundError, lambda: client.delete(7))
    raises_exactly(greenstalk.TimedOutError, lambda: client.reserve(timeout=0))
    assert client.put(b"x") == 8
    assert not client.closed
    client.close()
    server.join()
    assert server.completed


# -- a closed client refuses every call --------------------------------------


@pytest.mark.parametrize("call", list(CALLS))
def test_every_call_refused_after_failure(serve: Serve, call: str) -> None:
    server, client = serve([Expect(PUT_X), Close()], "socketpair", socket_timeout=2)
    raises_exactly(ClientConnectionError, lambda: client.put(b"x"))
    error = raises_exactly(CommandNotSentError, lambda: CALLS[call](client))
    assert "the connection is closed" in str(error)
    assert "the server closed the connection" in str(error)  # the first failure
    assert server.received == PUT_X  # nothing more was sent


def test_close_and_context_manager(serve: Serve) -> None:
    ours, theirs = socket.socketpair()
    with ours, FakeServer([Silent(until_closed=True)], connection=theirs) as server:
        with greenstalk.Client(ours) as client:
            assert not client.closed
            assert repr(client) == "greenstalk.Client(socket='')"  # a socketpair has no name
        assert client.closed
        assert ours.fileno() == -1
        server.join()
        assert server.peer_closed
        error = raises_exactly(CommandNotSentError, lambda: client.put(b"x"))
        assert "closed by the client" in str(error)


# -- connecting --------------------------------------------------------------


def test_connect_to_a_closed_port() -> None:
    # A bound socket that does not listen: connections to its port are refused.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        address = holder.getsockname()
        error = raises_exactly(ClientConnectionError, lambda: greenstalk.Client(address))
    assert isinstance(error.__cause__, ConnectionRefusedError)
    # The address as a person writes it, never a tuple's repr.
    assert str(error) == f"cannot connect to 127.0.0.1:{address[1]}: [Errno 111] Connection refused"


@pytest.mark.parametrize("text", ["127.0.0.1:11300", "localhost:11300", "[::1]:11300"])
def test_host_port_string_is_taken_for_a_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """A str address is a Unix socket path; when none exists and it looks like host:port,
    the error says that TCP takes a tuple."""
    monkeypatch.chdir(tmp_path)
    error = raises_exactly(ClientConnectionError, lambda: greenstalk.Client(text))
    tcp = greenstalk.parse_address(text)
    assert isinstance(tcp, tuple)
    assert str(error) == (
        f"cannot connect to unix:{text}: [Errno 2] No such file or directory (a str address "
        f"is the path of a Unix socket: for TCP, pass a tuple {tcp!r})"
    )


@pytest.mark.parametrize("relative", [False, True])
def test_a_missing_socket_path_gets_no_tcp_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    path = "beanstalkd.sock" if relative else str(tmp_path / "beanstalkd.sock")
    error = raises_exactly(ClientConnectionError, lambda: greenstalk.Client(path))
    assert str(error) == f"cannot connect to unix:{path}: [Errno 2] No such file or directory"


@pytest.mark.parametrize("kind", ["missing", "regular-file", "directory"])
def test_connect_to_a_bad_unix_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "socket"
    if kind == "regular-file":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    error = raises_exactly(
        ClientConnectionError, lambda: greenstalk.Client(str(path), socket_connect_timeout=1)
    )
    assert str(path) in str(error)
    raises_exactly(ClientConnectionError, lambda: greenstalk.Client(path))  # a PathLike


def test_connect_timeout_tcp_backlog_full() -> None:
    """A listener whose accept queue is full drops SYNs: the connect times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        with socket.create_connection(address, timeout=2):  # fills the queue
            start = time.monotonic()
            error = raises_exactly(
                ClientTimeoutError,
                lambda: greenstalk.Client(address, socket_connect_timeout=0.3),
            )
            assert time.monotonic() - start < 2
            assert str(error) == f"cannot connect to 127.0.0.1:{address[1]}: timed out"


def test_connect_timeout_unix_backlog_full(tmp_path: Path) -> None:
    """A full Unix listener makes connect wait: socket_connect_timeout must bound that wait,
    not turn it into an immediate failure."""
    path = str(tmp_path / "socket")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(0)
        with socket.socket(socket.AF_UNIX) as filler:
            filler.connect(path)  # fills the queue
            start = time.monotonic()
            raises_exactly(
                ClientTimeoutError, lambda: greenstalk.Client(path, socket_connect_timeout=0.3)
            )
            assert 0.25 <= time.monotonic() - start < 2


def test_connect_refused_does_not_leak(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(ClientConnectionError):
            greenstalk.Client(str(tmp_path / "missing"))
    assert len(os.listdir("/proc/self/fd")) <= before


# -- put_many when things go wrong --------------------------------------------

MANY = [b"%05d" % i for i in range(2000)]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_put_many_connection_drops(serve: Serve, transport: str, reset: bool) -> None:
    script: list[Step] = [Expect(put_command(MANY[0])), Send(b"INSERTED 1\r\n"), Close(reset)]
    server, client = serve(script, transport, socket_timeout=5)
    raises_exactly(ClientConnectionError, lambda: client.put_many(MANY))
    server.join()
    assert server.completed
    assert_refuses_use(client, ["put_many", "put"])


def test_put_many_garbage_mid_stream(serve: Serve, transport: str) -> None:
    bodies = [b"a", b"b", b"c"]
    script: list[Step] = [
        Expect(b"".join(put_command(body) for body in bodies)),
        Send(b"INSERTED 1\r\nDELETED\r\nINSERTED 3\r\n"),
        Silent(),
    ]
    _, client = serve(script, transport, socket_timeout=5)
    raises_exactly(UnknownResponseError, lambda: client.put_many(bodies))
    assert_refuses_use(client, ["put_many"])


def test_put_many_server_stops_reading(serve: Serve) -> None:
    """The server neither reads nor answers: a blocked send or read times out."""
    bodies = [b"x" * 4000] * 1000
    _, client = serve([Stall(5)], "tcp", socket_timeout=0.3)
    raises_exactly(ClientTimeoutError, lambda: client.put_many(bodies))
    assert_refuses_use(client, ["put_many"])


def test_put_many_refused_bodies_keep_the_connection(serve: Serve, transport: str) -> None:
    bodies = [b"a", b"b", b"c"]
    script: list[Step] = [
        Expect(b"".join(put_command(body) for body in bodies)),
        Send(b"INSERTED 1\r\nJOB_TOO_BIG\r\nBURIED 3\r\n"),
        Expect(PUT_X),
        Send(b"INSERTED 4\r\n"),
    ]
    _, client = serve(script, transport, socket_timeout=5)
    with pytest.raises(greenstalk.PutManyError) as info:
        client.put_many(bodies)
    assert info.value.ids == [1, None, 3]
    assert sorted(info.value.errors) == [1, 2]
    assert type(info.value.errors[1]) is greenstalk.JobTooBigError
    assert type(info.value.errors[2]) is greenstalk.BuriedWithJobIDError
    assert client.put(b"x") == 4
    assert not client.closed


# -- a connected socket as the address ----------------------------------------


def test_socketpair_as_address(serve: Serve) -> None:
    script: list[Step] = [
        Expect(put_command(b"hello")),
        Send(b"INSERTED 5\r\n"),
        Expect(RESERVE),
        Send(b"RESERVED 5 5\r\nhello\r\n"),
        Expect(b"delete 5\r\n"),
        Send(b"DELETED\r\n"),
        Silent(until_closed=True),
    ]
    server, client = serve(script, "socketpair")
    assert client.put(b"hello") == 5
    job = client.reserve()
    assert (job.id, job.body) == (5, b"hello")
    client.delete(job)
    client.close()
    server.join()
    assert server.completed
    assert server.peer_closed


@pytest.mark.parametrize("own_timeout", [None, 0.0, 5.0])
def test_connected_socket_keeps_or_takes_a_timeout(own_timeout: float | None) -> None:
    """Without socket_timeout the socket's own timeout stays, but never non-blocking mode."""
    ours, theirs = socket.socketpair()
    ours.settimeout(own_timeout)
    with ours, FakeServer([Expect(PUT_X), Send(b"INSERTED 1\r\n")], connection=theirs):
        client = greenstalk.Client(ours)
        assert ours.gettimeout() == (None if own_timeout == 0.0 else own_timeout)
        assert client.put(b"x") == 1
        client.close()


@pytest.mark.parametrize("timeout", [None, 0, 5])
def test_connected_socket_own_timeout_bounds_a_reserve(timeout: int | None) -> None:
    """A socket handed in without socket_timeout is used as it is, as greenstalk 2.1.1 did:
    its own timeout bounds a reserve too (2.1.1 raised socket.timeout)."""
    ours, theirs = socket.socketpair()
    ours.settimeout(0.3)
    command = RESERVE if timeout is None else b"reserve-with-timeout %d\r\n" % timeout
    with ours, FakeServer([Expect(command), Silent(until_closed=True)], connection=theirs):
        client = greenstalk.Client(ours)
        started = time.monotonic()
        error = raises_exactly(ClientTimeoutError, lambda: client.reserve(timeout))
        assert 0.25 < time.monotonic() - started < 1.5
        assert isinstance(error, TimeoutError)
        # What 2.1.1 raised: the same class as TimeoutError since Python 3.10.
        assert isinstance(error, socket.timeout) or sys.version_info < (3, 10)
        assert_refuses_use(client)


def test_connected_socket_own_timeout_applies() -> None:
    ours, theirs = socket.socketpair()
    ours.settimeout(0.2)
    with ours, FakeServer([Expect(PUT_X), Silent(until_closed=True)], connection=theirs):
        client = greenstalk.Client(ours)
        raises_exactly(ClientTimeoutError, lambda: client.put(b"x"))
        assert_refuses_use(client)


def test_connected_socket_to_real_server(beanstalkd: BeanstalkdProcess) -> None:
    address = beanstalkd.address
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
    else:
        sock = socket.create_connection(address)
    with sock, greenstalk.Client(sock, socket_timeout=5, use="t", watch="t") as client:
        job_id = client.put(b"over a given socket")
        job = client.reserve(timeout=0)
        assert (job.id, job.body) == (job_id, b"over a given socket")
        client.delete(job)
        assert client.watching() == ["t"]
