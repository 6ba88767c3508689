"""Clients that reconnect (``reconnect=True``): servers killed, frozen and started again.

The servers run as subprocesses (beanstalkd, then greenstalkd), so that they
can be killed with SIGKILL or frozen with SIGSTOP, and started again at the
same address: a TCP port, then a Unix socket path. Each test drives a sync
client, then an asyncio one. What they check: the next command after a
restart works, on a connection with the same used tube and watch list; a
command whose effect is unknown raises and is never sent again; one that
surely never went out is sent once more; a job reserved on a lost connection
is no longer this client's to finish; :meth:`close` is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import greenstalk
import greenstalk.aio
from greenstalk import (
    ClientConnectionError,
    ClientTimeoutError,
    CommandNotSentError,
    NotFoundError,
    TimedOutError,
)
from greenstalk._protocol import commands
from greenstalk.testing import ServerAddress, ServerProcess, run_server

from . import test_tls
from .conftest import MakeClient, aio_clients, sync_clients
from .waiting import wait_until

# The most seconds a condition polled for, or a call that must end, may take.
DEADLINE = 10
# A socket_timeout for calls to a frozen server: short, and still generous
# for a loaded machine once the server runs again.
FROZEN_TIMEOUT = 1.0

Clients = Callable[[greenstalk.Address], AbstractContextManager[MakeClient]]
AnyClient = greenstalk.Client[Any]

certificate = test_tls.certificate


class Restartable:
    """A server subprocess that can be killed, frozen, and started again at the same address.

    ``address`` None picks a free loopback TCP port at the first start.
    """

    def __init__(
        self, kind: str, address: ServerAddress | None = None, args: Sequence[str] = ()
    ) -> None:
        self.kind = kind
        self.args = args
        self._address = address
        self._running: contextlib.ExitStack | None = None
        self._server: ServerProcess | None = None

    def __enter__(self) -> Restartable:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> ServerAddress:
        """Where the server listens, now and after every restart."""
        if self._address is None:
            raise RuntimeError("the server was never started")
        return self._address

    @property
    def pid(self) -> int:
        """The process id of the running server."""
        if self._server is None or self._server.process is None:
            raise RuntimeError("the server is not running")
        return self._server.process.pid

    def start(self) -> None:
        """Start the server; it accepts connections at once (no waiting needed)."""
        running = contextlib.ExitStack()
        self._server = running.enter_context(
            run_server(self.kind, args=self.args, address=self._address, in_process=False)
        )
        self._running = running
        self._address = self._server.address

    def kill(self) -> None:
        """SIGKILL the server, wait until it is gone, and free its address."""
        os.kill(self.pid, signal.SIGKILL)
        self.close()

    def restart(self) -> None:
        """Kill the server and start a fresh one at the same address."""
        self.kill()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the server's kernel still accepts connections and bytes; it answers none."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: the frozen server runs again."""
        os.kill(self.pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server if it runs (frozen or not)."""
        if self._running is not None:
            if self._server is not None and self._server.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._server.process.pid, signal.SIGCONT)
            self._running.close()
        self._running = self._server = None


@contextlib.contextmanager
def unix_path() -> Iterator[str]:
    """A socket path in a new directory: short, as AF_UNIX paths must be."""
    with tempfile.TemporaryDirectory(prefix="greenstalk-") as directory:
        yield os.path.join(directory, "socket")


@pytest.fixture(params=["tcp", "unix"])
def server(request: pytest.FixtureRequest, server_kind: str) -> Iterator[Restartable]:
    """A server for this test that can be killed and restarted: over TCP, then a Unix socket."""
    with contextlib.ExitStack() as stack:
        address = stack.enter_context(unix_path()) if request.param == "unix" else None
        yield stack.enter_context(Restartable(server_kind, address))


@pytest.fixture(params=["sync", "aio"])
def clients(request: pytest.FixtureRequest) -> Clients:
    """How to make clients: sync ones, then asyncio ones (driven synchronously)."""
    return sync_clients if request.param == "sync" else aio_clients


@pytest.fixture
def make(server: Restartable, clients: Clients) -> Iterator[MakeClient]:
    """Make clients of this test's server; all are closed at the end."""
    with clients(server.address) as make_client:
        yield make_client


def observer(server: Restartable) -> AnyClient:
    """A plain client of ``server`` that looks at what the clients under test did."""
    return greenstalk.Client(server.address, socket_timeout=DEADLINE)


def bodies_in(server: Restartable, tube: str = "default") -> list[bytes]:
    """The bodies of the ready jobs of ``tube``, taken out of the server."""
    found: list[bytes] = []
    with observer(server) as other:
        other.watch(tube)
        while True:
            try:
                job = other.reserve(timeout=0)
            except TimedOutError:
                return found
            found.append(job.body)
            other.delete(job)


# -- a server that restarts ---------------------------------------------------


def test_a_restarted_server_gets_the_next_command(server: Restartable, make: MakeClient) -> None:
    client = make(use="jobs", watch=["jobs", "other"], reconnect=True, socket_timeout=DEADLINE)
    client.use("sent")
    client.ignore("other")
    with pytest.raises(greenstalk.NotIgnoredError):
        client.ignore("jobs")  # the only tube watched: it stays
    client.watch("more")
    client.watch("more")  # twice: watched once
    client.ignore("absent")  # never watched: no change
    assert client.reconnects == 0
    server.restart()
    assert client.using() == "sent"
    assert sorted(client.watching()) == ["jobs", "more"]
    assert client.reconnects == 1
    assert not client.closed
    client.put(b"after")
    assert bodies_in(server, "sent") == [b"after"]
    assert client.reconnects == 1


def test_a_command_in_flight_when_the_server_dies_is_not_sent_again(
    server: Restartable, make: MakeClient
) -> None:
    client = make(reconnect=True, socket_timeout=DEADLINE)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(client.reserve)
        with observer(server) as other:
            wait_until(lambda: other.stats()["current-waiting"] == 1, "the reserve waits")
        server.kill()
        with pytest.raises(ClientConnectionError) as info:
            waiting.result(DEADLINE)
    # Sent, and no answer: its effect is unknown, so it is not CommandNotSentError.
    assert type(info.value) is ClientConnectionError, info.value
    server.start()
    assert client.using() == "default"
    assert client.reconnects == 1
    with observer(server) as other:
        assert other.stats()["cmd-reserve"] == 0  # the reserve was not sent again


def test_a_put_in_flight_is_never_sent_twice(server: Restartable, make: MakeClient) -> None:
    client = make(reconnect=True, socket_timeout=FROZEN_TIMEOUT)
    server.freeze()  # it will never read the put
    started = time.monotonic()
    with pytest.raises(ClientTimeoutError):
        client.put(b"in flight")
    assert time.monotonic() - started < DEADLINE
    server.restart()
    client.put(b"after")
    assert client.reconnects == 1
    with observer(server) as other:
        assert other.stats()["cmd-put"] == 1
    assert bodies_in(server) == [b"after"]


def test_a_frozen_server_times_out_then_serves_again(
    server: Restartable, make: MakeClient
) -> None:
    client = make(use="tube", watch="tube", reconnect=True, socket_timeout=FROZEN_TIMEOUT)
    server.freeze()
    with pytest.raises(ClientTimeoutError):
        client.put(b"first")
    assert client.closed
    # Still frozen: a new connection is accepted by the kernel, and its set-up
    # (use, watch) gets no answer. The command itself never went out.
    with pytest.raises(CommandNotSentError) as info:
        client.put(b"second")
    assert "setting up the connection failed" in str(info.value)
    assert greenstalk.describe_address(server.address) in str(info.value)
    assert client.reconnects == 0
    server.thaw()
    client.put(b"third")
    assert client.reconnects == 1
    assert client.using() == "tube"
    assert client.watching() == ["tube"]
    client.put(b"fourth")
    found: list[bytes] = []

    def collected() -> bool:
        found.extend(bodies_in(server, "tube"))
        return b"fourth" in found

    wait_until(collected, "the puts are in")
    assert b"second" not in found
    # The timed-out put is carried out once, or not at all (beanstalkd drops
    # a connection that hung up without reading it): never twice.
    assert found.count(b"first") <= 1
    assert found.count(b"third") == 1


def test_a_server_that_is_down_then_back(server: Restartable, make: MakeClient) -> None:
    client = make(watch="w", reconnect=True, socket_timeout=DEADLINE)
    server.kill()
    for _ in range(2):  # each command tries again
        with pytest.raises(CommandNotSentError) as info:
            client.put(b"x")
        assert f"cannot connect to {greenstalk.describe_address(server.address)}" in str(
            info.value
        )
        assert client.closed
    server.start()
    assert client.watching() == ["w"]
    assert client.reconnects == 1
    with observer(server) as other:
        assert other.stats()["cmd-put"] == 0


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
def test_reconnecting_is_bounded_by_the_connect_timeout(
    server: Restartable, make: MakeClient
) -> None:
    client = make(reconnect=True, socket_timeout=DEADLINE, socket_connect_timeout=0.5)
    address = server.address
    assert isinstance(address, tuple)
    server.kill()
    # In the server's place, one that accepts no connection: its queue is full.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(0)
        with socket.create_connection(address, timeout=DEADLINE):
            started = time.monotonic()
            with pytest.raises(CommandNotSentError) as info:
                client.stats()
            assert time.monotonic() - started < DEADLINE
    assert str(info.value).endswith(": timed out")
    assert isinstance(info.value.__cause__, ClientTimeoutError)


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
def test_close_ends_a_reconnect_under_way(server: Restartable) -> None:
    """asyncio: close() while calls wait for a new connection fails them, and leaves nothing."""

    async def main(address: tuple[str, int]) -> None:
        async with greenstalk.aio.Client(
            address, reconnect=True, socket_timeout=DEADLINE, socket_connect_timeout=DEADLINE
        ) as client:
            server.kill()
            with socket.socket() as listener:  # a server whose connection queue is full
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(address)
                listener.listen(0)
                with socket.create_connection(address, timeout=DEADLINE):
                    calls = [asyncio.ensure_future(client.stats()) for _ in range(2)]
                    done, _ = await asyncio.wait(calls, timeout=0.1)
                    assert not done  # both wait for the one connect
                    started = time.monotonic()
                    await client.close()
                    results = await asyncio.gather(*calls, return_exceptions=True)
                    assert time.monotonic() - started < DEADLINE / 2
            for result in results:
                assert type(result) is CommandNotSentError, result
                assert "closed by the client" in str(result)
            assert client.reconnects == 0
            with pytest.raises(CommandNotSentError):
                await client.stats()

    address = server.address
    assert isinstance(address, tuple)
    asyncio.run(main(address))


# -- reconnect off, close() ---------------------------------------------------


def test_without_reconnect_a_lost_connection_stays_lost(
    server: Restartable, make: MakeClient
) -> None:
    client = make(socket_timeout=DEADLINE)
    server.restart()
    with pytest.raises(ClientConnectionError):
        client.put(b"lost")
    with pytest.raises(CommandNotSentError) as info:
        client.put(b"again")
    assert "the connection is closed" in str(info.value)
    assert client.closed
    assert client.reconnects == 0
    with observer(server) as other:
        stats = other.stats()
    assert stats["total-connections"] == 1  # the observer's own
    assert stats["cmd-put"] == 0


def test_close_is_final(server: Restartable, make: MakeClient) -> None:
    client = make(reconnect=True, socket_timeout=DEADLINE)
    server.restart()
    client.close()
    for _ in range(2):
        with pytest.raises(CommandNotSentError) as info:
            client.put(b"x")
        assert "the connection is closed" in str(info.value)
    assert client.closed
    assert client.reconnects == 0
    with observer(server) as other:
        assert other.stats()["total-connections"] == 1  # no reconnect


def test_reconnect_needs_an_address() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        with pytest.raises(ValueError, match="reconnect needs an address"):
            greenstalk.Client(ours, reconnect=True)
        with pytest.raises(ValueError, match="reconnect needs an address"):
            greenstalk.aio.Client(ours, reconnect=True)


# -- jobs reserved before a reconnect -----------------------------------------


def test_a_job_reserved_before_a_reconnect_is_not_held_any_more(
    server_kind: str, clients: Clients, tmp_path: Path
) -> None:
    """The server's log brings the job back after the restart, ready: not this client's."""
    with Restartable(server_kind, args=["-b", str(tmp_path)]) as server, clients(
        server.address
    ) as make:
        client = make(reconnect=True, socket_timeout=DEADLINE)
        client.put(b"job")
        job = client.reserve(timeout=0)
        client.touch(job)
        server.restart()
        with pytest.raises(NotFoundError):
            client.touch(job)
        assert client.reconnects == 1
        with pytest.raises(NotFoundError):
            client.release(job)
        with pytest.raises(NotFoundError):
            client.bury(job)
        with observer(server) as other:
            assert other.reserve(timeout=0).id == job.id
            with pytest.raises(NotFoundError):
                client.delete(job)  # another consumer holds it now
            assert other.stats_job(job)["state"] == "reserved"
            assert client.reconnects == 1


# -- commands that never went out are sent once more ----------------------------


@contextlib.contextmanager
def moved_server(server_kind: str) -> Iterator[tuple[str, Restartable, Restartable]]:
    """Two servers, and a symlink to the first's socket: the client's address.

    Pointing the link at the second server moves the address: the first
    keeps its connections, new ones reach the second.
    """
    with contextlib.ExitStack() as stack:
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="greenstalk-"))
        link = os.path.join(directory, "link")
        first = stack.enter_context(Restartable(server_kind, os.path.join(directory, "a")))
        second = stack.enter_context(Restartable(server_kind, os.path.join(directory, "b")))
        os.symlink(str(first.address), link)
        yield link, first, second


def move(link: str, server: Restartable) -> None:
    """Point ``link`` at ``server``, atomically."""
    new = f"{link}.new"
    os.symlink(str(server.address), new)
    os.replace(new, link)


CALLS: dict[str, Callable[[AnyClient], object]] = {
    "put": lambda client: client.put(b"x"),
    "put_many": lambda client: client.put_many([b"x", b"y"]),
    "finish_and_reserve": lambda client: client._finish_and_reserve(commands.delete(1), 0),
}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnect", "no-reconnect"])
def test_a_command_whose_send_failed_is_sent_once_more(
    server_kind: str, call: str, reconnect: bool
) -> None:
    with moved_server(server_kind) as (link, first, second), greenstalk.Client(
        link, reconnect=reconnect, socket_timeout=DEADLINE
    ) as client:
        client.put(b"job")  # id 1 on the first server
        move(link, second)
        with observer(second) as other:
            other.put(b"job")  # id 1 on the second server too
        # The first server, frozen, cannot answer the hang-up below: the
        # client learns that its connection is gone only when a send fails.
        first.freeze()
        sock = client._socket
        assert sock is not None
        sock.shutdown(socket.SHUT_WR)
        if not reconnect:
            with pytest.raises(CommandNotSentError) as info:
                CALLS[call](client)
            assert "before the command was sent" in str(info.value)
            assert client.reconnects == 0
            return
        CALLS[call](client)
        assert client.reconnects == 1
        first.thaw()
        with observer(second) as other:
            stats = other.stats()
        puts = {"put": 1, "put_many": 2, "finish_and_reserve": 0}[call]
        assert stats["cmd-put"] == 1 + puts  # the observer's, and this call's: once
        assert stats["cmd-delete"] == (call == "finish_and_reserve")
        with observer(first) as other:
            assert other.stats()["cmd-put"] == 1  # only the put before the move


@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnect", "no-reconnect"])
def test_held_commands_are_sent_once_more_when_the_connection_fails(
    server_kind: str, reconnect: bool
) -> None:
    """asyncio: commands held back behind a cancelled reserve never went out."""

    async def main(link: str, first: Restartable, second: Restartable) -> None:
        async with greenstalk.aio.Client(
            link, reconnect=reconnect, socket_timeout=DEADLINE
        ) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(), 0.05)  # now holds later commands
            move(link, second)
            with observer(second) as other:
                other.put(b"there")  # job 1 of the second server
            calls = [
                asyncio.ensure_future(client.put(b"held")),
                asyncio.ensure_future(client.put_many([b"a", b"b"])),
                asyncio.ensure_future(client._finish_and_reserve([commands.delete(1)], 0)),
            ]
            await asyncio.sleep(0)  # all are held now
            assert not any(call.done() for call in calls)
            first.kill()
            results = await asyncio.wait_for(
                asyncio.gather(*calls, return_exceptions=True), DEADLINE
            )
            if not reconnect:
                for result in results:
                    assert type(result) is CommandNotSentError, result
                assert client.reconnects == 0
                return
            put_id, put_many_ids, finished = results
            assert isinstance(put_id, int)
            assert isinstance(put_many_ids, list)
            assert len(put_many_ids) == 2
            assert isinstance(finished, tuple)
            refusals, reserved = finished
            assert refusals == [None]  # job 1 deleted, on the second server
            assert isinstance(reserved, (tuple, TimedOutError))
            assert client.reconnects == 1

    with moved_server(server_kind) as (link, first, second):
        asyncio.run(main(link, first, second))
        with observer(second) as other:
            stats = other.stats()
        if reconnect:
            assert stats["cmd-put"] == 4  # the observer's, and each held put once
            assert stats["cmd-delete"] == 1
        else:
            assert stats["cmd-put"] == 1


# -- TLS ------------------------------------------------------------------------


def hung_up(client: Any) -> bool:
    """Whether the server side of ``client``'s connection has hung up, as the client sees it."""
    if isinstance(client, greenstalk.Client):
        sock = client._socket
        return sock is None or bool(select.select([sock], [], [], 0)[0])
    return bool(client.closed)


@pytest.mark.parametrize("server", ["tcp"], indirect=True)
def test_tls_reconnects(
    server: Restartable, clients: Clients, certificate: test_tls.Certificate
) -> None:
    """Behind a TLS terminator the server's end is a TLS close, not only a socket's."""
    with test_tls.TLSProxy(certificate.server_context(), server.address) as proxy, clients(
        proxy.address
    ) as make:
        client = make(
            use="t", reconnect=True, socket_timeout=DEADLINE, ssl=certificate.client_context()
        )
        for _ in range(3):  # a live TLS connection is not taken for a closed one
            assert client.using() == "t"
        server.kill()
        wait_until(lambda: hung_up(client), "the proxy hangs up")
        server.start()
        assert client.using() == "t"
        assert client.reconnects == 1
        assert proxy.connections == 2
