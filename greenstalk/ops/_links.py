"""What the exporter and the console share: a link to each server, and listen addresses."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from typing import Union

from .. import ClientConnectionError, aio, describe_address, parse_address
from .._address import TextAddress

ListenAddress = Union[tuple[str, int], str]
"""Where to listen: ``(host, port)`` (host "" for every interface) or a Unix socket path."""


class ServerLink:
    """One beanstalkd server: its name, one connection, opened when needed, and a lock.

    The connection is opened on first use and again after it failed, so a
    server that comes back is used again. Callers hold :attr:`lock` while
    they use the connection: commands such as ``use`` change its state.
    """

    def __init__(self, address: TextAddress, timeout: float, per_command: bool = True) -> None:
        """``timeout`` bounds connecting and, when ``per_command``, each command's answer.

        Without ``per_command`` the caller bounds its commands as a whole
        (which spares a timer per command).
        """
        self.address = address
        #: The server as people write it: ``host:port`` or ``unix:PATH``.
        self.name = describe_address(address)
        self.timeout = timeout
        self._command_timeout = timeout if per_command else None
        self.lock = asyncio.Lock()
        self._client: aio.Client[bytes] | None = None

    async def client(self) -> aio.Client[bytes]:
        """The connection, opened (again) if need be.

        Raises :class:`~greenstalk.ClientConnectionError` (or its subclass
        :class:`~greenstalk.ClientTimeoutError`) when the server cannot be reached.
        """
        client = self._client
        if client is None or client.closed:
            self._client = None
            client = await aio.connect(
                self.address,
                socket_timeout=self._command_timeout,
                socket_connect_timeout=self.timeout,
            )
            self._client = client
        return client

    async def close(self) -> None:
        """Close the connection, if open; the next :meth:`client` opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(ClientConnectionError):
                await client.close()


def parse_listen(text: str, default_port: int) -> ListenAddress:
    """Read a ``--listen`` value.

    ``host:port``; ``host`` (on ``default_port``); ``:port`` (every
    interface); ``[::1]:port``; or a Unix socket path (``unix:PATH``, or
    anything with a ``/``). Port 0 asks the system for a free port. Raises
    ValueError for anything else.
    """
    text = text.strip()
    if text.startswith("unix:") or "/" in text:
        return parse_address(text)
    if text.startswith("["):
        host, closing, rest = text[1:].partition("]")
        if not closing or (rest and not rest.startswith(":")):
            raise _not_listen(text)
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, as in [::1]:8080")
    else:
        host, colon, rest = text.partition(":")
        port_text = rest if colon else None
    if any(character.isspace() or character in "[]" for character in host) or not (
        host or port_text
    ):
        raise _not_listen(text)
    if port_text is None:
        return host, default_port
    if port_text.isascii() and port_text.isdigit() and int(port_text) <= 65535:
        return host, int(port_text)
    raise ValueError(f"{text!r}: the port must be a number from 0 to 65535")


def _not_listen(text: str) -> ValueError:
    return ValueError(
        f"{text!r} is neither host:port (such as 127.0.0.1:8080), :port nor the path of a "
        "Unix socket"
    )


def describe_listen(address: ListenAddress) -> str:
    """A listen address as a URL's authority (``127.0.0.1:8080``), or ``unix:PATH``."""
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address
    if host == "":
        return f"0.0.0.0:{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(address: ListenAddress) -> bool:
    """Whether only this machine can reach ``address``: a Unix socket, or a host that
    resolves to loopback addresses only. Names that do not resolve count as not loopback.
    """
    if isinstance(address, str):
        return True
    host = address[0]
    if host == "":
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(
        ipaddress.ip_address(str(info[4][0]).partition("%")[0]).is_loopback for info in found
    )
