"""What both pools share: their errors, address lists, and the sums of per-server statistics."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union, cast

from ._address import ADDRESS_VARIABLE, DEFAULT_ADDRESS, describe_address, parse_address
from ._base import Where
from ._protocol.errors import ClientConnectionError, NotFoundError
from ._protocol.stats import Stats, StatsTube

ServerAddress = Union[tuple[str, int], str, "os.PathLike[str]"]
PoolAddresses = Union[Sequence[ServerAddress], ServerAddress, None]
"""A pool's servers: a list of ``(host, port)`` and Unix socket paths (None: the environment)."""

#: How long a consumer connection's reserve waits on the server before it is
#: sent again (seconds). A reserve still waiting when the caller has what it
#: wanted may take a job nobody asked for; a short round ends it soon.
RESERVE_ROUND = 1

#: How long (seconds) a job reserved ahead of demand waits to be handed out
#: before it is released, its priority unchanged. Under half the shortest
#: TTR beanstalkd allows (1 s), so the consumer it goes to never gets a job
#: whose TTR is half gone, and short, so other consumers are not kept waiting.
SURPLUS_GRACE = 0.4


class NoServerError(ClientConnectionError):
    """No server of the pool could take the command; the message says why for each."""


class UnknownPutError(ClientConnectionError):
    """A put was sent to a server that did not answer, so whether it was stored is unknown.

    Raised only by a pool made with ``at_most_once=True`` (otherwise the put
    is placed on another server and counted in ``pool.unknown_puts``).
    ``address`` is the server the put was sent to.
    """

    def __init__(self, message: str, address: Where) -> None:
        super().__init__(message)
        self.address = address


def parse_addresses(text: str) -> list[tuple[str, int] | str]:
    """Turn ``host:port,host:port,/path/to/socket`` into a list of addresses.

    Raises ValueError for an empty list or an entry that is not an address.
    """
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise ValueError("no server address given")
    return [parse_address(part) for part in parts if part]


def pool_addresses(addresses: PoolAddresses) -> list[Where]:
    """The servers of a pool, checked: ``addresses``, or those in ``$BEANSTALKD_ADDRESS``.

    Raises TypeError for something that is not a list of addresses (a pool
    opens and reopens its own connections, so it takes no sockets), and
    ValueError for an empty list or the same server twice.
    """
    if addresses is None:
        found: list[Where] = list(
            parse_addresses(os.environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS)
        )
    elif isinstance(addresses, (str, os.PathLike)) or _is_host_port(addresses):
        found = [_one_address(addresses)]
    else:
        found = [_one_address(address) for address in addresses]
    if not found:
        raise ValueError("a pool needs at least one server address")
    seen: set[Where] = set()
    for where in found:
        if where in seen:
            raise ValueError(f"{name_of(where)} is listed twice")
        seen.add(where)
    return found


def _is_host_port(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def _one_address(address: object) -> Where:
    if isinstance(address, socket.socket):
        raise TypeError("a pool opens its own connections: give addresses, not sockets")
    if isinstance(address, os.PathLike):
        return os.fspath(address)  # type: ignore[no-any-return]
    if isinstance(address, str):
        return address
    if _is_host_port(address):
        host, port = cast(tuple[str, int], address)
        return host, port
    raise TypeError(f"not a server address: {address!r} (want (host, port) or a socket path)")


def name_of(where: Where) -> str:
    """A server's address as text: ``host:port`` or ``unix:PATH``."""
    return describe_address(where)


# The server statistics that are not counts: the first server's value is
# kept, as in beanstalkd's own reply (a pool also offers them per server).
_SERVER_FIRST = frozenset(
    {"pid", "version", "id", "hostname", "os", "platform", "max-job-size"}
    | {"binlog-oldest-index", "binlog-current-index", "binlog-max-size"}
)


def sum_stats(per_server: Iterable[Stats]) -> Stats:
    """The statistics of several servers as one: counts and times summed.

    ``uptime`` is the longest, ``max-job-size`` the smallest (what every
    server accepts), ``draining`` true when any server drains; the fields
    that name a server (``pid``, ``id``, ``hostname``, ``version``...) are
    the first server's. Raises ValueError when there are none.
    """
    total: dict[str, Any] | None = None
    for stats in per_server:
        if total is None:
            total = dict(stats)
            continue
        for name, value in stats.items():
            if name == "uptime":
                total[name] = max(total[name], value)
            elif name == "max-job-size":
                total[name] = min(total[name], value)
            elif name == "draining":
                total[name] = total[name] or value
            elif name not in _SERVER_FIRST:
                total[name] = total.get(name, 0) + value
    if total is None:
        raise ValueError("no statistics to add up")
    return cast(Stats, total)


def sum_tube_stats(tube: str, per_server: Mapping[Where, StatsTube | None]) -> StatsTube:
    """The statistics of ``tube`` over the servers that have it: counts summed.

    ``pause`` and ``pause-time-left`` are the longest. Raises NotFoundError
    when no server has the tube.
    """
    total: dict[str, Any] | None = None
    for stats in per_server.values():
        if stats is None:
            continue
        if total is None:
            total = dict(stats)
            continue
        for name, value in stats.items():
            if name in ("pause", "pause-time-left"):
                total[name] = max(total[name], value)
            elif name != "name":
                total[name] += value
    if total is None:
        error = NotFoundError(f"stats-tube {tube}: NOT_FOUND (no server has this tube)")
        raise error
    return cast(StatsTube, total)


def merge_tubes(per_server: Iterable[list[str]]) -> list[str]:
    """Every tube on any server, once, in the order the servers list them."""
    merged: dict[str, None] = {}
    for tubes in per_server:
        merged.update(dict.fromkeys(tubes))
    return list(merged)
