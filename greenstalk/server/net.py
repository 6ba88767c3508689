"""greenstalkd's network layer: one thread, one poll loop, non-blocking sockets.

Each accepted connection gets a :class:`~greenstalk.server.connection.Connection`
(the sans-IO protocol) and a :class:`_Client` that reads into it and writes
its replies. :class:`Server` owns the listeners, runs the state's timers
when :meth:`ServerState.next_wakeup` says, and the binlog's deferred fsync.

Why not asyncio: with eight busy connections asyncio spent about 25 µs of
CPU a command (a trivial asyncio echo server as much), a plain epoll loop
about 8 µs, which is what beanstalkd itself spends. The protocol is sans-IO,
so this layer is only the loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import stat
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable

from .connection import Connection, ServerInfo
from .state import SECOND, ServerState

if TYPE_CHECKING:
    from .binlog import Binlog

_READ = select.POLLIN
_WRITE = select.POLLOUT
_HANG_UP = getattr(select, "POLLRDHUP", 0x2000)
_RECEIVE_SIZE = 262144
# Stop reading from a peer whose unprocessed input exceeds this: beanstalkd
# reads nothing while a reserve waits; we keep reading (to notice a hang-up)
# but only this far. The same bound applies to replies the peer leaves unread.
_MAX_BUFFERED = 1 << 20
# Wake up this much after a timer's moment rather than a hair before it.
_TIMER_SLACK = 0.0005
_LONGEST_SLEEP = 3600.0


class _Poller:
    """epoll where there is one (Linux), poll elsewhere; timeouts in seconds."""

    def __init__(self) -> None:
        epoll = getattr(select, "epoll", None)
        self._epoll = epoll() if epoll is not None else None
        self._poll = select.poll() if self._epoll is None else None

    def register(self, fd: int, mask: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, mask)
        else:
            assert self._poll is not None
            self._poll.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        if self._epoll is not None:
            self._epoll.modify(fd, mask)
        else:
            assert self._poll is not None
            self._poll.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.unregister(fd)
        else:
            assert self._poll is not None
            self._poll.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if self._epoll is not None:
            events: list[tuple[int, int]] = self._epoll.poll(-1 if timeout is None else timeout)
            return events
        assert self._poll is not None
        return self._poll.poll(None if timeout is None else timeout * 1000)

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class _Client:
    """The socket side of one connection: reading, writing, back-pressure."""

    __slots__ = ("_closing", "_mask", "_output", "_server", "connection", "fd", "sock")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._server = server
        self._output = bytearray()
        self._closing = False
        self._mask = _READ | _HANG_UP
        self.connection = server.connect(self.write, self._resume_soon)
        server.poller.register(self.fd, self._mask)

    def write(self, data: bytes) -> None:
        """Send ``data``, keeping what the socket does not take yet."""
        if self._output:
            self._output += data
        else:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._server.drop(self)
                return
            if sent < len(data):
                self._output += data[sent:]
        # All sent (the usual case): nothing to watch for that was not watched before.
        if self._output:
            if len(self._output) > _MAX_BUFFERED:
                self.connection.blocked = True
            self._update_mask()

    def _resume_soon(self) -> None:
        self._server.pending.append(self)

    def resume(self) -> None:
        """Run the commands that arrived while a reserve waited."""
        if self.connection.closed:
            return
        self.connection.process()
        self._after()

    def _update_mask(self) -> None:
        if self._closing:
            mask = _WRITE if self._output else 0
        elif self._output:
            # Replies pile up unread: stop reading, as beanstalkd does.
            mask = _WRITE if self.connection.blocked else _WRITE | _READ | _HANG_UP
        elif self.connection.waiting and self.connection.buffered > _MAX_BUFFERED:
            mask = 0
        else:
            mask = _READ | _HANG_UP
        if mask != self._mask and self.fd >= 0:
            self._mask = mask
            self._server.poller.modify(self.fd, mask)

    def on_event(self, events: int) -> None:
        if events & _WRITE:
            self._flush()
        if events & (_READ | _HANG_UP | select.POLLHUP | select.POLLERR) and self.fd >= 0:
            self._read()

    def _flush(self) -> None:
        try:
            sent = self.sock.send(self._output)
        except BlockingIOError:
            return
        except OSError:
            self._server.drop(self)
            return
        del self._output[:sent]
        if not self._output and self._closing:
            self._server.drop(self)
            return
        if self.connection.blocked and len(self._output) <= _MAX_BUFFERED // 2:
            self.connection.blocked = False
            self._resume_soon()
        self._update_mask()

    def _read(self) -> None:
        server = self._server
        try:
            size = self.sock.recv_into(server.receive_buffer)
        except BlockingIOError:
            return
        except OSError:
            server.drop(self)
            return
        connection = self.connection
        if size:
            connection.receive(server.receive_view[:size])
            self._after()
            return
        # The peer shut down its side: a waiting reserve ends, then we close.
        connection.peer_closed_write()
        if not connection.closed:
            connection.process()
        self._closing = True
        if self._output:
            self._update_mask()
        else:
            self._server.drop(self)

    def _after(self) -> None:
        if self.connection.closed:
            self._server.drop(self)
        else:
            self._update_mask()

    def close(self) -> None:
        """Close the socket and release the connection's jobs."""
        if self.fd >= 0:
            self._server.poller.unregister(self.fd)
            self.fd = -1
            self.sock.close()
        if not self.connection.closed:
            self.connection.close()


class Server:
    """A greenstalkd: its state, listeners, connections and timers, on one thread.

    :meth:`run` serves until :meth:`stop` is called (from any thread, or a
    signal handler). :meth:`call_soon_threadsafe` runs a function on the
    server's thread.
    """

    def __init__(self, state: ServerState, info: ServerInfo, binlog: Binlog | None = None) -> None:
        self.state = state
        self.info = info
        self.binlog = binlog
        self.poller = _Poller()
        # One buffer for every recv: a fresh 256 KiB bytes per call would
        # cost an mmap and munmap each time.
        self.receive_buffer = bytearray(_RECEIVE_SIZE)
        self.receive_view = memoryview(self.receive_buffer)
        self._listeners: dict[int, socket.socket] = {}
        self.clients: dict[int, _Client] = {}
        #: Connections whose waiting reserve ended: their buffered commands run next.
        self.pending: deque[_Client] = deque()
        self._calls: deque[Callable[[], object]] = deque()
        self._stopping = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self.poller.register(self._wake_reader.fileno(), _READ)
        self._before_reply: Callable[[], None] = self._flush_log if binlog else _nothing
        self._log_failing = False

    def _flush_log(self) -> None:
        """Write the binlog's new records; on failure warn once and keep serving.

        The records stay buffered and go out with the next flush that works.
        """
        from .binlog import BinlogError

        assert self.binlog is not None
        try:
            self.binlog.flush()
        except BinlogError as error:
            if not self._log_failing:
                self._log_failing = True
                print(f"greenstalkd: cannot write the binlog, retrying: {error}", file=sys.stderr)
        else:
            self._log_failing = False

    def connect(self, send: Callable[[bytes], None], resume_soon: Callable[[], None]) -> Connection:
        """A new client connection."""
        return Connection(self.state, self.info, send, resume_soon, self._before_reply)

    def listen(self, sock: socket.socket) -> None:
        """Accept connections on a bound, listening socket."""
        sock.setblocking(False)
        self._listeners[sock.fileno()] = sock
        self.poller.register(sock.fileno(), _READ)

    def stop(self) -> None:
        """Make :meth:`run` return soon. Safe from other threads and signal handlers."""
        self._stopping = True
        self._wake()

    def wakeup_fd(self) -> int:
        """A descriptor whose every write wakes :meth:`run` (for :func:`signal.set_wakeup_fd`)."""
        return self._wake_writer.fileno()

    def call_soon_threadsafe(self, function: Callable[[], object]) -> None:
        """Run ``function`` on the server's thread, soon."""
        self._calls.append(function)
        self._wake()

    def _wake(self) -> None:
        # A full pipe means a wake-up is already on its way.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def _timeout(self) -> float | None:
        deadlines = []
        wakeup = self.state.next_wakeup()
        if wakeup is not None:
            deadlines.append((wakeup - self.state.clock()) / SECOND)
        if self.binlog is not None:
            due = self.binlog.sync_due_at()
            if due is not None:
                deadlines.append((due - time.time_ns()) / SECOND)
        if not deadlines:
            return None
        # Never sleep longer than beanstalkd does (an hour): poll() cannot
        # take timeouts of years, and the timers are checked on every wake-up.
        return min(max(min(deadlines), 0) + _TIMER_SLACK, _LONGEST_SLEEP)

    def run(self) -> None:
        """Serve until :meth:`stop`."""
        clients = self.clients
        listeners = self._listeners
        wake_fd = self._wake_reader.fileno()
        pending = self.pending
        while not self._stopping:
            events = self.poller.poll(0 if pending else self._timeout())
            for fd, mask in events:
                client = clients.get(fd)
                if client is not None:
                    client.on_event(mask)
                elif fd in listeners:
                    self._accept(listeners[fd])
                elif fd == wake_fd:
                    self._run_calls()
            self.state.tick()
            binlog = self.binlog
            if binlog is not None:
                due = binlog.sync_due_at()
                if due is not None and due <= time.time_ns():
                    self._flush_log()
                    self._sync_log()
            # Reserves that ended above (their replies are sent) may have
            # commands queued behind them.
            while pending:
                pending.popleft().resume()

    def _sync_log(self) -> None:
        from .binlog import BinlogError

        assert self.binlog is not None
        try:
            self.binlog.sync()
        except BinlogError as error:
            print(f"greenstalkd: cannot sync the binlog: {error}", file=sys.stderr)

    def _run_calls(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._calls:
            self._calls.popleft()()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return  # out of descriptors: leave the peer in the backlog
                if error.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(self, sock)
            self.clients[client.fd] = client

    def drop(self, client: _Client) -> None:
        """Close a client connection."""
        self.clients.pop(client.fd, None)
        client.close()

    def close(self) -> None:
        """Close the listeners and every connection."""
        for client in list(self.clients.values()):
            self.drop(client)
        for fd, listener in self._listeners.items():
            self.poller.unregister(fd)
            listener.close()
        self._listeners.clear()
        self.poller.unregister(self._wake_reader.fileno())
        self._wake_reader.close()
        self._wake_writer.close()
        self.poller.close()


def _nothing() -> None:
    pass


def run_in_thread(server: Server) -> threading.Thread:
    """Start ``server.run()`` in a daemon thread."""
    thread = threading.Thread(target=server.run, name="greenstalkd", daemon=True)
    thread.start()
    return thread


def bind_tcp(host: str | None, port: int) -> socket.socket:
    """A listening TCP socket with beanstalkd's options. ``host`` None means every interface."""
    if host is None:
        family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address: tuple[str, int] = ("::" if family == socket.AF_INET6 else "", port)
    else:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = info[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        address = (str(sockaddr[0]), int(sockaddr[1]))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def bind_unix(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, replacing a stale socket file there.

    Raises OSError when ``path`` exists and is not a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock
