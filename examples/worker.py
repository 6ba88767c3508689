#!/usr/bin/env python3
"""Send registration emails with greenstalk.Worker: the consumer loop, done for you.

    python examples/worker.py [--burst]
    cd examples && greenstalk worker worker:worker     # the same, via the command line

The worker reserves the jobs that examples/producer.py puts in the
"registrations" tube, decodes their JSON bodies, and calls
``send_registration`` for each. A job is deleted when the handler returns,
released with a growing delay when it raises (buried after three
releases), and buried at once when it is not a registration. SIGTERM or
Ctrl-C stops it after the current job; a second one stops it at once.
With --burst it stops when no job is ready. The server is
$BEANSTALKD_ADDRESS (host:port or a Unix socket path), 127.0.0.1:11300 by
default.
"""

from __future__ import annotations

import argparse
import logging
import sys

from _common import TUBE

import greenstalk

worker = greenstalk.Worker(codec="json")


def send_registration_email(user_id: int) -> None:
    """Stand-in for the real work: a real worker would render and send the email here."""


@worker.handler(TUBE)
def send_registration(job: greenstalk.WorkerJob) -> None:
    """Send the email of one registration job."""
    payload = job.body
    user_id = payload.get("user_id") if isinstance(payload, dict) else None
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        logging.warning("job %d: not a registration (%r); burying it", job.id, payload)
        job.bury()
        return
    send_registration_email(user_id)
    logging.info("job %d: sent the registration email of user %d", job.id, user_id)


def main() -> int:
    parser = argparse.ArgumentParser(description="Send registration emails.")
    parser.add_argument("--burst", action="store_true", help="stop when no job is ready")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return worker.run(burst=arguments.burst)


if __name__ == "__main__":
    sys.exit(main())
