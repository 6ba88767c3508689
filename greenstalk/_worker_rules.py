"""What the sync and asyncio workers decide, without any transport.

No connections, threads or event loops here: the settings and their
checks, the servers' addresses, the handler table and what a handler may
be, what a handler's result, an exception or a body that does not decode
means for the job, the backoff of releases and reconnects, the touch
schedule, the counts, and the log lines. The sync
worker (:mod:`greenstalk.worker`) and the asyncio one
(:mod:`greenstalk._aio_worker`) are thin loops over a connection that ask
this module what to do.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Callable, Generic, Protocol, TypeVar, Union

from ._address import (
    ADDRESS_VARIABLE,
    DEFAULT_ADDRESS,
    TextAddress,
    describe_address,
    parse_address,
)
from ._base import Address, Where
from ._protocol import commands
from ._protocol.commands import Request
from ._protocol.errors import ClientConnectionError
from .codecs import CODECS, Codec, get_codec

logger = logging.getLogger("greenstalk.worker")

T = TypeVar("T")

EXIT_OK = 0
"""What a worker's ``run()`` returns after a warm stop or a finished burst."""

# Logged when the server no longer knows a job the worker is finishing: its
# TTR ran out and another consumer took and deleted it, say.
JOB_GONE = "job %d%s is gone from the server (did its TTR run out?); nothing to acknowledge"

# How long a handler runs before the worker first asks about its job's TTR, in
# seconds: most handlers are done by then, and cost no stats-job.
FIRST_TOUCH_CHECK = 0.5

# What finishes a job (its delete, release or bury), and the name of that outcome.
Outcome = tuple[Request[None], str]

WorkerAddress = Union[Address, Sequence[Address]]
"""Where a worker's servers are: one address, a list of them, or ``host:port,host:port`` text."""


def address_text(address: Address | TextAddress) -> str:
    """An address as a person writes it: ``host:port``, ``unix:PATH``, or the socket's."""
    if isinstance(address, socket.socket):
        return f"the socket passed in (fd {address.fileno()})"
    if isinstance(address, tuple):
        return describe_address((address[0], address[1]))
    return describe_address(os.fspath(address))


def addresses_text(addresses: Sequence[Address]) -> str:
    """Several addresses as a person writes them, separated by commas."""
    return ", ".join(address_text(address) for address in addresses)


def job_address(address: Address) -> Where | None:
    """What a job's ``address`` says of the server it came from: None for a socket passed in."""
    if isinstance(address, socket.socket):
        return None
    if isinstance(address, tuple):
        return address[0], address[1]
    return os.fspath(address)


def worker_addresses(address: WorkerAddress) -> list[Address]:
    """The servers ``address`` names: one address, a list of them, or comma-separated text.

    Text names one server as ``host:port``, ``unix:PATH`` or a socket path,
    or several separated by commas, each written as in
    ``$BEANSTALKD_ADDRESS`` (``host[:port]``, ``unix:PATH`` or a path). A
    tuple is one ``(host, port)``; a list holds ``(host, port)`` tuples,
    socket paths and such text. Raises ValueError for text that is not an
    address, an empty list, or a server listed twice; TypeError for a list
    holding a socket (a worker with several servers opens its own
    connections) or anything else.
    """
    if isinstance(address, str) and "," in address:
        return _several(address.split(","), parse_address)
    if isinstance(address, (str, tuple, os.PathLike, socket.socket)):
        return [_parse(address)]
    if isinstance(address, Sequence):
        return _several(address, _one_of_several)
    raise TypeError(f"not a server address: {address!r}")


def environment_addresses() -> list[Address]:
    """The servers in ``$BEANSTALKD_ADDRESS`` (comma-separated), else 127.0.0.1:11300.

    Raises ValueError for text that is not a list of addresses.
    """
    return _several((os.environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS).split(","),
                    parse_address)


def _several(items: Iterable[T], one: Callable[[T], Address]) -> list[Address]:
    """The addresses of ``items`` (text left empty by a stray comma skipped), checked."""
    found = [one(item) for item in items if not (isinstance(item, str) and not item.strip())]
    if not found:
        raise ValueError("no server address given")
    seen: set[Address] = set()
    for where in found:
        if where in seen:
            raise ValueError(f"{address_text(where)} is listed twice")
        seen.add(where)
    return found


def _one_of_several(item: object) -> Address:
    if isinstance(item, socket.socket):
        raise TypeError("a worker with several servers opens its own connections: give "
                        "addresses, not sockets")
    if isinstance(item, os.PathLike):
        return os.fspath(item)  # type: ignore[no-any-return]
    if isinstance(item, (str, tuple)):
        return _parse(item)
    raise TypeError(f"not a server address: {item!r} (want (host, port), host:port text or a "
                    "socket path)")


def is_coroutine_function(handler: Callable[..., object]) -> bool:
    """True for an ``async def`` function, a partial of one, or an object whose call is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def check_handler(tube: str, handler: object, *, coroutines: bool) -> None:
    """Check that ``handler`` can handle the jobs of ``tube``.

    Raises ValueError for a tube name beanstalkd refuses, TypeError for a
    non-str tube name, a handler that is not callable, an async generator
    function, or (unless ``coroutines``) a coroutine function.
    """
    commands.check_tube(tube)
    if not callable(handler):
        raise TypeError(f"the handler of tube {tube!r} is not callable: {handler!r}")
    name = getattr(handler, "__qualname__", repr(handler))
    if inspect.isasyncgenfunction(handler):
        raise TypeError(f"the handler of tube {tube!r} ({name}) is an async generator "
                        "function: make it a plain function or a coroutine function")
    if not coroutines and is_coroutine_function(handler):
        raise TypeError(f"the handler of tube {tube!r} ({name}) is a coroutine function, which "
                        "greenstalk.Worker cannot run: use greenstalk.aio.Worker for async "
                        "handlers")


def check_settings(
    *,
    max_releases: int,
    backoff_base: float,
    backoff_cap: float,
    reserve_slice: int,
    socket_timeout: float | None,
    reconnect_base: float,
    reconnect_cap: float,
    concurrency: int = 1,
) -> None:
    """Raise ValueError naming the first setting that is out of range."""
    problems = {
        "max_releases must be an int >= 0": _is_int(max_releases) and max_releases >= 0,
        "backoff_base must be >= 0": backoff_base >= 0,
        "backoff_cap must be >= 0": backoff_cap >= 0,
        "reserve_slice must be an int >= 1": _is_int(reserve_slice) and reserve_slice >= 1,
        "socket_timeout must be None or > 0": socket_timeout is None or socket_timeout > 0,
        "reconnect_base must be > 0": reconnect_base > 0,
        "reconnect_cap must be >= reconnect_base": reconnect_cap >= reconnect_base,
        "concurrency must be an int >= 1": _is_int(concurrency) and concurrency >= 1,
    }
    for problem, fine in problems.items():
        if not fine:
            raise ValueError(problem)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def touch_plan(ttr: int, time_left: int) -> tuple[float, float]:
    """When to touch a job whose handler still runs: (first, then every), in seconds.

    A touch lands a second before the TTR would end (half way through a TTR
    of a second), so the server never hands the job to another consumer.
    ``time_left`` is the server's whole seconds left of the current TTR.
    """
    interval = max(ttr - 1.0, ttr / 2)
    return max(0.0, min(time_left - 1.0, interval)), interval


class JobInHand:
    """What every job a handler gets has: the fields, the decision, delete."""

    __slots__ = ("_decision", "address", "body", "id", "raw_body", "tube")

    def __init__(self, job_id: int, tube: str, raw_body: bytes, body: Any,
                 address: Where | None = None) -> None:
        self.id = job_id
        self.tube = tube
        #: The body as it came from the server.
        self.raw_body = raw_body
        #: The body as the codec decoded it.
        self.body = body
        #: The server the job came from: ``(host, port)`` or a socket path (None for a
        #: socket passed in). Job ids are only unique per server.
        self.address = address
        self._decision: Outcome | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} tube={self.tube!r}>"

    def delete(self) -> None:
        """Delete the job when the handler returns (what happens anyway on success)."""
        self._decision = (commands.delete(self.id), "deleted")

    def outcome(self) -> Outcome:
        """What finishes the job now that its handler returned: its decision, else delete."""
        return self._decision or (commands.delete(self.id), "deleted")


class JobActions(Protocol):
    """What a blocking :class:`WorkerJob` asks of its worker's connection."""

    def priority(self, job_id: int) -> int:
        """The job's priority, as the server has it."""

    def touch(self, job_id: int) -> None:
        """Restart the job's TTR. Raises NotFoundError if the job was lost."""


class WorkerJob(JobInHand):
    """The job a plain-function handler gets: id, tube, decoded body, and what to do with it.

    ``address`` is the server it came from (a worker may have several).
    ``release``, ``bury`` and ``delete`` decide what happens to the job when
    the handler returns (the last call wins); ``touch`` restarts its TTR now.
    The methods block, and may be called from the thread the handler runs in.
    """

    __slots__ = ("_actions",)

    def __init__(
        self, actions: JobActions, job_id: int, tube: str, raw_body: bytes, body: Any,
        address: Where | None = None,
    ) -> None:
        super().__init__(job_id, tube, raw_body, body, address)
        self._actions = actions

    def release(self, delay: int = 0, priority: int | None = None) -> None:
        """Put the job back when the handler returns, after ``delay`` seconds.

        ``priority`` None keeps the job's priority (asked of the server).
        Raises ValueError for a delay or priority out of range.
        """
        if priority is None:
            priority = self._actions.priority(self.id)
        self._decision = (commands.release(self.id, priority, delay), "released")

    def bury(self, priority: int | None = None) -> None:
        """Bury the job when the handler returns (``priority`` None keeps it)."""
        if priority is None:
            priority = self._actions.priority(self.id)
        self._decision = (commands.bury(self.id, priority), "buried")

    def touch(self) -> None:
        """Restart the job's TTR now. Raises NotFoundError if the job was lost."""
        self._actions.touch(self.id)


HandlerT = TypeVar("HandlerT")


class WorkerServer:
    """One server of a worker: its address, and how log lines name it and its jobs."""

    __slots__ = ("address", "label", "name", "reconnecting", "where")

    def __init__(self, address: Address, several: bool) -> None:
        self.address = address
        #: The address as text, ``host:port`` or ``unix:PATH``.
        self.name = address_text(address)
        #: What its jobs' ``address`` says.
        self.where = job_address(address)
        #: What a log line about one of its jobs adds after the job's id: nothing when the
        #: worker has one server, else `` on host:port`` (ids are only unique per server).
        self.label = f" on {self.name}" if several else ""
        #: True after a lost connection, until it is connected again.
        self.reconnecting = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class WorkerBase(Generic[HandlerT]):
    """The settings, handler table, stop requests and decisions both workers share."""

    #: Whether coroutine functions may handle jobs (the asyncio worker's).
    _runs_coroutines = False

    def __init__(
        self,
        address: WorkerAddress | None = None,
        *,
        handlers: Mapping[str, HandlerT] | None = None,
        codec: str | Codec = "bytes",
        max_releases: int = 3,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        auto_touch: bool = True,
        reserve_slice: int = 1,
        socket_timeout: float | None = 30.0,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
    ) -> None:
        check_settings(
            max_releases=max_releases, backoff_base=backoff_base, backoff_cap=backoff_cap,
            reserve_slice=reserve_slice, socket_timeout=socket_timeout,
            reconnect_base=reconnect_base, reconnect_cap=reconnect_cap,
        )
        self.codec = get_codec(codec)
        servers = environment_addresses() if address is None else worker_addresses(address)
        #: Where the server is; a list of addresses when there are several.
        self.address: WorkerAddress = servers[0] if len(servers) == 1 else servers
        # Where the address came from, for the start-up line.
        self._first_addresses = servers
        if address is not None:
            self._first_origin = "given"
        elif os.environ.get(ADDRESS_VARIABLE):
            self._first_origin = f"from ${ADDRESS_VARIABLE}"
        else:
            self._first_origin = f"the default, ${ADDRESS_VARIABLE} being unset"
        self.max_releases = max_releases
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.auto_touch = auto_touch
        self.reserve_slice = reserve_slice
        self.socket_timeout = socket_timeout
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self._handlers: dict[str, HandlerT] = {}
        if handlers is not None:
            if not isinstance(handlers, Mapping):
                raise TypeError("handlers must be a mapping of tube names to handlers, not "
                                f"{type(handlers).__name__}")
            for tube, handler in handlers.items():
                self._register(tube, handler)
        self._stop_requests = 0
        self._stop_signal = signal.SIGTERM
        #: Counts of acknowledged jobs by outcome (and of handler failures), for logs and tests.
        self.counts = {"deleted": 0, "released": 0, "buried": 0, "failed": 0}
        # The sync worker counts from a thread per server.
        self._counts_lock = threading.Lock()
        self._init_state()

    @property
    def addresses(self) -> list[Address]:
        """The servers the worker works for, as a list (of one for a single server).

        Read from :attr:`address`, which may be changed before :meth:`run`.
        Raises ValueError or TypeError as the constructor does for an address
        that is not one.
        """
        return worker_addresses(self.address)

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self.counts[outcome] += 1

    def _init_state(self) -> None:
        """Set up what the worker keeps while it runs."""

    # -- set-up ------------------------------------------------------------

    def _register(self, tube: str, handler: HandlerT) -> None:
        """Handle the jobs of ``tube`` with ``handler``; raises as :func:`check_handler`."""
        check_handler(tube, handler, coroutines=self._runs_coroutines)
        self._handlers[tube] = handler

    def _check_runnable(self) -> None:
        """Raise ValueError when no handler is registered."""
        if not self._handlers:
            raise ValueError("the worker has no handler: add one with worker.handler(tube)")

    def stop(self, cold: bool = False) -> None:
        """Ask the worker to stop: after the current job, or at once when ``cold``.

        A cold stop while a handler runs gives its job back and ends the
        process (status 128 + the last stop signal's number, 143 without
        one), since a running handler cannot be interrupted otherwise. Safe
        from signal handlers and other threads.
        """
        self._stop_requests = max(self._stop_requests + 1, 2 if cold else 1)

    def _on_signal(self, signum: int, frame: object = None) -> None:
        self._stop_signal = signal.Signals(signum)
        self._stop_requests += 1

    # -- decisions ---------------------------------------------------------

    def backoff(self, releases: int) -> int:
        """The delay, in whole seconds, of a release after ``releases`` earlier ones."""
        return math.ceil(min(self.backoff_cap, self.backoff_base * 2.0**releases))

    def _reconnect_delays(self) -> Iterator[float]:
        """The pauses between connection attempts: doubling from ``reconnect_base`` to the cap."""
        delay = self.reconnect_base
        while True:
            yield delay
            delay = min(delay * 2, self.reconnect_cap)

    def _failure_outcome(self, job_id: int, tube: str, stats: Mapping[str, Any],
                         label: str = "") -> Outcome:
        """What to do with a job whose handler raised: release with backoff, or bury.

        Call it while the handler's exception is being handled: the log line
        (ERROR) carries its traceback. ``label`` names the job's server in
        it (a :class:`WorkerServer`'s ``label``).
        """
        self._count("failed")
        releases = int(stats["releases"])
        if releases >= self.max_releases:
            logger.exception("job %d%s in %r failed after %d release(s); burying it",
                             job_id, label, tube, releases)
            return commands.bury(job_id, stats["pri"]), "buried"
        delay = self.backoff(releases)
        logger.exception("job %d%s in %r failed; releasing it with a delay of %d s",
                         job_id, label, tube, delay)
        return commands.release(job_id, stats["pri"], delay), "released"

    def _undecodable_outcome(
        self, job_id: int, tube: str, error: Exception, priority: int, label: str = ""
    ) -> Outcome:
        """What to do with a job whose body the codec refused: bury it, it can never succeed."""
        logger.warning("job %d%s in %r: the body does not decode (%s: %s); burying it",
                       job_id, label, tube, type(error).__name__, error)
        return commands.bury(job_id, priority), "buried"

    def _awaitable_outcome(
        self, job_id: int, tube: str, result: object, priority: int, label: str = ""
    ) -> Outcome:
        """What to do with a job whose handler, run as a plain function, returned an awaitable.

        The work it stands for was never done, so the job is buried rather
        than deleted, and the error says how to fix the handler.
        """
        self._count("failed")
        if inspect.iscoroutine(result):
            result.close()  # it will never run: no "never awaited" warning on top of this line
        logger.error(
            "job %d%s in %r: the handler returned %s instead of doing the work, and a plain "
            "function's result is not awaited; burying the job. Make the handler a coroutine "
            "function (async def) and run it with greenstalk.aio.Worker",
            job_id, label, tube, type(result).__name__,
        )
        return commands.bury(job_id, priority), "buried"

    # -- log lines ---------------------------------------------------------

    def _address_origin(self, servers: list[Address]) -> str:
        """Where the addresses come from: given in code, ``$BEANSTALKD_ADDRESS``, or set later."""
        if servers == self._first_addresses:
            return self._first_origin
        first = addresses_text(self._first_addresses)
        if self._first_origin == "given":
            first += " given in code"
        try:
            from_environment = bool(os.environ.get(ADDRESS_VARIABLE)) and (
                environment_addresses() == servers
            )
        except ValueError:
            from_environment = False
        if from_environment:
            return f"from ${ADDRESS_VARIABLE}, overriding {first}"
        return f"set after the worker was made, replacing {first}"

    def _banner(self, burst: bool, servers: list[Address], *details: str) -> str:
        """The start-up line: servers (and where their addresses came from), tubes, codec, ..."""
        parts = [
            f"server{'s' if len(servers) > 1 else ''} {addresses_text(servers)} "
            f"({self._address_origin(servers)})",
            f"tubes {', '.join(self._handlers)}",
            f"codec {codec_name(self.codec)}",
            *details,
        ]
        if burst:
            parts.append("until no job is ready (burst)")
        return "worker starting: " + "; ".join(parts)

    def _log_connect_failure(self, server: WorkerServer, attempt: int,
                             error: ClientConnectionError, delay: float) -> None:
        logger.warning("cannot connect to %s (attempt %d): %s; retrying in %.1f s",
                       server.name, attempt, connect_failure(error), delay)

    def _burst_connect_error(
        self, server: WorkerServer, error: ClientConnectionError
    ) -> ClientConnectionError:
        """The error a burst raises when it cannot connect: it does not retry."""
        return ClientConnectionError(f"cannot connect to {server.name}: {connect_failure(error)}")

    def _log_connected(self, server: WorkerServer, attempts: int) -> None:
        """Say so when the worker connects after failed attempts or a lost connection."""
        if server.reconnecting or attempts:
            logger.info("connected %sto %s (after %d failed attempt(s)); watching %s",
                        "again " if server.reconnecting else "", server.name,
                        attempts, ", ".join(self._handlers))
        server.reconnecting = False

    def _log_lost(self, server: WorkerServer, reason: object) -> None:
        where = f"the server {server.name}" if server.label else "the server"
        logger.warning("connection to %s lost (%s); a job in hand goes back to the queue "
                       "on the server and is not acknowledged; reconnecting", where, reason)

    def _stopped_line(self) -> str:
        return "worker stopped: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())


def connect_failure(error: ClientConnectionError) -> str:
    """Why a connection attempt failed, without the address the client's message repeats."""
    cause = error.__cause__
    if isinstance(cause, OSError) and cause.errno and cause.strerror:
        return f"[Errno {cause.errno}] {os.strerror(cause.errno)}"
    return str(cause or error)


def codec_name(codec: Codec) -> str:
    """The name a codec is known by (``"json"``), else its class's name."""
    for name, known in CODECS.items():
        if known is codec:
            return name
    return type(codec).__name__


def _parse(address: Address | str) -> Address | TextAddress:
    """Text in the forms ``host:port`` and ``unix:PATH`` becomes an address; the rest stays."""
    if isinstance(address, str) and (
        address.startswith("unix:") or (":" in address and "/" not in address)
    ):
        return parse_address(address)
    return address
