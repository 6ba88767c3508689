"""greenstalk.Worker against real servers: outcomes, retries, auto-touch, round trips, stops."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenstalk
import greenstalk.worker
from greenstalk import Worker, WorkerJob
from greenstalk.testing import run_server

from .conftest import MakeClient, StartServer


def worker_for(address: greenstalk.Address, **options: Any) -> Worker:
    return Worker(address, socket_timeout=10, **options)


def test_success_deletes_each_job(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client(use="emails")
    ids = client.put_many([b"a", b"b", b"c"])
    seen: list[tuple[int, str, bytes]] = []
    worker = worker_for(address)

    @worker.handler("emails")
    def send(job: WorkerJob) -> None:
        seen.append((job.id, job.tube, job.body))

    assert worker.run(burst=True) == 0
    assert seen == [(ids[0], "emails", b"a"), (ids[1], "emails", b"b"), (ids[2], "emails", b"c")]
    assert client.stats_tube("emails")["current-jobs-ready"] == 0
    assert worker.counts["deleted"] == 3


def test_json_codec_and_a_body_that_does_not_decode(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    good = client.put(b'{"user": 7}')
    bad = client.put(b"not json", priority=5)
    bodies: list[Any] = []
    worker = worker_for(address, codec="json", handlers={"default": lambda job: bodies.append(
        job.body)})
    worker.run(burst=True)
    assert bodies == [{"user": 7}]
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(good)
    assert client.stats_job(bad)["state"] == "buried"
    assert client.stats_job(bad)["pri"] == 5


def failing(job: WorkerJob) -> None:
    raise RuntimeError("the handler failed")


def test_a_failure_is_released_with_backoff_then_buried(
    address: greenstalk.Address, make_sync_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_sync_client()
    job_id = client.put(b"x", priority=9)
    worker = worker_for(address, handlers={"default": failing}, max_releases=2, backoff_base=2)
    delays = []
    for _ in range(2):
        worker.run(burst=True)
        stats = client.stats_job(job_id)
        assert stats["state"] == "delayed"
        assert stats["pri"] == 9
        delays.append(stats["delay"])
        client.kick_job(job_id)
    assert delays == [2, 4]
    worker.run(burst=True)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["releases"], stats["pri"]) == ("buried", 2, 9)
    assert worker.counts == {"deleted": 0, "released": 2, "buried": 1, "failed": 3}
    assert "failed after 2 release(s); burying it" in caplog.text
    assert "RuntimeError: the handler failed" in caplog.text


def test_backoff_is_capped() -> None:
    worker = Worker(("127.0.0.1", 1), backoff_base=1.5, backoff_cap=10)
    assert [worker.backoff(n) for n in range(6)] == [2, 3, 6, 10, 10, 10]


def test_a_handler_decides_itself(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    released, buried, deleted = (client.put(body, priority=3) for body in (b"r", b"b", b"d"))

    def decide(job: WorkerJob) -> None:
        job.touch()
        if job.body == b"r":
            job.release(delay=100)
        elif job.body == b"b":
            job.bury()
        else:
            job.bury(priority=1)
            job.delete()  # the last decision wins

    worker = worker_for(address, handlers={"default": decide})
    worker.run(burst=True)
    assert client.stats_job(released)["state"] == "delayed"
    assert client.stats_job(released)["pri"] == 3
    assert client.stats_job(buried)["state"] == "buried"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(deleted)
    assert worker.counts == {"deleted": 1, "released": 1, "buried": 1, "failed": 0}


def test_handlers_by_tube(address: greenstalk.Address, make_sync_client: MakeClient) -> None:
    client = make_sync_client()
    seen: list[tuple[str, bytes]] = []
    for tube in ("one", "two"):
        client.use(tube)
        client.put(tube.encode())
    worker = worker_for(address)
    worker.add_handler("one", lambda job: seen.append(("one", job.body)))
    worker.add_handler("two", lambda job: seen.append(("two", job.body)))
    worker.run(burst=True)
    assert sorted(seen) == [("one", b"one"), ("two", b"two")]


def test_auto_touch_keeps_a_slow_job(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    job_id = client.put(b"slow", ttr=2)

    def slow(job: WorkerJob) -> None:
        time.sleep(3.5)

    worker_for(address, handlers={"default": slow}).run(burst=True)
    assert client.stats()["cmd-touch"] >= 2
    assert client.stats()["job-timeouts"] == 0
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_without_auto_touch_the_ttr_runs_out(
    address: greenstalk.Address, make_sync_client: MakeClient, server_kind: str
) -> None:
    client = make_sync_client()
    job_id = client.put(b"slow", ttr=1)
    worker_for(address, handlers={"default": lambda job: time.sleep(3)},
               auto_touch=False).run(burst=True)
    assert client.stats()["cmd-touch"] == 0
    if server_kind == "greenstalkd":
        # beanstalkd 1.12 can lose a TTR until the holder sends another
        # command (docs/server.rst); here that is the delete that follows.
        assert client.stats()["job-timeouts"] == 1
    # (The job was ready again, or still held, when the handler returned: the delete took it.)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


class CountingSocket:
    """A socket that counts its writes."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def sendall(self, data: bytes) -> None:
        self.writes += 1
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_one_write_a_job(
    address: greenstalk.Address, make_sync_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delete of a job goes out with the next reserve: one round trip a job."""
    client = make_sync_client()
    client.put_many([b"%d" % i for i in range(50)])
    sockets: list[CountingSocket] = []

    class CountingClient(greenstalk.Client[bytes]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            counting = CountingSocket(self._socket)  # type: ignore[arg-type]
            self._socket = counting  # type: ignore[assignment]
            sockets.append(counting)

    monkeypatch.setattr(greenstalk.worker, "Client", CountingClient)
    worker = worker_for(address, handlers={"default": lambda job: None})
    worker.run(burst=True)
    assert worker.counts["deleted"] == 50
    # 50 jobs: 51 reserves, 50 of them carrying the previous delete.
    assert sockets[0].writes == 51
    assert client.stats()["current-jobs-ready"] == 0


def test_a_warm_stop_from_another_thread(address: greenstalk.Address) -> None:
    worker = worker_for(address, handlers={"default": lambda job: None})
    threading.Timer(0.3, worker.stop).start()
    started = time.monotonic()
    assert worker.run() == 0
    assert time.monotonic() - started < 2


def test_no_handler_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="no handler"):
        Worker(("127.0.0.1", 1)).run()
    with pytest.raises(ValueError, match="codec"):
        Worker(("127.0.0.1", 1), codec="yaml")
    with pytest.raises(ValueError, match="max_releases"):
        Worker(("127.0.0.1", 1), max_releases=-1)
    with pytest.raises(ValueError, match="tube"):
        Worker(("127.0.0.1", 1)).add_handler("bad tube", lambda job: None)


def test_address_text_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Worker("10.0.0.1:11301").address == ("10.0.0.1", 11301)
    assert Worker("/run/beanstalkd.sock").address == "/run/beanstalkd.sock"
    assert Worker("unix:/run/beanstalkd.sock").address == "/run/beanstalkd.sock"
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "unix:/tmp/q")
    assert Worker().address == "/tmp/q"


def test_reconnects_when_the_server_comes_back(
    server_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away mid-job and comes back: the job is done again, and the log says so."""
    path = str(tmp_path / "socket")
    done: list[bytes] = []
    first_attempt = threading.Event()
    server_back = threading.Event()

    def handle(job: WorkerJob) -> None:
        if not first_attempt.is_set():
            first_attempt.set()
            server_back.wait(10)  # the server was restarted meanwhile: this result is dropped
            return
        done.append(job.body)

    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    worker = Worker(path, handlers={"default": handle}, reconnect_base=0.05, reconnect_cap=0.2,
                    socket_timeout=5)
    thread = threading.Thread(target=worker.run)
    (tmp_path / "log").mkdir()
    with run_server(server_kind, address=path, args=["-b", str(tmp_path / "log"), "-f", "0"],
                    in_process=False) as server:
        with greenstalk.Client(path) as client:
            client.put(b"job")
        thread.start()
        assert first_attempt.wait(10)
        server.stop()
    with run_server(server_kind, address=path, args=["-b", str(tmp_path / "log")],
                    in_process=False):
        server_back.set()
        deadline = time.monotonic() + 20
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
        worker.stop()
        thread.join(10)
    assert done == [b"job"]
    assert "connection to the server lost" in caplog.text
    assert "connected again" in caplog.text


WORKER_SCRIPT = """
import logging, sys, time
from pathlib import Path
import greenstalk

logging.basicConfig(level=logging.INFO)

marks = Path(sys.argv[2])

def slow(job):
    (marks / "started").write_text(str(job.id))
    time.sleep(float(sys.argv[3]))
    (marks / "finished").write_text(str(job.id))

worker = greenstalk.Worker(sys.argv[1], handlers={"default": slow}, socket_timeout=10)
sys.exit(worker.run())
"""


@pytest.fixture
def worker_process(
    start_server: StartServer, tmp_path: Path
) -> Iterator[tuple[greenstalk.Client[bytes], Path, Any]]:
    server = start_server(unix=True)
    address = server.address
    assert isinstance(address, str)
    processes: list[subprocess.Popen[bytes]] = []

    def start(handler_seconds: float) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, address, str(tmp_path),
             str(handler_seconds)],
            stderr=subprocess.PIPE,
        )
        processes.append(process)
        return process

    with greenstalk.Client(address) as client:
        yield client, tmp_path, start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_first_sigterm_lets_the_job_finish(
    worker_process: tuple[greenstalk.Client[bytes], Path, Any],
) -> None:
    client, marks, start = worker_process
    job_id = client.put(b"x")
    process = start(1.0)
    wait_for(marks / "started")
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert (marks / "finished").read_text() == str(job_id)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_second_signal_gives_the_job_back_and_exits_at_once(
    worker_process: tuple[greenstalk.Client[bytes], Path, Any],
) -> None:
    client, marks, start = worker_process
    job_id = client.put(b"x", priority=4)
    process = start(30.0)
    wait_for(marks / "started")
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    # Two signals at once would arrive as one: wait until the first was seen.
    assert process.stderr is not None
    while b"stop again" not in process.stderr.readline():
        pass
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 128 + signal.SIGINT
    assert time.monotonic() - started < 5
    assert not (marks / "finished").exists()
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"], stats["timeouts"]) == ("ready", 4, 0)


def test_a_stop_is_noticed_while_reserving(
    worker_process: tuple[greenstalk.Client[bytes], Path, Any],
) -> None:
    client, _, start = worker_process
    process = start(0)
    while client.stats()["current-waiting"] == 0:
        time.sleep(0.02)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0
    assert time.monotonic() - started < 2


def test_codecs_round_trip() -> None:
    codec = greenstalk.worker.JSONCodec()
    assert codec.decode(codec.encode({"a": [1, 2]})) == {"a": [1, 2]}
    assert greenstalk.worker.BytesCodec().encode(b"x") == b"x"
    assert json.loads(codec.encode("é")) == "é"
    assert os.fspath(Path("x")) == "x"


def test_a_job_gone_from_the_server_is_not_acknowledged(
    address: greenstalk.Address,
    make_sync_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    server_kind: str,
) -> None:
    """The job's TTR runs out, someone else deletes it, then the handler fails: the worker
    says so and carries on."""
    client = make_sync_client()
    other = make_sync_client()
    job_id = client.put(b"x", ttr=1)
    later = client.put(b"y")
    seen: list[bytes] = []

    def handle(job: WorkerJob) -> None:
        seen.append(job.body)
        if job.id == job_id:
            time.sleep(2)
            if server_kind == "beanstalkd" and other.stats_job(job_id)["state"] == "reserved":
                # beanstalkd 1.12 can lose track of a TTR until the holder's
                # connection sends a command (docs/server.rst): a touch does.
                job.touch()
                time.sleep(2)
            other.delete(job_id)
            raise RuntimeError("too late")

    worker = worker_for(address, handlers={"default": handle}, auto_touch=False)
    assert worker.run(burst=True) == 0
    assert seen == [b"x", b"y"]
    assert f"job {job_id} is gone from the server" in caplog.text
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(later)


def test_a_garbled_reply_drops_the_connection_not_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A reply that answers nothing closes the connection; the worker reconnects, then stops."""
    from .fakeserver import Expect, FakeServer, Send, Step

    script: list[Step] = [
        Expect(b"reserve-with-timeout 1\r\n"),
        Send(b"RESERVED 1 1\r\nx\r\n"),
        Expect(b"delete 1\r\nreserve-with-timeout 1\r\n"),
        Send(b"DELETED\r\nINSERTED 5\r\n"),  # an answer, but not to a reserve
    ]
    seen: list[bytes] = []
    with FakeServer(script) as server:
        worker = Worker(server.address, handlers={"default": lambda job: seen.append(job.body)},
                        socket_timeout=1, reconnect_base=0.01)
        threading.Timer(0.5, worker.stop).start()
        assert worker.run() == 0
    assert seen == [b"x"]
    assert "connection to the server lost" in caplog.text
