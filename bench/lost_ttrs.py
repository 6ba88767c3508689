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
import socket

import greenstalk
from greenstalk.testing import run_server

WAIT_SECONDS = 4


def read_reply(sock: socket.socket, expected_start: bytes) -> bytes:
    """Read from ``sock`` until a whole reply line (and a body for RESERVED) is in."""
    data = b""
    while b"\r\n" not in data or (data.startswith(b"RESERVED") and data.count(b"\r\n") < 2):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    if not data.startswith(expected_start):
        raise RuntimeError(f"unexpected reply {data!r}")
    return data


def measure(kind: str, holders: int) -> tuple[int, int]:
    """Return (TTRs lost, lost ones a command from the holder recovered)."""
    with run_server(kind, in_process=False) as server, contextlib.ExitStack() as stack:
        address = server.address
        assert isinstance(address, tuple)
        pairs: list[tuple[greenstalk.Client[bytes], socket.socket]] = []
        for number in range(holders):
            tube = f"t{number}"
            holder = stack.enter_context(greenstalk.Client(address, use=tube, watch=tube))
            holder.put(b"x", ttr=1)
            holder.reserve(timeout=0)
            waiter = stack.enter_context(socket.create_connection(address, timeout=10))
            waiter.sendall(b"watch %b\r\n" % tube.encode())
            read_reply(waiter, b"WATCHING")
            pairs.append((holder, waiter))
        for _, waiter in pairs:
            waiter.sendall(b"reserve-with-timeout %d\r\n" % WAIT_SECONDS)
        lost = recovered = 0
        for holder, waiter in pairs:
            if read_reply(waiter, b"").startswith(b"TIMED_OUT"):
                lost += 1
                holder.stats()
                waiter.sendall(b"reserve-with-timeout 2\r\n")
                if read_reply(waiter, b"").startswith(b"RESERVED"):
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
