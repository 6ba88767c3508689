"""Timeout arguments are checked before anything connects, by both clients and both pools."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Any, Callable

import pytest

import greenstalk
import greenstalk.aio

BAD_TIMEOUTS: list[tuple[object, type[Exception]]] = [
    (-1, ValueError),
    (0, ValueError),
    (math.nan, ValueError),
    (math.inf, ValueError),
    ("1", TypeError),
    (True, TypeError),
]


def _makers(address: greenstalk.Address, options: dict[str, Any]) -> list[Callable[[], object]]:
    """Every way to make a client or a pool with ``options``; each returns what it made."""
    assert not isinstance(address, socket.socket)  # the fixture's; a pool takes no socket

    async def aio_connect() -> object:
        return await greenstalk.aio.connect(address, **options)

    return [
        lambda: greenstalk.Client(address, **options),
        lambda: greenstalk.Pool([address], **options),
        lambda: greenstalk.aio.Client(address, **options),
        lambda: asyncio.run(aio_connect()),
        lambda: greenstalk.aio.Pool([address], **options),
    ]


@pytest.mark.parametrize("name", ["socket_timeout", "socket_connect_timeout"])
@pytest.mark.parametrize(("value", "error"), BAD_TIMEOUTS)
def test_a_bad_timeout_is_refused_before_connecting(
    address: greenstalk.Address, name: str, value: object, error: type[Exception]
) -> None:
    with greenstalk.Client(address) as watcher:
        before = watcher.stats()["total-connections"]
        for make in _makers(address, {name: value}):
            with pytest.raises(error, match=name):
                make()
        assert watcher.stats()["total-connections"] == before


@pytest.mark.parametrize("value", [None, 0.5, 3])
def test_good_timeouts_are_taken(address: greenstalk.Address, value: float | None) -> None:
    assert not isinstance(address, socket.socket)
    with greenstalk.Client(address, socket_timeout=value, socket_connect_timeout=value) as client:
        assert client.put(b"x") >= 1

    async def aio_put() -> int:
        async with greenstalk.aio.Pool(
            [address], socket_timeout=value, socket_connect_timeout=value
        ) as pool:
            return (await pool.put(b"x")).id

    assert asyncio.run(aio_put()) >= 1
