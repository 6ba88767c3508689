"""What only the asyncio client has: many tasks on one connection, and its lifecycle.

Every behavioural test of tests/test_client.py also runs against
greenstalk.aio (the ``make_client`` fixture); these are the asyncio-only ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

import greenstalk
import greenstalk.aio
from greenstalk._protocol import commands
from greenstalk.testing import BeanstalkdProcess

from .test_aio_faults import waiting_reserves
from .test_client import connected_socket, repr_at

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new event loop, failing the test after 20 seconds."""
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_hundred_tasks_on_one_client(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as client:

            async def one(index: int) -> tuple[int, int]:
                body = b"task %d" % index
                job_id = await client.put(body, priority=index)
                job = await client.peek(job_id)
                assert job.body == body
                stats = await client.stats_job(job_id)
                assert stats["pri"] == index
                return index, job_id

            results = await asyncio.gather(*(one(index) for index in range(100)))
            ids = [job_id for _, job_id in results]
            assert sorted(ids) == list(range(1, 101))
            assert (await client.stats_tube("default"))["current-jobs-ready"] == 100

    run(main())


def test_concurrent_mixed_commands_get_their_own_replies(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address, use="jobs", watch="jobs") as client:
            first = await client.put(b"first")
            results: list[Any] = await asyncio.gather(
                client.using(),
                client.watching(),
                client.peek(first),
                client.put_many([b"a", b"b"]),
                client.stats(),
                client.tubes(),
                client.peek_ready(),
            )
            assert results[0] == "jobs"
            assert results[1] == ["jobs"]
            assert results[2] == greenstalk.Job(first, b"first")
            assert results[3] == [first + 1, first + 2]
            assert results[4]["current-connections"] == 1
            assert sorted(results[5]) == ["default", "jobs"]
            assert results[6].id == first

    run(main())


def test_errors_go_to_the_call_that_caused_them(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as client:
            results = await asyncio.gather(
                client.put(b"ok"),
                client.delete(12345),
                client.put(b"x" * 70000),
                client.put(b"also ok"),
                return_exceptions=True,
            )
            assert results[0] == 1
            assert isinstance(results[1], greenstalk.NotFoundError)
            assert isinstance(results[2], greenstalk.JobTooBigError)
            assert results[3] == 2

    run(main())


def test_blocking_reserve_holds_the_commands_behind_it(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as consumer, greenstalk.aio.Client(
            address
        ) as producer:
            reserving = asyncio.ensure_future(consumer.reserve(timeout=5))
            using = asyncio.ensure_future(consumer.using())
            await waiting_reserves(producer, 1)
            # The reserve waits on the server, with using() sent behind it.
            assert not using.done()
            job_id = await producer.put(b"x")
            assert (await reserving).id == job_id
            assert await using == "default"

    run(main())


def test_cancelled_reserve_releases_its_job(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as consumer, greenstalk.aio.Client(
            address
        ) as other:
            reserving = asyncio.ensure_future(consumer.reserve())
            await waiting_reserves(other, 1)
            reserving.cancel()
            job_id = await other.put(b"x", priority=123)
            # The reply to the cancelled reserve comes now: the job is
            # released, so another consumer gets it.
            job = await other.reserve(timeout=5)
            assert job.id == job_id
            stats = await other.stats_job(job_id)
            assert (stats["pri"], stats["releases"]) == (123, 1)
            assert await consumer.using() == "default"

    run(main())


def test_wait_for_reserve_in_a_loop(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as client, greenstalk.aio.Client(
            address
        ) as producer:
            for _ in range(5):
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(client.reserve(), 0.05)
            job_id = await producer.put(b"x", priority=7)
            # The first reserve, still waiting on the server, receives the
            # job; it is released and this reserve gets it.
            job = await asyncio.wait_for(client.reserve(), 5)
            assert job.id == job_id
            stats = await producer.stats_job(job_id)
            assert (stats["state"], stats["pri"], stats["reserves"]) == ("reserved", 7, 2)
            # The reserves cancelled while held back never reached the server.
            assert (await producer.stats())["cmd-reserve"] == 2
            await client.delete(job)

    run(main())


def test_cancelled_reserve_with_timeout_lets_later_commands_through(
    address: greenstalk.Address,
) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.reserve(timeout=1), 0.05)
            # Held back until the server's one-second wait ends.
            started = time.monotonic()
            assert await client.using() == "default"
            assert 0.5 < time.monotonic() - started < 5

    run(main())


def test_lifecycle(address: greenstalk.Address) -> None:
    async def main() -> None:
        client: greenstalk.aio.Client[bytes] = greenstalk.aio.Client(address)
        assert client.closed
        assert repr(client) == repr_at("greenstalk.aio.Client", address)
        with pytest.raises(greenstalk.ClientConnectionError, match="not connected"):
            await client.put(b"x")
        async with client:
            assert repr(client) == repr_at("greenstalk.aio.Client", address)
            with pytest.raises(greenstalk.ClientConnectionError, match="already connected"):
                await client._open()
        assert client.closed
        assert repr(client) == repr_at("greenstalk.aio.Client", address)
        await client.close()
        with pytest.raises(ConnectionError, match="closed by the client"):
            await client.stats()

    run(main())


def test_connect_with_encoding_and_tubes(address: greenstalk.Address) -> None:
    async def main() -> None:
        client = await greenstalk.aio.connect(
            address, encoding="utf-8", use="out", watch=(tube for tube in ["in", "more"])
        )
        try:
            assert await client.using() == "out"
            assert sorted(await client.watching()) == ["in", "more"]
            await client.use("in")
            job_id = await client.put("héllo")
            assert (await client.reserve(timeout=0)).body == "héllo"
            await client.delete(job_id)
        finally:
            await client.close()

    run(main())


def test_sequential_commands_are_not_delayed(address: greenstalk.Address) -> None:
    async def main() -> float:
        async with greenstalk.aio.Client(address) as client:
            started = time.perf_counter()
            for _ in range(200):
                await client.put(b"x")
            return time.perf_counter() - started

    # Generous: 200 round trips on loopback take a few milliseconds; a
    # command left waiting for a flush that never comes would take forever.
    assert run(main()) < 5


def test_socket_timeout_counts_from_each_commands_turn(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address, socket_timeout=0.5) as client:
            # stats() waits in line behind the two-second reserve; its own
            # half second starts only when the reserve is answered.
            results = await asyncio.gather(
                client.reserve(timeout=2), client.stats(), return_exceptions=True
            )
            assert isinstance(results[0], greenstalk.TimedOutError)
            assert isinstance(results[1], dict)
            assert not client.closed

    run(main())


def test_repr_of_a_socket_handed_in(beanstalkd: BeanstalkdProcess) -> None:
    """Named by the socket's peer, as the sync client does."""

    async def main() -> None:
        with connected_socket(beanstalkd.address) as sock:
            async with greenstalk.aio.Client(sock) as client:
                assert repr(client) == repr_at("greenstalk.aio.Client", beanstalkd.address)

    run(main())


def test_the_worker_step_names_the_commands(address: greenstalk.Address) -> None:
    async def main() -> None:
        async with greenstalk.aio.Client(address) as client:
            finished, reserved = await client._finish_and_reserve([commands.delete(99)], 0)
            assert [str(error) for error in finished] == [
                "delete 99: NOT_FOUND (no such job, or it is reserved by another connection)"
            ]
            assert str(reserved) == (
                "reserve-with-timeout 0: TIMED_OUT (no job became ready in time)"
            )

    run(main())
