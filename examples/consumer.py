#!/usr/bin/env python3
"""Send registration emails: reserve the jobs of the "registrations" tube and process them.

    python examples/consumer.py [--timeout SECONDS]

Runs until interrupted (Ctrl-C), or with --timeout until no job has come for
that many seconds. A job is deleted once its email is sent; a job whose body
is not the JSON that examples/producer.py writes is buried for a person to
inspect. The server is $BEANSTALKD_ADDRESS (host:port or a Unix socket
path), 127.0.0.1:11300 by default.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Callable

from _common import TUBE, describe, server_address

import greenstalk

Log = Callable[[str], None]


def send_registration_email(user_id: int) -> None:
    """Stand-in for the real work: a real worker would render and send the email here."""


def read_user_id(body: bytes) -> int:
    """Return the user id in a job body. Raises ValueError if it is not a registration."""
    payload = json.loads(body.decode("utf-8"))  # ValueError for bad UTF-8 or bad JSON
    user_id = payload.get("user_id") if isinstance(payload, dict) else None
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise ValueError(f"no integer user_id in {payload!r}")
    return user_id


def process(client: greenstalk.Client[bytes], job: greenstalk.Job[bytes], log: Log) -> bool:
    """Handle one reserved job: send its email and delete it, or bury it.

    Returns True when the email was sent.
    """
    try:
        user_id = read_user_id(job.body)
    except ValueError as error:
        client.bury(job)
        log(f"job {job.id}: not a registration ({error}); buried it for inspection")
        return False
    send_registration_email(user_id)
    client.delete(job)
    log(f"job {job.id}: sent the registration email of user {user_id}; deleted the job")
    return True


def consume(
    client: greenstalk.Client[bytes], timeout: int | None = None, log: Log = print
) -> tuple[int, int]:
    """Process jobs until none comes for ``timeout`` seconds (None: forever).

    Returns how many emails were sent and how many jobs were buried.
    """
    sent = buried = 0
    while True:
        try:
            job = client.reserve(timeout=timeout)
        except greenstalk.TimedOutError:
            return sent, buried
        if process(client, job, log):
            sent += 1
        else:
            buried += 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=int,
        help="stop when no job has come for this long (default: run until Ctrl-C)",
    )
    args = parser.parse_args(argv)
    try:
        address = server_address()
    except ValueError as error:
        parser.error(str(error))

    try:
        with greenstalk.Client(address, watch=TUBE, socket_timeout=10) as client:
            print(f"waiting for jobs in tube {TUBE!r} on {describe(address)}")
            sent, buried = consume(client, args.timeout)
    except KeyboardInterrupt:
        print("\nstopped")
        return 0
    except greenstalk.ClientConnectionError as error:
        print(f"consumer: no beanstalkd at {describe(address)}: {error}", file=sys.stderr)
        return 1
    print(f"no job for {args.timeout} s: {sent} email(s) sent, {buried} job(s) buried")
    return 0


if __name__ == "__main__":
    sys.exit(main())
