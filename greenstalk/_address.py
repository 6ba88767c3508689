"""Server addresses written as text: ``host:port``, a Unix socket path, ``$BEANSTALKD_ADDRESS``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Union

ADDRESS_VARIABLE = "BEANSTALKD_ADDRESS"
DEFAULT_PORT = 11300
DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"

TextAddress = Union[tuple[str, int], str]


def parse_address(text: str) -> TextAddress:
    """Turn ``host:port`` (or ``host`` alone, port 11300) into ``(host, port)``.

    A Unix socket path is kept as it is: anything with a ``/`` in it,
    optionally written as beanstalkd's ``unix:PATH``. An IPv6 host goes in
    brackets, with or without a port: ``[::1]:11300``, ``[::1]``. Raises
    ValueError for anything else: an empty text, a host with spaces, an
    unbracketed IPv6 address, a port that is not a number from 1 to 65535.
    """
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path:
            return path
        raise ValueError("'unix:' names no socket: write unix:PATH")
    if "/" in text:
        return text
    if text.startswith("[") and "]" in text:
        closing = text.index("]")
        host, rest = text[1:closing], text[closing + 1 :]
        if rest and not rest.startswith(":"):
            raise _not_an_address(text)
        port = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as in [::1]:11300")
    else:
        host, colon, port_text = text.partition(":")
        port = port_text if colon else None
    if not host or any(character.isspace() or character in "[]" for character in host):
        raise _not_an_address(text)
    if port is None:
        return host, DEFAULT_PORT
    if port.isascii() and port.isdigit() and 0 < int(port) < 65536:
        return host, int(port)
    raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")


def _not_an_address(text: str) -> ValueError:
    return ValueError(
        f"{text!r} is neither host[:port] (such as {DEFAULT_ADDRESS}) nor the path of a "
        "Unix socket"
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
