"""What the example scripts share: where beanstalkd is, and the tube they use."""

from __future__ import annotations

import os
from typing import Union

ADDRESS_VARIABLE = "BEANSTALKD_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:11300"

TUBE = "registrations"
"""The tube the producer puts registration jobs into and the consumer watches."""

ServerAddress = Union[tuple[str, int], str]
"""``(host, port)`` for TCP, or the path of a Unix domain socket."""


def parse_address(text: str) -> ServerAddress:
    """Turn ``host:port`` into ``(host, port)``; keep a Unix socket path as it is.

    A path is anything with a ``/`` in it, optionally written as beanstalkd's
    ``unix:PATH``. An IPv6 host goes in brackets: ``[::1]:11300``.
    Raises ValueError for anything else.
    """
    text = text.strip()
    if text.startswith("unix:"):
        text = text[len("unix:") :]
        if text:
            return text
    elif "/" in text:
        return text
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    raise ValueError(
        f"{ADDRESS_VARIABLE}={text!r} is neither host:port (such as {DEFAULT_ADDRESS})"
        " nor the path of a Unix socket"
    )


def server_address() -> ServerAddress:
    """The address in ``$BEANSTALKD_ADDRESS``, or 127.0.0.1:11300 when it is unset or empty."""
    return parse_address(os.environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS)


def describe(address: ServerAddress) -> str:
    """An address the way a person would write it."""
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
