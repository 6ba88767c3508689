"""greenstalk.aio.Worker against real servers: the sync worker's rules, plus concurrency."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import greenstalk
import greenstalk.aio
from greenstalk.aio import Worker, WorkerJob

from .conftest import MakeClient, StartServer

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


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
    async def send(job: WorkerJob) -> None:
        seen.append((job.id, job.tube, job.body))

    assert run(worker.run(burst=True)) == 0
    assert seen == [(ids[0], "emails", b"a"), (ids[1], "emails", b"b"), (ids[2], "emails", b"c")]
    assert client.stats_tube("emails")["current-jobs-ready"] == 0
    assert worker.counts["deleted"] == 3


def test_handlers_run_concurrently_up_to_the_bound(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    client.put_many([b"%d" % i for i in range(12)])
    running = 0
    most = 0

    async def slow(job: WorkerJob) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.2)
        running -= 1

    worker = worker_for(address, handlers={"default": slow}, concurrency=4)
    started = time.monotonic()
    run(worker.run(burst=True))
    assert most == 4
    assert worker.counts["deleted"] == 12
    assert time.monotonic() - started < 2.0  # 3 waves of 0.2 s, not 12 in a row
    assert client.stats()["current-jobs-ready"] == 0


def test_sync_handlers_and_decisions(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    released, buried, kept = (client.put(body, priority=3) for body in (b"r", b"b", b"k"))

    async def decide(job: WorkerJob) -> None:
        await job.touch()
        if job.body == b"r":
            await job.release(delay=100)
        elif job.body == b"b":
            await job.bury()
        else:
            await job.bury(priority=1)
            job.delete()

    run(worker_for(address, handlers={"default": decide}).run(burst=True))
    assert client.stats_job(released)["state"] == "delayed"
    assert client.stats_job(released)["pri"] == 3
    assert client.stats_job(buried)["state"] == "buried"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(kept)
    plain = client.put(b"plain")
    run(worker_for(address, handlers={"default": lambda job: None}).run(burst=True))
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(plain)


def test_failures_back_off_then_bury(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    job_id = client.put(b'"x"', priority=9)
    bad = client.put(b"not json")

    async def failing(job: WorkerJob) -> None:
        raise RuntimeError("failed")

    worker = worker_for(address, handlers={"default": failing}, max_releases=1, codec="json")
    run(worker.run(burst=True))
    assert client.stats_job(bad)["state"] == "buried"
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["delay"], stats["pri"]) == ("delayed", 1, 9)
    client.kick_job(job_id)
    run(worker.run(burst=True))
    assert client.stats_job(job_id)["state"] == "buried"
    assert worker.counts["failed"] == 2


def test_auto_touch_keeps_a_slow_job(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    client.put(b"slow", ttr=2)

    async def slow(job: WorkerJob) -> None:
        await asyncio.sleep(3.5)

    run(worker_for(address, handlers={"default": slow}).run(burst=True))
    assert client.stats()["cmd-touch"] >= 2
    assert client.stats()["job-timeouts"] == 0
    assert client.stats()["current-jobs-ready"] == 0


def test_a_finished_job_and_the_next_reserve_share_a_write(
    address: greenstalk.Address, make_sync_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_sync_client()
    client.put_many([b"%d" % i for i in range(30)])
    writes = 0
    original_open = greenstalk.aio.Client._open

    async def counting_open(self: greenstalk.aio.Client[Any]) -> None:
        await original_open(self)
        assert self._connection is not None
        transport = self._connection.transport
        assert transport is not None
        write = transport.write

        def counted(data: bytes) -> None:
            nonlocal writes
            writes += 1
            write(data)

        transport.write = counted  # type: ignore[method-assign,assignment]

    monkeypatch.setattr(greenstalk.aio.Client, "_open", counting_open)
    worker = worker_for(address, handlers={"default": lambda job: None})
    run(worker.run(burst=True))
    assert worker.counts["deleted"] == 30
    assert writes <= 32  # the set-up, then one write a job


def test_stops(address: greenstalk.Address, make_sync_client: MakeClient) -> None:
    client = make_sync_client()
    job_id = client.put(b"x", priority=4)
    worker = worker_for(address, concurrency=2)
    started: list[asyncio.Event] = []

    @worker.handler("default")
    async def forever(job: WorkerJob) -> None:
        started[0].set()
        await asyncio.sleep(60)

    async def main() -> int:
        started.append(asyncio.Event())  # made on the running loop (Python 3.9 needs it)
        running = asyncio.ensure_future(worker.run())
        await started[0].wait()
        worker.stop()
        await asyncio.sleep(0.2)
        assert not running.done()  # a warm stop waits for the handler
        worker.stop()
        return await running

    assert run(main()) == 128 + signal.SIGTERM
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"]) == ("ready", 4)

    idle = worker_for(address, handlers={"default": lambda job: None})

    async def stop_idle() -> int:
        asyncio.get_running_loop().call_later(0.2, idle.stop)
        return await idle.run()

    client.delete(job_id)
    begun = time.monotonic()
    assert run(stop_idle()) == 0
    assert time.monotonic() - begun < 2


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Worker(("127.0.0.1", 1), concurrency=0)
    with pytest.raises(ValueError, match="no handler"):
        run(Worker(("127.0.0.1", 1)).run())


def test_reconnects(start_server: StartServer, tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    done: list[bytes] = []
    worker = Worker(path, handlers={"default": lambda job: done.append(job.body)},
                    reconnect_base=0.05, reconnect_cap=0.1, socket_timeout=5)

    async def main() -> None:
        running = asyncio.ensure_future(worker.run())
        await asyncio.sleep(0.3)  # nothing listens yet: the worker keeps trying
        assert not running.done()
        server = await asyncio.get_running_loop().run_in_executor(
            None, lambda: _serve_at(start_server, path)
        )
        with greenstalk.Client(server) as client:
            client.put(b"late")
        while not done:
            await asyncio.sleep(0.02)
        worker.stop()
        assert await running == 0

    run(main())
    assert done == [b"late"]


def _serve_at(start_server: StartServer, path: str) -> str:
    from greenstalk.testing import run_server

    context = run_server("greenstalkd", address=path)
    server = context.__enter__()
    _OPEN.append(context)
    return str(server.address)


_OPEN: list[Any] = []


@pytest.fixture(autouse=True)
def _close_servers() -> Any:
    yield
    while _OPEN:
        _OPEN.pop().__exit__(None, None, None)


SCRIPT = """
import asyncio, logging, sys
import greenstalk.aio

logging.basicConfig(level=logging.INFO)

async def slow(job):
    print("started", flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    print("finished", flush=True)

worker = greenstalk.aio.Worker(sys.argv[1], handlers={"default": slow})
sys.exit(asyncio.run(worker.run()))
"""


@pytest.mark.parametrize(("signals", "code", "finished"), [(1, 0, True), (2, 130, False)])
def test_signals(
    start_server: StartServer, signals: int, code: int, finished: bool
) -> None:
    server = start_server(unix=True)
    assert isinstance(server.address, str)
    with greenstalk.Client(server.address) as client:
        job_id = client.put(b"x")
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, server.address, "1.5" if finished else "60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        with process.stdout, process.stderr:
            assert process.stdout.readline() == b"started\n"
            process.send_signal(signal.SIGINT)
            if signals == 2:
                time.sleep(0.3)  # two signals at once arrive as one
                process.send_signal(signal.SIGINT)
            assert process.wait(10) == code
            assert (b"finished" in process.stdout.read()) is finished
        if finished:
            with pytest.raises(greenstalk.NotFoundError):
                client.peek(job_id)
        else:
            assert client.stats_job(job_id)["state"] == "ready"


def test_a_job_gone_from_the_server_is_not_acknowledged(
    address: greenstalk.Address,
    make_sync_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
    server_kind: str,
) -> None:
    client = make_sync_client()
    job_id = client.put(b"x", ttr=1)
    later = client.put(b"y")

    async def handle(job: WorkerJob) -> None:
        if job.id == job_id:
            await asyncio.sleep(2)
            loop = asyncio.get_running_loop()
            stats = await loop.run_in_executor(None, client.stats_job, job_id)
            if server_kind == "beanstalkd" and stats["state"] == "reserved":
                # beanstalkd 1.12 can lose track of a TTR until the holder's
                # connection sends a command (docs/server.rst): a touch does.
                await job.touch()
                await asyncio.sleep(2)
            await loop.run_in_executor(None, client.delete, job_id)
            raise RuntimeError("too late")

    worker = worker_for(address, handlers={"default": handle}, auto_touch=False)
    assert run(worker.run(burst=True)) == 0
    assert f"job {job_id} is gone from the server" in caplog.text
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(later)
