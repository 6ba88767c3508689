"""A pytest plugin: fixtures that give each test a fresh beanstalkd-compatible server.

Installed with greenstalk (entry point ``pytest11``), so the fixtures are
there in any project that has greenstalk installed:

``greenstalk_server``
    A :class:`~greenstalk.testing.ServerProcess` started for the test and
    stopped after it: greenstalkd, in a thread of the test process, unless
    ``--greenstalk-server=beanstalkd`` (or the ini option
    ``greenstalk_server = beanstalkd``) asks for the real beanstalkd.
``greenstalk_address``
    That server's address, to hand to the code under test.
``greenstalk_client``
    A :class:`greenstalk.Client` connected to it, closed after the test. Its
    ``socket_timeout`` is 10 seconds, so a server that stops answering fails
    the test instead of hanging it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import Client
from .testing import SERVERS, ServerAddress, ServerProcess, run_server

_OPTION = "greenstalk_server"
# The greenstalk_client fixture's socket_timeout, in seconds.
CLIENT_SOCKET_TIMEOUT = 10.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("greenstalk")
    group.addoption(
        "--greenstalk-server",
        dest=_OPTION,
        choices=SERVERS,
        default=None,
        help="the server the greenstalk_server fixture runs (default: greenstalkd)",
    )
    parser.addini(_OPTION, "the server the greenstalk_server fixture runs", default="greenstalkd")


def _server_kind(config: pytest.Config) -> str:
    """The server the fixtures run: the command-line option's, else the configuration's."""
    return str(config.getoption(_OPTION) or config.getini(_OPTION))


def pytest_configure(config: pytest.Config) -> None:
    """Check the configured server once, before any test runs.

    Raises :class:`pytest.UsageError` for an unknown server.
    """
    kind = _server_kind(config)
    if kind not in SERVERS:
        raise pytest.UsageError(
            f"greenstalk_server = {kind!r} in the pytest configuration: "
            f"the server must be one of {', '.join(SERVERS)}"
        )


@pytest.fixture
def greenstalk_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A fresh server for this test, on a free loopback port."""
    with run_server(_server_kind(request.config)) as server:
        yield server


@pytest.fixture
def greenstalk_address(greenstalk_server: ServerProcess) -> ServerAddress:
    """The address of this test's server."""
    return greenstalk_server.address


@pytest.fixture
def greenstalk_client(greenstalk_address: ServerAddress) -> Iterator[Client[bytes]]:
    """A client of this test's server, closed after the test."""
    with Client(greenstalk_address, socket_timeout=CLIENT_SOCKET_TIMEOUT) as client:
        yield client
