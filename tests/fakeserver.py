"""A scripted fake beanstalkd: one connection, served by a thread, step by step.

The listening socket (loopback TCP on port 0, or a Unix socket) exists and
listens before the thread starts, so a client can connect at once. The
thread accepts one connection, or serves an already connected socket (one
end of :func:`socket.socketpair`), and runs the script::

    with FakeServer([Expect(b"put 0 0 60 1\\r\\nx\\r\\n"), Send(b"DELETED\\r\\n")]) as server:
        client = greenstalk.Client(server.address, socket_timeout=5)

Every wait in the thread is bounded (``step_timeout``), and when the script
ends the server closes the connection: a client waiting for a reply is
always released, so no test can hang on the fake server. A script that did
not go as written (wrong bytes, a step timing out) makes :meth:`check`, and
so leaving the ``with`` block, raise :class:`ScriptError`.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Union

STEP_TIMEOUT = 5.0
"""The longest any step waits, in seconds."""


@dataclass(frozen=True)
class Expect:
    """Read exactly ``len(data)`` bytes from the client; they must equal ``data``."""

    data: bytes


@dataclass(frozen=True)
class Send:
    """Send ``data`` to the client."""

    data: bytes


@dataclass(frozen=True)
class Drip:
    """Send ``data`` one byte at a time, ``interval`` seconds apart: a reply that trickles in."""

    data: bytes
    interval: float


@dataclass(frozen=True)
class ReadSlowly:
    """Read ``total`` bytes, at most ``chunk`` bytes every ``interval`` seconds.

    Ends early, and without error, when the client closes the connection.
    """

    total: int
    chunk: int
    interval: float


@dataclass(frozen=True)
class Close:
    """Close the connection now: gracefully (FIN), or with ``reset`` (RST, TCP only)."""

    reset: bool = False


@dataclass(frozen=True)
class Wait:
    """Do nothing until the test sets ``event`` (a :class:`threading.Event`)."""

    event: threading.Event


@dataclass(frozen=True)
class Silent:
    """Read and discard whatever comes, answer nothing, until the client closes.

    Ends after ``timeout`` seconds (``None``: the step timeout) if the client
    keeps the connection open; that is not an error unless ``until_closed``.
    """

    timeout: float | None = None
    until_closed: bool = False


@dataclass(frozen=True)
class Stall:
    """Neither read nor answer for ``timeout`` seconds (the client's sends back up)."""

    timeout: float


Step = Union[Expect, Send, Drip, ReadSlowly, Close, Wait, Silent, Stall]


class ScriptError(AssertionError):
    """The client did not follow the fake server's script."""


class _Stopped(Exception):
    pass


class _Expired(Exception):
    pass


class FakeServer:
    """Serve one connection by ``script``; use as a context manager.

    ``unix_path``: listen on this Unix socket path instead of loopback TCP.
    ``connection``: serve this connected socket instead of listening.
    """

    def __init__(
        self,
        script: Sequence[Step],
        *,
        unix_path: str | os.PathLike[str] | None = None,
        connection: socket.socket | None = None,
        step_timeout: float = STEP_TIMEOUT,
    ) -> None:
        self.script = list(script)
        self.step_timeout = step_timeout
        self.received = bytearray()
        """Every byte read from the client."""
        self.peer_closed = False
        """True once the client was seen closing its end of the connection."""
        self.completed = False
        """True when every step of the script ran."""
        self.send_error: OSError | None = None
        """The error that ended the script when a Send found the client gone."""
        self.failure: BaseException | None = None
        self._listener: socket.socket | None = None
        self._connection = connection
        self._address: tuple[str, int] | str | None = None
        if connection is None:
            if unix_path is not None:
                self._address = os.fspath(unix_path)
                listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                listener.bind(self._address)
            else:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                listener.bind(("127.0.0.1", 0))
                host, port = listener.getsockname()
                self._address = (host, port)
            listener.listen(1)
            listener.setblocking(False)
            self._listener = listener
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._main, name="fakeserver", daemon=True)

    # -- test side ---------------------------------------------------------

    @property
    def address(self) -> tuple[str, int] | str:
        """Where the server listens. Raises ValueError when it serves a given connection."""
        if self._address is None:
            raise ValueError("this fake server serves a given connection; it does not listen")
        return self._address

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is None:
            self.check()

    def start(self) -> None:
        """Start serving."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, wait for it, and release every socket. Idempotent."""
        self._stop.set()
        for step in self.script:
            if isinstance(step, Wait):
                step.event.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():  # pragma: no cover - a bug in this module
            raise ScriptError("the fake server thread did not stop")
        for sock in (self._listener, self._connection, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._listener is not None and isinstance(self._address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._address)

    def check(self) -> None:
        """Raise :class:`ScriptError` if the script failed."""
        if self.failure is not None:
            raise ScriptError(f"fake server: {self.failure}") from self.failure

    def join(self, timeout: float = 10.0) -> None:
        """Wait until the script has ended (without stopping it), then :meth:`check`."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise ScriptError("the fake server script did not end in time")
        self.check()

    # -- server thread -----------------------------------------------------

    def _main(self) -> None:
        try:
            if self._connection is None:
                assert self._listener is not None
                self._wait(self._listener, write=False, timeout=self.step_timeout)
                connection, _ = self._listener.accept()
                self._connection = connection
            self._connection.setblocking(False)
            for index, step in enumerate(self.script):
                if isinstance(step, Close):
                    # The script ends here, whatever follows.
                    self.completed = index == len(self.script) - 1
                    if step.reset:
                        self._connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    self._connection.close()
                    return
                self._run(self._connection, step)
            self.completed = True
        except _Stopped:
            pass
        except _Expired as error:
            self.failure = error
        except BaseException as error:  # pragma: no cover - reported by check()
            self.failure = error
        finally:
            if self._connection is not None:
                with contextlib.suppress(OSError):
                    self._connection.close()

    def _wait(self, sock: socket.socket, write: bool, timeout: float | None) -> None:
        """Wait until ``sock`` is ready. Raises _Stopped or _Expired."""
        limit = self.step_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            if self._stop.is_set():
                raise _Stopped
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Expired(f"timed out waiting for the client ({limit} s)")
            readable, writable, _ = select.select(
                [self._wake_r] + ([] if write else [sock]), [sock] if write else [], [], remaining
            )
            if self._wake_r in readable:
                raise _Stopped
            if readable or writable:
                return

    def _recv(self, sock: socket.socket, size: int, timeout: float | None) -> bytes:
        self._wait(sock, write=False, timeout=timeout)
        try:
            data = sock.recv(size)
        except ConnectionResetError:
            data = b""
        if not data:
            self.peer_closed = True
        self.received += data
        return data

    def _send(self, sock: socket.socket, data: bytes) -> None:
        """Send all of ``data``; a client gone stops the script (send_error says why)."""
        view = memoryview(data)
        try:
            while view:
                self._wait(sock, write=True, timeout=None)
                view = view[sock.send(view) :]
        except OSError as error:
            self.send_error = error
            raise _Stopped from error

    def _run(
        self, sock: socket.socket, step: Expect | Send | Drip | ReadSlowly | Wait | Silent | Stall
    ) -> None:
        if isinstance(step, Expect):
            got = b""
            while len(got) < len(step.data):
                try:
                    data = self._recv(sock, len(step.data) - len(got), None)
                except _Expired:
                    raise _Expired(f"expected {step.data!r}, got only {got!r}") from None
                if not data:
                    raise _Expired(f"the client closed after {got!r}; expected {step.data!r}")
                got += data
            if got != step.data:
                raise _Expired(f"expected {step.data!r}, got {got!r}")
        elif isinstance(step, Send):
            self._send(sock, step.data)
        elif isinstance(step, Drip):
            for index in range(len(step.data)):
                if index and self._stop.wait(step.interval):
                    raise _Stopped
                self._send(sock, step.data[index : index + 1])
        elif isinstance(step, ReadSlowly):
            left = step.total
            while left > 0:
                if self._stop.wait(step.interval):
                    raise _Stopped
                data = self._recv(sock, min(step.chunk, left), None)
                if not data:
                    return
                left -= len(data)
        elif isinstance(step, Wait):
            # stop() sets the event too, to wake this step up.
            if not step.event.wait(self.step_timeout):
                raise _Expired("the test never set the event of a Wait step")
            if self._stop.is_set():
                raise _Stopped
        elif isinstance(step, Silent):
            timeout = self.step_timeout if step.timeout is None else step.timeout
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                try:
                    if remaining <= 0:
                        raise _Expired(f"the client did not close within {timeout} s")
                    if not self._recv(sock, 65536, remaining):
                        return
                except _Expired:
                    if step.until_closed:
                        raise
                    return
        elif self._stop.wait(step.timeout):
            raise _Stopped
