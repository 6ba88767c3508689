"""The asyncio client: the sync client's API, awaited, over an asyncio Protocol.

Many tasks may share one client. Each call sends its command in call order
(those issued in the same turn of the event loop go out in one write), and
beanstalkd answers a connection's commands in order, so replies are matched
to calls by position: concurrent calls pipeline by themselves. A waiting
``reserve`` holds every later command of its connection until it is
answered (that is the server's rule), so give each consumer its own
connection.

Cancelling a call (``asyncio.wait_for`` expiring, a task cancelled) never
puts the connection out of step: its reply is still read, in order, and
dropped. A job that a cancelled ``reserve`` or ``reserve_job`` received is
released at once, with its priority unchanged. Until a cancelled waiting
``reserve`` is answered, later commands are held back in the client (the
server would not read them before then anyway), so that release goes out
before any later ``reserve``; a held command whose call is cancelled in the
meantime is never sent.

``socket_timeout`` bounds how long the server may take to answer a command
once the commands before it are answered: past it the connection is closed
and every waiting call raises :class:`~greenstalk.ClientTimeoutError`.

When a connection fails, the calls whose commands were still held back or
waiting to be written raise :class:`~greenstalk.CommandNotSentError`: they
never reached the server. With ``reconnect=True`` they are sent once more,
on a new connection, which the calls waiting for it share.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl as _ssl
from collections import deque
from collections.abc import Iterable
from functools import partial
from itertools import chain
from types import TracebackType
from typing import Any, Callable, cast, overload

from ._base import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    Address,
    ClientBase,
    Job,
    JobOrID,
    T,
    TBody,
    check_timeout,
    connect_failure,
    describe_where,
    job_id,
    name_refusals,
    open_socket,
    results_of,
)
from ._protocol import commands
from ._protocol.commands import BodyBytes, Request, waits_for_a_job
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    ClientTimeoutError,
    CommandNotSentError,
    ProtocolError,
    PutManyError,
    name_command,
    stray_error,
)
from ._protocol.responses import Reply, ReplyReader, reserved_job_id
from ._protocol.stats import Stats, StatsJob, StatsTube

# put_many hands the transport this many commands (or bytes) at a time, so a
# long list of large bodies is formatted batch by batch, not all at once.
_BATCH_COMMANDS = 512
_BATCH_BYTES = 1 << 20


class _Pending:
    """Commands not yet fully answered: their parsers, future, and replies so far."""

    __slots__ = ("future", "holding", "parsers", "replies", "wait")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        parsers: list[Callable[[Reply], Any]],
        wait: float | None = None,
    ) -> None:
        #: Resolves to the parsed results (a server error as its exception).
        self.future: asyncio.Future[list[Any]] = loop.create_future()
        self.parsers = parsers
        #: How long the server may take to answer, from this entry's turn on.
        self.wait = wait
        self.replies: list[Reply] = []
        #: True while this (cancelled, waiting) reserve holds back later commands.
        self.holding = False


def _close_opened(future: asyncio.Future[socket.socket]) -> None:
    """Done-callback of a connect nobody waits for any more: close its socket."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done-callback of internal commands: mark their outcome as seen."""
    if not future.cancelled():
        future.exception()


_RECEIVE_SIZE = 65536
_SOCKET_TIMEOUT: Any = object()
# What poll() reports of a connection the server has closed (POLLRDHUP: its
# FIN, on Linux) or reset (POLLHUP and POLLERR are always reported).
_PEER_CLOSED = getattr(select, "POLLRDHUP", 0)


class _Connection(asyncio.BufferedProtocol):
    """One connection's byte stream: commands out in order, replies matched in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # One receive buffer for the connection's life: asyncio's default of
        # a fresh 256 KiB buffer per read costs an mmap/munmap pair per reply
        # once the allocator serves such sizes from fresh pages.
        self.buffer = bytearray(_RECEIVE_SIZE)
        self.view = memoryview(self.buffer)
        self.transport: asyncio.Transport | None = None
        self.reader = ReplyReader()
        self.pending: deque[_Pending] = deque()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.gathering = False
        #: Set once the connection has failed or closed; every call then raises it.
        self.error: ClientConnectionError | None = None
        self.writable: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        # Commands held back while a cancelled reserve may still hand this
        # connection a job (see _hold), and how many reasons there are to hold.
        self.held: list[tuple[bytes, _Pending]] | None = None
        self.holds = 0
        self.timer: asyncio.TimerHandle | None = None
        #: The task that opens the transport, while it runs.
        self.connecting: asyncio.Future[None] | None = None
        #: With reconnect on: polls the socket for the server's close.
        self.poller: select.poll | None = None

    # -- asyncio.BufferedProtocol ----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.error is not None:  # closed while connecting
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self.view[:nbytes]))

    def data_received(self, data: bytes) -> None:
        try:
            replies = self.reader.receive(data)
        except ProtocolError as error:
            self.fail(error)
            return
        pending = self.pending
        resolved = 0
        for reply in replies:
            if not pending:
                self.fail(stray_error([reply], 0))
                return
            entry = pending[0]
            entry.replies.append(reply)
            if len(entry.replies) == len(entry.parsers):
                pending.popleft()
                if self.timer is not None or (pending and pending[0].wait is not None):
                    self._start_timer()
                if entry.future.cancelled():
                    self._abandoned(entry)
                    continue
                # Parsed here, not in the waiting task, so that a reply that
                # answers no such command stops every reply after it.
                try:
                    if len(entry.parsers) == 1:  # the common case, without the list walk
                        try:
                            results = [entry.parsers[0](reply)]
                        except BeanstalkdError as refusal:
                            results = [refusal]
                    else:
                        results = results_of(entry.replies, entry.parsers)
                except ProtocolError as error:
                    entry.future.set_exception(error)
                    self.fail(error)
                    return
                entry.future.set_result(results)
                resolved += 1
        if resolved > 1:
            # Several callers wake up in the next loop turn and will likely
            # send again: gather what they send into one write.
            self.gathering = True
        if self.reader.error is not None:  # bad bytes after the good replies
            self.fail(self.reader.error)
        elif not pending and not self.reader.drained:
            self.fail(ProtocolError("the server sent bytes that answer no command"))

    def connection_lost(self, exc: Exception | None) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # Python 3.9's TLS transport is not marked closed when its
            # connection is lost, and warns (ResourceWarning) when collected.
            transport.abort()
        self.transport = None
        if exc is not None:
            error = ClientConnectionError(f"connection to the server failed: {exc}")
            error.__cause__ = exc
        else:
            error = self.reader.closed_error()
        self.fail(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # -- used by the client ----------------------------------------------------------

    def send(
        self,
        data: bytes,
        parsers: list[Callable[[Reply], Any]],
        wait: float | None,
        flush: bool = False,
    ) -> _Pending:
        """Send commands in call order; return their entry, whose future gets the results.

        ``parsers`` has one parser per command. The server gets ``wait``
        seconds (None: no limit) to answer once the replies before these are
        in. ``flush`` writes to the transport now rather than with the other
        commands of this loop turn.
        """
        if self.error is not None:
            raise self.error
        entry = _Pending(self.loop, parsers, wait)
        if self.held is not None:
            self.held.append((data, entry))
        else:
            self._transmit(data, entry, flush)
        return entry

    def abandon(self, entry: _Pending) -> None:
        """The caller stopped waiting (it was cancelled): drop the reply, release any job."""
        future = entry.future
        if not future.done():
            future.cancel()  # handled when the reply comes, and by _hold
        elif not future.cancelled() and future.exception() is None:
            self._abandoned(entry)  # the reply came just as the caller was cancelled

    def _transmit(self, data: bytes, entry: _Pending, flush: bool = False) -> None:
        """Write commands now, or with the others of this loop turn."""
        if (self.pending or self.gathering) and not flush:
            # Replies to earlier commands are still to come, so this one
            # would wait for them anyway (or other callers are about to
            # send too): join the other commands of this loop turn in one
            # write. Each write wakes the server, which matters most when
            # it shares the client's CPU.
            self.outgoing.append(data)
            if not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self._flush)
        elif self.transport is not None:
            if self.outgoing:
                self._flush()
            self.transport.write(data)
        else:  # the transport is only ever None before connecting or with error set
            raise ClientConnectionError("not connected")
        self.pending.append(entry)
        if entry.wait is not None and len(self.pending) == 1:
            self._start_timer()
        if waits_for_a_job(data):
            entry.future.add_done_callback(partial(self._hold, entry))

    def _start_timer(self) -> None:
        """Time the answer to the first pending entry (after the one before it, if any)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.pending:
            head = self.pending[0]
            if head.wait is not None:
                self.timer = self.loop.call_later(head.wait, self._expire, head)

    def _expire(self, entry: _Pending) -> None:
        self.timer = None
        if self.pending and self.pending[0] is entry:
            self.fail(
                ClientTimeoutError(
                    f"the server did not answer within {entry.wait} s; connection closed"
                )
            )

    def _hold(self, entry: _Pending, future: asyncio.Future[list[Any]]) -> None:
        """A waiting reserve was cancelled: hold back later commands until it is answered.

        The server will not read them before it answers anyway, so holding
        them costs nothing; and if the answer hands over a job, the release
        of that job then goes out before any later reserve that would
        otherwise keep it reserved here until its TTR.
        """
        if future.cancelled() and entry in self.pending:
            entry.holding = True
            self.holds += 1
            if self.held is None:
                self.held = []

    def _unhold(self) -> None:
        self.holds -= 1
        held = self.held
        if self.holds or held is None:
            return
        self.held = None
        for data, entry in held:
            if not entry.future.cancelled():  # cancelled before sending: never sent
                self._transmit(data, entry)

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        writable = self.writable
        if writable is not None:
            await asyncio.shield(writable)

    def fail(self, error: ClientConnectionError) -> None:
        """Close the connection and fail every call still waiting with ``error``."""
        if self.error is None:
            self.error = error
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.abort()
        error = self.error
        # The last entries sent are those whose bytes still wait to be
        # written, and the held ones come after: those never went out.
        written = list(self.pending)[: len(self.pending) - len(self.outgoing)]
        unsent = list(self.pending)[len(written) :] + [entry for _, entry in self.held or ()]
        self.outgoing.clear()
        self.pending.clear()
        self.held = None
        for entry in written:
            if not entry.future.done():
                entry.future.set_exception(error)
        if unsent:
            not_sent = error
            if not isinstance(error, CommandNotSentError):
                not_sent = CommandNotSentError(str(error))
                not_sent.__cause__ = error
            for entry in unsent:
                if not entry.future.done():
                    entry.future.set_exception(not_sent)
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def peer_closed(self) -> bool:
        """Whether the server has closed or reset this idle connection, as asyncio will soon say.

        Costs one poll(). A connection with replies to come is taken as open.
        """
        poller = self.poller
        if poller is None or self.pending or not poller.poll(0):
            return False
        self.fail(self.reader.closed_error())
        return True

    def _flush(self) -> None:
        self.flush_scheduled = False
        self.gathering = False
        if self.outgoing and self.transport is not None:
            data = b"".join(self.outgoing)
            self.outgoing.clear()
            self.transport.write(data)

    def _abandoned(self, entry: _Pending) -> None:
        """Replies nobody waits for any more: give back any job they reserved."""
        releasing = False
        for reply in entry.replies:
            reserved = reserved_job_id(reply)
            if reserved is not None:
                releasing = True
                self._release(reserved, entry.holding)
        if entry.holding and not releasing:
            self._unhold()

    def _release(self, reserved: int, holding: bool) -> None:
        # release needs a priority; read the job's own so it is not changed.
        # These commands skip the held ones: they must reach the server first.
        data, parse_stats = commands.stats_job(reserved)
        stats = _Pending(self.loop, [parse_stats])
        self._transmit(data, stats)

        def release(future: asyncio.Future[list[Any]]) -> None:
            try:
                if future.cancelled() or future.exception() is not None:
                    return
                found = future.result()[0]
                if isinstance(found, BeanstalkdError):
                    return  # the job is gone: nothing to release
                release_data, parse_release = commands.release(reserved, int(found["pri"]), 0)
                released = _Pending(self.loop, [parse_release])
                self._transmit(release_data, released)
                released.future.add_done_callback(_retrieve)
            except ClientConnectionError:
                return  # the connection is gone, and the job back in the queue with it
            finally:
                if holding:
                    self._unhold()

        stats.future.add_done_callback(release)


def _still_unsent(
    connection: _Connection,
    unsent: list[Request[T]] | None,
    data: list[bytes],
    parsers: list[Callable[[Reply], Any]],
) -> list[Request[T]] | None:
    """Add the commands just sent (``data``, ``parsers``) to ``unsent`` while none went out.

    Returns None, and empties ``unsent``, once ``connection`` has handed the
    commands to its transport: from then on they cannot be sent again.
    """
    if unsent is None:
        return None
    if connection.held is None and not connection.outgoing:
        unsent.clear()
        return None
    unsent.extend(zip(data, parsers))
    return unsent


class Client(ClientBase[TBody]):
    """An asyncio connection to a beanstalkd server, with the sync client's API.

    The arguments are those of :class:`greenstalk.Client`. The client
    connects in ``async with Client(...) as client:`` (and closes at the end
    of the block), or use ``client = await greenstalk.aio.connect(...)``.
    Every method of the sync client is here as a coroutine with the same
    arguments, results and errors, and ``reconnect=True`` works as there.
    """

    _name = "greenstalk.aio.Client"

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
        reconnect: bool = False,
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
        reconnect: bool = False,
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
        reconnect: bool = False,
    ) -> None:
        check_timeout("socket_timeout", socket_timeout)
        check_timeout("socket_connect_timeout", socket_connect_timeout)
        super().__init__(address, encoding, use, watch, reconnect)
        self._timeout = socket_timeout
        self._as_is = False
        if isinstance(address, socket.socket) and ssl is None and socket_timeout is None:
            # Used as it is: its own timeout bounds every command.
            self._as_is = True
            self._timeout = address.gettimeout() or None
        self._connect_timeout = socket_connect_timeout
        self._ssl = ssl
        self._connection: _Connection | None = None
        #: The connection a command may be sent on without a look first:
        #: always None with reconnect on, so that every command goes through
        #: _live's check.
        self._unchecked: _Connection | None = None
        #: The new connection being made (reconnect on), shared by the calls
        #: waiting for it.
        self._reopening: asyncio.Future[_Connection] | None = None
        self._closed_reason = "not connected: use 'async with' or greenstalk.aio.connect()"

    async def __aenter__(self) -> Client[TBody]:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True unless the client is connected and the connection works.

        With ``reconnect=True`` the next command connects again, unless the
        client was closed by :meth:`close`.
        """
        return self._connection is None or self._connection.error is not None

    async def close(self) -> None:
        """Close the connection; calls still waiting raise ClientConnectionError.

        Jobs this connection had reserved go back to the ready queue. This is
        final, even with ``reconnect=True``: every later command raises
        :class:`~greenstalk.CommandNotSentError`.
        """
        self._reconnect = False
        reopening = self._reopening
        if reopening is not None:
            reopening.cancel()
            await asyncio.wait([reopening])
        connection = self._connection
        if connection is None:
            return
        if connection.error is None:
            self._closed_reason = "closed by the client"
            connection.fail(ClientConnectionError(self._closed_reason))
        if connection.transport is not None:
            await connection.lost
        elif connection.connecting is not None:
            connection.connecting.cancel()  # and connection_made aborts a late transport

    # -- transport ---------------------------------------------------------

    async def _open(self) -> None:
        """Connect and set up the used tube and watch list.

        Raises :class:`ClientTimeoutError` or :class:`ClientConnectionError`.
        """
        if self._connection is not None:
            raise ClientConnectionError(
                "the client is already connected"
                if self._connection.error is None
                else "the client was closed: make a new one"
            )
        connection = _Connection(asyncio.get_running_loop())
        self._connection = connection
        await self._connect(connection)
        if self._setup:
            try:
                self._check_setup(await self._pipelined(connection, self._setup, None))
            except BaseException:
                await self.close()
                raise
        if not self._reconnect:
            self._unchecked = connection

    async def _connect(self, connection: _Connection) -> None:
        """Open ``connection``'s transport, within the connect timeout.

        Raises :class:`ClientTimeoutError` or :class:`ClientConnectionError`,
        having failed ``connection``.
        """
        loop = connection.loop
        connecting = asyncio.ensure_future(self._create(loop, connection))
        connection.connecting = connecting
        try:
            await asyncio.wait_for(connecting, self._connect_timeout)
        except asyncio.CancelledError:
            if connection.error is None:  # this call was cancelled, not the connect
                connection.fail(ClientConnectionError("connecting was cancelled"))
                raise
            raise ClientConnectionError(f"the connection is closed: {connection.error}") from None
        except (asyncio.TimeoutError, OSError) as error:
            timed_out = isinstance(error, (asyncio.TimeoutError, socket.timeout))
            failure = connect_failure(self._where, error, timed_out)
            self._closed_reason = str(failure)
            connection.fail(failure)
            raise failure from error
        except BaseException:
            connection.fail(ClientConnectionError("connecting failed"))
            raise
        transport = connection.transport
        if connection.error is not None or transport is None:  # closed while connecting
            raise ClientConnectionError(f"the connection is closed: {connection.error}")
        if self._reconnect:
            connection.poller = select.poll()
            connection.poller.register(transport.get_extra_info("socket").fileno(), _PEER_CLOSED)

    async def _create(self, loop: asyncio.AbstractEventLoop, connection: _Connection) -> None:
        address = self.address
        context = self._ssl
        if isinstance(address, socket.socket):
            await loop.create_connection(lambda: connection, sock=address, ssl=context)
        elif isinstance(address, tuple):
            host, port = address
            transport, _ = await loop.create_connection(
                lambda: connection, host, port, ssl=context
            )
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1
            )
        else:
            # A non-blocking connect to a Unix socket whose queue is full
            # fails at once, and asyncio takes that for success; a blocking
            # one, in a worker thread, waits (bounded by the connect timeout).
            opening = loop.run_in_executor(
                None, open_socket, os.fspath(address), self._connect_timeout
            )
            try:
                sock = await asyncio.shield(opening)
            except asyncio.CancelledError:
                # The thread connects on regardless: close what it opens.
                opening.add_done_callback(_close_opened)
                raise
            try:
                await loop.create_unix_connection(lambda: connection, sock=sock, ssl=context)
            except BaseException:
                sock.close()
                raise

    def _live(self) -> _Connection | None:
        """The connection to send the next command on; None when a new one must be made first.

        With reconnect on, a connection that failed, or that the server has
        closed, needs replacing. Raises CommandNotSentError when the client is
        not connected, or its connection is closed and may not be replaced.
        """
        connection = self._connection
        if connection is None:
            raise CommandNotSentError(self._closed_reason)
        if not self._reconnect:
            if connection.error is not None:
                raise CommandNotSentError(f"the connection is closed: {connection.error}")
            return connection
        if connection.error is None and not connection.peer_closed():
            return connection
        return None

    async def _reopen(self) -> _Connection:
        """A new connection with the used tube and watch list, made once for every caller.

        Raises CommandNotSentError, naming the server, when connecting or the
        set-up fails, or :meth:`close` ends the attempt.
        """
        reopening = self._reopening
        if reopening is None:
            reopening = self._reopening = asyncio.ensure_future(self._connect_again())
            reopening.add_done_callback(self._reopened)
        return await asyncio.shield(reopening)

    def _reopened(self, reopening: asyncio.Future[_Connection]) -> None:
        self._reopening = None
        _retrieve(reopening)  # when no caller waits any more

    async def _connect_again(self) -> _Connection:
        connection = _Connection(asyncio.get_running_loop())
        try:
            try:
                await self._connect(connection)
            except ClientConnectionError as error:
                raise CommandNotSentError(str(error)) from error
            setup = self._setup_requests()
            if setup:
                try:
                    self._check_setup(await self._pipelined(connection, setup, None))
                except (ClientConnectionError, BeanstalkdError) as error:
                    connection.fail(
                        ClientConnectionError(f"setting up the connection failed: {error}")
                    )
                    raise CommandNotSentError(
                        f"reconnected to {describe_where(self._where)}, "
                        f"but setting up the connection failed: {error}"
                    ) from error
        except asyncio.CancelledError:  # by close(): the callers waiting get an error
            connection.fail(ClientConnectionError("closed by the client"))
            raise CommandNotSentError("the connection is closed: closed by the client") from None
        self._connection = connection
        self.reconnects += 1
        return connection

    async def _resend(
        self,
        data: bytes,
        parsers: list[Callable[[Reply], Any]],
        wait: float | None,
        error: CommandNotSentError,
    ) -> list[Any]:
        """Send once more, on a new connection, commands that never went out (``error``).

        Returns their results. Without reconnect, raises ``error``.
        """
        if not self._reconnect:
            raise error
        connection = self._live() or await self._reopen()
        entry = connection.send(data, parsers, wait)
        try:
            if connection.writable is not None:
                await connection.drain()
            return await entry.future
        except asyncio.CancelledError:
            connection.abandon(entry)
            raise

    async def _run(self, request: Request[T], wait: Any = _SOCKET_TIMEOUT) -> T:
        """Send one command and return its parsed reply.

        The server gets ``wait`` seconds (by default ``socket_timeout``) to answer.
        """
        data, parse = request
        connection = self._unchecked
        if connection is None or connection.error is not None:
            connection = self._live() or await self._reopen()
        if wait is _SOCKET_TIMEOUT:
            wait = self._timeout
        entry = connection.send(data, [parse], wait)
        try:
            if connection.writable is not None:
                await connection.drain()
            result = (await entry.future)[0]
        except asyncio.CancelledError:
            connection.abandon(entry)
            raise
        except CommandNotSentError as error:
            result = (await self._resend(data, [parse], wait, error))[0]
        if isinstance(result, BeanstalkdError):
            name_command(result, data)
            raise result
        return cast(T, result)

    async def _pipeline(self, requests: Iterable[Request[T]]) -> list[T | BeanstalkdError]:
        """Send many commands, a batch at a time, and return their results in order.

        A server error reply is returned as its exception, in its place.
        """
        connection = self._live() or await self._reopen()
        pending = iter(requests)
        unsent: list[Request[T]] = []
        try:
            return await self._pipelined(connection, pending, unsent)
        except CommandNotSentError as error:
            if not self._reconnect:
                raise
            connection = self._live() or await self._reopen()
            try:
                return await self._pipelined(connection, chain(unsent, pending), None)
            except CommandNotSentError as again:
                raise again from error

    async def _pipelined(
        self,
        connection: _Connection,
        requests: Iterable[Request[T]],
        unsent: list[Request[T]] | None,
    ) -> list[T | BeanstalkdError]:
        """:meth:`_pipeline` on ``connection``.

        While no command has been handed to the transport, the commands
        taken from ``requests`` are also put in ``unsent`` (unless None), to
        be sent again should the connection fail first: then
        CommandNotSentError is raised.
        """
        entries: list[_Pending] = []
        try:
            batch: list[bytes] = []
            parsers: list[Callable[[Reply], Any]] = []
            size = 0
            for data, parse in requests:
                batch.append(data)
                parsers.append(parse)
                size += len(data)
                if len(batch) == _BATCH_COMMANDS or size >= _BATCH_BYTES:
                    entries.append(
                        connection.send(b"".join(batch), parsers, self._timeout, flush=True)
                    )
                    unsent = _still_unsent(connection, unsent, batch, parsers)
                    batch, parsers, size = [], [], 0
                    await connection.drain()
            if batch:
                entries.append(connection.send(b"".join(batch), parsers, self._timeout))
                _still_unsent(connection, unsent, batch, parsers)
            results: list[T | BeanstalkdError] = []
            for entry in entries:
                try:
                    results += await entry.future
                except CommandNotSentError as error:
                    if entry is entries[0]:  # then none of them went out
                        raise
                    raise ClientConnectionError(str(error)) from error
            return results
        except BaseException:
            for entry in entries:
                connection.abandon(entry)
            raise

    async def _finish_and_reserve(
        self, finishes: list[Request[None]], timeout: int
    ) -> tuple[list[BeanstalkdError | None], tuple[int, bytes] | BeanstalkdError]:
        """Send ``finishes`` (deletes, releases, buries) and a reserve in one write.

        Returns each finish's server error (or None) and the reserved job's id
        and raw body, or the reserve's server error. The asyncio worker's
        step; raises ClientConnectionError as the other commands do.
        """
        reserve = commands.reserve(timeout)
        requests = [*finishes, reserve]
        connection = self._live() or await self._reopen()
        wait = self._reserve_bound(timeout)
        data = b"".join(data for data, _ in requests)
        parsers = [parse for _, parse in requests]
        entry = connection.send(data, parsers, wait)
        try:
            if connection.writable is not None:
                await connection.drain()
            results = await entry.future
        except asyncio.CancelledError:
            connection.abandon(entry)
            raise
        except CommandNotSentError as error:
            results = await self._resend(data, parsers, wait, error)
        refusals = [
            result if isinstance(result, BeanstalkdError) else None for result in results[:-1]
        ]
        reserved = results[-1]
        if type(reserved) is not tuple or refusals.count(None) != len(refusals):
            name_refusals(results, requests)  # a refusal among them
        return refusals, reserved

    # BEGIN COMMANDS (generated from greenstalk/client.py by scripts/generate_aio.py)

    # -- producer ----------------------------------------------------------

    async def put(
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
        return await self._run(commands.put(cast(Any, body), priority, delay, ttr))

    async def put_many(
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
        for index, result in enumerate(await self._pipeline((data, parse) for data in payloads)):
            if isinstance(result, BeanstalkdError):
                ids.append(getattr(result, "id", None))
                errors[index] = result
            else:
                ids.append(result)
        if errors:
            raise PutManyError(ids, errors)
        return cast(list[int], ids)

    async def use(self, tube: str) -> None:
        """Make ``put`` insert into ``tube`` (created if missing)."""
        await self._run(self._use_request(tube))

    # -- consumer ----------------------------------------------------------

    async def reserve(self, timeout: int | None = None) -> Job[TBody]:
        """Reserve a job from the watched tubes, waiting until one is ready.

        With ``timeout`` (seconds, 0 to poll) raises :class:`~greenstalk.TimedOutError`
        when no job came in time. Raises :class:`~greenstalk.DeadlineSoonError` when a
        job this client holds is within a second of its TTR, and
        :class:`~greenstalk.BodyDecodeError` (the job stays reserved) when the body does
        not decode.
        """
        request = commands.reserve(timeout)
        return self._job(await self._run(request, self._reserve_bound(timeout)))

    async def reserve_job(self, job: JobOrID) -> Job[TBody]:
        """Reserve a specific job, in any tube and in any state except reserved.

        Raises :class:`~greenstalk.NotFoundError` if there is no such job or it is reserved.
        """
        return self._job(await self._run(commands.reserve_job(job_id(job))))

    async def delete(self, job: JobOrID) -> None:
        """Delete a job: one reserved by this client, or a ready, delayed or buried one."""
        await self._run(commands.delete(job_id(job)))

    async def release(
        self, job: JobOrID, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY
    ) -> None:
        """Put a job this client reserved back into its tube, ready or after ``delay`` seconds.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        await self._run(commands.release(job_id(job), priority, delay))

    async def bury(self, job: JobOrID, priority: int = DEFAULT_PRIORITY) -> None:
        """Move a job this client reserved to its tube's buried list.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        await self._run(commands.bury(job_id(job), priority))

    async def touch(self, job: JobOrID) -> None:
        """Restart the TTR of a job this client reserved.

        Raises :class:`~greenstalk.NotFoundError` if this client does not hold the job.
        """
        await self._run(commands.touch(job_id(job)))

    async def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list and return how many tubes are watched."""
        return await self._run(self._watch_request(tube, True))

    async def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list and return how many tubes are watched.

        Raises :class:`~greenstalk.NotIgnoredError` if it is the only watched tube.
        """
        return await self._run(self._watch_request(tube, False))

    # -- inspection --------------------------------------------------------

    async def peek(self, id: JobOrID) -> Job[TBody]:
        """Return a job by id, in any tube and state, without reserving it.

        Raises :class:`~greenstalk.NotFoundError` if there is no such job.
        """
        return self._job(await self._run(commands.peek(job_id(id))))

    async def peek_ready(self) -> Job[TBody]:
        """Return the job of the used tube that would be reserved next.

        Raises :class:`~greenstalk.NotFoundError` if it has no ready job.
        """
        return self._job(await self._run(commands.peek_ready()))

    async def peek_delayed(self) -> Job[TBody]:
        """Return the delayed job of the used tube that becomes ready soonest.

        Raises :class:`~greenstalk.NotFoundError` if it has no delayed job.
        """
        return self._job(await self._run(commands.peek_delayed()))

    async def peek_buried(self) -> Job[TBody]:
        """Return the oldest buried job of the used tube.

        Raises :class:`~greenstalk.NotFoundError` if it has no buried job.
        """
        return self._job(await self._run(commands.peek_buried()))

    async def kick(self, bound: int) -> int:
        """Move up to ``bound`` jobs of the used tube to ready and return how many moved.

        Buried jobs are kicked if there are any, otherwise delayed ones.
        """
        return await self._run(commands.kick(bound))

    async def kick_job(self, job: JobOrID) -> None:
        """Move one buried or delayed job to ready.

        Raises :class:`~greenstalk.NotFoundError` if the job is not buried or delayed.
        """
        await self._run(commands.kick_job(job_id(job)))

    async def stats_job(self, job: JobOrID) -> StatsJob:
        """Return the statistics of a job. Raises :class:`~greenstalk.NotFoundError`."""
        return cast(StatsJob, await self._run(commands.stats_job(job_id(job))))

    async def stats_tube(self, tube: str) -> StatsTube:
        """Return the statistics of a tube. Raises :class:`~greenstalk.NotFoundError`."""
        return cast(StatsTube, await self._run(commands.stats_tube(tube)))

    async def stats(self) -> Stats:
        """Return the server's statistics."""
        return cast(Stats, await self._run(commands.stats()))

    async def tubes(self) -> list[str]:
        """Return the names of all existing tubes."""
        return await self._run(commands.list_tubes())

    async def using(self) -> str:
        """Return the tube that ``put`` inserts into."""
        return await self._run(commands.list_tube_used())

    async def watching(self) -> list[str]:
        """Return the watched tubes."""
        return await self._run(commands.list_tubes_watched())

    async def pause_tube(self, tube: str, delay: int) -> None:
        """Hold back reservations from ``tube`` for ``delay`` seconds (0 ends a pause).

        Raises :class:`~greenstalk.NotFoundError` if the tube does not exist.
        """
        await self._run(commands.pause_tube(tube, delay))

    # END COMMANDS


@overload
async def connect(
    address: Address,
    encoding: None = None,
    use: str = DEFAULT_TUBE,
    watch: str | Iterable[str] = DEFAULT_TUBE,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    reconnect: bool = False,
) -> Client[bytes]: ...


@overload
async def connect(
    address: Address,
    encoding: str,
    use: str = DEFAULT_TUBE,
    watch: str | Iterable[str] = DEFAULT_TUBE,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    reconnect: bool = False,
) -> Client[str]: ...


async def connect(
    address: Address,
    encoding: str | None = None,
    use: str = DEFAULT_TUBE,
    watch: str | Iterable[str] = DEFAULT_TUBE,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    reconnect: bool = False,
) -> Client[Any]:
    """Connect to a beanstalkd server and return the connected :class:`Client`.

    Takes the arguments of :class:`Client`. Raises what connecting raises:
    :class:`ClientConnectionError` or :class:`ClientTimeoutError`, and
    ValueError or TypeError for invalid arguments.
    """
    client: Client[Any] = Client(
        address,
        encoding,
        use,
        watch,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        ssl=ssl,
        reconnect=reconnect,
    )
    await client._open()
    return client


# At the end: the worker and pool modules need Client defined.
from ._aio_pool import Pool  # noqa: E402
from ._aio_worker import Worker, WorkerJob  # noqa: E402

__all__ = ["Client", "Pool", "Worker", "WorkerJob", "connect"]
