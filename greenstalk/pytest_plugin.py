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
    A :class:`greenstalk.Client` connected to it, closed after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from . import Client
from .testing import SERVERS, ServerAddress, ServerProcess, run_server

_OPTION = "greenstalk_server"


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


@pytest.fixture
def greenstalk_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A fresh server for this test, on a free loopback port."""
    kind = request.config.getoption(_OPTION) or request.config.getini(_OPTION)
    with run_server(str(kind)) as server:
        yield server


@pytest.fixture
def greenstalk_address(greenstalk_server: ServerProcess) -> ServerAddress:
    """The address of this test's server."""
    return greenstalk_server.address


@pytest.fixture
def greenstalk_client(greenstalk_address: ServerAddress) -> Iterator[Client[bytes]]:
    """A client of this test's server, closed after the test."""
    with Client(greenstalk_address) as client:
        yield client
