"""The floor under any asyncio client: sequential puts over a bare asyncio Protocol.

No client library, no parsing beyond spotting the end of each reply: one
``put`` written, one reply awaited, again and again. Whatever an asyncio
client does on top of this can only be slower, so comparing its sequential
rate with this one shows how much of the round trip is the client's own.

    .venv/bin/python bench/asyncio_floor.py            # server on CPU 0, client on CPU 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from greenstalk.testing import run_beanstalkd

PUT = b"put 0 0 60 100\r\n" + b"x" * 100 + b"\r\n"


class _Replies(asyncio.Protocol):
    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if data.endswith(b"\r\n") and self.waiter is not None:
            self.waiter.set_result(None)


async def _puts_per_second(port: int, count: int) -> float:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(_Replies, "127.0.0.1", port)
    started = time.perf_counter()
    for _ in range(count):
        protocol.waiter = loop.create_future()
        transport.write(PUT)
        await protocol.waiter
    elapsed = time.perf_counter() - started
    transport.close()
    return count / elapsed


def main() -> None:
    """Print the median sequential put rate of a bare asyncio Protocol over several runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="puts per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--port", type=int, help="(internal) measure once against this port")
    arguments = parser.parse_args()
    if arguments.port is not None:
        print(asyncio.run(_puts_per_second(arguments.port, arguments.count)))
        return
    with run_beanstalkd() as server:
        assert isinstance(server.address, tuple)
        assert server.process is not None  # beanstalkd always runs as a process
        subprocess.run(
            ["taskset", "-pc", "0", str(server.process.pid)], check=True, capture_output=True
        )
        command = [
            "taskset",
            "-c",
            "1",
            sys.executable,
            __file__,
            "--count",
            str(arguments.count),
            "--port",
            str(server.address[1]),
        ]
        rates = [
            float(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            for _ in range(arguments.runs)
        ]
    print(
        f"bare asyncio Protocol, sequential 100 B puts, server CPU 0, client CPU 1: "
        f"median {statistics.median(rates):,.0f}/s over {len(rates)} runs"
    )


if __name__ == "__main__":
    main()
