"""Run a throwaway beanstalkd for tests, on a free port or a temporary Unix socket.

The listening socket is created here, before the server starts, and handed
to ``beanstalkd`` through systemd-style socket activation (``LISTEN_FDS``).
So the address accepts connections the moment this returns: no fixed port,
no race for a free one, and no sleeping until the server is up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from typing import Union

from .client import Client

ServerAddress = Union[tuple[str, int], str]

# bash moves the inherited socket to fd 3, where socket activation expects
# it, and sets LISTEN_PID to its own pid, which exec hands to beanstalkd.
_ACTIVATE = (
    '[ "$0" = 3 ] || eval "exec 3<&$0 $0<&-"; '
    'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
)


class BeanstalkdProcess:
    """A running beanstalkd: its address and process, and ways to stop or signal it."""

    def __init__(self, address: ServerAddress, process: subprocess.Popen[bytes]) -> None:
        #: Where the server listens: ``(host, port)`` or a Unix socket path.
        self.address = address
        #: The server process.
        self.process = process

    def drain(self) -> None:
        """Put the server in drain mode (SIGUSR1): it refuses new jobs from now on.

        Returns once the server reports ``draining: true``.
        """
        # One round trip first: until the server has answered a command it
        # may not have installed its SIGUSR1 handler, and the signal would
        # kill it.
        with Client(self.address) as client:
            client.using()
            self.process.send_signal(signal.SIGUSR1)
            while client.stats()["draining"] != "true":
                pass

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


def find_beanstalkd() -> str:
    """Return the path of the beanstalkd binary. Raises FileNotFoundError if there is none."""
    path = shutil.which("beanstalkd")
    if path is None:
        raise FileNotFoundError("beanstalkd is not installed (Debian: apt-get install beanstalkd)")
    return path


@contextlib.contextmanager
def run_beanstalkd(
    unix: bool = False, args: Sequence[str] = (), address: ServerAddress | None = None
) -> Iterator[BeanstalkdProcess]:
    """Run beanstalkd, listening on ``address``, until the ``with`` block exits.

    Without an ``address``: a free loopback port, or a socket in a new
    temporary directory when ``unix`` is true. ``args`` are extra beanstalkd
    flags, such as ``["-z", "100"]``. Raises FileNotFoundError when
    beanstalkd is not installed, OSError when the address cannot be bound.
    """
    binary = find_beanstalkd()
    with contextlib.ExitStack() as stack:
        if isinstance(address, str) or (address is None and unix):
            if address is None:
                directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="beanstalkd-"))
                address = os.path.join(directory, "socket")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            stack.callback(os.unlink, address)
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # beanstalkd sets these on the listeners it makes; accepted
            # connections inherit them. Without TCP_NODELAY its many small
            # replies to pipelined commands stall on Nagle's algorithm.
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address or ("127.0.0.1", 0))
            address = listener.getsockname()
        with listener:
            listener.listen(1024)
            fd = listener.fileno()
            process = subprocess.Popen(
                ["bash", "-c", _ACTIVATE, str(fd), binary, *args],
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        server = BeanstalkdProcess(address, process)
        try:
            yield server
        finally:
            server.stop()
