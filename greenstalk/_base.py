"""What the sync and asyncio clients share: jobs, defaults, argument checks, helpers."""

from __future__ import annotations

import math
import os
import socket
import struct
from collections.abc import Iterable
from typing import Any, Callable, ClassVar, Generic, TypeVar, Union, cast

from ._address import describe_address, parse_address
from ._protocol import commands
from ._protocol.commands import BodyBytes, Request
from ._protocol.errors import (
    BeanstalkdError,
    BodyDecodeError,
    ClientConnectionError,
    ClientTimeoutError,
    name_command,
)
from ._protocol.responses import Reply

DEFAULT_TUBE = "default"
DEFAULT_PRIORITY = 2**16
DEFAULT_DELAY = 0
DEFAULT_TTR = 60

TBody = TypeVar("TBody", str, bytes)
"""The type of job bodies: ``bytes``, or ``str`` for a client with an encoding."""
T = TypeVar("T")

Address = Union[tuple[str, int], str, "os.PathLike[str]", socket.socket]
"""Where the server is: ``(host, port)``, a Unix socket path, or a connected socket."""


ConnectionTarget = Address
"""greenstalk 2.x's name for :data:`Address`."""

Where = Union[tuple[str, int], str]
"""Where a client is connected: ``(host, port)`` or a Unix socket path ("" when unnamed)."""


class Job(Generic[TBody]):
    """A job: its id and its body (``bytes``, or ``str`` when the client has an encoding).

    ``address`` is the server the job lives on when it came through a
    :class:`~greenstalk.Pool` (None from a plain client). Job ids are only
    unique on one server, so two jobs are equal when their ids, bodies and
    servers are.
    """

    __slots__ = ("address", "body", "id")

    def __init__(self, id: int, body: TBody, address: Where | None = None) -> None:
        self.id: int = id
        self.body: TBody = body
        self.address: Where | None = address

    def __repr__(self) -> str:
        if self.address is None:
            return f"greenstalk.Job(id={self.id!r}, body={self.body!r})"
        return f"greenstalk.Job(id={self.id!r}, body={self.body!r}, address={self.address!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return bool(
            self.id == other.id and self.body == other.body and self.address == other.address
        )

    def __hash__(self) -> int:
        return hash((Job, self.id, self.address))


JobOrID = Union[Job[Any], int]
"""A job, or a job id."""

# Job, typed for the clients' use: they make Job[TBody] from bytes or str
# bodies, which mypy checks against each body type in turn.
_new_job: Callable[[int, object], Job[Any]] = Job


def job_id(job: JobOrID) -> int:
    """The id of a job given as a Job or an id."""
    return job.id if isinstance(job, Job) else job


class ClientBase(Generic[TBody]):
    """The state and helpers both clients have; they add the transport."""

    #: The class as its repr names it.
    _name: ClassVar[str] = "greenstalk.Client"
    #: The bound on the usual command, in seconds (None: no limit).
    _timeout: float | None
    #: True for a socket handed in without socket_timeout: its own timeout
    #: then bounds every command, a reserve's wait included.
    _as_is: bool

    def __init__(
        self,
        address: Address,
        encoding: str | None,
        use: str,
        watch: str | Iterable[str],
        reconnect: bool = False,
    ) -> None:
        """Check the arguments; raises ValueError, TypeError or LookupError."""
        if encoding is not None:
            "".encode(encoding)  # a LookupError now, not at the first put
        watch_list = [watch] if isinstance(watch, str) else list(watch)
        if not watch_list:
            raise ValueError("watch must name at least one tube")
        if reconnect and isinstance(address, socket.socket):
            raise ValueError("reconnect needs an address to connect to, not a socket")
        #: The commands that give the first connection its used tube and watch list.
        self._setup = setup_requests(use, watch_list)
        #: The used tube and the watch list, as the server last confirmed
        #: them: what a new connection is given.
        self._used = use
        self._watched = list(dict.fromkeys(watch_list))
        self._reconnect = reconnect
        #: How many times the client has connected again after losing its
        #: connection (``reconnect=True``); 0 at first. Jobs reserved before a
        #: reconnect are no longer held by this client: the server released them.
        self.reconnects = 0
        self.address = address
        self.encoding = encoding
        self._closed_reason = ""
        self._where = where_of(address)

    def __repr__(self) -> str:
        where = self._where
        if isinstance(where, tuple):
            return f"{self._name}(host={where[0]!r}, port={where[1]!r})"
        return f"{self._name}(socket={where!r})"

    def _reserve_bound(self, timeout: int | None) -> float | None:
        """How long a ``reserve(timeout)`` may take, in seconds (None: no limit).

        The reserve's own wait plus the socket timeout, except on a socket
        used as it was handed in.
        """
        if self._as_is or self._timeout is None:
            return self._timeout
        if timeout is None or timeout > commands.RESERVE_TIMEOUT_MAX:
            return None
        return timeout + self._timeout

    def _setup_requests(self) -> list[Request[Any]]:
        """The commands that give a new connection the used tube and watch list."""
        return setup_requests(self._used, self._watched)

    def _use_request(self, tube: str) -> Request[str]:
        """``use tube``; once the server accepts it, new connections use ``tube`` too."""
        data, parse = commands.use(tube)

        def parse_and_remember(reply: Reply) -> str:
            used = parse(reply)
            self._used = tube
            return used

        return data, parse_and_remember

    def _watch_request(self, tube: str, watch: bool) -> Request[int]:
        """``watch tube`` (``ignore tube`` when not ``watch``), remembered once accepted."""
        data, parse = commands.watch(tube) if watch else commands.ignore(tube)

        def parse_and_remember(reply: Reply) -> int:
            count = parse(reply)
            watched = self._watched
            if not watch:
                if tube in watched:
                    watched.remove(tube)
            elif tube not in watched:
                watched.append(tube)
            return count

        return data, parse_and_remember

    def _check_setup(self, results: list[Any]) -> None:
        """Raise the first server error among the results of the set-up commands."""
        for result in results:
            if isinstance(result, BeanstalkdError):
                raise result

    def _job(self, found: tuple[int, bytes]) -> Job[TBody]:
        job_id, body = found
        if self.encoding is None:
            return _new_job(job_id, body)
        try:
            return _new_job(job_id, body.decode(self.encoding))
        except UnicodeDecodeError as error:
            raise BodyDecodeError(Job(job_id, body), error) from error

    def _body(self, body: BodyBytes | TBody) -> BodyBytes:
        """``body`` as bytes when the client has an encoding; anything else as it is."""
        if self.encoding is not None and type(body) is str:
            return body.encode(self.encoding)
        unchanged: Any = body  # commands.check_body refuses what is not bytes
        return cast(BodyBytes, unchanged)


def where_of(address: Address) -> Where:
    """Where ``address`` leads: a connected socket's peer, a path as a str."""
    if isinstance(address, socket.socket):
        try:
            peer = address.getpeername()
        except OSError:
            return ""
        if isinstance(peer, tuple):
            return peer[0], peer[1]
        if isinstance(peer, bytes):  # a Linux abstract socket name
            return peer.decode("utf-8", "backslashreplace")
        return str(peer)
    if isinstance(address, tuple):
        return address
    return os.fspath(address)


def describe_where(where: Where) -> str:
    """An address for a message: ``host:port`` or ``unix:PATH``."""
    return describe_address(where) if where != "" else "an unnamed socket"


def connect_failure(where: Where, error: BaseException, timed_out: bool) -> ClientConnectionError:
    """The error to raise when connecting to ``where`` failed with ``error``.

    A missing socket file whose name looks like ``host:port`` gets a hint:
    TCP addresses are tuples.
    """
    text = describe_where(where)
    if timed_out:
        return ClientTimeoutError(f"cannot connect to {text}: timed out")
    reason = str(error)
    if isinstance(error, OSError) and type(error).__module__ == "builtins" and error.errno:
        # A system error: asyncio's message for it names the address as a tuple.
        reason = f"[Errno {error.errno}] {os.strerror(error.errno)}"
    message = f"cannot connect to {text}: {reason}"
    if isinstance(where, str) and ":" in where and isinstance(error, FileNotFoundError):
        try:
            tcp = parse_address(where)
        except ValueError:
            tcp = where
        if isinstance(tcp, tuple):
            message += (
                f" (a str address is the path of a Unix socket: for TCP, pass a tuple {tcp!r})"
            )
    return ClientConnectionError(message)


def results_of(
    replies: list[Reply], parsers: list[Callable[[Reply], T]]
) -> list[T | BeanstalkdError]:
    """Parse each reply with its parser; a server error reply becomes its exception.

    Raises :class:`ProtocolError` for a reply that answers no such command.
    """
    results: list[T | BeanstalkdError] = []
    for reply, parse in zip(replies, parsers):
        try:
            results.append(parse(reply))
        except BeanstalkdError as error:
            results.append(error)
    return results


def name_refusals(results: list[Any], requests: list[Request[Any]]) -> None:
    """Record in each server error among ``results`` the command of ``requests`` it answers."""
    for result, (data, _) in zip(results, requests):
        if isinstance(result, BeanstalkdError):
            name_command(result, data)


def check_timeout(name: str, value: object) -> None:
    """Check a timeout argument: None, or a finite number of seconds above 0.

    Raises TypeError for anything but None or a number (a bool included),
    and ValueError for 0, a negative number, NaN or infinity.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be None or a number of seconds, not {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be None or a number of seconds above 0, not {value!r}")


def setup_requests(use: str, watch: list[str]) -> list[Request[Any]]:
    """The commands that give a new connection its used tube and watch list.

    Raises TypeError or ValueError for an invalid tube name.
    """
    for tube in (use, *watch):
        commands.check_tube(tube)
    requests: list[Request[Any]] = []
    if use != DEFAULT_TUBE:
        requests.append(commands.use(use))
    requests.extend(commands.watch(tube) for tube in watch if tube != DEFAULT_TUBE)
    if DEFAULT_TUBE not in watch:
        requests.append(commands.ignore(DEFAULT_TUBE))
    return requests


def open_socket(
    address: tuple[str, int] | str | os.PathLike[str], timeout: float | None
) -> socket.socket:
    """Connect a blocking socket to ``(host, port)`` over TCP, or to a Unix socket path.

    ``timeout`` bounds the connect. Raises OSError (socket.timeout when it runs out).
    """
    if isinstance(address, tuple):
        sock = socket.create_connection(address, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return sock
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if timeout is not None:
            # A Unix socket connect in non-blocking mode fails at once when
            # the server's queue is full; a blocking one waits, and Linux
            # bounds that wait by the send timeout.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
        try:
            sock.connect(os.fspath(address))
        except BlockingIOError as error:
            raise socket.timeout("timed out") from error
        if timeout is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(0))
    except BaseException:
        sock.close()
        raise
    return sock


def _timeval(seconds: float) -> bytes:
    """A C ``struct timeval`` (0 means no limit, so a limit is at least 1 µs)."""
    microseconds = max(round(seconds * 1_000_000), 1 if seconds > 0 else 0)
    return struct.pack("ll", *divmod(microseconds, 1_000_000))
