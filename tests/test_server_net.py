"""greenstalkd's network layer: flow control, hang-ups, the poll fallback, log failures."""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenstalk
from greenstalk.server.binlog import BinlogError
from greenstalk.server.cli import Options, make_state
from greenstalk.server.net import Server, bind_tcp, bind_unix, run_in_thread
from greenstalk.testing import run_greenstalkd


@contextlib.contextmanager
def greenstalkd(options: Options | None = None) -> Iterator[Server]:
    state, info, binlog = make_state(options or Options())
    server = Server(state, info, binlog)
    server.listen(bind_tcp("127.0.0.1", 0))
    thread = run_in_thread(server)
    try:
        yield server
    finally:
        server.stop()
        thread.join()
        server.close()
        if binlog is not None:
            binlog.close()


def address_of(server: Server) -> tuple[str, int]:
    (sock,) = server._listeners.values()
    host, port = sock.getsockname()[:2]
    return host, port


def raw(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def test_a_peer_that_does_not_read_its_replies_is_not_read_either() -> None:
    """Replies pile up; the server stops running that peer's commands, then catches up."""
    body = b"x" * 60000
    count = 2000  # 120 MB of replies, far more than socket buffers hold
    with greenstalkd() as server, raw(address_of(server)) as sock:
        sock.sendall(b"put 0 0 60 %d\r\n%b\r\n" % (len(body), body))
        assert read_exactly(sock, 12) == b"INSERTED 1\r\n"
        sock.sendall(b"peek 1\r\n" * count)
        with greenstalk.Client(address_of(server)) as observer:
            peeks = -1
            while peeks != observer.stats()["cmd-peek"]:
                peeks = observer.stats()["cmd-peek"]
                time.sleep(0.2)
            assert peeks < count
            reply = b"FOUND 1 60000\r\n" + body + b"\r\n"
            received = 0
            while received < count * len(reply):
                received += len(sock.recv(1 << 20))
            assert received == count * len(reply)
            assert observer.stats()["cmd-peek"] == count


def test_half_close_while_waiting(tmp_path: Path) -> None:
    with greenstalkd() as server, raw(address_of(server)) as sock:
        sock.sendall(b"reserve\r\n")
        with greenstalk.Client(address_of(server)) as client:
            while client.stats()["current-waiting"] != 1:
                pass
            sock.shutdown(socket.SHUT_WR)
            assert read_exactly(sock, 11) == b"TIMED_OUT\r\n"
            assert sock.recv(10) == b""
            while client.stats()["current-connections"] != 1:
                pass


def test_a_closed_peer_is_forgotten_while_replies_are_pending() -> None:
    body = b"y" * 60000
    with greenstalkd() as server:
        with raw(address_of(server)) as sock:
            sock.sendall(b"put 0 0 60 %d\r\n%b\r\n" % (len(body), body))
            read_exactly(sock, 12)
            sock.sendall(b"peek 1\r\n" * 100)
            # Linger on, for 0 seconds: close() resets the connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The reset peer's connection goes away, and the server carries on.
        with greenstalk.Client(address_of(server)) as client:
            while client.stats()["current-connections"] != 1:
                pass
            assert client.peek(1).body == body


def test_eof_with_unanswered_replies_still_delivers_them() -> None:
    with greenstalkd() as server, raw(address_of(server)) as sock:
        sock.sendall(b"use a\r\nlist-tube-used\r\n")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(100):
            data += chunk
        assert data == b"USING a\r\nUSING a\r\n"


def test_the_poll_fallback_serves_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where select.epoll is missing (macOS), plain poll does the job."""
    monkeypatch.delattr(select, "epoll")
    with run_greenstalkd() as server, greenstalk.Client(server.address) as client:
        job_id = client.put(b"x", delay=1)
        started = time.monotonic()
        assert client.reserve(timeout=5).id == job_id
        assert 0.9 < time.monotonic() - started < 3
        with pytest.raises(greenstalk.TimedOutError):
            client.reserve(timeout=0)


def test_a_failing_log_write_warns_and_is_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = Options(binlog_dir=str(tmp_path), fsync_ms=0)
    with greenstalkd(options) as server, greenstalk.Client(address_of(server)) as client:
        binlog = server.binlog
        assert binlog is not None
        real_flush = binlog.flush
        failures = [BinlogError("disk full")] * 2

        def flush() -> None:
            if failures:
                raise failures.pop()
            real_flush()

        binlog.flush = flush  # type: ignore[method-assign]
        assert client.put(b"first") == 1
        assert client.put(b"second") == 2
        assert client.put(b"third") == 3
    assert capsys.readouterr().err.count("cannot write the binlog") == 1
    with (
        run_greenstalkd(args=["-b", str(tmp_path)]) as restarted,
        greenstalk.Client(restarted.address) as client,
    ):
        assert [client.peek(i).body for i in (1, 2, 3)] == [b"first", b"second", b"third"]


def test_bind_unix_replaces_a_stale_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    bind_unix(path).close()
    bind_unix(path).close()
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="not a socket"):
        bind_unix(str(tmp_path / "file"))


def test_bind_tcp_on_every_interface() -> None:
    sock = bind_tcp(None, 0)
    with sock:
        assert sock.getsockname()[1] > 0
    with pytest.raises(OSError, match="in use"):
        bind_tcp("127.0.0.1", address_of_taken_port())


def address_of_taken_port() -> int:
    # A port that is listening already cannot be bound again.
    global _taken
    _taken = bind_tcp("127.0.0.1", 0)
    return int(_taken.getsockname()[1])


_taken: socket.socket | None = None


@pytest.fixture(autouse=True)
def _close_taken() -> Iterator[None]:
    yield
    global _taken
    if _taken is not None:
        _taken.close()
        _taken = None


def test_every_ttr_runs_out_on_time_with_many_holders() -> None:
    """Thirty connections hold a job each while thirty others wait for one.

    beanstalkd 1.12 loses most of these TTRs (docs/server.rst); greenstalkd
    must hand every job on about a second after it was reserved.
    """
    pairs = 30
    with greenstalkd() as server, contextlib.ExitStack() as stack:
        address = address_of(server)
        holders, waiters = [], []
        for number in range(pairs):
            tube = f"t{number}"
            holder = stack.enter_context(greenstalk.Client(address, use=tube, watch=tube))
            holder.put(b"x", ttr=1)
            holders.append(holder.reserve(timeout=0).id)
            waiter = raw(address)
            stack.callback(waiter.close)
            waiter.sendall(b"watch %b\r\nreserve-with-timeout 4\r\n" % tube.encode())
            waiters.append(waiter)
        started = time.monotonic()
        for job_id, waiter in zip(holders, waiters):
            expected = b"WATCHING 2\r\nRESERVED %d 1\r\nx\r\n" % job_id
            assert read_exactly(waiter, len(expected)) == expected
        assert time.monotonic() - started < 3
