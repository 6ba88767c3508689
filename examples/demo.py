#!/usr/bin/env python3
"""The greenstalk demo: a producer queues registration emails, a consumer sends them.

    python examples/demo.py

It talks to the beanstalkd at $BEANSTALKD_ADDRESS (host:port or a Unix
socket path), 127.0.0.1:11300 by default. When nothing answers there, the
demo starts greenstalkd, greenstalk's own beanstalkd-compatible server, at
that address inside its own process, and stops it at the end: nothing else
needs to be installed. It works in a tube of its own and leaves it empty, so it is safe to
run against a server that is in use.
"""

from __future__ import annotations

import contextlib
import os
import sys

from _common import ServerAddress, describe, server_address
from consumer import consume
from producer import queue_registration

import greenstalk
from greenstalk.testing import run_greenstalkd

# Users who just registered, and the priority of their email jobs.
REGISTRATIONS = [
    (101, greenstalk.DEFAULT_PRIORITY),
    (102, greenstalk.DEFAULT_PRIORITY),
    (103, 0),  # the most urgent priority: reserved before the others
]
BROKEN_BODY = b"not JSON at all"


def say(who: str, line: str) -> None:
    print(f"{who:<9} {line}")


def beanstalkd_answers(address: ServerAddress) -> bool:
    """Whether a beanstalkd answers at ``address``.

    Raises greenstalk.ProtocolError when something answers that is not beanstalkd.
    """
    try:
        with greenstalk.Client(address, socket_timeout=5, socket_connect_timeout=5) as client:
            client.stats()
    except greenstalk.ProtocolError:
        raise
    except greenstalk.ClientConnectionError:
        return False
    return True


def run_demo(address: ServerAddress) -> tuple[int, int]:
    """Produce a few jobs, consume them, and clean up what is left.

    Returns how many emails were sent and how many jobs were buried.
    """
    tube = f"greenstalk-demo-{os.getpid()}"
    with greenstalk.Client(address, use=tube, socket_timeout=5) as producer:
        version = producer.stats()["version"]
        say("server", f"beanstalkd {version} at {describe(address)}; the demo uses tube {tube!r}")
        print()

        for user_id, priority in REGISTRATIONS:
            job_id = queue_registration(producer, user_id, priority)
            urgent = ", priority 0 (urgent)" if priority == 0 else ""
            say("producer", f"put job {job_id}: registration email for user {user_id}{urgent}")
        broken_id = producer.put(BROKEN_BODY)
        say("producer", f"put job {broken_id}: {BROKEN_BODY!r}, a body the consumer cannot read")
        print()

        with greenstalk.Client(address, watch=tube, socket_timeout=5) as consumer:
            sent, buried = consume(consumer, timeout=0, log=lambda line: say("consumer", line))
        say("consumer", "no job left to reserve")
        print()

        # Buried jobs wait for a person. Here the person is the demo: it looks
        # at the job and deletes it, which leaves the tube empty.
        job = producer.peek_buried()
        say("cleanup", f"job {job.id} is buried with body {job.body!r}; deleted it")
        producer.delete(job)
    return sent, buried


def main() -> int:
    try:
        address = server_address()
    except ValueError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2

    print("greenstalk demo: a producer queues registration emails and a consumer sends them")
    print()
    where = describe(address)
    started = False
    try:
        with contextlib.ExitStack() as stack:
            if not beanstalkd_answers(address):
                try:
                    server = stack.enter_context(run_greenstalkd(address=address))
                except OSError as error:
                    print(f"demo: cannot start greenstalkd at {where}: {error}", file=sys.stderr)
                    return 1
                address = server.address
                started = True
                say(
                    "server",
                    f"nothing answered at {where}, so the demo started greenstalkd"
                    " (greenstalk's own server) there, in this process",
                )
            sent, buried = run_demo(address)
    except greenstalk.ProtocolError as error:
        print(f"demo: the server at {where} does not speak beanstalkd: {error}", file=sys.stderr)
        return 1
    except greenstalk.ClientConnectionError as error:
        print(f"demo: lost the connection to {where}: {error}", file=sys.stderr)
        return 1
    except greenstalk.BeanstalkdError as error:
        print(f"demo: the server refused: {error!r}", file=sys.stderr)
        return 1
    if started:
        say("server", "stopped the greenstalkd the demo started")
    print()
    print(f"Done: {sent} email(s) sent; {buried} broken job buried, inspected and deleted.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
