"""Regression tests for greenstalk.aio bugs that only show in a narrow window.

Each test sets up the window deterministically with real servers (no
sleeping for it to open) and runs under a deadline, so none can hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Callable, TypeVar

import pytest

import greenstalk
import greenstalk.aio
from greenstalk.testing import ServerProcess, find_beanstalkd, spawn_activated

from .conftest import StartServer

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T], deadline: float = 60) -> T:
    """Run ``coroutine`` on a new event loop; a hang fails the test after ``deadline`` s."""
    return asyncio.run(asyncio.wait_for(coroutine, deadline))


async def until(condition: Callable[[], T], failure: str, deadline: float = 10) -> T:
    """Poll ``condition`` until it returns a true value, and return that value.

    Fails the test with ``failure`` when ``deadline`` seconds pass first.
    """
    end = time.monotonic() + deadline
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > end:
            pytest.fail(failure)
        await asyncio.sleep(0.002)


def open_sockets() -> set[tuple[str, str]]:
    """This process's open sockets, as (descriptor, ``socket:[inode]``) pairs.

    The inode tells a socket from a later one given the same descriptor.
    """
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own, closed since
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:"):
                found.add((fd, target))
    return found


def unix_state(target: str) -> str:
    """The state of Unix socket ``socket:[inode]``: ``01`` unconnected, ``03`` connected.

    Raises LookupError when /proc/net/unix does not list it.
    """
    inode = target[len("socket:[") : -1]
    with open("/proc/net/unix") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[6] == inode:
                return fields[5]
    raise LookupError(f"{target} is not an open Unix socket")


def serve_on(kind: str, listener: socket.socket, path: str) -> ServerProcess:
    """Start server ``kind`` as a process accepting on ``listener``, which is already bound."""
    if kind == "beanstalkd":
        command = [find_beanstalkd()]
    else:
        command = [sys.executable, "-m", "greenstalk.server"]
    return ServerProcess(path, spawn_activated(command, listener), kind)


def test_a_unix_connect_cancelled_while_its_thread_connects_closes_the_thread_s_socket(
    server_kind: str, tmp_path: Path
) -> None:
    """The connect to a Unix socket runs in a thread, which cancelling cannot stop;
    the socket it opens after the cancel must be closed by the client, not left
    to the garbage collector.

    The window is made without timing: the listener (backlog 0) already holds
    one queued connection, so the thread's blocking connect waits for room.
    Only once the cancelled connect has returned is the real server started on
    that listener; it accepts, so the thread's connect completes after the
    cancel. The leaked socket used to be closed by its finalizer as soon as
    its last reference went (so counting descriptors alone shows nothing),
    which raises a ResourceWarning: that is what is caught. /proc/self/fd is
    polled to know when the thread's socket is closed, one way or the other.
    """

    async def main() -> None:
        path = str(tmp_path / "socket")
        with contextlib.ExitStack() as stack:
            listener = stack.enter_context(socket.socket(socket.AF_UNIX))
            listener.bind(path)
            listener.listen(0)
            filler = stack.enter_context(socket.socket(socket.AF_UNIX))
            filler.connect(path)  # the queue is full from now on
            before = open_sockets()
            connecting = asyncio.ensure_future(
                greenstalk.aio.connect(path, socket_connect_timeout=60)
            )
            # Its socket exists: the thread runs, and a cancel can no longer stop it.
            opened = await until(
                lambda: open_sockets() - before, "the connect thread opened no socket"
            )
            connecting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await connecting
            assert [unix_state(target) for _, target in opened] == ["01"], "connected already"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ResourceWarning)
                server = serve_on(server_kind, listener, path)
                stack.callback(server.stop)
                listener.close()  # the server has its own copy
                await until(
                    lambda: not opened & open_sockets(),
                    "the socket the connect thread opened is still open",
                )
            leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
            assert leaks == []
            async with greenstalk.aio.Client(path, socket_timeout=30) as client:
                # The filler, the cancelled connect and this client: the server saw it.
                assert (await client.stats())["total-connections"] == 3

                async def current() -> int:
                    return (await client.stats())["current-connections"]

                end = time.monotonic() + 10
                while await current() != 2:  # the filler and this client
                    assert time.monotonic() < end, "the server still has the connection"

    run(main())


def test_closing_the_pool_stops_a_consumer_whose_cancel_wait_for_swallowed(
    start_server: StartServer,
) -> None:
    """A pool's consumer waits for demand with ``asyncio.wait_for``, which
    before Python 3.12 returns normally when the cancel arrives just as the
    wait ends. close() must stop that consumer all the same, at once.

    The window, made without timing: one job on each of two servers, and a
    reserve. Both consumers reserve; one job is handed out, the other is held
    ahead of demand, its consumer waiting with a timeout (its release date).
    A second reserve takes that job and wakes the consumer; close() follows
    before the consumer has run, so its cancel meets a wait already ended.
    The consumer used to wait on, with nothing left to time out, and close()
    with it, for ever. (From Python 3.12 wait_for keeps the cancel, and the
    old code passes too.)
    """
    servers = [start_server(), start_server()]
    for server in servers:
        with greenstalk.Client(server.address) as producer:
            producer.put(b"job")

    async def main() -> None:
        ours = asyncio.all_tasks()
        pool = greenstalk.aio.Pool([server.address for server in servers])
        await pool.open()
        first = await pool.reserve(timeout=10)
        held = await until(lambda: list(pool._ready), "no job was reserved ahead of demand")
        release_at = held[0].release_at
        assert release_at is not None
        assert release_at > time.monotonic(), "released already: its consumer waits no more"
        second = await pool.reserve()  # there is a job: returns without yielding
        assert {first.address, second.address} == {server.address for server in servers}
        closing = asyncio.ensure_future(pool.close())
        done, _ = await asyncio.wait({closing}, timeout=10)
        if not done:
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
            pytest.fail("close() still waits for a consumer after 10 s")
        closing.result()
        assert asyncio.all_tasks() - ours == set()  # the consumers have ended

    run(main())
    for server in servers:
        with greenstalk.Client(server.address) as client:
            # The pool's connections are gone, and its job went back to ready with them.
            end = time.monotonic() + 10
            while client.stats()["current-connections"] != 1:
                assert time.monotonic() < end, f"{server}: the pool left a connection"
            assert client.stats()["current-jobs-ready"] == 1
