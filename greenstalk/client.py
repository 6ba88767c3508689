"""The synchronous client: a blocking socket transport over :mod:`greenstalk._protocol`."""

from __future__ import annotations

import contextlib
import math
import select
import socket
import ssl as _ssl
import struct
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain
from time import monotonic as _monotonic
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
    Where,
    check_timeout,
    connect_failure,
    describe_where,
    job_id,
    name_refusals,
    open_socket,
    results_of,
)
from ._protocol import commands
from ._protocol.commands import BodyBytes, Request
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
from ._protocol.responses import Reply, ReplyReader
from ._protocol.stats import Stats, StatsJob, StatsTube

_RECEIVE_SIZE = 65536
# _run's "the usual socket timeout" (no real bound is negative).
_USUAL = -1.0
# How far, in seconds, a socket's bound may be from the time a command has
# left before it is set again.
_SLACK = 0.001
# put_many keeps at most two batches of unread replies in flight: few enough
# that the replies always fit in the socket buffers (so neither side blocks
# on a full buffer while the other waits), enough to keep the server busy.
_BATCH_COMMANDS = 512
_BATCH_BYTES = 1 << 20
# Why the connection closed, after Client.interrupt().
_INTERRUPTED = "interrupted by Client.interrupt()"


class Client(ClientBase[TBody]):
    """A connection to a beanstalkd server.

    The client connects at once. ``address`` is ``(host, port)``, the path of
    a Unix socket, or an already connected :class:`socket.socket`. Bodies are
    ``bytes``; with ``encoding`` set (``'utf-8'``), ``put`` also takes ``str``
    and jobs come back with ``str`` bodies. ``use`` names the tube to put
    into and ``watch`` the tube, or tubes, to reserve from.

    ``socket_timeout`` bounds every command, in seconds: sending it and
    receiving its whole reply. Past it the connection is closed and
    :class:`~greenstalk.ClientTimeoutError` (a builtin :class:`TimeoutError`)
    is raised. ``reserve(timeout=n)`` may take ``n`` seconds more, and a
    ``reserve()`` without a timeout waits as long as the server does. A
    socket handed in without ``socket_timeout`` is used as it is: its own
    timeout bounds every command, ``reserve`` included.
    ``socket_connect_timeout`` bounds the connect. Both are None (no bound)
    or a number of seconds above 0. ``ssl`` wraps the connection in TLS,
    for servers behind a TLS terminator.

    With ``reconnect=True`` a command after a lost connection (the server
    restarted, say) connects again first, with the same used tube and watch
    list, and :attr:`reconnects` counts how often. A command whose effect is
    unknown still raises and is never sent twice; see :doc:`reconnecting`.

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
        self._reader: ReplyReader = ReplyReader()
        adopted = isinstance(address, socket.socket)
        self._connect_timeout: float | None = socket_connect_timeout
        self._ssl: _ssl.SSLContext | None = ssl
        sock = _connect(address, self._where, socket_timeout, socket_connect_timeout, ssl)
        self._socket: socket.socket | None = None
        #: The connection :meth:`interrupt` shut down, until the next one is installed.
        self._interrupted: socket.socket | None = None
        #: The socket a command may be sent on without a look first: the
        #: connection's, except with reconnect on, when it is always None so
        #: that every command goes through _live_socket's check.
        self._unchecked: socket.socket | None = None
        #: Polls the connection for the server's close (with reconnect on).
        self._poller: select.poll = select.poll()
        #: True while a command that never went out is sent again.
        self._resending: bool = False
        self._timeout = sock.gettimeout()
        self._as_is = adopted and ssl is None and socket_timeout is None
        #: The bound the socket applies to each wait now (to receiving, when
        #: the kernel keeps it); a reserve, or a reply that takes several
        #: reads, changes it until the next command.
        self._bound: float | None = self._timeout
        #: Whether the kernel keeps the bound (a blocking socket with
        #: SO_RCVTIMEO): Python's own timeouts cost a poll() before every
        #: send and receive. Sockets handed in keep the mode they came with.
        self._kernel_bound = (
            _KERNEL_TIMEOUTS
            and not adopted
            and not isinstance(sock, _ssl.SSLSocket)
            and self._timeout is not None
        )
        #: The flags of every send. With the bound kept by the kernel a send
        #: never blocks: a blocking send to a Unix socket waits as long as
        #: the peer reads at all. What a send leaves, poll() waits to send.
        self._send_flags = socket.MSG_DONTWAIT if self._kernel_bound else 0
        self._install(sock)
        if self._setup:
            try:
                self._check_setup(self._pipelined(sock, iter(self._setup), []))
            except BaseException:
                self.close()
                raise

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
        """True while there is no connection: after :meth:`close`, :meth:`interrupt` or a failure.

        With ``reconnect=True`` the next command connects again, unless the
        client was closed by :meth:`close`.
        """
        sock = self._socket
        return sock is None or sock is self._interrupted

    def close(self) -> None:
        """Close the connection. Jobs it had reserved go back to the ready queue.

        This is final, even with ``reconnect=True``: every later command raises
        :class:`~greenstalk.CommandNotSentError`.
        """
        self._reconnect = False
        self._abort("closed by the client")

    def interrupt(self) -> None:
        """Break off the command another thread is waiting on, and close the connection.

        This is the one method that may be called while another thread is
        in a command on this client, typically blocked in a ``reserve()``
        without a timeout. It may be called from any thread, and returns at
        once without waiting for the other thread. It shuts the connection
        down, and the command waiting on it fails promptly:

        * a command already sent (the ``reserve`` waiting for a job) raises
          :class:`~greenstalk.ClientConnectionError` itself, not a subclass:
          as after any lost connection, its effect is unknown; a job the
          ``reserve`` had just reserved goes back to the ready queue with
          the connection, as does every job this connection held;
        * a command not sent yet raises :class:`~greenstalk.CommandNotSentError`,
          and is not sent again, even with ``reconnect=True``;
        * a command whose whole reply had come in returns it, but a job it
          reserved is released with the connection all the same.

        Afterwards the connection is closed (:attr:`closed` is true).
        Without ``reconnect`` every later command raises
        :class:`~greenstalk.CommandNotSentError`, as after a failure. With
        ``reconnect=True`` the next command connects again, with the used
        tube and the watch list, as after a lost connection, and
        :attr:`reconnects` counts it.

        With no command waiting, this only closes the connection, with the
        same effect on the next command; on a closed client it does nothing.
        It never raises. With ``reconnect=True`` a command begun after it
        returns runs as usual, on a new connection: to stop a thread for
        good, first tell it to stop (a flag it checks before each command),
        then interrupt it.
        """
        # Read once: close() may be clearing it in another thread.
        sock: socket.socket | None = getattr(self, "_socket", None)
        if sock is None:
            return
        self._interrupted = sock
        self._unchecked = None  # the next command looks first, in _live_socket
        # Shut down, not closed: closing would leave a thread blocked in a
        # read asleep, and could free its descriptor for reuse under it. The
        # plain socket's method: SSLSocket.shutdown also drops its TLS state,
        # which a thread in a read may still be using.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)

    # -- transport ---------------------------------------------------------
    #
    # Each command gets a deadline: ``bound`` seconds after ``started``, when
    # it began to be sent. The common command takes one send and one receive
    # under the bound already set on the socket, and pays for nothing more;
    # only when the data needs more sends, or the reply more reads, is the
    # time left worked out and the socket's bound cut to it before each.

    def _install(self, sock: socket.socket) -> None:
        """Make ``sock`` the connection, its waits bounded as this client bounds them.

        Raises ClientConnectionError (and closes ``sock``) when the socket refuses.
        """
        self._interrupted = None
        self._socket = sock
        self._unchecked = None if self._reconnect else sock
        self._bound = self._timeout
        if self._kernel_bound:
            try:
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(self._timeout))
            except OSError as error:
                self._fail(error)
        if self._reconnect:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)

    def _abort(self, reason: str) -> None:
        sock = self._socket
        if sock is None:
            return
        self._socket = self._unchecked = None
        self._closed_reason = reason
        with contextlib.suppress(OSError):
            sock.close()

    def _fail(self, error: BaseException) -> NoReturn:
        """Close the connection after ``error`` and raise the matching ClientConnectionError.

        After :meth:`interrupt` that is a plain ClientConnectionError saying so.
        """
        sock = self._socket
        if sock is not None and sock is self._interrupted:
            failure: ClientConnectionError = ClientConnectionError(
                f"{_INTERRUPTED} while the command was under way; connection closed"
            )
        elif isinstance(error, ClientConnectionError):
            self._abort(str(error))
            raise error
        elif isinstance(error, (socket.timeout, BlockingIOError)):
            # BlockingIOError: a kernel-kept bound (SO_RCVTIMEO) ran out.
            failure = ClientTimeoutError(
                "the server did not answer in time (timed out); connection closed"
            )
        else:
            failure = ClientConnectionError(f"connection to the server failed: {error}")
        self._abort(str(failure))
        raise failure from error

    def _live_socket(self) -> socket.socket:
        """The socket to send the next command on.

        With reconnect on, a connection that failed, or that the server has
        closed, is replaced first. Raises CommandNotSentError when there is no
        connection and none may or can be made.
        """
        sock = self._socket
        if sock is not None and sock is self._interrupted:
            self._abort(_INTERRUPTED)
            sock = None
        if not self._reconnect:
            if sock is None:
                raise CommandNotSentError(f"the connection is closed: {self._closed_reason}")
            return sock
        if sock is not None:
            if not self._peer_closed(sock):
                return sock
            self._abort("the server closed the connection")
        return self._reopen()

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether the idle connection ``sock`` is done for.

        It is when the server has closed or reset it, or sent bytes that no
        command asked for. Costs one poll() while there is nothing to read,
        the usual case.
        """
        if not self._poller.poll(0):
            return False
        if not isinstance(sock, _ssl.SSLSocket):
            return True
        # Readable TLS may hold only TLS's own records (session tickets).
        try:
            sock.setblocking(False)
            try:
                sock.recv(1)
            except _ssl.SSLWantReadError:
                return False
            finally:
                sock.settimeout(self._bound)
        except OSError:
            return True
        return True  # the end of the stream, or bytes no command asked for

    def _reopen(self) -> socket.socket:
        """Connect again and restore the used tube and watch list; return the new socket.

        Raises CommandNotSentError, naming the server, when connecting or the
        set-up fails: the command waiting for the connection was not sent.
        """
        address = cast("tuple[str, int] | str", self.address)  # never a socket here
        try:
            sock = _connect(address, self._where, self._timeout, self._connect_timeout, self._ssl)
        except ClientConnectionError as error:
            raise CommandNotSentError(str(error)) from error
        self._reader = ReplyReader()
        try:
            self._install(sock)
            setup = self._setup_requests()
            if setup:
                self._check_setup(self._pipelined(sock, iter(setup), []))
        except (ClientConnectionError, BeanstalkdError) as error:
            self._abort(f"setting up the connection failed: {error}")
            raise CommandNotSentError(
                f"reconnected to {describe_where(self._where)}, "
                f"but setting up the connection failed: {error}"
            ) from error
        self.reconnects += 1
        return sock

    def _unsent(self, sock: socket.socket, error: OSError) -> NoReturn:
        """The first send of a command failed with ``error``: close, raise CommandNotSentError.

        A timeout, or a failure on a TLS connection (which may have sent part
        of a record), is raised as it is: the command may have gone out.
        """
        if isinstance(error, socket.timeout) or isinstance(sock, _ssl.SSLSocket):
            raise error
        if sock is self._interrupted:
            failure = CommandNotSentError(f"{_INTERRUPTED} before the command was sent")
        else:
            failure = CommandNotSentError(
                f"connection to the server failed before the command was sent: {error}"
            )
        self._abort(str(failure))
        raise failure from error

    def _resend(self, error: CommandNotSentError, again: Callable[[], T]) -> T:
        """Call ``again`` once, to send on a new connection what never went out (``error``).

        Without reconnect, when this already is the second try, or after
        :meth:`interrupt`, raises ``error``.
        """
        if not self._reconnect or self._resending or self._interrupted is not None:
            raise error
        self._resending = True
        try:
            return again()
        finally:
            self._resending = False

    def _time_left(self, started: float, bound: float) -> float:
        """Seconds left of ``bound`` since ``started``. Raises socket.timeout when none are."""
        left = started + bound - _monotonic()
        if left <= 0:
            raise socket.timeout("timed out")
        return left

    def _send(
        self, sock: socket.socket, data: bytes, started: float, bound: float | None, first: bool
    ) -> None:
        """Send all of ``data`` within ``bound`` seconds of ``started`` (None: no limit).

        Raises OSError (socket.timeout when time runs out), and
        CommandNotSentError when ``first`` (nothing was sent before ``data``)
        and nothing of ``data`` went out either.
        """
        try:
            sent = sock.send(data, self._send_flags)
        except BlockingIOError:  # the socket buffer is full
            sent = 0
        except OSError as error:
            if first:
                self._unsent(sock, error)
            raise
        if sent != len(data):
            self._send_rest(sock, data, sent, started, bound)

    def _send_rest(
        self, sock: socket.socket, data: bytes, sent: int, started: float, bound: float | None
    ) -> None:
        """Send the rest of ``data`` after its first ``sent`` bytes, by ``bound`` after ``started``.

        None for ``bound`` means no limit. Raises OSError (socket.timeout when
        time runs out).
        """
        view = memoryview(data)
        poller: select.poll | None = None
        while sent < len(data):
            left = None if bound is None else self._time_left(started, bound)
            if not self._kernel_bound:
                if left is not None:
                    self._cut_bound(sock, left)
                sent += sock.send(view[sent:])
                continue
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLOUT)
            if not poller.poll(None if left is None else math.ceil(left * 1000)):
                raise socket.timeout("timed out")
            # BlockingIOError: writable when polled, and full again before this send.
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(view[sent:], socket.MSG_DONTWAIT)

    def _receive(
        self,
        sock: socket.socket,
        replies: list[Reply],
        wanted: int,
        started: float,
        bound: float | None,
        *,
        sent: int,
    ) -> None:
        """Read replies into ``replies`` until it holds ``wanted`` of them.

        Each read waits no later than ``bound`` seconds after ``started``.
        Raises :class:`~greenstalk.ProtocolError` if the server sent more replies than
        the ``sent`` commands asked for: an unasked-for reply would be
        taken as the answer to the next command.
        """
        reader = self._reader
        while len(replies) < wanted:
            if bound is not None:
                self._cut_bound(sock, self._time_left(started, bound))
            data = sock.recv(_RECEIVE_SIZE)
            if not data:
                raise reader.closed_error()
            replies += reader.receive(data)
        if len(replies) > sent:
            raise stray_error(replies, sent)

    def _set_bound(self, sock: socket.socket, bound: float | None) -> None:
        """Make each wait on ``sock`` give up after ``bound`` seconds (None: never).

        Raises OSError when the socket refuses.
        """
        if self._kernel_bound:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(bound))
        else:
            sock.settimeout(bound)
        self._bound = bound

    def _cut_bound(self, sock: socket.socket, left: float) -> None:
        """Make the next wait on ``sock`` end within ``left`` seconds (or a moment after).

        A bound within _SLACK of ``left`` stays: a reply that comes in many
        quick reads then costs one system call, not one a read. Raises OSError.
        """
        bound = self._bound
        if bound is None or abs(bound - left) > _SLACK:
            self._set_bound(sock, left)

    def _run(self, request: Request[T], bound: float | None = _USUAL) -> T:
        """Send one command and return its parsed reply.

        ``bound`` replaces the socket timeout as the limit on the command (a
        reserve's wait; None: no limit).
        """
        data, parse = request
        sock = self._unchecked
        if sock is None:  # no connection, or reconnect on: look first
            sock = self._live_socket()
        if bound == _USUAL:
            bound = self._timeout
        try:
            if bound != self._bound:
                self._set_bound(sock, bound)
            started = _monotonic()
            try:
                sent = sock.send(data, self._send_flags)
            except BlockingIOError:  # the socket buffer is full
                sent = 0
            except OSError as error:
                self._unsent(sock, error)
            if sent != len(data):
                self._send_rest(sock, data, sent, started, bound)
            replies = self._reader.receive(sock.recv(_RECEIVE_SIZE))
            if len(replies) != 1:
                self._receive(sock, replies, 1, started, bound, sent=1)
            if not self._reader.drained:
                raise stray_error(replies, 1)
            return parse(replies[0])
        except CommandNotSentError as error:
            return self._resend(error, lambda: self._run(request, bound))
        except (OSError, ProtocolError) as error:
            self._fail(error)
        except BeanstalkdError as refusal:
            name_command(refusal, data)
            raise
        except BaseException:
            # Interrupted (KeyboardInterrupt, an exception from a signal
            # handler) with the reply unread: it must not answer the next command.
            self._abort("interrupted while waiting for a reply")
            raise

    def _pipeline(self, requests: Iterable[Request[T]]) -> list[T | BeanstalkdError]:
        """Send many commands without waiting for each reply; return their results in order.

        The commands are taken from ``requests`` one batch at a time; each
        batch gets the socket timeout to be sent and answered. A server
        error reply is returned as its exception, in its place.
        """
        sock = self._live_socket()
        pending = iter(requests)
        first: list[Request[T]] = []
        try:
            return self._pipelined(sock, pending, first)
        except CommandNotSentError as error:
            return self._resend(
                error, lambda: self._pipelined(self._live_socket(), chain(first, pending), [])
            )

    def _pipelined(
        self, sock: socket.socket, pending: Iterator[Request[T]], first: list[Request[T]]
    ) -> list[T | BeanstalkdError]:
        """:meth:`_pipeline` on ``sock``: the commands of ``pending``, then their results.

        The first batch is also put in ``first``, to be sent again should it
        never go out (then CommandNotSentError is raised).
        """
        bound = self._timeout
        replies: list[Reply] = []
        parsers: list[Callable[[Reply], T]] = []
        # How many commands were sent, and when, as each batch went out; at
        # most two batches unread.
        sent_after: deque[tuple[int, float]] = deque()
        sent = 0
        started = _monotonic()
        try:
            if self._bound != bound:
                self._set_bound(sock, bound)
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
                if not sent:
                    first.extend(zip(batch, parsers))
                data = b"".join(batch)
                started = _monotonic()
                self._send(sock, data, started, bound, first=not sent)
                sent += len(batch)
                sent_after.append((sent, started))
                if len(sent_after) > 1:
                    self._receive(sock, replies, *sent_after.popleft(), bound, sent=sent)
            self._receive(sock, replies, sent, started, bound, sent=sent)
            if not self._reader.drained:
                raise stray_error(replies, sent)
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
        bound = self._reserve_bound(timeout)
        try:
            if bound != self._bound:
                self._set_bound(sock, bound)
            data = reserve[0] if finish is None else finish[0] + reserve[0]
            started = _monotonic()
            try:
                sent = sock.send(data, self._send_flags)
            except BlockingIOError:  # the socket buffer is full
                sent = 0
            except OSError as error:
                self._unsent(sock, error)
            if sent != len(data):
                self._send_rest(sock, data, sent, started, bound)
            replies = self._reader.receive(sock.recv(_RECEIVE_SIZE))
            if len(replies) != len(requests):
                self._receive(sock, replies, len(requests), started, bound, sent=len(requests))
            if not self._reader.drained:
                raise stray_error(replies, len(requests))
            results: list[Any] = results_of(replies, [parse for _, parse in requests])
        except CommandNotSentError as error:
            return self._resend(error, lambda: self._finish_and_reserve(finish, timeout))
        except (OSError, ProtocolError) as error:
            self._fail(error)
        except BaseException:
            self._abort("interrupted while waiting for a reply")
            raise
        finished = results[0] if finish is not None else None
        reserved = results[-1]
        if finished is not None or type(reserved) is not tuple:  # a refusal
            name_refusals(results, requests)
        return finished, reserved

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
        return self._run(commands.put(cast(Any, body), priority, delay, ttr))

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
        self._run(self._use_request(tube))

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
        return self._job(self._run(request, self._reserve_bound(timeout)))

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
        return self._run(self._watch_request(tube, True))

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list and return how many tubes are watched.

        Raises :class:`~greenstalk.NotIgnoredError` if it is the only watched tube.
        """
        return self._run(self._watch_request(tube, False))

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
    where: Where,
    timeout: float | None,
    connect_timeout: float | None,
    context: _ssl.SSLContext | None,
) -> socket.socket:
    """Open (or adopt) the connection to ``address`` (at ``where``), with TLS when ``context``.

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
        if isinstance(error, OSError):
            timed_out = isinstance(error, socket.timeout)
            raise connect_failure(where, error, timed_out) from error
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
    "TBody",
]
