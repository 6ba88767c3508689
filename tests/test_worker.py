"""greenstalk.Worker against real servers: what only the sync worker does.

Async handlers refused, one write a job, signals ending the process; what
both workers do is in test_worker_shared.py.
"""

from __future__ import annotations

import functools
import gc
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import greenstalk
import greenstalk.worker
from greenstalk import Worker, WorkerJob

from .conftest import MakeClient, StartServer


def worker_for(address: greenstalk.Address, **options: Any) -> Worker:
    return Worker(address, socket_timeout=10, **options)


class CountingSocket:
    """A socket that counts its writes (calls of send and sendall)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def send(self, data: bytes, *flags: int) -> int:
        self.writes += 1
        return self._sock.send(data, *flags)

    def sendall(self, data: bytes, *flags: int) -> None:
        self.writes += 1
        self._sock.sendall(data, *flags)

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


def read_until(stream: IO[bytes], text: bytes) -> None:
    """Read lines until one holds ``text``; fails if the stream ends first."""
    for line in stream:
        if text in line:
            return
    pytest.fail(f"{text!r} never came")


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
    read_until(process.stderr, b"stop again")
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


async def send_later(job: WorkerJob) -> None:
    """A coroutine function: work greenstalk.Worker cannot do."""


class AsyncCall:
    """An object whose call is a coroutine function."""

    async def __call__(self, job: WorkerJob) -> None:
        """Work greenstalk.Worker cannot do."""


@pytest.mark.parametrize(
    "handler", [send_later, functools.partial(send_later), AsyncCall()],
    ids=["coroutine function", "partial", "async call"],
)
def test_an_async_handler_is_refused_when_it_is_registered(handler: Any) -> None:
    """The sync worker would call it, never await the coroutine, and delete the job."""
    refusal = (r"^the handler of tube 'emails' \(.+\) is a coroutine function, which "
               r"greenstalk.Worker cannot run: use greenstalk.aio.Worker for async handlers$")
    with pytest.raises(TypeError, match=refusal):
        Worker(("127.0.0.1", 1), handlers={"emails": handler})
    worker = Worker(("127.0.0.1", 1))
    with pytest.raises(TypeError, match=refusal):
        worker.add_handler("emails", handler)
    with pytest.raises(TypeError, match=refusal):
        worker.handler("emails")(handler)
    assert worker._handlers == {}


def test_a_handler_that_returns_an_awaitable_buries_its_job(
    address: greenstalk.Address, make_sync_client: MakeClient, caplog: pytest.LogCaptureFixture,
    recwarn: pytest.WarningsRecorder,
) -> None:
    """Not a coroutine function, but it returns a coroutine: the work was never done."""
    client = make_sync_client()
    job_id = client.put(b"x", priority=7)
    worker = worker_for(address, handlers={"default": lambda job: send_later(job)})
    worker.run(burst=True)
    gc.collect()
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"]) == ("buried", 7)
    assert worker.counts == {"deleted": 0, "released": 0, "buried": 1, "failed": 1}
    [record] = [r for r in caplog.records if r.getMessage().startswith(f"job {job_id} in")]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"job {job_id} in 'default': the handler returned coroutine instead of doing the work, "
        "and a plain function's result is not awaited; burying the job. Make the handler a "
        "coroutine function (async def) and run it with greenstalk.aio.Worker"
    )
    assert not [warning for warning in recwarn if "never awaited" in str(warning.message)]
