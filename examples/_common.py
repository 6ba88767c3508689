"""What the example scripts share: where beanstalkd is, and the tube they use."""

from __future__ import annotations

from typing import Union

import greenstalk

TUBE = "registrations"
"""The tube the producer puts registration jobs into and the consumer watches."""

ServerAddress = Union[tuple[str, int], str]
"""``(host, port)`` for TCP, or the path of a Unix domain socket."""


def parse_address(text: str) -> ServerAddress:
    """Turn ``host:port`` into ``(host, port)``; keep a Unix socket path as it is.

    Raises ValueError for anything else.
    """
    return greenstalk.parse_address(text)


def server_address() -> ServerAddress:
    """The address in ``$BEANSTALKD_ADDRESS``, or 127.0.0.1:11300 when it is unset or empty."""
    return greenstalk.address_from_environment()


def describe(address: ServerAddress) -> str:
    """An address the way a person would write it."""
    return greenstalk.describe_address(address)
