#!/usr/bin/env python3
"""Send registration emails with asyncio: a few workers share the "registrations" tube.

    python examples/aio_consumer.py [--workers N] [--timeout SECONDS]

The asyncio counterpart of examples/consumer.py, for the same JSON jobs
(examples/producer.py or examples/aio_producer.py writes them). Each worker
has its own connection: a reserve that waits for a job holds back every
other command of its connection, so workers must not share one.

Runs until interrupted (Ctrl-C or SIGTERM: each worker finishes the job in
hand, then stops), or with --timeout until no worker has had a job for that
many seconds. The server is $BEANSTALKD_ADDRESS (host:port or a Unix socket
path), 127.0.0.1:11300 by default.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Callable

from _common import TUBE, ServerAddress, describe, server_address
from consumer import read_user_id

import greenstalk
import greenstalk.aio

Log = Callable[[str], None]


async def send_registration_email(user_id: int) -> None:
    """Stand-in for the real work: a real worker would await its mail client here."""
    await asyncio.sleep(0)


async def process(
    client: greenstalk.aio.Client[bytes], job: greenstalk.Job[bytes], log: Log
) -> bool:
    """Handle one reserved job: send its email and delete it, or bury it.

    Returns True when the email was sent.
    """
    try:
        user_id = read_user_id(job.body)
    except ValueError as error:
        await client.bury(job)
        log(f"job {job.id}: not a registration ({error}); buried it for inspection")
        return False
    await send_registration_email(user_id)
    await client.delete(job)
    log(f"job {job.id}: sent the registration email of user {user_id}; deleted the job")
    return True


async def next_job(
    client: greenstalk.aio.Client[bytes], timeout: int | None, stop: asyncio.Event
) -> greenstalk.Job[bytes] | None:
    """Reserve a job; None when none came within ``timeout`` seconds or ``stop`` was set.

    On ``stop`` the reserve is cancelled. The caller then closes the
    connection, which ends the reserve on the server too; a job that reached
    it in the meantime is released, or returned by the server on close.
    """
    reserving = asyncio.ensure_future(client.reserve(timeout=timeout))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({reserving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not reserving.done():
            reserving.cancel()
    if not reserving.done() or reserving.cancelled():
        return None
    try:
        return reserving.result()
    except greenstalk.TimedOutError:
        return None


async def work(
    address: ServerAddress, timeout: int | None, stop: asyncio.Event, log: Log
) -> tuple[int, int]:
    """One worker on its own connection. Returns how many emails it sent and jobs it buried."""
    sent = buried = 0
    async with greenstalk.aio.Client(address, watch=TUBE, socket_timeout=10) as client:
        while not stop.is_set():
            job = await next_job(client, timeout, stop)
            if job is None:
                break
            # The job in hand is finished even when stop is set meanwhile.
            if await process(client, job, log):
                sent += 1
            else:
                buried += 1
    return sent, buried


async def consume(
    address: ServerAddress, workers: int, timeout: int | None, stop: asyncio.Event
) -> tuple[int, int]:
    """Run ``workers`` workers until they stop. Returns the emails sent and jobs buried."""

    def logger(name: str) -> Log:
        return lambda line: print(f"{name}: {line}")

    results = await asyncio.gather(
        *(work(address, timeout, stop, logger(f"worker {n}")) for n in range(1, workers + 1))
    )
    return sum(sent for sent, _ in results), sum(buried for _, buried in results)


async def main_async(
    address: ServerAddress, workers: int, timeout: int | None
) -> tuple[int, int, bool]:
    """Consume with Ctrl-C and SIGTERM setting the stop event.

    Returns the emails sent, the jobs buried, and whether a signal stopped it.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []

    def stop_soon() -> None:
        if not stop.is_set():
            print("\nstopping: each worker finishes the job in hand")
            stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows: there Ctrl-C raises KeyboardInterrupt, handled in main().
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop_soon)
            handled.append(signum)
    try:
        sent, buried = await consume(address, workers, timeout, stop)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
    return sent, buried, stop.is_set()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workers", metavar="N", type=int, default=2, help="how many workers (default: 2)"
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=int,
        help="stop when no job has come for this long (default: run until Ctrl-C)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        address = server_address()
    except ValueError as error:
        parser.error(str(error))

    print(f"starting {args.workers} worker(s) for tube {TUBE!r} on {describe(address)}")
    try:
        sent, buried, stopped = asyncio.run(main_async(address, args.workers, args.timeout))
    except KeyboardInterrupt:
        print("\nstopped")
        return 0
    except greenstalk.ClientConnectionError as error:
        print(f"aio_consumer: no beanstalkd at {describe(address)}: {error}", file=sys.stderr)
        return 1
    why = "stopped" if stopped else f"no job for {args.timeout} s"
    print(f"{why}: {sent} email(s) sent, {buried} job(s) buried")
    return 0


if __name__ == "__main__":
    sys.exit(main())
