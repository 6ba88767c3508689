"""What the sync and asyncio clients share: jobs, defaults, argument checks, helpers."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from typing import Any, Callable, Generic, TypeVar, Union, cast

from ._protocol import commands
from ._protocol.commands import BodyBytes, Request
from ._protocol.errors import BeanstalkdError, BodyDecodeError
from ._protocol.responses import Reply

DEFAULT_TUBE = "default"
DEFAULT_PRIORITY = 2**16
DEFAULT_DELAY = 0
DEFAULT_TTR = 60

TBody = TypeVar("TBody")
T = TypeVar("T")

Address = Union[tuple[str, int], str, "os.PathLike[str]", socket.socket]
"""Where the server is: ``(host, port)``, a Unix socket path, or a connected socket."""


ConnectionTarget = Address
"""greenstalk 2.x's name for :data:`Address`."""

class Job(Generic[TBody]):
    """A job: its id and its body (``bytes``, or ``str`` when the client has an encoding)."""

    __slots__ = ("body", "id")

    def __init__(self, id: int, body: TBody) -> None:
        self.id = id
        self.body = body

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, body={self.body!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return bool(self.id == other.id and self.body == other.body)

    def __hash__(self) -> int:
        return hash((Job, self.id))


JobOrID = Union[Job[Any], int]
"""A job, or a job id."""


def job_id(job: JobOrID) -> int:
    """The id of a job given as a Job or an id."""
    return job.id if isinstance(job, Job) else job


class ClientBase(Generic[TBody]):
    """The state and helpers both clients have; they add the transport."""

    def __init__(
        self, address: Address, encoding: str | None, use: str, watch: str | Iterable[str]
    ) -> None:
        """Check the arguments; raises ValueError, TypeError or LookupError."""
        if encoding is not None:
            "".encode(encoding)  # a LookupError now, not at the first put
        watch_list = [watch] if isinstance(watch, str) else list(watch)
        if not watch_list:
            raise ValueError("watch must name at least one tube")
        #: The commands that give a new connection its used tube and watch list.
        self._setup = setup_requests(use, watch_list)
        self.address = address
        self.encoding = encoding
        self._closed_reason = ""

    def _check_setup(self, results: list[Any]) -> None:
        """Raise the first server error among the results of the set-up commands."""
        for result in results:
            if isinstance(result, BeanstalkdError):
                raise result

    def _job(self, found: tuple[int, bytes]) -> Job[TBody]:
        job_id, body = found
        if self.encoding is None:
            return Job(job_id, cast(TBody, body))
        try:
            return Job(job_id, cast(TBody, body.decode(self.encoding)))
        except UnicodeDecodeError as error:
            raise BodyDecodeError(Job(job_id, body), error) from error

    def _body(self, body: BodyBytes | TBody) -> BodyBytes:
        if self.encoding is not None and type(body) is str:
            return body.encode(self.encoding)
        return cast(BodyBytes, body)


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
