"""Persistence with ``-b``: what survives ``kill -9`` and a restart, for both servers.

The rules both servers share run against each; where greenstalkd does
better than beanstalkd 1.12 (a release's new priority, pauses, jobs at the
size limit), the test runs against greenstalkd only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import greenstalk
from greenstalk.testing import ServerProcess, run_server

from .conftest import SERVERS_UNDER_TEST


@contextlib.contextmanager
def server_with_log(kind: str, directory: Path, *flags: str) -> Iterator[ServerProcess]:
    """A server process persisting to ``directory``."""
    args = ["-b", str(directory), *flags]
    with run_server(kind, args=args, in_process=False) as server:
        yield server


def kill_hard(server: ServerProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()


def client_of(server: ServerProcess) -> greenstalk.Client[bytes]:
    return greenstalk.Client(server.address, socket_timeout=10)


@pytest.fixture(params=SERVERS_UNDER_TEST)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def greenstalkd_only() -> str:
    if "greenstalkd" not in SERVERS_UNDER_TEST:
        pytest.skip("greenstalkd is not under test")
    return "greenstalkd"


def test_every_state_survives_kill_9(kind: str, tmp_path: Path) -> None:
    with server_with_log(kind, tmp_path, "-f", "0") as server, client_of(server) as client:
        ready = client.put(b"ready", priority=5)
        deleted = client.put(b"deleted")
        client.delete(deleted)
        client.use("other")
        delayed = client.put(b"delayed", delay=3600, ttr=7)
        buried = client.put(b"buried")
        client.watch("other")
        reserved = client.reserve_job(buried)
        client.bury(reserved, priority=9)
        held = client.put(b"held", priority=3)
        assert client.reserve_job(held).id == held
        kill_hard(server)
    with server_with_log(kind, tmp_path) as server, client_of(server) as client:
        assert client.stats_job(ready)["state"] == "ready"
        assert client.peek(ready).body == b"ready"
        with pytest.raises(greenstalk.NotFoundError):
            client.peek(deleted)
        stats = client.stats_job(delayed)
        assert (stats["state"], stats["tube"], stats["ttr"]) == ("delayed", "other", 7)
        assert 3590 < stats["time-left"] <= 3600
        stats = client.stats_job(buried)
        # (beanstalkd 1.12 counts the bury twice after a replay.)
        assert (stats["state"], stats["pri"]) == ("buried", 9)
        # A reserve is not logged: the job comes back ready.
        assert client.stats_job(held)["state"] == "ready"
        assert client.put(b"next") > held


def test_ids_continue_above_the_highest_seen(kind: str, tmp_path: Path) -> None:
    with server_with_log(kind, tmp_path, "-f", "0") as server, client_of(server) as client:
        for body in (b"1", b"2"):
            client.delete(client.put(body))
        kill_hard(server)
    with server_with_log(kind, tmp_path) as server, client_of(server) as client:
        assert client.put(b"3") == 3


PRODUCER = """
import sys
import greenstalk
with greenstalk.Client(('127.0.0.1', int(sys.argv[1]))) as client:
    while True:
        print(client.put(b'job'), flush=True)
"""


def test_every_acknowledged_put_survives_kill_9_mid_stream(kind: str, tmp_path: Path) -> None:
    """A producer puts as fast as it can; the server is killed; every INSERTED job is back."""
    (tmp_path / "log").mkdir()
    with server_with_log(kind, tmp_path / "log", "-f", "0") as server:
        assert isinstance(server.address, tuple)
        producer = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, str(server.address[1])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert producer.stdout is not None
        with producer.stdout:
            acknowledged = [int(producer.stdout.readline()) for _ in range(300)]
            kill_hard(server)
            acknowledged += [int(line) for line in producer.stdout.read().split()]
        producer.wait()
    with server_with_log(kind, tmp_path / "log") as server, client_of(server) as client:
        assert client.stats_tube("default")["current-jobs-ready"] >= len(acknowledged)
        for job_id in acknowledged:
            assert client.peek(job_id).id == job_id


def test_a_clean_stop_keeps_everything_even_without_fsync(kind: str, tmp_path: Path) -> None:
    with server_with_log(kind, tmp_path, "-F") as server, client_of(server) as client:
        ids = client.put_many([b"%d" % i for i in range(500)])
        server.stop()
    with server_with_log(kind, tmp_path) as server, client_of(server) as client:
        assert [client.peek(job_id).body for job_id in ids] == [b"%d" % i for i in range(500)]


def test_jobs_at_the_size_limit_survive_and_so_do_the_later_ones(
    greenstalkd_only: str, tmp_path: Path
) -> None:
    """beanstalkd 1.12 loses jobs of limit-1 and limit bytes, and every later record."""
    sizes = [97, 98, 99, 100, 5]
    with server_with_log(greenstalkd_only, tmp_path, "-z", "100") as server:
        with client_of(server) as client:
            ids = [client.put(b"x" * size) for size in sizes]
        kill_hard(server)
    with (
        server_with_log(greenstalkd_only, tmp_path, "-z", "100") as server,
        client_of(server) as client,
    ):
        assert [len(client.peek(job_id).body) for job_id in ids] == sizes


def test_release_priority_and_pause_survive(greenstalkd_only: str, tmp_path: Path) -> None:
    """beanstalkd 1.12 logs neither a release without delay nor a pause."""
    with server_with_log(greenstalkd_only, tmp_path, "-f", "0") as server:
        with client_of(server) as client:
            job_id = client.put(b"x", priority=6)
            client.release(client.reserve(), priority=66)
            client.pause_tube("default", 3600)
        kill_hard(server)
    with server_with_log(greenstalkd_only, tmp_path) as server, client_of(server) as client:
        assert client.stats_job(job_id)["pri"] == 66
        assert client.stats_job(job_id)["releases"] == 1
        assert client.stats_tube("default")["pause"] == 3600
        with pytest.raises(greenstalk.TimedOutError):
            client.reserve(timeout=0)


def test_a_second_server_on_the_same_log_is_refused(greenstalkd_only: str, tmp_path: Path) -> None:
    with server_with_log(greenstalkd_only, tmp_path) as server:
        with client_of(server) as client:
            client.stats()  # the first server is up, and holds the lock
        second = subprocess.run(
            [sys.executable, "-m", "greenstalk.server", "-b", str(tmp_path), "-l", "127.0.0.1",
             "-p", "0"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert second.returncode == 10
    assert "lock" in second.stderr


def test_the_log_stays_bounded(greenstalkd_only: str, tmp_path: Path) -> None:
    """Files rotate at -s bytes and old ones go once their jobs are gone."""
    with (
        server_with_log(greenstalkd_only, tmp_path, "-s", "20000", "-F") as server,
        client_of(server) as client,
    ):
        pinned = client.put(b"pinned")
        for _ in range(40):
            ids = client.put_many([b"x" * 200] * 50)
            for job_id in ids:
                client.delete(job_id)
        assert client.stats()["binlog-current-index"] > 5
        assert client.peek(pinned).body == b"pinned"
    total = sum(path.stat().st_size for path in tmp_path.glob("binlog.*"))
    assert total < 100_000


def _files(directory: Path) -> Sequence[Path]:
    return sorted(directory.glob("binlog.*"), key=lambda path: int(path.suffix[1:]))


def test_a_torn_last_record_is_ignored(greenstalkd_only: str, tmp_path: Path) -> None:
    with server_with_log(greenstalkd_only, tmp_path, "-f", "0") as server:
        with client_of(server) as client:
            kept = client.put(b"kept")
            client.put(b"torn" * 100)
        kill_hard(server)
    last = _files(tmp_path)[-1]
    os.truncate(last, last.stat().st_size - 50)
    with server_with_log(greenstalkd_only, tmp_path) as server, client_of(server) as client:
        assert client.peek(kept).body == b"kept"
        assert client.put(b"after") > kept


def test_sigterm_while_clients_are_busy(kind: str, tmp_path: Path) -> None:
    with server_with_log(kind, tmp_path, "-f", "0") as server:
        stop = threading.Event()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                with client_of(server) as client:
                    while not stop.is_set():
                        client.put(b"x")
            except greenstalk.ClientConnectionError:
                pass
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        thread = threading.Thread(target=produce)
        thread.start()
        with client_of(server) as client:
            while client.stats()["total-jobs"] < 50:
                pass
        assert server.process is not None
        server.process.terminate()
        assert server.process.wait(timeout=10) in (0, -signal.SIGTERM)
        stop.set()
        thread.join()
        assert not errors


def test_a_pause_goes_with_its_tube(greenstalkd_only: str, tmp_path: Path) -> None:
    """A paused tube that is dropped and made again later is not paused after a restart."""
    with server_with_log(greenstalkd_only, tmp_path, "-f", "0") as server:
        with client_of(server) as client:
            client.use("brief")
            client.pause_tube("brief", 3600)
            client.use("default")  # nothing refers to "brief" now: it is dropped
            client.use("brief")
            job_id = client.put(b"x")
        kill_hard(server)
    with server_with_log(greenstalkd_only, tmp_path) as server, client_of(server) as client:
        assert client.stats_tube("brief")["pause"] == 0
        client.watch("brief")
        assert client.reserve(timeout=0).id == job_id
