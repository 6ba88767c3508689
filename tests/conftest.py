"""Fixtures: a real beanstalkd per test, over TCP and over a Unix socket."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest

import greenstalk
from greenstalk.testing import BeanstalkdProcess, run_beanstalkd

from .blocking_aio import BlockingAioClient, LoopThread

StartServer = Callable[..., BeanstalkdProcess]
MakeClient = Callable[..., "greenstalk.Client[Any]"]


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """Start extra servers: ``start_server(unix=False, args=("-z", "10"))``."""
    with contextlib.ExitStack() as stack:

        def start(unix: bool = False, args: Sequence[str] = ()) -> BeanstalkdProcess:
            return stack.enter_context(run_beanstalkd(unix=unix, args=args))

        yield start


@pytest.fixture(params=["tcp", "unix"])
def beanstalkd(request: pytest.FixtureRequest, start_server: StartServer) -> BeanstalkdProcess:
    """A fresh beanstalkd for this test, over TCP and then over a Unix socket."""
    return start_server(unix=request.param == "unix")


@pytest.fixture
def address(beanstalkd: BeanstalkdProcess) -> greenstalk.Address:
    """The address of this test's server."""
    return beanstalkd.address


@contextlib.contextmanager
def sync_clients(address: greenstalk.Address) -> Iterator[MakeClient]:
    """Make sync clients of ``address``; all are closed at the end."""
    clients: list[greenstalk.Client[Any]] = []

    def make(*args: Any, **kwargs: Any) -> greenstalk.Client[Any]:
        client: greenstalk.Client[Any] = greenstalk.Client(address, *args, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@contextlib.contextmanager
def aio_clients(address: greenstalk.Address) -> Iterator[MakeClient]:
    """Make greenstalk.aio clients of ``address``, driven synchronously; closed at the end."""
    runner = LoopThread()
    clients: list[BlockingAioClient] = []

    def make(*args: Any, **kwargs: Any) -> greenstalk.Client[Any]:
        client = BlockingAioClient(runner, address, *args, **kwargs)
        clients.append(client)
        return cast("greenstalk.Client[Any]", client)

    try:
        yield make
        for client in clients:
            runner.run(client.aio_client.close())
    finally:
        runner.stop()


@pytest.fixture
def make_sync_client(address: greenstalk.Address) -> Iterator[MakeClient]:
    """Open sync clients to this test's server."""
    with sync_clients(address) as make:
        yield make


@pytest.fixture(params=["sync", "aio"])
def make_client(
    request: pytest.FixtureRequest, address: greenstalk.Address
) -> Iterator[MakeClient]:
    """Open clients to this test's server: sync ones, and in a second run asyncio ones."""
    clients = sync_clients if request.param == "sync" else aio_clients
    with clients(address) as make:
        yield make


@pytest.fixture
def client(make_client: MakeClient) -> greenstalk.Client[bytes]:
    """A bytes client connected to this test's server."""
    return make_client()
