"""What both pools share: errors, address lists, sums of statistics, servers and bookkeeping."""

from __future__ import annotations

import os
import socket
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from time import monotonic
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, Union, cast

from ._address import ADDRESS_VARIABLE, DEFAULT_ADDRESS, describe_address, parse_address
from ._base import Job, JobOrID, TBody, Where, check_timeout
from ._placement import Health, Key, Placement
from ._protocol.commands import check_body, check_tube
from ._protocol.errors import (
    ClientConnectionError,
    CommandNotSentError,
    DrainingError,
    NotFoundError,
    OutOfMemoryError,
    UnknownPutError,
)
from ._protocol.stats import Stats, StatsTube

if TYPE_CHECKING:
    import ssl as _ssl

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

#: How long (seconds) a reserve with a job to hand out may wait for the job
#: of a server served less so far whose reserve is under way and whose last
#: one found a job. The fastest server's job is otherwise the first in
#: whenever none is waiting, and it would get more than its share.
FAIR_WAIT = 0.002


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


C = TypeVar("C")
"""A pool's connection class: :class:`greenstalk.Client` or :class:`greenstalk.aio.Client`."""

# Server refusals that say "not here, try another server".
REFUSED_HERE = (DrainingError, OutOfMemoryError)


class PoolServer(Generic[C]):
    """One server of a pool: its health, its command connection, its consumers."""

    def __init__(self, where: Where, health: Health) -> None:
        self.where = where
        self.name = name_of(where)
        self.health = health
        #: The connection for puts and every command that is not a reservation.
        self.producer: C | None = None
        #: Consumer connections holding no job, and not reserving.
        self.free: list[C] = []
        #: The consumer connection reserving now, if any.
        self.reserving: C | None = None
        #: Whether the last reserve here found a job (the server likely has more).
        self.delivering = False
        #: The watch list each consumer connection was given (a generation number).
        self.watch_generation: dict[C, int] = {}
        #: The thread or task that reserves on this server for the pool.
        self.consumer: Any = None
        #: Puts this server took; puts sent to it whose fate is unknown.
        self.puts = 0
        self.unknown_puts = 0
        #: Jobs of this server handed out by reserve.
        self.handed = 0


class Held(Generic[C]):
    """A job reserved on a consumer connection, waiting for the caller or in its hands."""

    __slots__ = ("client", "job", "release_at", "server")

    def __init__(self, server: PoolServer[C], client: C, job: Job[Any]) -> None:
        self.server = server
        self.client = client
        self.job = job
        #: When to give the job back if nobody has asked for it (monotonic clock).
        self.release_at: float | None = None


class PoolBase(Generic[TBody, C]):
    """What both pools share: their settings, servers, placement and bookkeeping."""

    _name: ClassVar[str] = "greenstalk.Pool"

    def __init__(
        self,
        addresses: PoolAddresses,
        encoding: str | None,
        use: str,
        watch: str | Iterable[str],
        strategy: str,
        socket_timeout: float | None,
        socket_connect_timeout: float | None,
        ssl: _ssl.SSLContext | None,
        at_most_once: bool,
        retry_base: float,
        retry_cap: float,
    ) -> None:
        """Check the arguments; raises ValueError, TypeError or LookupError."""
        wheres = pool_addresses(addresses)
        if encoding is not None:
            "".encode(encoding)  # a LookupError now, not at the first put
        watch_list = [watch] if isinstance(watch, str) else list(watch)
        if not watch_list:
            raise ValueError("watch must name at least one tube")
        check_tube(use)
        for tube in watch_list:
            check_tube(tube)
        check_timeout("socket_timeout", socket_timeout)
        check_timeout("socket_connect_timeout", socket_connect_timeout)
        self.encoding = encoding
        self._use = use
        self._watch = list(dict.fromkeys(watch_list))
        self._watch_generation = 0
        self._timeout = socket_timeout
        self._connect_timeout = socket_connect_timeout
        self._ssl = ssl
        self._at_most_once = at_most_once
        self._servers: list[PoolServer[C]] = [
            PoolServer(where, Health(retry_base, retry_cap)) for where in wheres
        ]
        self._by_where = {server.where: server for server in self._servers}
        self._placement = Placement(self._servers, [s.name for s in self._servers], strategy)
        #: Jobs reserved and not yet handed out, oldest first.
        self._ready: deque[Held[C]] = deque()
        #: Jobs handed out, by (server, id): the connection that holds each.
        self._handed: dict[tuple[Where, int], Held[C]] = {}
        #: Callers waiting in reserve().
        self._waiting = 0
        self._closed = False
        #: Puts sent to a server that did not answer, then placed elsewhere (or raised).
        self.unknown_puts = 0

    def __repr__(self) -> str:
        return f"{self._name}([{', '.join(s.name for s in self._servers)}])"

    @property
    def addresses(self) -> list[Where]:
        """The servers of the pool, in the order given."""
        return [server.where for server in self._servers]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def servers_up(self) -> list[Where]:
        """The servers not marked down."""
        return [server.where for server in self._servers if server.health.up]

    def held_jobs(self) -> list[Job[TBody]]:
        """The jobs this pool has handed out and not yet deleted, released or buried."""
        return [cast("Job[TBody]", held.job) for held in self._handed.values()]

    def unknown_puts_by_server(self) -> dict[Where, int]:
        """Puts sent to each server without an answer (each may also exist elsewhere)."""
        return {server.where: server.unknown_puts for server in self._servers}

    def _mark_down(self, server: PoolServer[C], error: BaseException) -> None:
        """Take ``server`` out of rotation after ``error``; a probe brings it back."""
        raise NotImplementedError

    def _check_bodies(self, bodies: list[Any]) -> None:
        """Raise TypeError for a body a put cannot take, before any share of a put_many is sent.

        A bad body must not leave the other servers' shares stored, as
        Client.put_many stores nothing then.
        """
        for body in bodies:
            if type(body) is not bytes and not (self.encoding is not None and type(body) is str):
                check_body(body)

    def _server_of(self, job: JobOrID) -> PoolServer[C]:
        """The server ``job`` lives on. Raises TypeError or ValueError when that is unknown."""
        if isinstance(job, Job) and job.address is not None:
            server = self._by_where.get(job.address)
            if server is None:
                raise ValueError(f"{job!r} is from a server this pool does not have")
            return server
        if isinstance(job, (Job, int)) and len(self._servers) == 1:
            return self._servers[0]
        raise TypeError(
            "a pool needs to know the job's server: pass the Job that put or reserve returned"
        )

    def _candidates(self, key: Key | None) -> list[PoolServer[C]]:
        """The servers to try for a put, in order: live ones, then those marked down."""
        order = self._placement.order(key)
        return [s for s in order if s.health.up] + [s for s in order if not s.health.up]

    def _located(self, server: PoolServer[C], job: Job[Any]) -> Job[TBody]:
        return cast("Job[TBody]", Job(job.id, job.body, server.where))

    def _failed_put(self, server: PoolServer[C], error: BaseException) -> str:
        """Take ``server`` out after a failed put; the reason, for NoServerError's message."""
        if isinstance(error, ClientConnectionError):
            self._put_failed(server, error, 1)
        else:
            self._mark_down(server, error)
        return f"{server.name}: {error}"

    def _put_failed(self, server: PoolServer[C], error: ClientConnectionError, count: int) -> None:
        """Mark ``server`` down after a failed put of ``count`` jobs.

        A put that may have reached it is counted, and raised as
        UnknownPutError with ``at_most_once``.
        """
        self._mark_down(server, error)
        if isinstance(error, CommandNotSentError):
            return
        self.unknown_puts += count
        server.unknown_puts += count
        if self._at_most_once:
            raise UnknownPutError(
                f"{server.name} did not answer {count} put(s), which may have been stored "
                f"there: {error}",
                server.where,
            ) from error

    def _lagging(self, server: PoolServer[C]) -> bool:
        """Whether ``server`` was served less than every server with a job waiting, and has jobs.

        "Has jobs": its last reserve found one. Its job is then the one to
        hand out next, and worth a short wait (see :meth:`_fair_wait`).
        """
        return (
            server.delivering
            and server.health.up
            and bool(self._ready)
            and server.handed < min(held.server.handed for held in self._ready)
        )

    def _fair_wait(self, since: float) -> float | None:
        """How much longer to wait, having had a job to hand out since ``since``; None: none.

        Worth waiting (up to :data:`FAIR_WAIT`) while a lagging server's
        consumer reserves: its job is about to come in.
        """
        left = since + FAIR_WAIT - monotonic()
        if left <= 0:
            return None
        return left if any(self._lagging(server) for server in self._servers) else None

    def _next_ready(self) -> Held[C]:
        """Take the reserved job to hand out: from the server served least so far.

        A server that answers faster (a Unix socket, a less loaded host)
        delivers first more often; choosing among the jobs waiting keeps
        each server's share even when all have work.
        """
        held = min(self._ready, key=lambda entry: entry.server.handed)
        self._ready.remove(held)
        held.server.handed += 1
        held.release_at = None
        self._handed[(held.server.where, held.job.id)] = held
        return held

    def _expired(self, server: PoolServer[C], now: float) -> tuple[list[Held[C]], float | None]:
        """``server``'s jobs reserved ahead of demand whose time is up, and the next deadline."""
        mine = [h for h in self._ready if h.server is server and h.release_at is not None]
        expired = [h for h in mine if cast(float, h.release_at) <= now]
        later = [cast(float, h.release_at) for h in mine if cast(float, h.release_at) > now]
        return expired, min(later) if later else None

    def _wanted(self, server: PoolServer[C]) -> bool:
        """Whether ``server``'s consumer should reserve now: callers outnumber jobs, or it lags."""
        if not server.health.up or not self._waiting:
            return False
        return self._waiting > len(self._ready) or self._lagging(server)


def split_shares(
    indexes: list[int], servers: list[PoolServer[C]], key: Key | None
) -> list[tuple[PoolServer[C], list[int]]]:
    """Split put_many's ``indexes`` over ``servers``: all to the first with a key, else in turn."""
    if key is not None or len(servers) == 1:
        return [(servers[0], indexes)]
    live = [s for s in servers if s.health.up] or servers[:1]
    return [(server, indexes[n :: len(live)]) for n, server in enumerate(live)]


def job_id_of(job: JobOrID) -> int:
    """The id of a job given as a Job or an id."""
    return job.id if isinstance(job, Job) else job
