"""Count the TTRs a server fails to enforce while many connections hold jobs.

Run from the repository root::

    .venv/bin/python bench/lost_ttrs.py               # 30 holders, each server
    .venv/bin/python bench/lost_ttrs.py --holders 5

For each server (beanstalkd 1.12, then greenstalkd in its own process), every
holder connection puts a job with a one-second TTR into its own tube and
reserves it; then one more connection per tube waits in
``reserve-with-timeout 4``. A job whose TTR is enforced reaches its waiter
about a second later. A waiter that gets ``TIMED_OUT`` instead counts as a
lost TTR; its holder then sends one command (``stats``) and the script
reports whether that handed the job on, which is how beanstalkd 1.12
recovers. This is a measurement, not a test: docs/server.rst quotes it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import greenstalk
from greenstalk._protocol import commands
from greenstalk.testing import run_server

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import Peer

WAIT = commands.reserve(4)
WAIT_AGAIN = commands.reserve(2)


def measure(kind: str, holders: int) -> tuple[int, int]:
    """Return (TTRs lost, lost ones a command from the holder recovered)."""
    with run_server(kind, in_process=False) as server, contextlib.ExitStack() as stack:
        address = server.address
        assert isinstance(address, tuple)
        pairs: list[tuple[greenstalk.Client[bytes], Peer]] = []
        for number in range(holders):
            tube = f"t{number}"
            holder = stack.enter_context(greenstalk.Client(address, use=tube, watch=tube))
            holder.put(b"x", ttr=1)
            holder.reserve(timeout=0)
            waiter = Peer(address)
            stack.callback(waiter.close)
            waiter.ask(commands.watch(tube))
            pairs.append((holder, waiter))
        for _, waiter in pairs:
            waiter.sock.sendall(WAIT[0])
        lost = recovered = 0
        for holder, waiter in pairs:
            while not waiter.replies:
                waiter.read()
            try:
                WAIT[1](waiter.replies.popleft())
            except greenstalk.TimedOutError:
                lost += 1
                holder.stats()
                with contextlib.suppress(greenstalk.TimedOutError):
                    waiter.ask(WAIT_AGAIN)
                    recovered += 1
        return lost, recovered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--holders", type=int, default=30)
    holders = parser.parse_args().holders
    for kind in ("beanstalkd", "greenstalkd"):
        lost, recovered = measure(kind, holders)
        print(
            f"{kind:12} {lost:3} of {holders} TTRs lost"
            + (f"; a command from the holder recovered {recovered}" if lost else "")
        )


if __name__ == "__main__":
    main()
