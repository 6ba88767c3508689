"""Which server of a pool gets a job, and when a server that failed is tried again.

Pure decisions, with the clock passed in: no sockets, no threads, no asyncio.
Both pools (:mod:`greenstalk.pool` and :mod:`greenstalk._aio_pool`) use them.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import Generic, TypeVar, Union

S = TypeVar("S")

Key = Union[str, bytes]
"""A placement key: jobs with the same key go to the same live server."""

STRATEGIES = ("round-robin", "random")
"""How jobs without a key are spread over the live servers."""


def check_strategy(strategy: str) -> str:
    """Return ``strategy``; raises ValueError when it is not one of :data:`STRATEGIES`."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    return strategy


def key_bytes(key: Key) -> bytes:
    """A placement key as bytes (str keys as UTF-8). Raises TypeError for other types."""
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"a placement key is str or bytes, not {type(key).__name__}")


def rendezvous_weight(key: bytes, server: bytes) -> int:
    """The weight of ``server`` for ``key``: the server with the highest weight takes the key.

    Highest-random-weight (rendezvous) hashing: every server scores every key
    on its own, so adding a server takes over only the keys it now scores
    highest on (about 1/n of them), and removing one moves only its own keys.
    """
    digest = hashlib.blake2b(server + b"\0" + key, digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Placement(Generic[S]):
    """Orders a pool's servers for one put: the first is tried first, the rest on failure.

    ``names`` identify the servers for rendezvous hashing (their addresses as
    text), so a key lands on the same server in every process that lists the
    same addresses, whatever their order.
    """

    def __init__(self, servers: Sequence[S], names: Sequence[str], strategy: str) -> None:
        if len(servers) != len(names):
            raise ValueError("each server needs a name")
        self.servers = list(servers)
        self._names = [name.encode("utf-8") for name in names]
        self._strategy = check_strategy(strategy)
        self._next = 0

    def first(self, key: Key | None = None) -> S:
        """The server a put tries first: :meth:`order`'s first, worked out alone (faster)."""
        servers = self.servers
        if key is not None:
            data = key_bytes(key)
            weights = [rendezvous_weight(data, name) for name in self._names]
            return servers[weights.index(max(weights))]
        if self._strategy == "random":
            return random.choice(servers)
        start = self._next
        self._next = (start + 1) % len(servers)
        return servers[start]

    def order(self, key: Key | None = None) -> list[S]:
        """Every server, in the order a put should try them.

        With ``key``: by rendezvous weight for the key, highest first. Without:
        round-robin (each call starts one server further) or a random start.
        """
        servers = self.servers
        if key is not None:
            data = key_bytes(key)
            weights = [rendezvous_weight(data, name) for name in self._names]
            ranked = sorted(range(len(servers)), key=weights.__getitem__, reverse=True)
            return [servers[index] for index in ranked]
        count = len(servers)
        if self._strategy == "random":
            start = random.randrange(count)
        else:
            start = self._next
            self._next = (start + 1) % count
        return servers[start:] + servers[:start]


class Health:
    """Whether one server is up, and when to probe it again after failures.

    A server starts up. Each failure marks it down and schedules the next
    probe ``base`` seconds later, doubling with each failure in a row up to
    ``cap`` (with up to 20% random spread, so clients that lost a server
    together do not all come back in the same instant). A probe that
    succeeds marks it up again.
    """

    __slots__ = ("base", "cap", "failures", "reason", "retry_at")

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        if not 0 < base <= cap:
            raise ValueError("the retry delays must satisfy 0 < base <= cap")
        self.base = base
        self.cap = cap
        #: Failures in a row; 0 while the server is up.
        self.failures = 0
        #: When (on the monotonic clock) the server is to be probed, while it is down.
        self.retry_at = 0.0
        #: Why the server was marked down, for error messages.
        self.reason = ""

    @property
    def up(self) -> bool:
        """True unless the last contact with the server failed."""
        return self.failures == 0

    def failed(self, now: float, reason: str) -> None:
        """Record a failure at ``now``: the server is down until a probe succeeds."""
        self.failures += 1
        self.reason = reason
        delay = min(self.cap, self.base * 2 ** min(self.failures - 1, 30))
        self.retry_at = now + delay * random.uniform(0.8, 1.0)

    def succeeded(self) -> None:
        """Record a successful contact: the server is up."""
        self.failures = 0
        self.reason = ""

    def due(self, now: float) -> bool:
        """True when the server is down and its next probe is due."""
        return self.failures > 0 and now >= self.retry_at
