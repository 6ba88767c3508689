"""greenstalkd's network layer: one thread, one poll loop, non-blocking sockets.

Each accepted connection gets a :class:`~greenstalk.server.connection.Connection`
(the sans-IO protocol) and a :class:`_Client` that reads into it and writes
its replies. :class:`Server` owns the listeners, runs the state's timers
when :meth:`ServerState.next_wakeup` says, and the binlog's deferred fsync.

Why not asyncio: with eight busy connections asyncio spent about 25 µs of
CPU a command (a trivial asyncio echo server as much), a plain epoll loop
about 8 µs, which is what beanstalkd itself spends. The protocol is sans-IO,
so this layer is only the loop.

**Replies wait for the log.** A reply goes out only once the log records
before it are written, and with ``-f 0`` synced: until then it is *held*
(its connection runs nothing more, as if the reply were still being
written). With ``-f 0`` the fsyncs are shared (group commit, as PostgreSQL
and MySQL do it): the records of every connection are written together at
the end of a pass of the loop, and one fsync covers them all, so the
replies of many connections wait for one fsync instead of one each. (An
fsync thread was tried: handing each fsync to it and back cost more than
running it here, and every reply waits for it anyway.) The deferred fsync
of ``-f N`` does run on the log's thread, off the loop.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import os
import select
import socket
import stat
import sys
import threading
import time
from collections import deque
from typing import Callable

from .._address import describe_address
from .binlog import Binlog, BinlogError
from .connection import OUTPUT_BUDGET, Connection, ServerInfo
from .spin import SpinWindow
from .state import SECOND, ServerState

_READ = select.POLLIN
_WRITE = select.POLLOUT
# The peer shut down its sending side (Linux only; elsewhere a half-close
# shows only as readable, and a full hang-up as POLLHUP).
_HANG_UP = getattr(select, "POLLRDHUP", 0)
_GONE = _HANG_UP | select.POLLHUP | select.POLLERR
_INPUT = _READ | _GONE
# While a reserve waits nothing is read, as in beanstalkd: only a hang-up is
# watched for, which ends the reserve. Without POLLRDHUP the connection is
# read to notice a half-close, but only this far.
_WAITING = _HANG_UP or _READ
_MAX_WAITING_INPUT = 1 << 20
_RECEIVE_SIZE = 262144
# After a hang-up, what the peer sent is all in the kernel: read up to this
# many times in a row (16 MiB) to run it all now; any rest on the next poll.
_DRAIN_READS = 64
# A connection blocked by unsent output runs again once the peer has taken
# this much of it.
_RESUME_BELOW = OUTPUT_BUDGET // 2
# accept() errors that mean "out of descriptors or memory": the peer stays in
# the backlog, and the listener rests this many seconds before the next try.
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
_ACCEPT_RETRY = 0.1
# After a failed write of the log, the next try waits this long.
_LOG_RETRY = 0.1
# With -f 0, the next fsync waits at most this long (seconds) for the
# connections the last one released to write again, so that it covers them all.
_GATHER = 0.0003
# How often a server that manages the garbage collector runs a young collection.
_COLLECT_EVERY = 1.0
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
    """The socket side of one connection: reading, writing, back-pressure, hang-ups."""

    __slots__ = (
        "_closing",
        "_held_until",
        "_mask",
        "_output",
        "_queued",
        "_server",
        "connection",
        "fd",
        "sock",
    )

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._server = server
        self._output = bytearray()
        # The peer sent EOF, or quit was read: close once the output is out.
        self._closing = False
        # In the server's pending queue: its input waits until it has run.
        self._queued = False
        # Non-zero while the output waits for the log to be durable this far.
        self._held_until = 0
        self._mask = _READ | _HANG_UP
        self.connection = server.connect(self.write, self._resume_soon)
        server.poller.register(self.fd, self._mask)

    def write(self, data: bytes) -> None:
        """Send a batch of replies, keeping what the socket does not take yet.

        Every reply enters the output here. Past :data:`OUTPUT_BUDGET` unsent
        bytes the connection is blocked: none of its commands run, and
        nothing is read from it, until the peer has taken most of them.
        Replies after log records the log cannot vouch for yet are held
        (see the module docstring).
        """
        log = self._server.binlog
        if log is not None:
            needed = log.position
            if needed > log.durable:
                self._hold(data, needed)
                return
        output = self._output
        if output:
            output += data
        else:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._server.drop(self)
                return
            if sent == len(data):
                return  # the usual case: nothing to watch for that was not watched before
            output += memoryview(data)[sent:]
        if len(output) > OUTPUT_BUDGET:
            self.connection.blocked = True
        self._update_mask()

    def _hold(self, data: bytes, needed: int) -> None:
        """Keep ``data`` unsent, and run nothing more, until the log is durable to ``needed``."""
        self._output += data
        if needed > self._held_until:
            self._held_until = needed
        self.connection.blocked = True
        self._server.held[self] = None
        self._update_mask()

    def release(self) -> None:
        """The log is durable as far as the held output needs: send it, run again."""
        self._held_until = 0
        if self.fd >= 0:
            self._flush()

    def _resume_soon(self) -> None:
        if not self._queued:
            self._queued = True
            self._server.pending.append(self)

    def resume(self) -> None:
        """Run the commands that can run now (see the connection's ``resume_soon``)."""
        self._queued = False
        if not self.connection.closed:
            self.connection.process()
        self._after()

    def _update_mask(self) -> None:
        connection = self.connection
        if self._held_until:
            # Nothing may go out yet, and nothing runs; reading on (a hold is
            # short) saves two epoll_ctl calls a held reply, within a bound.
            mask = _READ | _HANG_UP if connection.buffered <= _MAX_WAITING_INPUT else 0
        elif self._closing or connection.blocked:
            mask = _WRITE if self._output else 0
        else:
            if connection.session.waiting:
                mask = _WAITING if connection.buffered <= _MAX_WAITING_INPUT else 0
            else:
                mask = _READ | _HANG_UP
            if self._output:
                mask |= _WRITE
        if mask != self._mask and self.fd >= 0:
            self._mask = mask
            self._server.poller.modify(self.fd, mask)

    def on_event(self, events: int) -> None:
        """Act on what the poller reported: send pending output, read, notice a hang-up.

        Input waits while the connection is queued to run: it is read after.
        """
        if events & _WRITE:
            self._flush()
        if events & _INPUT and self.fd >= 0 and not self._queued:
            if not events & _GONE:
                self._read(1)
                return
            if self.connection.session.waiting:
                # A hang-up ends a waiting reserve with TIMED_OUT.
                self.connection.peer_closed_write()
            self._read(_DRAIN_READS)

    def start(self) -> None:
        """Read a new connection at once: its first commands, and its hang-up, may be here."""
        self._read(2)

    def _flush(self) -> None:
        if self._held_until:
            return
        try:
            sent = self.sock.send(self._output)
        except BlockingIOError:
            return
        except OSError:
            self._server.drop(self)
            return
        del self._output[:sent]
        connection = self.connection
        if connection.blocked and len(self._output) <= _RESUME_BELOW:
            connection.blocked = False
            self._resume_soon()
        self._after()

    def _read(self, reads: int) -> None:
        """Read what the peer sent and run its commands, reading up to ``reads`` times.

        Reading stops early when nothing is left to read, or the connection
        may not run now. After a hang-up, several reads run what the peer
        sent before leaving and close the connection, before the other
        connections' commands of the same poll run.
        """
        server = self._server
        connection = self.connection
        while True:
            try:
                size = self.sock.recv_into(server.receive_buffer)
            except BlockingIOError:
                break
            except OSError:
                server.drop(self)
                return
            if not size:
                self._closing = True
                break
            connection.receive(server.receive_view[:size])
            reads -= 1
            if (
                not reads
                or connection.closed
                or connection.blocked
                or connection.session.waiting
                or self._queued
            ):
                break
        self._after()

    def _after(self) -> None:
        """Close the connection once it is done with; otherwise watch for what it needs next."""
        if self.fd < 0:
            return
        connection = self.connection
        if connection.closed:
            # After quit, the replies to the commands before it still go out.
            self._closing = True
            if not self._output:
                self._server.drop(self)
                return
        elif self._closing:
            if connection.session.waiting:
                # A reserve run after the peer's EOF times out at once, as in beanstalkd.
                connection.peer_closed_write()
            if not self._output and not connection.blocked and not self._queued:
                self._server.drop(self)
                return
        self._update_mask()

    def close(self) -> None:
        """Close the socket, release the connection's jobs and free its buffers."""
        if self.fd >= 0:
            self._server.poller.unregister(self.fd)
            self.fd = -1
            self.sock.close()
        self._output = bytearray()
        self.connection.close()


class Server:
    """A greenstalkd: its state, listeners, connections and timers, on one thread.

    :meth:`run` serves until :meth:`stop` is called (from any thread, or a
    signal handler). :meth:`call_soon_threadsafe` runs a function on the
    server's thread. ``spin_limit``: the longest the loop polls for events
    before it sleeps, in seconds (see :mod:`.spin`); 0, the default, never
    polls, as a server sharing its process with other threads should not.
    Raises ValueError when it is negative.
    """

    def __init__(
        self,
        state: ServerState,
        info: ServerInfo,
        binlog: Binlog | None = None,
        manage_gc: bool = False,
        spin_limit: float = 0.0,
    ) -> None:
        self.state = state
        self.info = info
        self.binlog = binlog
        self.poller = _Poller()
        # One buffer for every recv: a fresh 256 KiB bytes per call would
        # cost an mmap and munmap each time.
        self.receive_buffer = bytearray(_RECEIVE_SIZE)
        self.receive_view = memoryview(self.receive_buffer)
        self._listeners: dict[int, socket.socket] = {}
        # Listeners left unpolled while descriptors run out, until _accept_again_at.
        self._resting: dict[int, socket.socket] = {}
        self._accept_again_at = 0.0
        self._accept_failing = False
        self.clients: dict[int, _Client] = {}
        #: Connections with commands to run after this poll's events (a reserve
        #: ended, output was taken, or they let others run first).
        self.pending: deque[_Client] = deque()
        self._calls: deque[Callable[[], object]] = deque()
        self._stopping = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self.poller.register(self._wake_reader.fileno(), _READ)
        # Replies wait for records to be written (and with -f 0 synced).
        self._before_reply: Callable[[], None] | None = None
        if binlog is not None:
            self._before_reply = (
                self._sync_alone if binlog.sync_every_reply else self._flush_log
            )
        # Events the current pass of the loop is handling.
        self._events = 0
        self._log_failing = False
        self._log_retry_at = 0.0
        #: Connections whose replies wait for the log, oldest first.
        self.held: dict[_Client, None] = {}
        # How many connections the last fsync released, and until when the
        # next one waits for as many to be held again (see _commit).
        self._last_group = 0
        self._gather_until = 0.0
        #: Why the server stopped by itself (a failed fsync with ``-f 0``), if it did.
        self.failure: BinlogError | None = None
        # A young collection and a freeze every second instead of the
        # collector's own schedule (see run()).
        self._manage_gc = manage_gc
        self._collect_at = 0.0
        #: How long the loop polls before it sleeps (see :mod:`.spin`).
        self.spin = SpinWindow(spin_limit)

    def _flush_log(self) -> None:
        """Write the binlog's new records; on failure warn once and try again later.

        The records stay buffered, and the replies after them held, until a
        write works.
        """
        assert self.binlog is not None
        if self._log_failing and time.monotonic() < self._log_retry_at:
            return
        try:
            self.binlog.flush()
        except BinlogError as error:
            self._log_retry_at = time.monotonic() + _LOG_RETRY
            if not self._log_failing:
                self._log_failing = True
                print(
                    f"greenstalkd: cannot write the log, replies wait until it works: {error}",
                    file=sys.stderr,
                )
        else:
            if self._log_failing:
                self._log_failing = False
                print("greenstalkd: the log is written again", file=sys.stderr)

    def _sync_alone(self) -> None:
        """With ``-f 0``, before a reply: write and fsync now if this connection is alone.

        A lone connection's reply then goes out at once, as in beanstalkd.
        When others are about (other events in this pass, replies held),
        the records wait for the end of the pass and one fsync for all.
        """
        log = self.binlog
        assert log is not None
        if self._events > 1 or self.held or self._log_failing:
            return
        self._flush_log()
        if log.written > log.synced and log.written == log.position:
            try:
                log.sync()
            except BinlogError as error:
                self._fail(error)

    def _commit(self) -> None:
        """Get held replies out: write what is buffered, fsync as ``-f 0`` needs, release.

        One fsync covers every connection held so far. When the last fsync
        released several connections, the next write and fsync wait (at
        most :data:`_GATHER`) until as many are held again: they are about
        to write, and one write and one fsync can answer them all.
        """
        log = self.binlog
        assert log is not None
        if (
            log.sync_every_reply
            and len(self.held) < self._last_group
            and time.monotonic() < self._gather_until
        ):
            return  # the rest of the last group is on its way: one write and fsync for all
        if log.position > log.written:
            self._flush_log()
            if log.position > log.written:
                return
        if log.sync_every_reply and log.written > log.synced:
            try:
                log.sync()
            except BinlogError as error:
                self._fail(error)
                return
        self._release_held()

    def _release_held(self) -> None:
        durable = self.binlog.durable if self.binlog is not None else 0
        done = [client for client in self.held if client._held_until <= durable]
        if done:
            self._last_group = len(done)
            self._gather_until = time.monotonic() + _GATHER
        for client in done:
            del self.held[client]
            client.release()

    def _finish_sync(self) -> None:
        """Take a background fsync's result; with ``-f 0``, a failure stops the server."""
        log = self.binlog
        if log is None or not log.syncing:
            return
        try:
            log.finish_background_sync()
        except BinlogError as error:
            if log.sync_every_reply:
                self._fail(error)
                return
            print(f"greenstalkd: cannot sync the log: {error}", file=sys.stderr)
        self._release_held()

    def _fail(self, error: BinlogError) -> None:
        """An fsync failed with ``-f 0``: stop without acknowledging anything more.

        After a failed fsync the kernel may have dropped the data it could
        not write, and a later fsync can succeed all the same: no held reply
        can be trusted. The clients see their connections close, as if the
        server had crashed, and the log is replayed at the next start.
        """
        print(
            f"greenstalkd: {error}; stopping, so that nothing unsynced is acknowledged",
            file=sys.stderr,
        )
        self.failure = error
        self.held.clear()
        self.stop()

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
            if due is not None and not self.binlog.syncing:
                deadlines.append((due - time.time_ns()) / SECOND)
            if self.held:
                if self._log_failing:
                    deadlines.append(self._log_retry_at - time.monotonic())
                else:
                    deadlines.append(self._gather_until - time.monotonic())
        if self._manage_gc:
            deadlines.append(self._collect_at - time.monotonic())
        if self._resting:
            deadlines.append(self._accept_again_at - time.monotonic())
        if not deadlines:
            return None
        # Never sleep longer than beanstalkd does (an hour): poll() cannot
        # take timeouts of years, and the timers are checked on every wake-up.
        return min(max(min(deadlines), 0) + _TIMER_SLACK, _LONGEST_SLEEP)

    def run(self) -> None:
        """Serve until :meth:`stop`.

        With ``manage_gc``, the cyclic garbage collector does not run on its
        own schedule: with millions of jobs (each a tracked object) its full
        collections would stall the loop for a tenth of a second and more.
        Instead, once a second, a young collection runs and what survives
        it is frozen (never scanned again). The server makes no reference
        cycles (a closed connection is freed by reference counting), so
        nothing is lost that a full collection would find.
        """
        collecting = gc.isenabled()
        if self._manage_gc:
            gc.disable()
            gc.freeze()
            self._collect_at = time.monotonic() + _COLLECT_EVERY
        try:
            self._serve()
            if self.failure is not None:
                # As if the server had crashed: no held reply goes out.
                for client in list(self.clients.values()):
                    self.drop(client)
        finally:
            if self._manage_gc and collecting:
                gc.enable()

    def _serve(self) -> None:
        clients = self.clients
        listeners = self._listeners
        wake_fd = self._wake_reader.fileno()
        pending = self.pending
        while not self._stopping:
            events = self.poller.poll(0) if pending else self._wait()
            self._events = len(events)
            # Hang-ups first: a peer that left (after its last commands have
            # run) is no longer counted when the other commands of this poll
            # run, as a stats sent right after a close expects.
            for fd, mask in events:
                if mask & _GONE:
                    client = clients.get(fd)
                    if client is not None:
                        client.on_event(mask)
            for fd, mask in events:
                client = clients.get(fd)
                if client is not None:
                    if mask == _READ:  # the usual event: commands to run
                        if not client._queued:
                            client._read(1)
                    elif not mask & _GONE:
                        client.on_event(mask)
                elif fd in listeners:
                    self._accept(listeners[fd])
                elif fd == wake_fd:
                    self._run_calls()
            self.state.tick()
            binlog = self.binlog
            if binlog is not None:
                if self.held:
                    self._commit()
                due = binlog.sync_due_at()
                if due is not None and due <= time.time_ns() and not binlog.syncing:
                    self._flush_log()
                    binlog.start_background_sync(self._wake)
            if self._manage_gc and time.monotonic() >= self._collect_at:
                gc.collect(1)
                gc.freeze()
                self._collect_at = time.monotonic() + _COLLECT_EVERY
            if self._resting and time.monotonic() >= self._accept_again_at:
                for fd in self._resting:
                    self.poller.register(fd, _READ)
                self._resting.clear()
            # Connections queued so far run now; one that queues itself again
            # (letting others run first) waits for the next pass.
            for _ in range(len(pending)):
                pending.popleft().resume()

    def _wait(self) -> list[tuple[int, int]]:
        """Wait for the next events: poll for the spin window (never past a timer), then sleep."""
        poll = self.poller.poll
        spin = self.spin
        window = spin.window
        if window:
            events = poll(0)
            if events:
                return events  # they came while the loop was busy
            started = time.monotonic()
            timeout = self._timeout()
            until = started + (window if timeout is None or timeout > window else timeout)
            # No sched_yield between polls: it cost a tenth of the durable
            # put's speed, and a process woken on this CPU preempts the loop.
            while time.monotonic() < until:
                events = poll(0)
                if events:
                    return events  # caught by polling: the window was right
            events = poll(self._timeout())
        elif spin.limit:
            started = time.monotonic()
            events = poll(self._timeout())
        else:
            return poll(self._timeout())
        if events:
            spin.waited(time.monotonic() - started)
        return events

    def _run_calls(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        self._finish_sync()
        while self._calls:
            self._calls.popleft()()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                self._accept_failing = False  # caught up with the backlog
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._rest(listener, error)
                    return
                if error.errno == errno.ECONNABORTED:
                    continue
                raise
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = _Client(self, sock)
            self.clients[client.fd] = client
            client.start()

    def _rest(self, listener: socket.socket, error: OSError) -> None:
        """Out of descriptors: stop polling ``listener`` for a while.

        It would be readable again at once, and every accept would fail, at
        full CPU. The peers wait in the backlog meanwhile; a connection that
        closes ends the rest early. Warns once, until the backlog is emptied.
        """
        fd = listener.fileno()
        self.poller.unregister(fd)
        self._resting[fd] = listener
        self._accept_again_at = time.monotonic() + _ACCEPT_RETRY
        if not self._accept_failing:
            self._accept_failing = True
            print(
                f"greenstalkd: cannot accept connections on {describe_socket(listener)}:"
                f" {error.strerror}; retrying every {_ACCEPT_RETRY:g} s",
                file=sys.stderr,
            )

    def drop(self, client: _Client) -> None:
        """Close a client connection (again: nothing happens)."""
        if client.fd < 0:
            return
        del self.clients[client.fd]
        self.held.pop(client, None)
        client.close()
        if self._resting:
            self._accept_again_at = 0.0  # a descriptor is free: accept again now

    def close(self) -> None:
        """Close the listeners and every connection."""
        for client in list(self.clients.values()):
            self.drop(client)
        for fd, listener in self._listeners.items():
            if fd not in self._resting:
                self.poller.unregister(fd)
            listener.close()
        self._listeners.clear()
        self._resting.clear()
        self.poller.unregister(self._wake_reader.fileno())
        self._wake_reader.close()
        self._wake_writer.close()
        self.poller.close()


def describe_socket(sock: socket.socket) -> str:
    """Where ``sock`` listens, as people write it: ``host:port`` or ``unix:PATH``."""
    address = sock.getsockname()
    if isinstance(address, tuple):
        return describe_address((str(address[0]), int(address[1])))
    if isinstance(address, bytes):
        address = address.decode(errors="replace")
    return describe_address(address)


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
