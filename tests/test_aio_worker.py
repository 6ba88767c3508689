"""greenstalk.aio.Worker against real servers: coroutine handlers, threads, concurrency.

What both workers do is in test_worker_shared.py (with plain handlers,
which this worker runs in threads).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Coroutine
from typing import IO, Any, TypeVar

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


def test_plain_handlers_run_in_threads_at_once(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    """Four blocking handlers meet at a barrier: they ran at the same time, off the loop."""
    client = make_sync_client()
    client.put_many([b"%d" % i for i in range(8)])
    barrier = threading.Barrier(4, timeout=10)
    threads: set[str] = set()

    def meet(job: greenstalk.WorkerJob) -> None:
        threads.add(threading.current_thread().name)
        barrier.wait()

    worker = worker_for(address, handlers={"default": meet}, concurrency=4)
    run(worker.run(burst=True))
    assert worker.counts == {"deleted": 8, "released": 0, "buried": 0, "failed": 0}
    assert len(threads) == 4  # a pool of `concurrency` threads, used again
    assert threading.main_thread().name not in threads


def test_a_plain_handler_that_returns_a_coroutine_has_it_awaited(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    """``lambda job: work(job.body)`` with an async ``work`` keeps working: run on the loop."""
    client = make_sync_client()
    client.put(b"x")
    done: list[bytes] = []

    async def work(body: bytes) -> None:
        await asyncio.sleep(0)
        done.append(body)

    worker = worker_for(address, handlers={"default": lambda job: work(job.body)})
    run(worker.run(burst=True))
    assert done == [b"x"]
    assert worker.counts["deleted"] == 1


def test_coroutine_handlers_decide(
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

    worker = worker_for(address, handlers={"default": decide})
    run(worker.run(burst=True))
    assert client.stats_job(released)["state"] == "delayed"
    assert client.stats_job(released)["pri"] == 3
    assert client.stats_job(buried)["state"] == "buried"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(kept)
    assert worker.counts == {"deleted": 1, "released": 1, "buried": 1, "failed": 0}


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


async def nothing(job: WorkerJob) -> None:
    """A coroutine handler with nothing to do."""


@pytest.mark.parametrize("handler", [nothing, lambda job: None], ids=["coroutine", "plain"])
def test_a_finished_job_and_the_next_reserve_share_a_write(
    address: greenstalk.Address, make_sync_client: MakeClient, monkeypatch: pytest.MonkeyPatch,
    handler: Any,
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
    worker = worker_for(address, handlers={"default": handler})
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


def test_a_cold_stop_gives_back_the_jobs_of_thread_run_handlers(
    address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    ids = [client.put(b"a", priority=4), client.put(b"b", priority=5)]
    both_started = threading.Barrier(3, timeout=10)
    let_go = threading.Event()

    def blocked(job: greenstalk.WorkerJob) -> None:
        both_started.wait()
        let_go.wait(30)

    worker = worker_for(address, handlers={"default": blocked}, concurrency=2)

    async def main() -> int:
        running = asyncio.ensure_future(worker.run())
        await asyncio.get_running_loop().run_in_executor(None, both_started.wait)
        worker.stop(cold=True)
        return await running

    try:
        begun = time.monotonic()
        assert run(main()) == 128 + signal.SIGTERM
        assert time.monotonic() - begun < 5
        assert [client.stats_job(job_id)["state"] for job_id in ids] == ["ready", "ready"]
        assert [client.stats_job(job_id)["pri"] for job_id in ids] == [4, 5]
    finally:
        let_go.set()


def test_concurrency_is_checked() -> None:
    for concurrency in (0, 1.5, True):
        with pytest.raises(ValueError, match="concurrency must be an int >= 1"):
            Worker(("127.0.0.1", 1), concurrency=concurrency)  # type: ignore[arg-type]


def test_the_asyncio_worker_takes_the_sync_workers_settings() -> None:
    """Every setting by name, with the same default, plus concurrency; no ``**settings``."""
    sync = inspect.signature(greenstalk.Worker).parameters.values()
    aio = dict(inspect.signature(Worker).parameters)
    concurrency = aio.pop("concurrency")
    assert (concurrency.kind, concurrency.default) == (inspect.Parameter.KEYWORD_ONLY, 1)
    assert [(p.name, p.kind, p.default) for p in aio.values()] == [
        (p.name, p.kind, p.default) for p in sync
    ]
    assert "concurrency" in (Worker.__doc__ or "")


def test_the_asyncio_worker_does_not_load_the_blocking_side() -> None:
    """``import greenstalk.aio`` loads neither greenstalk.worker nor greenstalk.client."""
    script = textwrap.dedent("""
        import sys
        import greenstalk.aio
        worker = greenstalk.aio.Worker(handlers={"t": lambda job: None})
        print(" ".join(sorted(name for name in sys.modules if name.startswith("greenstalk"))))
        import greenstalk
        assert greenstalk.Client.__module__ == "greenstalk.client"
        assert "Worker" in dir(greenstalk)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = done.stdout.split()
    assert "greenstalk._aio_worker" in loaded
    assert "greenstalk._worker_rules" in loaded
    assert "greenstalk.worker" not in loaded
    assert "greenstalk.client" not in loaded


SCRIPT = """
import asyncio, logging, sys, time
import greenstalk.aio

logging.basicConfig(level=logging.INFO)

async def coroutine(job):
    print("started", flush=True)
    await asyncio.sleep(float(sys.argv[2]))
    print("finished", flush=True)

def plain(job):
    print("started", flush=True)
    time.sleep(float(sys.argv[2]))
    print("finished", flush=True)

handler = coroutine if sys.argv[3] == "coroutine" else plain
worker = greenstalk.aio.Worker(sys.argv[1], handlers={"default": handler})
sys.exit(asyncio.run(worker.run()))
"""


def read_until(stream: IO[bytes], text: bytes) -> None:
    """Read lines until one holds ``text``; fails if the stream ends first."""
    for line in stream:
        if text in line:
            return
    pytest.fail(f"{text!r} never came")


@pytest.mark.parametrize("handler", ["coroutine", "plain"])
@pytest.mark.parametrize(("signals", "code", "finished"), [(1, 0, True), (2, 130, False)])
def test_signals(
    start_server: StartServer, signals: int, code: int, finished: bool, handler: str
) -> None:
    server = start_server(unix=True)
    assert isinstance(server.address, str)
    with greenstalk.Client(server.address) as client:
        job_id = client.put(b"x")
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, server.address, "1.5" if finished else "60", handler],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        with process.stdout, process.stderr:
            assert process.stdout.readline() == b"started\n"
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            # The first signal is logged, as the sync worker logs it.
            read_until(process.stderr, b"stopping once the 1 running job(s) are done; stop again")
            if signals == 2:
                process.send_signal(signal.SIGINT)
            assert process.wait(10) == code
            if not finished:
                assert time.monotonic() - started < 5
            assert (b"finished" in process.stdout.read()) is finished
        if finished:
            with pytest.raises(greenstalk.NotFoundError):
                client.peek(job_id)
        else:
            assert client.stats_job(job_id)["state"] == "ready"
