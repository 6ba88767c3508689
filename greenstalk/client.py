"""The synchronous client: a blocking socket transport over :mod:`greenstalk._protocol`."""

from __future__ import annotations

import contextlib
import socket
import ssl as _ssl
import struct
import sys
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Callable, NoReturn, cast, overload

from ._base import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    Address,
    ClientBase,
    ConnectionTarget,
    Job,
    JobOrID,
    T,
    TBody,
    job_id,
    open_socket,
    results_of,
)
from ._protocol import commands
from ._protocol.commands import BodyBytes, Request
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    ClientTimeoutError,
    ProtocolError,
    PutManyError,
)
from ._protocol.responses import Reply, ReplyReader
from ._protocol.stats import Stats, StatsJob, StatsTube

_RECEIVE_SIZE = 65536
# _run's "the usual socket timeout" (no real bound is negative).
_USUAL = -1.0
# put_many keeps at most two batches of unread replies in flight: few enough
# that the replies always fit in the socket buffers (so neither side blocks
# on a full buffer while the other waits), enough to keep the server busy.
_BATCH_COMMANDS = 512
_BATCH_BYTES = 1 << 20


class Client(ClientBase[TBody]):
    """A connection to a beanstalkd server.

    The client connects at once. ``address`` is ``(host, port)``, the path of
    a Unix socket, or an already connected :class:`socket.socket`. Bodies are
    ``bytes``; with ``encoding`` set (``'utf-8'``), ``put`` also takes ``str``
    and jobs come back with ``str`` bodies. ``use`` names the tube to put
    into and ``watch`` the tube, or tubes, to reserve from.

    ``socket_timeout`` bounds every wait on the socket, in seconds: past it
    the connection is closed and :class:`~greenstalk.ClientTimeoutError` (a builtin
    :class:`TimeoutError`) is raised. ``reserve(timeout=n)`` may wait ``n``
    seconds more, and a ``reserve()`` without a timeout waits as long as the
    server does. ``socket_connect_timeout`` bounds the connect. ``ssl`` wraps
    the connection in TLS, for servers behind a TLS terminator.

    Raises ValueError or TypeError for invalid arguments (before connecting),
    and :class:`~greenstalk.ClientConnectionError` when the server cannot be reached.
    """

    @overload
    def __init__(
        self: Client[bytes],
        address: Address,
        encoding: None = None,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: Client[str],
        address: Address,
        encoding: str,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None: ...

    def __init__(
        self,
        address: Address,
        encoding: str | None = None,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        socket_timeout: float | None = None,
        socket_connect_timeout: float | None = None,
        ssl: _ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(address, encoding, use, watch)
        self._reader = ReplyReader()
        sock = _connect(address, socket_timeout, socket_connect_timeout, ssl)
        self._socket: socket.socket | None = sock
        #: The bound on each wait for the usual command.
        self._timeout = sock.gettimeout()
        #: The bound the socket applies now; a reserve may lengthen it.
        self._bound = self._timeout
        #: Whether the kernel keeps the bound (a blocking socket with
        #: SO_RCVTIMEO): Python's own timeouts cost a poll() before every
        #: send and receive. Sockets handed in keep the mode they came with.
        self._kernel_bound = (
            _KERNEL_TIMEOUTS
            and not isinstance(address, socket.socket)
            and not isinstance(sock, _ssl.SSLSocket)
            and self._timeout is not None
        )
        if self._kernel_bound:
            try:
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(self._timeout))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self._timeout))
            except OSError as error:
                self._fail(error)
        if self._setup:
            try:
                self._check_setup(self._pipeline(self._setup))
            except BaseException:
                self.close()
                raise

    def __repr__(self) -> str:
        state = f"closed ({self._closed_reason})" if self._socket is None else "open"
        return f"<greenstalk.Client address={self.address!r} {state}>"

    def __enter__(self) -> Client[TBody]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once the connection is closed, by :meth:`close` or by a failure."""
        return self._socket is None

    def close(self) -> None:
        """Close the connection. Jobs it had reserved go back to the ready queue."""
        self._abort("closed by the client")

    # -- transport ---------------------------------------------------------

    def _abort(self, reason: str) -> None:
        sock = self._socket
        if sock is None:
            return
        self._socket = None
        self._closed_reason = reason
        with contextlib.suppress(OSError):
            sock.close()

    def _fail(self, error: BaseException) -> NoReturn:
        """Close the connection after ``error`` and raise the matching ClientConnectionError."""
        if isinstance(error, ClientConnectionError):
            self._abort(str(error))
            raise error
        if isinstance(error, (socket.timeout, BlockingIOError)):
            # BlockingIOError: a kernel-kept bound (SO_RCVTIMEO) ran out.
            failure: ClientConnectionError = ClientTimeoutError(
                "the server did not answer in time (timed out); connection closed"
            )
        else:
            failure = ClientConnectionError(f"connection to the server failed: {error}")
        self._abort(str(failure))
        raise failure from error

    def _live_socket(self) -> socket.socket:
        sock = self._socket
        if sock is None:
            raise ClientConnectionError(f"the connection is closed: {self._closed_reason}")
        return sock

    def _receive(self, sock: socket.socket, replies: list[Reply], wanted: int, sent: int) -> None:
        """Read replies into ``replies`` until it holds ``wanted`` of them.

        Raises :class:`~greenstalk.ProtocolError` if the server sent more replies than
        the ``sent`` commands asked for: an unasked-for reply would be
        taken as the answer to the next command.
        """
        reader = self._reader
        while len(replies) < wanted:
            data = sock.recv(_RECEIVE_SIZE)
            if not data:
                raise ClientConnectionError(
                    "the server closed the connection"
                    + ("" if reader.idle else " in the middle of a reply")
                )
            replies += reader.receive(data)
        if len(replies) > sent:
            raise ProtocolError("the server sent a reply to no command")

    def _set_bound(self, sock: socket.socket, bound: float | None) -> None:
        """Make each wait on ``sock`` give up after ``bound`` seconds (None: never).

        Raises OSError when the socket refuses.
        """
        if self._kernel_bound:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(bound))
        else:
            sock.settimeout(bound)
        self._bound = bound

    def _run(self, request: Request[T], bound: float | None = _USUAL) -> T:
        """Send one command and return its parsed reply.

        ``bound`` replaces the socket timeout for this reply (a reserve's wait).
        """
        data, parse = request
        sock = self._socket
        if sock is None:
            sock = self._live_socket()
        if bound == _USUAL:
            bound = self._timeout
        try:
            if bound != self._bound:
                self._set_bound(sock, bound)
            sock.sendall(data)
            replies = self._reader.receive(sock.recv(_RECEIVE_SIZE))
            if len(replies) != 1:
                self._receive(sock, replies, 1, 1)
            if not self._reader.drained:
                raise ProtocolError("the server sent bytes that answer no command")
            return parse(replies[0])
        except (OSError, ProtocolError) as error:
            self._fail(error)
        except BeanstalkdError:
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt, an exception from a signal
            # handler) with the reply unread: it must not answer the next command.
            self._abort("interrupted while waiting for a reply")
            raise

    def _pipeline(self, requests: Iterable[Request[T]]) -> list[T | BeanstalkdError]:
        """Send many commands without waiting for each reply; return their results in order.

        The commands are taken from ``requests`` one batch at a time. A
        server error reply is returned as its exception, in its place.
        """
        sock = self._live_socket()
        replies: list[Reply] = []
        parsers: list[Callable[[Reply], T]] = []
        # Commands sent when each batch went out; at most two batches unread.
        sent_after: deque[int] = deque()
        sent = 0
        pending = iter(requests)
        try:
            if self._bound != self._timeout:
                self._set_bound(sock, self._timeout)
            while True:
                batch: list[bytes] = []
                size = 0
                for payload, parse in pending:
                    batch.append(payload)
                    parsers.append(parse)
                    size += len(payload)
                    if len(batch) == _BATCH_COMMANDS or size >= _BATCH_BYTES:
                        break
                if not batch:
                    break
                sock.sendall(b"".join(batch))
                sent += len(batch)
                sent_after.append(sent)
                if len(sent_after) > 1:
                    self._receive(sock, replies, sent_after.popleft(), sent)
            self._receive(sock, replies, sent, sent)
            if not self._reader.drained:
                raise ProtocolError("the server sent bytes that answer no command")
            return results_of(replies, parsers)
        except (OSError, ProtocolError) as error:
            self._fail(error)
        except BaseException:
            self._abort("interrupted while waiting for replies")
            raise

    def _finish_and_reserve(
        self, finish: Request[None] | None, timeout: int
    ) -> tuple[BeanstalkdError | None, tuple[int, bytes] | BeanstalkdError]:
        """Send ``finish`` (the last job's delete, release or bury) and a reserve in one write.

        Returns the finish's server error (or None) and the reserved job's id
        and raw body, or the reserve's server error (TimedOutError,
        DeadlineSoonError). This is the worker's step: one round trip a job.
        Raises ClientConnectionError as the other commands do.
        """
        reserve = commands.reserve(timeout)
        requests = [reserve] if finish is None else [finish, reserve]
        sock = self._live_socket()
        bound = None if self._timeout is None else timeout + self._timeout
        try:
            if bound != self._bound:
                self._set_bound(sock, bound)
            sock.sendall(b"".join(data for data, _ in requests))
            replies = self._reader.receive(sock.recv(_RECEIVE_SIZE))
            if len(replies) != len(requests):
                self._receive(sock, replies, len(requests), len(requests))
            if not self._reader.drained:
                raise ProtocolError("the server sent bytes that answer no command")
            results: list[Any] = results_of(replies, [parse for _, parse in requests])
        except (OSError, ProtocolError) as error:
            self._fail(error)
        except BaseException:
            self._abort("interrupted while waiting for a reply")
            raise
        return (results[0] if finish is not None else None), results[-1]

    # BEGIN COMMANDS (scripts/generate_aio.py copies these into greenstalk/aio.py)

    # -- producer ----------------------------------------------------------

    def put(
        self,
        body: BodyBytes | TBody,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> int:
        """Insert a job into the used tube and return its id.

        ``priority`` is 0 (most urgent) to 2**32-1; ``delay`` is how many
        seconds the job waits before it can be reserved; ``ttr`` is how many
        seconds a consumer may hold it before it is handed out again.
        Raises :class:`~greenstalk.JobTooBigError`,
        :class:`~greenstalk.DrainingError`, :class:`~greenstalk.OutOfMemoryError`
        or :class:`~greenstalk.BuriedWithJobIDError` (server out of memory),
        or ValueError and TypeError for invalid arguments.
        """
        if type(body) is str and self.encoding is not None:
            body = body.encode(self.encoding)
        return self._run(commands.put(cast(BodyBytes, body), priority, delay, ttr))

    def put_many(
        self,
        bodies: Iterable[BodyBytes | TBody],
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
    ) -> list[int]:
        """Insert many jobs into the used tube, pipelined, and return their ids in order.

        Every body is checked before anything is sent. The puts go out in
        large batches without waiting for each reply, so this costs a few
        round trips instead of one per job. Raises :class:`~greenstalk.PutManyError`
        when the server refused some bodies: it lists which bodies were
        inserted under which ids, and the client stays usable.
        """
        payloads, parse = commands.put_many(
            [self._body(body) for body in bodies], priority, delay, ttr
        )
        ids: list[int | None] = []
        errors: dict[int, BeanstalkdError] = {}
        for index, result in enumerate(self._pipeline((data, parse) for data in payloads)):
            if isinstance(result, BeanstalkdError):
                ids.append(getattr(result, "id", None))
                errors[index] = result
            else:
                ids.append(result)
        if errors:
            raise PutManyError(ids, errors)
        return cast(list[int], ids)

    def use(self, tube: str) -> None:
        """Make ``put`` insert into ``tube`` (created if missing)."""
        self._run(commands.use(tube))

    # -- consumer ----------------------------------------------------------

    def reserve(self, timeout: int | None = None) -> Job[TBody]:
        """Reserve a job from the watched tubes, waiting until one is ready.

        With ``timeout`` (seconds, 0 to poll) raises :class:`~greenstalk.TimedOutError`
        when no job came in time. Raises :class:`~greenstalk.DeadlineSoonError` when a
        job this client holds is within a second of its TTR, and
        :class:`~greenstalk.BodyDecodeError` (the job stays reserved) when the body does
        not decode.
        """
        request = commands.reserve(timeout)
        if self._timeout is None:
            return self._job(self._run(request))
        if timeout is None or timeout > commands.RESERVE_TIMEOUT_MAX:
            return self._job(self._run(request, None))
        return self._job(self._run(request, timeout + self._timeout))

    def reserve_job(self, job: JobOrID) -> Job[TBody]:
        """Reserve a specific job, in any tube and in any state except reserved.

        Raises :class:`~greenstalk.NotFoundError` if there is no such job or it is reserved.
        """
        return self._job(self._run(commands.reserve_job(job_id(job))))

    def delete(self, job: JobOrID) -> None:
        """Delete a job: one reserved by this client, or a ready, delayed or buried one."""
        self._run(commands.delete(job_id(job)))

    def release(
        self, job: JobOrID, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY
    ) -> None:
        """Put a job this client reserved back into its tube, ready or after ``delay`` seconds.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        self._run(commands.release(job_id(job), priority, delay))

    def bury(self, job: JobOrID, priority: int = DEFAULT_PRIORITY) -> None:
        """Move a job this client reserved to its tube's buried list.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        self._run(commands.bury(job_id(job), priority))

    def touch(self, job: JobOrID) -> None:
        """Restart the TTR of a job this client reserved.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        self._run(commands.touch(job_id(job)))

    def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list and return how many tubes are watched."""
        return self._run(commands.watch(tube))

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list and return how many tubes are watched.

        Raises :class:`~greenstalk.NotIgnoredError` if it is the only watched tube.
        """
        return self._run(commands.ignore(tube))

    # -- inspection --------------------------------------------------------

    def peek(self, id: JobOrID) -> Job[TBody]:
        """Return a job by id, in any tube and state, without reserving it.

        Raises :class:`~greenstalk.NotFoundError` if there is no such job.
        """
        return self._job(self._run(commands.peek(job_id(id))))

    def peek_ready(self) -> Job[TBody]:
        """Return the job of the used tube that would be reserved next.

        Raises :class:`~greenstalk.NotFoundError` if it has no ready job.
        """
        return self._job(self._run(commands.peek_ready()))

    def peek_delayed(self) -> Job[TBody]:
        """Return the delayed job of the used tube that becomes ready soonest.

        Raises :class:`~greenstalk.NotFoundError` if it has no delayed job.
        """
        return self._job(self._run(commands.peek_delayed()))

    def peek_buried(self) -> Job[TBody]:
        """Return the oldest buried job of the used tube.

        Raises :class:`~greenstalk.NotFoundError` if it has no buried job.
        """
        return self._job(self._run(commands.peek_buried()))

    def kick(self, bound: int) -> int:
        """Move up to ``bound`` jobs of the used tube to ready and return how many moved.

        Buried jobs are kicked if there are any, otherwise delayed ones.
        """
        return self._run(commands.kick(bound))

    def kick_job(self, job: JobOrID) -> None:
        """Move one buried or delayed job to ready.

        Raises :class:`~greenstalk.NotFoundError` if the job is not buried or delayed.
        """
        self._run(commands.kick_job(job_id(job)))

    def stats_job(self, job: JobOrID) -> StatsJob:
        """Return the statistics of a job. Raises :class:`~greenstalk.NotFoundError`."""
        return cast(StatsJob, self._run(commands.stats_job(job_id(job))))

    def stats_tube(self, tube: str) -> StatsTube:
        """Return the statistics of a tube. Raises :class:`~greenstalk.NotFoundError`."""
        return cast(StatsTube, self._run(commands.stats_tube(tube)))

    def stats(self) -> Stats:
        """Return the server's statistics."""
        return cast(Stats, self._run(commands.stats()))

    def tubes(self) -> list[str]:
        """Return the names of all existing tubes."""
        return self._run(commands.list_tubes())

    def using(self) -> str:
        """Return the tube that ``put`` inserts into."""
        return self._run(commands.list_tube_used())

    def watching(self) -> list[str]:
        """Return the watched tubes."""
        return self._run(commands.list_tubes_watched())

    def pause_tube(self, tube: str, delay: int) -> None:
        """Hold back reservations from ``tube`` for ``delay`` seconds (0 ends a pause).

        Raises :class:`~greenstalk.NotFoundError` if the tube does not exist.
        """
        self._run(commands.pause_tube(tube, delay))

    # END COMMANDS


# A blocking socket with kernel-kept timeouts (see Client._kernel_bound);
# elsewhere SO_RCVTIMEO's argument is not always a struct timeval.
_KERNEL_TIMEOUTS = sys.platform == "linux"


def _timeval(seconds: float | None) -> bytes:
    """``seconds`` as the struct timeval SO_RCVTIMEO takes; None (no limit) is zero."""
    if seconds is None:
        return struct.pack("@ll", 0, 0)
    whole = int(seconds)
    # Zero would mean no limit at all: the shortest bound is a microsecond.
    micro = max(int((seconds - whole) * 1_000_000), 0 if whole else 1)
    return struct.pack("@ll", whole, micro)


def _connect(
    address: Address,
    timeout: float | None,
    connect_timeout: float | None,
    context: _ssl.SSLContext | None,
) -> socket.socket:
    """Open (or adopt) the connection, with TLS when ``context`` is given.

    Raises :class:`~greenstalk.ClientTimeoutError` or :class:`~greenstalk.ClientConnectionError`.
    """
    adopted = isinstance(address, socket.socket)
    sock: socket.socket | None = None
    try:
        if isinstance(address, socket.socket):
            sock = address
        else:
            sock = open_socket(address, connect_timeout)
        if context is not None:
            # The handshake is part of connecting, and bounded like it.
            sock.settimeout(connect_timeout if connect_timeout is not None else timeout)
            host = address[0] if isinstance(address, tuple) else None
            sock = context.wrap_socket(sock, server_hostname=host)
    except BaseException as error:
        if sock is not None and not adopted:
            sock.close()
        if isinstance(error, socket.timeout):
            raise ClientTimeoutError(f"cannot connect to {address!r}: timed out") from error
        if isinstance(error, OSError):
            raise ClientConnectionError(f"cannot connect to {address!r}: {error}") from error
        raise
    # An adopted plain socket keeps its own timeout unless one was asked for.
    if not adopted or context is not None or timeout is not None or sock.gettimeout() == 0.0:
        sock.settimeout(timeout)
    return sock


__all__ = [
    "DEFAULT_DELAY",
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "DEFAULT_TUBE",
    "Address",
    "Client",
    "ConnectionTarget",
    "Job",
    "JobOrID",
]
