"""Run a throwaway server for tests, on a free port or a temporary Unix socket.

:func:`run_server` starts greenstalkd (this package's own server, in a
thread of the calling process or as a subprocess) or the real beanstalkd.
The listening socket is created here, before the server starts, and handed
to it (to a subprocess through systemd-style socket activation,
``LISTEN_FDS``), so the address accepts connections the moment the context
manager yields: no fixed port, no race for a free one, no sleeping until
the server is up.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Union

from ._address import describe_address
from .client import Client

ServerAddress = Union[tuple[str, int], str]

# bash moves the inherited socket to fd 3, where socket activation expects
# it, and sets LISTEN_PID to its own pid, which exec hands to beanstalkd.
_ACTIVATE = (
    '[ "$0" = 3 ] || eval "exec 3<&$0 $0<&-"; '
    'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
)

# Seconds a server gets to stop (or to enter drain mode) before it is killed or reported stuck.
_STOP_GRACE = 10


SERVERS = ("greenstalkd", "beanstalkd")
"""The servers :func:`run_server` can start."""


class ServerProcess:
    """A running server: its address, and ways to stop it or put it in drain mode.

    ``process`` is the server's :class:`subprocess.Popen`, or None for a
    greenstalkd running in a thread of this process.
    """

    def __init__(
        self,
        address: ServerAddress,
        process: subprocess.Popen[Any] | None,
        kind: str = "beanstalkd",
        thread: _ServerThread | None = None,
    ) -> None:
        #: Where the server listens: ``(host, port)`` or a Unix socket path.
        self.address = address
        #: The server process, or None when greenstalkd runs in this process.
        self.process = process
        #: ``"beanstalkd"`` or ``"greenstalkd"``.
        self.kind = kind
        self._thread = thread

    def __repr__(self) -> str:
        address = self.address
        at = describe_address(address if isinstance(address, str) else (address[0], address[1]))
        where = "in-process" if self.process is None else f"pid {self.process.pid}"
        return f"<ServerProcess {self.kind} at {at}, {where}>"

    def drain(self) -> None:
        """Put the server in drain mode (SIGUSR1): it refuses new jobs from now on.

        Returns once the server reports ``draining: true``. Raises
        RuntimeError if it does not within 10 seconds.
        """
        if self._thread is not None:
            self._thread.call(lambda server: server.state.enter_drain_mode())
            return
        assert self.process is not None
        # One round trip first: until the server has answered a command it
        # may not have installed its SIGUSR1 handler, and the signal would
        # kill it.
        with Client(self.address, socket_timeout=_STOP_GRACE) as client:
            client.using()
            self.process.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + _STOP_GRACE
            while not client.stats()["draining"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self!r} did not enter drain mode")

    def stop(self) -> None:
        """Stop the server (SIGTERM for a process) and wait until it has exited.

        A process still running 10 seconds after SIGTERM (one that inherited
        SIGTERM as ignored, say) is killed. Raises RuntimeError if an
        in-process server's thread does not end within 10 seconds.
        """
        if self._thread is not None:
            self._thread.stop()
            return
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


BeanstalkdProcess = ServerProcess
"""The name :class:`ServerProcess` had when only beanstalkd could be run."""


class _ServerThread:
    """greenstalkd serving from a daemon thread of this process."""

    def __init__(self, sock: socket.socket, args: Sequence[str]) -> None:
        from .server.cli import Options, UsageError, make_state, parse_args
        from .server.net import Server, run_in_thread

        options = parse_args(args)
        if not isinstance(options, Options):
            raise UsageError(f"not a server option: {list(args)}")
        state, info, self._binlog = make_state(options)
        self.server = Server(state, info, self._binlog)
        self.server.listen(sock)
        self._thread = run_in_thread(self.server)

    def call(self, function: Callable[[Any], object]) -> None:
        """Run ``function(server)`` on the server's thread and wait for it."""
        done: concurrent.futures.Future[object] = concurrent.futures.Future()
        self.server.call_soon_threadsafe(lambda: done.set_result(function(self.server)))
        done.result()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.stop()
            self._thread.join(_STOP_GRACE)
            if self._thread.is_alive():
                raise RuntimeError("greenstalkd's thread did not stop")
            self.server.close()
            if self._binlog is not None:
                self._binlog.close()


def find_beanstalkd() -> str:
    """Return the path of the beanstalkd binary. Raises FileNotFoundError if there is none."""
    path = shutil.which("beanstalkd")
    if path is None:
        raise FileNotFoundError("beanstalkd is not installed (Debian: apt-get install beanstalkd)")
    return path


def _listen(
    address: ServerAddress | None, unix: bool, stack: contextlib.ExitStack
) -> socket.socket:
    # The listeners greenstalkd makes for itself, with beanstalkd's options:
    # accepted connections inherit TCP_NODELAY, without which beanstalkd's
    # many small replies to pipelined commands stall on Nagle's algorithm.
    from .server.net import bind_tcp, bind_unix

    if isinstance(address, str) or (address is None and unix):
        if address is None:
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="greenstalk-"))
            address = os.path.join(directory, "socket")
        listener = bind_unix(address)
        stack.callback(os.unlink, address)
        return listener
    host, port = address or ("127.0.0.1", 0)
    return bind_tcp(host, port)


def spawn_activated(command: Sequence[str], listener: socket.socket) -> subprocess.Popen[bytes]:
    """Start a server ``command``, handing it ``listener`` by socket activation.

    The socket listens before the command starts, so a client can connect at
    once: its connection waits in the backlog until the server takes it.
    The process's stderr is a pipe; :meth:`ServerProcess.stop` closes it.
    """
    fd = listener.fileno()
    return subprocess.Popen(
        ["bash", "-c", _ACTIVATE, str(fd), *command],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@contextlib.contextmanager
def run_server(
    server: str = "greenstalkd",
    unix: bool = False,
    args: Sequence[str] = (),
    address: ServerAddress | None = None,
    in_process: bool = True,
) -> Iterator[ServerProcess]:
    """Run a server, listening on ``address``, until the ``with`` block exits.

    ``server`` is ``"greenstalkd"`` or ``"beanstalkd"``. Without an
    ``address``: a free loopback port, or a socket in a new temporary
    directory when ``unix`` is true. ``args`` are extra flags in
    beanstalkd's syntax, such as ``["-z", "100"]``. greenstalkd runs in a
    thread of this process unless ``in_process`` is false; beanstalkd is
    always a subprocess.

    Raises FileNotFoundError when beanstalkd is asked for and not installed,
    OSError when the address cannot be bound, ValueError for an unknown
    ``server``.
    """
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, not {server!r}")
    if server == "beanstalkd":
        command = [find_beanstalkd(), *args]
    else:
        command = [sys.executable, "-m", "greenstalk.server", *args]
    with contextlib.ExitStack() as stack:
        listener = _listen(address, unix, stack)
        bound: ServerAddress = listener.getsockname()
        if server == "greenstalkd" and in_process:
            running = ServerProcess(bound, None, server, _ServerThread(listener, args))
        else:
            with listener:
                process = spawn_activated(command, listener)
            running = ServerProcess(bound, process, server)
        try:
            yield running
        finally:
            running.stop()


def run_beanstalkd(
    unix: bool = False, args: Sequence[str] = (), address: ServerAddress | None = None
) -> contextlib.AbstractContextManager[ServerProcess]:
    """Run the real beanstalkd: :func:`run_server` with ``server="beanstalkd"``."""
    return run_server("beanstalkd", unix, args, address)


def run_greenstalkd(
    unix: bool = False,
    args: Sequence[str] = (),
    address: ServerAddress | None = None,
    in_process: bool = True,
) -> contextlib.AbstractContextManager[ServerProcess]:
    """Run greenstalkd: :func:`run_server` with ``server="greenstalkd"``."""
    return run_server("greenstalkd", unix, args, address, in_process)
