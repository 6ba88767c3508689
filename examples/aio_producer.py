#!/usr/bin/env python3
"""Queue registration emails with asyncio: concurrent tasks share one connection.

    python examples/aio_producer.py [USER_ID ...]

Writes the same JSON jobs, into the same "registrations" tube, as
examples/producer.py. Each user id is queued by a task of its own, as the
request handlers of a web application would; the tasks share one client,
and their puts travel together instead of one round trip each. The server
is $BEANSTALKD_ADDRESS (host:port or a Unix socket path), 127.0.0.1:11300
by default. Run examples/aio_consumer.py to process the jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from _common import TUBE, ServerAddress, describe, server_address

import greenstalk
import greenstalk.aio


async def queue_registration(
    client: greenstalk.aio.Client[bytes],
    user_id: int,
    priority: int = greenstalk.DEFAULT_PRIORITY,
) -> int:
    """Put a job asking for the registration email of ``user_id``; return the job's id."""
    body = json.dumps({"user_id": user_id}).encode("utf-8")
    job_id = await client.put(body, priority=priority)
    print(f"queued the registration email of user {user_id} as job {job_id}")
    return job_id


async def produce(address: ServerAddress, user_ids: Sequence[int]) -> list[int]:
    """Queue one job per user id, all at once on one connection; return the job ids."""
    async with greenstalk.aio.Client(address, use=TUBE, socket_timeout=10) as client:
        return await asyncio.gather(*(queue_registration(client, user_id) for user_id in user_ids))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "user_ids", metavar="USER_ID", type=int, nargs="*", help="users who just registered"
    )
    args = parser.parse_args(argv)
    try:
        address = server_address()
    except ValueError as error:
        parser.error(str(error))
    user_ids: list[int] = args.user_ids or [1, 2, 3]

    try:
        asyncio.run(produce(address, user_ids))
    except greenstalk.ClientConnectionError as error:
        print(f"aio_producer: no beanstalkd at {describe(address)}: {error}", file=sys.stderr)
        return 1
    print(f"{len(user_ids)} job(s) in tube {TUBE!r} on {describe(address)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
