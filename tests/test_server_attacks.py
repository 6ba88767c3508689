"""greenstalkd against careless or hostile peers: hang-ups mid-way, quit after large replies,
running out of file descriptors.

The first tests are differential, in the style of test_server_wire.py: beanstalkd 1.12 and
greenstalkd must answer the same bytes. The last runs greenstalkd as a subprocess with a
low descriptor limit.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from collections.abc import Iterator

from greenstalk.server.net import bind_tcp
from greenstalk.testing import spawn_activated

from .test_server_wire import Closed, HalfClose, Poll, Script, Send, assert_same, lines, put


def test_after_a_half_close_every_reserve_times_out_and_what_follows_runs() -> None:
    assert_same(
        Script(
            [
                Send(b"reserve\r\nreserve-with-timeout 100\r\nlist-tube-used\r\n"),
                Poll(b"stats-tube default", b"current-waiting: 1", conn=1),
                HalfClose(),
                lines(b"stats", conn=1),
            ]
        )
    )


def test_quit_after_large_replies_closes_once_they_are_sent() -> None:
    body = b"q" * 1_000_000
    assert_same(
        Script(
            [put(body), Send(b"peek 1\r\n" * 4 + b"quit\r\n", 4), Closed()],
            args=["-z", str(len(body))],
        )
    )


# Descriptors greenstalkd may have: about 8 of them are its own.
_DESCRIPTOR_LIMIT = 32


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_stderr(stream: int, seconds: float) -> bytes:
    """What arrives on ``stream`` within ``seconds``, up to its first newline."""
    deadline = time.monotonic() + seconds
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            break
        chunk = os.read(stream, 4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def _limited_greenstalkd() -> Iterator[tuple[tuple[str, int], int, int]]:
    """greenstalkd with at most 32 descriptors: its address, pid, and stderr's descriptor."""
    listener = bind_tcp("127.0.0.1", 0)
    with listener:
        address: tuple[str, int] = listener.getsockname()
        command = ["bash", "-c", f'ulimit -n {_DESCRIPTOR_LIMIT} && exec "$@"', "bash"]
        process = spawn_activated([*command, sys.executable, "-m", "greenstalk.server"], listener)
    try:
        assert process.stderr is not None
        yield address, process.pid, process.stderr.fileno()
    finally:
        process.terminate()
        try:
            process.wait(10)
        except BaseException:
            process.kill()
            process.wait(10)
            raise
        finally:
            assert process.stderr is not None
            process.stderr.close()


def test_out_of_descriptors_the_server_rests_and_warns_once() -> None:
    """Accepting fails with EMFILE: no busy loop, one warning, and service once one is free."""
    with _limited_greenstalkd() as (address, pid, stderr), contextlib.ExitStack() as stack:
        peers = []
        for _ in range(2 * _DESCRIPTOR_LIMIT):
            peer = stack.enter_context(socket.create_connection(address, timeout=10))
            peers.append(peer)
        warning = _read_stderr(stderr, 10)
        host, port = address
        assert warning.startswith(
            f"greenstalkd: cannot accept connections on {host}:{port}: Too many open files".encode()
        ), warning
        # Peers wait in the backlog meanwhile. A second of that, while no
        # second warning comes, costs the server hardly any CPU.
        used = _cpu_seconds(pid)
        assert _read_stderr(stderr, 1) == b""
        assert _cpu_seconds(pid) - used < 0.25
        # Free the descriptors: the last peer, in the backlog, is served.
        for peer in peers[:-1]:
            peer.close()
        peers[-1].sendall(b"list-tube-used\r\n")
        assert peers[-1].recv(100) == b"USING default\r\n"
