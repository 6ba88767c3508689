#!/usr/bin/env python3
"""Queue registration emails: one JSON job per user id, in the "registrations" tube.

    python examples/producer.py [USER_ID ...]

The server is $BEANSTALKD_ADDRESS (host:port or a Unix socket path),
127.0.0.1:11300 by default. Run examples/consumer.py to process the jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from _common import TUBE, describe, server_address

import greenstalk


def queue_registration(
    client: greenstalk.Client[bytes], user_id: int, priority: int = greenstalk.DEFAULT_PRIORITY
) -> int:
    """Put a job asking for the registration email of ``user_id``; return the job's id."""
    payload = {"user_id": user_id}
    body = json.dumps(payload).encode("utf-8")
    return client.put(body, priority=priority)


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
        with greenstalk.Client(address, use=TUBE, socket_timeout=10) as client:
            for user_id in user_ids:
                job_id = queue_registration(client, user_id)
                print(f"queued the registration email of user {user_id} as job {job_id}")
    except greenstalk.ClientConnectionError as error:
        print(f"producer: no beanstalkd at {describe(address)}: {error}", file=sys.stderr)
        return 1
    print(f"{len(user_ids)} job(s) in tube {TUBE!r} on {describe(address)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
