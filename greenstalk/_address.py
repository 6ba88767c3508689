"""Server addresses written as text: ``host:port``, a Unix socket path, ``$BEANSTALKD_ADDRESS``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Union

ADDRESS_VARIABLE = "BEANSTALKD_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1:11300"

TextAddress = Union[tuple[str, int], str]


def parse_address(text: str) -> TextAddress:
    """Turn ``host:port`` into ``(host, port)``; keep a Unix socket path as it is.

    A path is anything with a ``/`` in it, optionally written as beanstalkd's
    ``unix:PATH``. An IPv6 host goes in brackets: ``[::1]:11300``.
    Raises ValueError for anything else.
    """
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path:
            return path
    elif "/" in text:
        return text
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if colon and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    raise ValueError(
        f"{text!r} is neither host:port (such as {DEFAULT_ADDRESS}) nor the path of a Unix socket"
    )


def address_from_environment(environ: Mapping[str, str] | None = None) -> TextAddress:
    """The address in ``$BEANSTALKD_ADDRESS``, or 127.0.0.1:11300 when it is unset or empty.

    Raises ValueError when the variable holds something that is not an address.
    """
    environ = os.environ if environ is None else environ
    return parse_address(environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS)


def describe_address(address: TextAddress) -> str:
    """An address the way a person would write it: ``host:port`` or ``unix:PATH``."""
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
