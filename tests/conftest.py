"""Fixtures: a fresh server per test (beanstalkd, then greenstalkd), over TCP and a Unix socket.

``GREENSTALK_TEST_SERVERS=beanstalkd`` (or ``greenstalkd``) runs the suite
against one server only.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

import greenstalk
from greenstalk.testing import SERVERS, ServerProcess, run_server

from .blocking_aio import BlockingAioClient, LoopThread

pytest_plugins = ["pytester"]

# The integrations' tests need their frameworks (the test-integrations extra),
# which the main test pass installs; a pass without them (the Python 3.9 one)
# leaves these files out. Coverage would show it if the main pass did.
_FRAMEWORK_TESTS = {
    "celery": ["test_celery.py", "celery_app"],
    "kombu": ["test_kombu.py"],
    "dramatiq": ["test_dramatiq.py", "dramatiq_app"],
    "prometheus_client": ["test_exporter.py"],
    "aiohttp": ["test_exporter.py", "test_web.py", "ops_support.py"],
    "selenium": ["test_web.py", "ops_browser.py"],
}
collect_ignore = sorted(
    {
        name
        for module, names in _FRAMEWORK_TESTS.items()
        if importlib.util.find_spec(module) is None
        for name in names
    }
)

StartServer = Callable[..., ServerProcess]
BeanstalkdProcess = ServerProcess

SERVERS_UNDER_TEST = [
    name
    for name in os.environ.get("GREENSTALK_TEST_SERVERS", "beanstalkd,greenstalkd").split(",")
    if name in SERVERS
]
MakeClient = Callable[..., "greenstalk.Client[Any]"]


@pytest.fixture(params=SERVERS_UNDER_TEST)
def server_kind(request: pytest.FixtureRequest) -> str:
    """Which server this test runs against: ``beanstalkd``, then ``greenstalkd``."""
    return cast(str, request.param)


@pytest.fixture
def start_server(server_kind: str) -> Iterator[StartServer]:
    """Start extra servers: ``start_server(unix=False, args=("-z", "10"))``.

    ``in_process=False`` runs greenstalkd as a subprocess, as beanstalkd is.
    """
    with contextlib.ExitStack() as stack:

        def start(
            unix: bool = False, args: Sequence[str] = (), in_process: bool = True
        ) -> ServerProcess:
            server = run_server(server_kind, unix=unix, args=args, in_process=in_process)
            return stack.enter_context(server)

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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB file system of its own: a tmpfs mounted for the test (tests run as root, as CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(path: Path) -> Path:
    """Fill the file system of ``path`` to the last byte; returns the filler file."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, bytes(4096))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler
