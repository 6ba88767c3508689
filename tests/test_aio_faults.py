"""How greenstalk.aio copes when the server or the connection misbehaves.

The asyncio counterpart of tests/test_faults.py, with what only a shared,
pipelined connection has: several tasks waiting on one client when it
fails, cancelled calls, and a write buffer that fills up. Most tests talk
to :class:`tests.fakeserver.FakeServer`; cancellation and the timing rules
of ``reserve`` are also checked against a real beanstalkd. Each test runs
its coroutine with :func:`run`, under a deadline, so none can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import os
import select
import socket
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

import greenstalk
import greenstalk.aio
from greenstalk import (
    ClientConnectionError,
    ClientTimeoutError,
    CommandNotSentError,
    ProtocolError,
    UnknownResponseError,
)
from greenstalk.testing import BeanstalkdProcess

from .conftest import StartServer
from .fakeserver import Close, Drip, Expect, FakeServer, Send, Silent, Stall, Step, Wait
from .test_faults import CALLS as SYNC_CALLS
from .test_faults import DRIPPED, GARBAGE, HTTP_REPLY, PUT_X, RESERVE, put_command

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

AioClient = greenstalk.aio.Client[Any]
Call = Callable[[AioClient], Awaitable[object]]
Serve = Callable[..., AbstractAsyncContextManager["tuple[FakeServer, AioClient]"]]

USING = b"list-tube-used\r\n"
STATS = b"stats\r\n"


def run(coroutine: Coroutine[Any, Any, T], deadline: float = 15) -> T:
    """Run ``coroutine`` on a new event loop; a hang fails the test after ``deadline`` s."""
    return asyncio.run(asyncio.wait_for(coroutine, deadline))


# Every public method that talks to the server, with valid arguments: the
# sync tests' table, whose calls return coroutines on an asyncio client.
CALLS: dict[str, Call] = {name: cast(Call, call) for name, call in SYNC_CALLS.items()}

# The bytes some of the calls send.
COMMANDS: dict[str, bytes] = {
    "put": PUT_X,
    "put_many": put_command(b"x") + put_command(b"y"),
    "reserve": RESERVE,
    "peek": b"peek 1\r\n",
    "stats": STATS,
    "using": USING,
}


async def raises_exactly(error_type: type[E], awaitable: Awaitable[object]) -> E:
    with pytest.raises(error_type) as info:
        await awaitable
    assert type(info.value) is error_type, repr(info.value)
    return info.value


async def assert_refuses_use(
    client: AioClient, calls: tuple[str, ...] = ("put", "reserve")
) -> None:
    """The client is closed and every call says so: the command was not sent."""
    assert client.closed
    assert repr(client).startswith("greenstalk.aio.Client(")
    for name in calls:
        error = await raises_exactly(CommandNotSentError, CALLS[name](client))
        assert "the connection is closed" in str(error), name
    await client.close()  # still a no-op
    assert client.closed


async def gather_calls(client: AioClient, names: list[str]) -> list[object]:
    """Start the calls in order, on one client, and wait for every outcome."""
    return list(
        await asyncio.gather(*(CALLS[name](client) for name in names), return_exceptions=True)
    )


@pytest.fixture(params=["tcp", "unix", "socketpair"])
def transport(request: pytest.FixtureRequest) -> str:
    """How the client reaches the fake server."""
    return str(request.param)


@pytest.fixture
def serve(tmp_path: Path) -> Serve:
    """``async with serve(script, transport="socketpair", **client_kwargs) as (server, client)``.

    At exit the client is closed and the server stopped; a script that went
    wrong fails the test.
    """
    count = itertools.count()

    @contextlib.asynccontextmanager
    async def start(
        script: list[Step], transport: str = "socketpair", **kwargs: Any
    ) -> AsyncIterator[tuple[FakeServer, AioClient]]:
        with contextlib.ExitStack() as stack:
            address: greenstalk.Address
            if transport == "socketpair":
                ours, theirs = socket.socketpair()
                stack.callback(ours.close)
                server = FakeServer(script, connection=theirs)
                address = ours
            elif transport == "unix":
                server = FakeServer(script, unix_path=tmp_path / f"fake{next(count)}.sock")
                address = server.address
            else:
                server = FakeServer(script)
                address = server.address
            stack.callback(server.stop)
            server.start()
            client: AioClient = await greenstalk.aio.connect(address, **kwargs)
            try:
                yield server, client
            finally:
                await client.close()
        server.check()

    return start


def open_socket(address: greenstalk.Address) -> socket.socket:
    """A plain socket connected to a real server's address."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
        return sock
    assert isinstance(address, tuple)
    return socket.create_connection(address, timeout=5)


async def waiting_reserves(client: AioClient, count: int) -> None:
    """Return once ``count`` connections wait in a reserve on the server."""
    deadline = time.monotonic() + 5
    while (await client.stats())["current-waiting"] < count:
        assert time.monotonic() < deadline, "the reserve never reached the server"
        await asyncio.sleep(0.01)


async def job_in_state(client: AioClient, job_id: int, state: str) -> Any:
    """Return the job's stats once it is in ``state``; fail after 3 seconds."""
    deadline = time.monotonic() + 3
    while True:
        stats = await client.stats_job(job_id)
        if stats["state"] == state:
            return stats
        assert time.monotonic() < deadline, f"job {job_id} stayed {stats['state']}"
        await asyncio.sleep(0.02)


async def received(sock: socket.socket, size: int, timeout: float) -> bytes:
    """Read up to ``size`` bytes from a blocking socket in a thread, waiting at most ``timeout``."""

    def read() -> bytes:
        sock.settimeout(timeout)
        try:
            return sock.recv(size)
        except socket.timeout:
            return b""

    return await asyncio.to_thread(read)


# -- the server closes the connection --------------------------------------

# Calls waiting together on one client, in the order they are made.
SEVERAL = ["put", "stats", "using", "put_many", "peek"]


def several_commands() -> bytes:
    return b"".join(COMMANDS[name] for name in SEVERAL)


def test_server_closes_with_calls_pending(serve: Serve, transport: str) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(several_commands()), Close()]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            results = await gather_calls(client, SEVERAL)
            for name, result in zip(SEVERAL, results):
                assert type(result) is ClientConnectionError, (name, result)
                assert isinstance(result, ConnectionError)
                assert "the server closed the connection" in str(result)
                assert "middle" not in str(result)
            server.join()
            assert server.completed
            await assert_refuses_use(client)

    run(main())


@pytest.mark.parametrize("transport", ["tcp"])
def test_server_resets_with_calls_pending(serve: Serve, transport: str) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(several_commands()), Close(reset=True)]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            results = await gather_calls(client, SEVERAL)
            assert all(type(result) is ClientConnectionError for result in results), results
            server.join()
            assert server.completed
            await assert_refuses_use(client)

    run(main())


def test_server_closes_at_once(serve: Serve, transport: str) -> None:
    """The server hangs up before the first command: connecting, sending or reading fails."""

    async def main() -> None:
        refused: ClientConnectionError | None = None
        try:
            async with serve([Close(reset=True)], transport, socket_timeout=5) as (server, client):
                server.join()
                await raises_exactly(ClientConnectionError, client.put(b"x"))
                await assert_refuses_use(client)
        except ClientConnectionError as error:
            refused = error
        if refused is not None:
            # Over TCP the reset may come before the connect is complete.
            assert transport == "tcp", refused
            assert type(refused) is ClientConnectionError, repr(refused)
            assert isinstance(refused.__cause__, ConnectionResetError), repr(refused.__cause__)

    run(main())


def test_server_closes_while_idle(serve: Serve, transport: str) -> None:
    """No call is waiting: the client notices the close by itself."""

    async def main() -> None:
        async with serve([Close()], transport) as (server, client):
            server.join()
            deadline = time.monotonic() + 5
            while not client.closed:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            error = await raises_exactly(CommandNotSentError, client.stats())
            assert "the server closed the connection" in str(error)

    run(main())


@pytest.mark.parametrize(
    ("call", "partial"),
    [
        ("put", b"INSERT"),
        ("put", b"INSERTED 1\r"),
        ("reserve", b"RESERVED 1 10\r\n"),
        ("reserve", b"RESERVED 1 10\r\nhel"),
        ("reserve", b"RESERVED 1 10\r\nhello worl"),
        ("reserve", b"RESERVED 1 10\r\nhello worl\r"),
        ("stats", b"OK 100\r\n---\nid: 1\n"),
    ],
    ids=["line", "line-cr", "header", "body", "body-full", "body-cr", "stats"],
)
def test_server_closes_mid_reply(serve: Serve, transport: str, call: str, partial: bytes) -> None:
    """The call being answered and the call behind it both fail."""

    async def main() -> None:
        script: list[Step] = [Expect(COMMANDS[call] + USING), Send(partial), Close()]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            first, behind = await gather_calls(client, [call, "using"])
            assert type(first) is ClientConnectionError, first
            assert "in the middle of a reply" in str(first)
            assert type(behind) is ClientConnectionError, behind
            server.join()
            assert server.completed
            await assert_refuses_use(client)

    run(main())


def test_connect_fails_on_closed_connection() -> None:
    """The tube set-up runs in connect(): a failure there raises, and closes."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, FakeServer([Expect(b"use t\r\n"), Close()], connection=theirs) as server:
            await raises_exactly(ClientConnectionError, greenstalk.aio.connect(ours, use="t"))
            assert ours.fileno() == -1  # the client closed the socket it was given
        server.join()
        assert server.completed

    run(main())


def test_connect_fails_on_garbage() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        script: list[Step] = [
            Expect(b"watch t\r\nignore default\r\n"),
            Send(b"WATCHING 2\r\nDELETED\r\n"),
        ]
        with ours, FakeServer(script, connection=theirs) as server:
            await raises_exactly(UnknownResponseError, greenstalk.aio.connect(ours, watch="t"))
            assert ours.fileno() == -1
        server.join()
        assert server.completed

    run(main())


def test_connect_times_out_in_setup() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        script: list[Step] = [Expect(b"use t\r\n"), Silent(until_closed=True)]
        with ours, FakeServer(script, connection=theirs):
            start = time.monotonic()
            await raises_exactly(
                ClientTimeoutError, greenstalk.aio.connect(ours, use="t", socket_timeout=0.2)
            )
            assert time.monotonic() - start < 3
            assert ours.fileno() == -1

    run(main())


# -- socket timeouts ---------------------------------------------------------


def test_socket_timeout_fails_every_pending_call(serve: Serve, transport: str) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(several_commands()), Silent(until_closed=True)]
        async with serve(script, transport, socket_timeout=0.2) as (server, client):
            start = time.monotonic()
            results = await gather_calls(client, SEVERAL)
            assert 0.15 < time.monotonic() - start < 3
            for result in results:
                assert isinstance(result, ClientTimeoutError), result
                assert isinstance(result, TimeoutError)
                assert isinstance(result, ConnectionError)
                assert "connection closed" in str(result)
            server.join()
            assert server.peer_closed  # the client hung up; the server saw it
            await assert_refuses_use(client)

    run(main())


def test_late_reply_is_not_read_as_the_next_answer(serve: Serve, transport: str) -> None:
    async def main() -> None:
        late = threading.Event()
        script: list[Step] = [Expect(PUT_X), Wait(late), Send(b"INSERTED 1\r\n"), Silent()]
        async with serve(script, transport, socket_timeout=0.2) as (server, client):
            await raises_exactly(ClientTimeoutError, client.put(b"x"))
            late.set()
            server.join()
            # Were the connection kept, this put would return 1, the previous put's id.
            await assert_refuses_use(client, ("put",))
            assert server.received == PUT_X

    run(main())


@pytest.mark.parametrize(
    ("call", "partial"),
    [
        ("put", b""),
        ("put", b"INSERTED 1"),
        ("peek", b"FOUND 1 10\r\nhel"),
        ("stats", b"OK 100\r\n---\n"),
    ],
    ids=["nothing", "line", "body", "stats"],
)
def test_socket_timeout_mid_reply(serve: Serve, call: str, partial: bytes) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(COMMANDS[call]), Send(partial), Silent(until_closed=True)]
        async with serve(script, socket_timeout=0.2) as (server, client):
            await raises_exactly(ClientTimeoutError, CALLS[call](client))
            server.join()
            await assert_refuses_use(client)

    run(main())


def test_socket_timeout_counts_from_the_previous_answer(serve: Serve) -> None:
    """Pipelined replies that keep coming, each within socket_timeout, time nothing out."""

    async def main() -> None:
        # 0.12 s between replies, 0.72 s in all: only the gaps are bounded.
        script: list[Step] = [Expect(PUT_X * 6)]
        for job_id in range(1, 7):
            script += [Stall(0.12), Send(b"INSERTED %d\r\n" % job_id)]
        script.append(Silent(until_closed=True))
        async with serve(script, socket_timeout=0.5) as (server, client):
            ids = await asyncio.gather(*(client.put(b"x") for _ in range(6)))
            assert ids == [1, 2, 3, 4, 5, 6]
            assert not client.closed
            await client.close()
            server.join()
            assert server.completed

    run(main())


def test_socket_timeout_applies_after_a_blocking_reserve(serve: Serve) -> None:
    """A reserve without timeout may wait forever, but the command behind it may not:
    once the reserve is answered, the next reply is due within socket_timeout."""

    async def main() -> None:
        script: list[Step] = [
            Expect(RESERVE + USING),
            Send(b"RESERVED 1 1\r\nx\r\n"),
            Silent(until_closed=True),
        ]
        async with serve(script, socket_timeout=0.3) as (server, client):
            reserving = asyncio.ensure_future(client.reserve())
            using = asyncio.ensure_future(client.using())
            assert (await reserving).id == 1
            start = time.monotonic()
            await raises_exactly(ClientTimeoutError, asyncio.wait_for(using, 3))
            assert time.monotonic() - start < 3
            server.join()
            await assert_refuses_use(client)

    run(main())


@pytest.mark.parametrize("call", list(DRIPPED))
def test_socket_timeout_bounds_a_dripping_reply(serve: Serve, transport: str, call: str) -> None:
    """A reply sent a byte at a time has socket_timeout in all, not for each byte."""

    async def main() -> None:
        command, reply = DRIPPED[call]
        script: list[Step] = [Expect(command), Drip(reply, 0.05), Silent()]
        async with serve(script, transport, socket_timeout=0.5) as (_, client):
            started = time.monotonic()
            await raises_exactly(ClientTimeoutError, CALLS[call](client))
            assert 0.45 < time.monotonic() - started < 1.5
            await assert_refuses_use(client)

    run(main())


def test_a_reserve_is_bounded_by_its_timeout_plus_socket_timeout(serve: Serve) -> None:
    async def main() -> None:
        script: list[Step] = [
            Expect(b"reserve-with-timeout 1\r\n"),
            Drip(b"RESERVED 1 40\r\n" + b"x" * 40 + b"\r\n", 0.05),
            Silent(),
        ]
        async with serve(script, socket_timeout=0.3) as (_, client):
            started = time.monotonic()
            await raises_exactly(ClientTimeoutError, client.reserve(timeout=1))
            assert 1.25 < time.monotonic() - started < 2.3

    run(main())


@pytest.mark.parametrize("timeout", [None, 0, 5])
def test_connected_socket_own_timeout_bounds_a_reserve(timeout: int | None) -> None:
    """A socket handed in without socket_timeout is used as it is: its own timeout
    bounds every command, a reserve's wait included, as in the sync client."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        ours.settimeout(0.3)
        command = RESERVE if timeout is None else b"reserve-with-timeout %d\r\n" % timeout
        script: list[Step] = [Expect(command), Silent(until_closed=True)]
        with ours, FakeServer(script, connection=theirs):
            async with greenstalk.aio.Client(ours) as client:
                started = time.monotonic()
                await raises_exactly(ClientTimeoutError, client.reserve(timeout))
                assert 0.25 < time.monotonic() - started < 1.5
                await assert_refuses_use(client)

    run(main())


def test_reserve_with_timeout_is_bounded(serve: Serve) -> None:
    """reserve(timeout=n) waits n + socket_timeout for a silent server, not forever."""

    async def main() -> None:
        script: list[Step] = [Expect(b"reserve-with-timeout 1\r\n"), Silent(until_closed=True)]
        async with serve(script, socket_timeout=0.2) as (server, client):
            start = time.monotonic()
            await raises_exactly(ClientTimeoutError, client.reserve(timeout=1))
            assert 1.1 <= time.monotonic() - start < 4
            server.join()
            await assert_refuses_use(client)

    run(main())


def test_reserve_poll_is_bounded(serve: Serve) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(b"reserve-with-timeout 0\r\n"), Silent(until_closed=True)]
        async with serve(script, socket_timeout=0.2) as (server, client):
            await raises_exactly(ClientTimeoutError, client.reserve(timeout=0))
            server.join()

    run(main())


def test_reserve_waits_past_socket_timeout(serve: Serve) -> None:
    """A reply that comes after socket_timeout but within the reserve timeout is read."""

    async def main() -> None:
        script: list[Step] = [
            Expect(b"reserve-with-timeout 3\r\n"),
            Stall(1.0),
            Send(b"RESERVED 3 1\r\nx\r\n"),
            Expect(b"delete 3\r\n"),
            Send(b"DELETED\r\n"),
        ]
        async with serve(script, socket_timeout=0.5) as (server, client):
            job = await client.reserve(timeout=3)
            assert (job.id, job.body) == (3, b"x")
            await client.delete(job)
            assert not client.closed
            server.join()
            assert server.completed

    run(main())


def test_real_reserve_timeout_longer_than_socket_timeout(beanstalkd: BeanstalkdProcess) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(beanstalkd.address, socket_timeout=0.2) as client:
            start = time.monotonic()
            await raises_exactly(greenstalk.TimedOutError, client.reserve(timeout=1))
            assert time.monotonic() - start >= 0.9
            assert not client.closed
            job_id = await client.put(b"after")
            assert (await client.reserve(timeout=0)).id == job_id

    run(main())


@pytest.mark.parametrize("reserve_timeout", [2, None])
def test_real_reserve_gets_a_delayed_job(
    beanstalkd: BeanstalkdProcess, reserve_timeout: int | None
) -> None:
    """A job that becomes ready after socket_timeout but within the reserve wait arrives."""

    async def main() -> None:
        async with greenstalk.aio.Client(beanstalkd.address, socket_timeout=0.3) as client:
            job_id = await client.put(b"later", delay=1)
            start = time.monotonic()
            job = await client.reserve(timeout=reserve_timeout)
            assert time.monotonic() - start >= 0.5
            assert (job.id, job.body) == (job_id, b"later")
            await client.delete(job)
            assert not client.closed

    run(main())


def test_real_command_held_behind_a_cancelled_reserve_does_not_time_out(
    beanstalkd: BeanstalkdProcess,
) -> None:
    """The client itself holds a command back until the cancelled reserve is answered:
    that wait is not the server failing to answer."""

    async def main() -> None:
        async with greenstalk.aio.Client(beanstalkd.address, socket_timeout=0.2) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(timeout=1), 0.05)
            start = time.monotonic()
            assert await client.using() == "default"
            assert 0.5 < time.monotonic() - start < 5
            assert not client.closed

    run(main())


# -- garbage from the server -------------------------------------------------


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
    """The garbled call raises the error; the call waiting behind it fails too."""

    async def main() -> None:
        # The server stays connected: the errors must come from the bytes alone.
        script: list[Step] = [Expect(command + USING), Send(reply), Silent(timeout=3)]
        async with serve(script, socket_timeout=2) as (server, client):
            first, behind = await gather_calls(client, [call, "using"])
            assert type(first) is error, first
            assert isinstance(behind, ClientConnectionError), behind
            assert client.closed
            server.join()
            assert server.peer_closed
            await assert_refuses_use(client)
            assert server.received == command + USING

    run(main())


@pytest.mark.parametrize(
    "pieces", [[HTTP_REPLY], [HTTP_REPLY[:26], HTTP_REPLY[26:]]], ids=["whole", "line-first"]
)
def test_a_peer_that_is_not_beanstalkd(serve: Serve, pieces: list[bytes]) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(PUT_X), *(Send(piece) for piece in pieces), Silent()]
        async with serve(script, socket_timeout=2) as (_, client):
            error = await raises_exactly(UnknownResponseError, client.put(b"x"))
            assert str(error) == (
                "the server sent b'HTTP/1.1 400 Bad Request': is this a beanstalkd server?"
            )
            await assert_refuses_use(client)

    run(main())


BANNER = b"220 mail.example.org ESMTP\r\n"
BANNER_ERROR = "the server sent b'220 mail.example.org ESMTP': is this a beanstalkd server?"


def test_a_peer_that_speaks_first_is_not_beanstalkd() -> None:
    """A banner sent before the first command (SMTP, SSH) is not a reply to no command."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, FakeServer([Send(BANNER), Silent(until_closed=True)], connection=theirs):
            readable, _, _ = select.select([ours], [], [], 5)
            assert readable, "the banner never came"
            error = await raises_exactly(ClientConnectionError, greenstalk.aio.connect(ours))
            assert str(error) == f"the connection is closed: {BANNER_ERROR}"

    run(main())


def test_a_banner_while_idle_is_not_beanstalkd(serve: Serve) -> None:
    async def main() -> None:
        banner_due = threading.Event()
        script: list[Step] = [Wait(banner_due), Send(BANNER), Silent()]
        async with serve(script, socket_timeout=2) as (_, client):
            banner_due.set()
            deadline = time.monotonic() + 5
            while not client.closed:  # the client is idle: nothing reads but the event loop
                assert time.monotonic() < deadline, "the banner never came"
                await asyncio.sleep(0.01)
            error = await raises_exactly(CommandNotSentError, client.put(b"x"))
            assert str(error) == f"the connection is closed: {BANNER_ERROR}"

    run(main())


def test_a_real_http_server_is_not_beanstalkd() -> None:
    async def main() -> None:
        with http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), http.server.BaseHTTPRequestHandler
        ) as http_server:
            thread = threading.Thread(target=http_server.serve_forever, args=(0.05,))
            thread.start()
            try:
                address = (str(http_server.server_address[0]), http_server.server_address[1])
                async with greenstalk.aio.Client(address, socket_timeout=5) as client:
                    # It takes the put for an HTTP/0.9 request: an HTML page, then it hangs up.
                    error = await raises_exactly(ProtocolError, client.put(b"x"))
            finally:
                http_server.shutdown()
                thread.join(10)
        assert str(error).startswith("the server sent b'<!DOCTYPE HTML")  # its error page
        assert str(error).endswith("... and closed the connection: is this a beanstalkd server?")

    run(main())


def test_reply_to_no_command(serve: Serve) -> None:
    """The server speaks first: the client closes the connection at once."""

    async def main() -> None:
        connected = threading.Event()
        script = [Wait(connected), Send(b"INSERTED 1\r\n"), Silent(timeout=3)]
        async with serve(script) as (server, client):
            connected.set()
            deadline = time.monotonic() + 5
            while not client.closed:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            error = await raises_exactly(CommandNotSentError, client.put(b"x"))
            assert "reply to no command" in str(error)
            server.join()
            assert server.received == b""

    run(main())


@pytest.mark.parametrize(
    "extra",
    [b"INSERTED 2\r\n", b"INS", b"RESERVED 2 5\r\nhel", b"A" * 1100],
    ids=["reply", "partial-line", "partial-body", "garbage"],
)
def test_bytes_after_the_last_reply_are_garbage(serve: Serve, extra: bytes) -> None:
    """Bytes that arrive with the reply to the only command answer no command: the
    connection is closed at once, and they are never read as the next command's reply."""

    async def main() -> None:
        script: list[Step] = [Expect(PUT_X), Send(b"INSERTED 1\r\n" + extra), Silent(timeout=3)]
        async with serve(script, socket_timeout=2) as (server, client):
            (result,) = await gather_calls(client, ["put"])
            assert result == 1 or type(result) is ProtocolError, result
            assert client.closed
            await assert_refuses_use(client)
            server.join()
            assert server.received == PUT_X

    run(main())


def test_wrong_reply_fails_the_calls_behind_it(serve: Serve) -> None:
    """After a reply that does not answer its command, the replies that follow it
    cannot be trusted: the calls they would answer fail too."""

    async def main() -> None:
        script: list[Step] = [
            Expect(PUT_X * 3),
            Send(b"INSERTED 1\r\nDELETED\r\nINSERTED 3\r\n"),
            Silent(timeout=3),
        ]
        async with serve(script, socket_timeout=2) as (_, client):
            results = await gather_calls(client, ["put", "put", "put"])
            assert results[0] == 1
            assert type(results[1]) is UnknownResponseError, results[1]
            assert isinstance(results[2], ClientConnectionError), results[2]
            await assert_refuses_use(client)

    run(main())


def test_unsolicited_reply_to_put_many_is_garbage(serve: Serve) -> None:
    async def main() -> None:
        bodies = [b"a", b"b"]
        script: list[Step] = [
            Expect(b"".join(put_command(body) for body in bodies)),
            Send(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n"),
            Silent(timeout=3),
        ]
        async with serve(script) as (_, client):
            (result,) = await asyncio.gather(client.put_many(bodies), return_exceptions=True)
            assert result == [1, 2] or type(result) is ProtocolError, result
            assert client.closed
            await assert_refuses_use(client, ("put_many",))

    run(main())


def test_server_errors_keep_the_connection(serve: Serve, transport: str) -> None:
    """Error replies are answers, not faults: each goes to its call, the client stays usable."""

    async def main() -> None:
        script: list[Step] = [
            Expect(PUT_X * 2 + b"delete 7\r\nreserve-with-timeout 0\r\n" + PUT_X),
            Send(b"JOB_TOO_BIG\r\nBURIED 7\r\nNOT_FOUND\r\nTIMED_OUT\r\nINSERTED 8\r\n"),
            Silent(until_closed=True),
        ]
        async with serve(script, transport, socket_timeout=2) as (server, client):
            results = await asyncio.gather(
                client.put(b"x"),
                client.put(b"x"),
                client.delete(7),
                client.reserve(timeout=0),
                client.put(b"x"),
                return_exceptions=True,
            )
            assert type(results[0]) is greenstalk.JobTooBigError
            assert type(results[1]) is greenstalk.BuriedWithJobIDError
            assert results[1].id == 7
            assert type(results[2]) is greenstalk.NotFoundError
            assert type(results[3]) is greenstalk.TimedOutError
            assert results[4] == 8
            assert not client.closed
            await client.close()
            server.join()
            assert server.completed

    run(main())


# -- a closed, or never opened, client refuses every call ---------------------


@pytest.mark.parametrize("call", list(CALLS))
def test_every_call_refused_after_failure(serve: Serve, call: str) -> None:
    async def main() -> None:
        async with serve([Expect(PUT_X), Close()], socket_timeout=2) as (server, client):
            await raises_exactly(ClientConnectionError, client.put(b"x"))
            error = await raises_exactly(CommandNotSentError, CALLS[call](client))
            assert "the connection is closed" in str(error)
            assert "the server closed the connection" in str(error)  # the first failure
            assert server.received == PUT_X  # nothing more was sent

    run(main())


@pytest.mark.parametrize("call", list(CALLS))
def test_every_call_refused_before_connecting(call: str) -> None:
    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.setblocking(False)
            client: AioClient = greenstalk.aio.Client(listener.getsockname())
            assert client.closed
            error = await raises_exactly(CommandNotSentError, CALLS[call](client))
            assert "not connected" in str(error)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody connected
            await client.close()

    run(main())


def test_later_calls_name_the_failure(serve: Serve) -> None:
    async def main() -> None:
        async with serve([Expect(PUT_X), Close()], socket_timeout=2) as (_, client):
            await raises_exactly(ClientConnectionError, client.put(b"x"))
            assert repr(client) == "greenstalk.aio.Client(socket='')"  # as 2.1.1 writes it
            error = await raises_exactly(CommandNotSentError, client.using())
            assert "the connection is closed: the server closed the connection" in str(error)
            assert "not connected" not in str(error)

    run(main())


def test_async_with_closes_on_exit() -> None:
    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, FakeServer([Silent(until_closed=True)], connection=theirs) as server:
            async with greenstalk.aio.Client(ours) as client:
                assert not client.closed
                assert repr(client) == "greenstalk.aio.Client(socket='')"
            assert client.closed
            assert ours.fileno() == -1
            server.join()
            assert server.peer_closed
            error = await raises_exactly(CommandNotSentError, client.put(b"x"))
            assert "closed by the client" in str(error)
            # A closed client stays closed: it cannot be entered again.
            error = await raises_exactly(ClientConnectionError, client.__aenter__())
            assert "closed" in str(error)

    run(main())


def test_async_with_closes_on_an_exception() -> None:
    class Boom(Exception):
        pass

    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, FakeServer([Silent(until_closed=True)], connection=theirs) as server:
            client: AioClient = greenstalk.aio.Client(ours)

            async def fail_inside() -> None:
                async with client:
                    raise Boom

            with pytest.raises(Boom):
                await fail_inside()
            assert client.closed
            assert ours.fileno() == -1
            server.join()
            assert server.peer_closed
            await raises_exactly(CommandNotSentError, client.put(b"x"))

    run(main())


def test_close_with_calls_pending(serve: Serve, transport: str) -> None:
    async def main() -> None:
        names = ["put", "reserve", "stats", "put_many"]
        commands = PUT_X + RESERVE + STATS + COMMANDS["put_many"]
        script: list[Step] = [Expect(commands), Silent(until_closed=True)]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            tasks = [asyncio.ensure_future(CALLS[name](client)) for name in names]
            await asyncio.sleep(0)  # every call has sent its command
            # Cancel a waiting reserve too: it holds back the command after it.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(timeout=1), 0.05)
            held = asyncio.ensure_future(client.using())
            await asyncio.sleep(0)
            await asyncio.gather(client.close(), client.close())
            results = await asyncio.gather(*tasks, held, return_exceptions=True)
            for result in results:
                # The held command was never sent.
                expected = CommandNotSentError if result is results[-1] else ClientConnectionError
                assert type(result) is expected, result
                assert "closed by the client" in str(result)
            await client.close()
            server.join()
            assert server.peer_closed
            assert server.received == commands + b"reserve-with-timeout 1\r\n"
            await assert_refuses_use(client)

    run(main())


def test_close_while_connecting() -> None:
    """close() during the connect returns, and the connect fails: nothing is left open."""

    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            address = listener.getsockname()
            # A full accept queue: the kernel drops the client's SYN, the connect waits.
            with socket.create_connection(address, timeout=2):
                client: AioClient = greenstalk.aio.Client(address)
                opening = asyncio.ensure_future(client.__aenter__())
                for _ in range(5):
                    await asyncio.sleep(0)
                try:
                    await asyncio.wait_for(client.close(), 2)
                    done, _ = await asyncio.wait([opening], timeout=2)
                    assert opening in done, "the connect went on after close()"
                    assert isinstance(opening.exception(), ClientConnectionError)
                    assert client.closed
                finally:
                    opening.cancel()
                    await asyncio.gather(opening, return_exceptions=True)

    run(main())


# -- connecting --------------------------------------------------------------


def test_connect_to_a_closed_port() -> None:
    async def main() -> None:
        # A bound socket that does not listen: connections to its port are refused.
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            address = holder.getsockname()
            error = await raises_exactly(ClientConnectionError, greenstalk.aio.connect(address))
        assert isinstance(error.__cause__, ConnectionRefusedError)
        # The address as a person writes it: asyncio's own message has it as a tuple.
        assert str(error) == (
            f"cannot connect to 127.0.0.1:{address[1]}: [Errno 111] Connection refused"
        )

    run(main())


@pytest.mark.parametrize("text", ["127.0.0.1:11300", "localhost:11300"])
def test_host_port_string_is_taken_for_a_socket_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    async def main() -> None:
        monkeypatch.chdir(tmp_path)
        error = await raises_exactly(ClientConnectionError, greenstalk.aio.connect(text))
        tcp = greenstalk.parse_address(text)
        assert str(error) == (
            f"cannot connect to unix:{text}: [Errno 2] No such file or directory (a str "
            f"address is the path of a Unix socket: for TCP, pass a tuple {tcp!r})"
        )

    run(main())


@pytest.mark.parametrize("kind", ["missing", "regular-file", "directory"])
def test_connect_to_a_bad_unix_path(tmp_path: Path, kind: str) -> None:
    async def main() -> None:
        path = tmp_path / "socket"
        if kind == "regular-file":
            path.write_bytes(b"")
        elif kind == "directory":
            path.mkdir()
        error = await raises_exactly(
            ClientConnectionError, greenstalk.aio.connect(str(path), socket_connect_timeout=1)
        )
        assert str(path) in str(error)
        client: AioClient = greenstalk.aio.Client(path)  # a PathLike

        async def enter() -> None:
            async with client:
                pass

        await raises_exactly(ClientConnectionError, enter())
        assert client.closed
        error = await raises_exactly(CommandNotSentError, client.put(b"x"))
        assert f"cannot connect to unix:{path}: " in str(error)

    run(main())


def test_connect_timeout_tcp_backlog_full() -> None:
    """A listener whose accept queue is full drops SYNs: the connect times out."""

    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            address = listener.getsockname()
            with socket.create_connection(address, timeout=2):  # fills the queue
                start = time.monotonic()
                error = await raises_exactly(
                    ClientTimeoutError,
                    greenstalk.aio.connect(address, socket_connect_timeout=0.3),
                )
                assert time.monotonic() - start < 2
                assert str(error) == f"cannot connect to 127.0.0.1:{address[1]}: timed out"
                assert isinstance(error, TimeoutError)

    run(main())


def test_connect_timeout_unix_backlog_full(tmp_path: Path) -> None:
    """A full Unix listener makes connect wait: socket_connect_timeout must bound that
    wait, not hand back a client whose connection never existed."""

    async def main() -> None:
        path = str(tmp_path / "socket")
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(path)
            listener.listen(0)
            with socket.socket(socket.AF_UNIX) as filler:
                filler.connect(path)  # fills the queue
                start = time.monotonic()
                try:
                    client = await greenstalk.aio.connect(path, socket_connect_timeout=0.3)
                except ClientTimeoutError:
                    assert 0.25 <= time.monotonic() - start < 2
                else:
                    await client.close()
                    pytest.fail(f"connect() to a full listener returned {client!r}")

    run(main())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"use": "bad name"}, ValueError),
        ({"use": "-dash"}, ValueError),
        ({"use": b"bytes"}, TypeError),
        ({"watch": []}, ValueError),
        ({"watch": ["ok", "bad name"]}, ValueError),
        ({"watch": ["ok", 5]}, TypeError),
        ({"watch": 5}, TypeError),
        ({"watch": [b"t"]}, TypeError),
        ({"encoding": "no-such-codec"}, LookupError),
    ],
    ids=[
        "use",
        "use-dash",
        "use-bytes",
        "no-watch",
        "watch",
        "watch-int",
        "watch-5",
        "watch-bytes",
        "encoding",
    ],
)
def test_bad_arguments_raise_before_connecting(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            listener.setblocking(False)
            address = listener.getsockname()
            with pytest.raises(error):
                greenstalk.aio.Client(address, **kwargs)
            with pytest.raises(error):
                await greenstalk.aio.connect(address, **kwargs)
            with pytest.raises(BlockingIOError):
                listener.accept()  # nobody connected

    run(main())


def test_connect_refused_does_not_leak(tmp_path: Path) -> None:
    async def main() -> None:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with pytest.raises(ClientConnectionError):
                await greenstalk.aio.connect(str(tmp_path / "missing"))
        assert len(os.listdir("/proc/self/fd")) <= before

    run(main())


# -- cancellation --------------------------------------------------------------


def test_cancelled_put_reply_is_dropped(serve: Serve, transport: str) -> None:
    """The reply to a cancelled put comes late; the next command gets its own reply."""

    async def main() -> None:
        late = threading.Event()
        script: list[Step] = [
            Expect(PUT_X),
            Wait(late),
            Send(b"INSERTED 1\r\n"),
            Expect(put_command(b"y")),
            Send(b"INSERTED 2\r\n"),
            Silent(until_closed=True),
        ]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.put(b"x"), 0.1)
            assert not client.closed
            second = asyncio.ensure_future(client.put(b"y"))
            await asyncio.sleep(0)
            late.set()
            assert await second == 2
            assert not client.closed
            await client.close()
            server.join()
            assert server.completed

    run(main())


def test_cancelled_call_among_others(serve: Serve) -> None:
    async def main() -> None:
        script: list[Step] = [
            Expect(PUT_X * 3),
            Send(b"INSERTED 1\r\nINSERTED 2\r\nINSERTED 3\r\n"),
            Expect(b"list-tubes\r\n"),
            Send(b"OK 14\r\n---\n- default\n\r\n"),
        ]
        async with serve(script, socket_timeout=5) as (server, client):
            tasks = [asyncio.ensure_future(client.put(b"x")) for _ in range(3)]
            await asyncio.sleep(0)
            tasks[1].cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert results[0] == 1
            assert isinstance(results[1], asyncio.CancelledError)
            assert results[2] == 3
            assert await client.tubes() == ["default"]
            server.join()
            assert server.completed

    run(main())


@pytest.mark.parametrize("socket_timeout", [None, 5.0])
def test_cancelled_reserve_releases_the_job_that_comes_later(
    beanstalkd: BeanstalkdProcess, socket_timeout: float | None
) -> None:
    async def main() -> None:
        address = beanstalkd.address
        async with greenstalk.aio.Client(
            address, socket_timeout=socket_timeout
        ) as consumer, greenstalk.aio.Client(address) as other, greenstalk.aio.Client(
            address, watch="empty"
        ) as waiter:
            job_id = await other.put(b"x", priority=123, delay=1)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(consumer.reserve(), 0.2)
            # The job becomes ready after a second: the cancelled reserve
            # receives it, and must give it back.
            await raises_exactly(greenstalk.TimedOutError, waiter.reserve(timeout=2))
            stats = await other.stats_job(job_id)
            assert (stats["state"], stats["pri"]) == ("ready", 123)
            assert (stats["reserves"], stats["releases"]) == (1, 1)
            job = await other.reserve(timeout=0)
            assert (job.id, job.body) == (job_id, b"x")
            assert await consumer.using() == "default"
            assert not consumer.closed

    run(main())


def test_cancelled_reserve_job_releases_its_job(beanstalkd: BeanstalkdProcess) -> None:
    async def main() -> None:
        address = beanstalkd.address
        async with greenstalk.aio.Client(address) as consumer, greenstalk.aio.Client(
            address
        ) as other:
            job_id = await other.put(b"x", priority=321, delay=100)
            reserving = asyncio.ensure_future(consumer.reserve_job(job_id))
            await asyncio.sleep(0)  # the command is sent, its reply not yet read
            reserving.cancel()
            await asyncio.wait([reserving], timeout=5)
            assert reserving.cancelled()
            stats = await job_in_state(other, job_id, "ready")
            assert (stats["pri"], stats["reserves"], stats["releases"]) == (321, 1, 1)
            assert (await other.reserve(timeout=0)).id == job_id
            assert await consumer.using() == "default"

    run(main())


@pytest.mark.parametrize("call", ["reserve", "reserve_job"])
def test_reserve_cancelled_as_its_job_arrives(beanstalkd: BeanstalkdProcess, call: str) -> None:
    """The reply is read in the very loop turn the call's task is cancelled in (as
    when asyncio.wait_for expires just then): the job must not stay reserved."""

    async def main() -> None:
        sock = open_socket(beanstalkd.address)
        with sock:
            async with greenstalk.aio.Client(sock) as consumer, greenstalk.aio.Client(
                beanstalkd.address
            ) as other:
                # Blocking puts: the event loop does not run, so it cannot read
                # the consumer's reply before the cancel is arranged.
                with greenstalk.Client(beanstalkd.address) as producer:
                    if call == "reserve":
                        reserving = asyncio.ensure_future(consumer.reserve())
                        await waiting_reserves(other, 1)
                        job_id = producer.put(b"x", priority=123)
                    else:
                        job_id = producer.put(b"x", priority=123)
                        reserving = asyncio.ensure_future(consumer.reserve_job(job_id))
                        await asyncio.sleep(0)  # sent; this task runs on in the same turn
                # Wait until the whole RESERVED reply is in the consumer's
                # socket, unread (beanstalkd may send it in two pieces).
                reply = b"RESERVED %d 1\r\nx\r\n" % job_id
                deadline = time.monotonic() + 5
                while True:
                    readable, _, _ = select.select([sock], [], [], 5)
                    assert readable
                    if sock.recv(len(reply) + 1, socket.MSG_PEEK) == reply:
                        break
                    assert time.monotonic() < deadline
                    time.sleep(0.001)
                # In the next turn the reply is read after this task runs, so
                # the cancel goes in after the call's result is set.
                await asyncio.sleep(0)
                asyncio.get_running_loop().call_soon(reserving.cancel)
                await asyncio.wait([reserving], timeout=5)
                assert reserving.done()
                if reserving.cancelled():
                    stats = await job_in_state(other, job_id, "ready")
                    assert stats["pri"] == 123
                else:  # the caller got the job: also fine
                    assert reserving.result().id == job_id
                assert await consumer.using() == "default"

    run(main())


def test_reserve_cancelled_while_the_write_buffer_is_full() -> None:
    """A reserve cancelled while it waits for the transport to drain is still sent:
    the job it then receives must be given back."""

    async def main() -> None:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            client = await greenstalk.aio.connect(ours)
            try:
                big = asyncio.ensure_future(client.put(b"x" * 4_000_000))
                await asyncio.sleep(0)  # the put fills the write buffer
                reserving = asyncio.ensure_future(client.reserve())
                await asyncio.sleep(0)
                reserving.cancel()
                await asyncio.wait([reserving], timeout=5)
                assert reserving.cancelled()

                def read_commands() -> bytes:
                    data = bytearray()
                    theirs.settimeout(5)
                    while not data.endswith(RESERVE):
                        chunk = theirs.recv(1 << 20)
                        assert chunk, data[-50:]
                        data += chunk
                    return bytes(data)

                sent = await asyncio.to_thread(read_commands)
                assert sent.endswith(b"\r\n" + RESERVE)
                theirs.sendall(b"JOB_TOO_BIG\r\nRESERVED 5 1\r\nx\r\n")
                await raises_exactly(greenstalk.JobTooBigError, big)
                # The client gives job 5 back (reading its priority first).
                sent = await received(theirs, 100, 2)
                assert sent.startswith((b"stats-job 5\r\n", b"release 5 ")), sent
            finally:
                await client.close()

    run(main())


def test_held_command_fails_when_the_server_closes(serve: Serve) -> None:
    """A command held back behind a cancelled reserve fails with the connection."""

    async def main() -> None:
        closing = threading.Event()
        script: list[Step] = [Expect(RESERVE), Wait(closing), Close()]
        async with serve(script, socket_timeout=5) as (server, client):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(), 0.05)
            held = asyncio.ensure_future(client.using())
            await asyncio.sleep(0)
            closing.set()
            await raises_exactly(CommandNotSentError, held)
            server.join()
            assert server.received == RESERVE  # the held command was never sent
            await assert_refuses_use(client)

    run(main())


@pytest.mark.parametrize("outcome", ["job-gone", "closed"])
def test_job_of_a_cancelled_reserve_cannot_be_given_back(serve: Serve, outcome: str) -> None:
    """The job a cancelled reserve received is gone before it can be released, or the
    connection is: the command held back behind the reserve goes out, or fails."""

    async def main() -> None:
        answer = threading.Event()
        script: list[Step] = [
            Expect(RESERVE),
            Wait(answer),
            Send(b"RESERVED 5 1\r\nx\r\n"),
            Expect(b"stats-job 5\r\n"),
        ]
        if outcome == "job-gone":
            script += [Send(b"NOT_FOUND\r\n"), Expect(USING), Send(b"USING default\r\n")]
        else:
            script.append(Close())
        async with serve(script, socket_timeout=5) as (server, client):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(), 0.05)
            held = asyncio.ensure_future(client.using())
            await asyncio.sleep(0)
            answer.set()
            if outcome == "job-gone":
                assert await held == "default"
                assert not client.closed
            else:
                await raises_exactly(CommandNotSentError, held)
                await assert_refuses_use(client)
            server.join()
            assert server.completed

    run(main())


def test_held_command_cancelled_is_never_sent(serve: Serve) -> None:
    async def main() -> None:
        answer = threading.Event()
        script: list[Step] = [
            Expect(b"reserve-with-timeout 1\r\n"),
            Wait(answer),
            Send(b"TIMED_OUT\r\n"),
            Expect(b"list-tubes\r\n"),
            Send(b"OK 14\r\n---\n- default\n\r\n"),
            Silent(until_closed=True),
        ]
        async with serve(script, socket_timeout=5) as (server, client):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(timeout=1), 0.05)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.using(), 0.05)  # held, then cancelled
            tubes = asyncio.ensure_future(client.tubes())
            await asyncio.sleep(0)
            answer.set()
            assert await tubes == ["default"]
            await client.close()
            server.join()
            assert server.completed
            assert USING not in server.received

    run(main())


def test_cancelled_put_many_leaves_the_client_usable(beanstalkd: BeanstalkdProcess) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(beanstalkd.address) as client:
            putting = asyncio.ensure_future(client.put_many([b"%d" % i for i in range(20000)]))
            await asyncio.sleep(0)
            putting.cancel()
            await asyncio.wait([putting], timeout=5)
            assert putting.cancelled()
            after = await client.put(b"after")
            assert (await client.peek(after)).body == b"after"
            # Every job the cancelled call inserted came before this one.
            assert (await client.stats_tube("default"))["current-jobs-ready"] == after
            assert await client.using() == "default"
            assert not client.closed

    run(main())


# -- put_many: large writes, and things going wrong ---------------------------

BIG_BODY = b"x" * 60_000


def test_put_many_large_bodies(beanstalkd: BeanstalkdProcess) -> None:
    """2000 bodies of 60 KB (120 MB) go out with backpressure; a put made meanwhile
    gets its own id."""

    async def main() -> None:
        async with greenstalk.aio.Client(beanstalkd.address, socket_timeout=10) as client:
            ids, single = await asyncio.gather(
                client.put_many([BIG_BODY] * 2000), client.put(b"single")
            )
            assert len(ids) == 2000
            assert ids == sorted(ids)
            assert sorted([*ids, single]) == list(range(1, 2002))
            assert (await client.peek(single)).body == b"single"
            assert (await client.peek(ids[-1])).body == BIG_BODY
            assert (await client.stats_tube("default"))["current-jobs-ready"] == 2001

    run(main(), 60)


def test_put_many_formats_batch_by_batch(start_server: StartServer) -> None:
    """The commands are formatted and handed to the transport a batch at a time,
    as it drains: 60 MB of bodies never sit in memory at once."""
    # In a process of its own, so that tracemalloc does not count the server.
    server = start_server(in_process=False)

    async def main() -> int:
        async with greenstalk.aio.Client(server.address) as client:
            tracemalloc.start()
            try:
                ids = await client.put_many([BIG_BODY] * 1000)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert ids == list(range(1, 1001))
            return peak

    peak = run(main(), 60)
    assert peak < 20_000_000, f"put_many of 60 MB peaked at {peak / 1e6:.0f} MB"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.put_many([BIG_BODY] * 400),
        lambda c: c.put(b"x" * 20_000_000),
    ],
    ids=["put_many", "put-huge"],
)
def test_server_stops_reading(serve: Serve, call: Call) -> None:
    """The server neither reads nor answers: a write that cannot drain times out too."""

    async def main() -> None:
        async with serve([Stall(6)], "tcp", socket_timeout=0.3) as (_, client):
            start = time.monotonic()
            await raises_exactly(ClientTimeoutError, call(client))
            assert time.monotonic() - start < 3
            await assert_refuses_use(client, ("put_many", "put"))

    run(main())


def test_call_behind_a_full_write_buffer_times_out(serve: Serve) -> None:
    """A put_many is cancelled with its commands still in the write buffer, the server
    stops reading: the next call is bounded by socket_timeout all the same."""

    async def main() -> None:
        async with serve([Stall(6)], "tcp", socket_timeout=0.3) as (_, client):
            putting = asyncio.ensure_future(client.put_many([BIG_BODY] * 400))
            await asyncio.sleep(0)
            putting.cancel()
            await asyncio.wait([putting], timeout=5)
            start = time.monotonic()
            await raises_exactly(ClientTimeoutError, client.put(b"x"))
            assert time.monotonic() - start < 3

    run(main())


MANY = [b"%05d" % i for i in range(2000)]


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_put_many_connection_drops(serve: Serve, transport: str, reset: bool) -> None:
    async def main() -> None:
        script: list[Step] = [Expect(put_command(MANY[0])), Send(b"INSERTED 1\r\n"), Close(reset)]
        async with serve(script, transport, socket_timeout=5) as (server, client):
            putting = asyncio.ensure_future(client.put_many(MANY))
            other = asyncio.ensure_future(client.stats())
            await raises_exactly(ClientConnectionError, putting)
            with pytest.raises(ClientConnectionError):  # CommandNotSentError if still unwritten
                await other
            server.join()
            assert server.completed
            await assert_refuses_use(client, ("put_many", "put"))

    run(main())


def test_put_many_garbage_mid_stream(serve: Serve, transport: str) -> None:
    async def main() -> None:
        bodies = [b"a", b"b", b"c"]
        script: list[Step] = [
            Expect(b"".join(put_command(body) for body in bodies)),
            Send(b"INSERTED 1\r\nDELETED\r\nINSERTED 3\r\n"),
            Silent(),
        ]
        async with serve(script, transport, socket_timeout=5) as (_, client):
            await raises_exactly(UnknownResponseError, client.put_many(bodies))
            await assert_refuses_use(client, ("put_many",))

    run(main())


def test_put_many_refused_bodies_keep_the_connection(serve: Serve, transport: str) -> None:
    async def main() -> None:
        bodies = [b"a", b"b", b"c"]
        script: list[Step] = [
            Expect(b"".join(put_command(body) for body in bodies)),
            Send(b"INSERTED 1\r\nJOB_TOO_BIG\r\nBURIED 3\r\n"),
            Expect(PUT_X),
            Send(b"INSERTED 4\r\n"),
        ]
        async with serve(script, transport, socket_timeout=5) as (_, client):
            with pytest.raises(greenstalk.PutManyError) as info:
                await client.put_many(bodies)
            assert info.value.ids == [1, None, 3]
            assert sorted(info.value.errors) == [1, 2]
            assert type(info.value.errors[1]) is greenstalk.JobTooBigError
            assert type(info.value.errors[2]) is greenstalk.BuriedWithJobIDError
            assert await client.put(b"x") == 4
            assert not client.closed

    run(main())
