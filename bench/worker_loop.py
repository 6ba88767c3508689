"""Compare greenstalk.Worker with greenstalk 2.1.1's reserve+delete loop, in one run.

Run from the repository root::

    .venv/bin/python bench/worker_loop.py               # 5 interleaved rounds
    .venv/bin/python bench/worker_loop.py --quick       # a smoke run

beanstalkd runs pinned to CPU 0 and each consumer runs in its own process
pinned to CPU 1 (the realistic, cross-core case). Before each measurement
the tube is filled with 100-byte jobs; the consumer then empties it:

- ``greenstalk 2.1.1``: ``job = client.reserve(timeout=0); client.delete(job)``
  in a loop, two round trips a job (in its own virtual environment, created
  by bench/clients.py's helper when missing);
- ``Worker``: ``greenstalk.Worker`` in burst mode with a handler that does
  nothing; the delete of each job goes out with the next reserve.

Each figure is the median of the rounds, in jobs per second.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import greenstalk
from greenstalk.testing import run_beanstalkd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clients import DEFAULT_VENVS, GREENSTALK_2_1_1, ensure_venv

SERVER_CPU = "0"
CLIENT_CPU = "1"

PEER_LOOP = """
import sys, time
import greenstalk
client = greenstalk.Client(('127.0.0.1', int(sys.argv[1])), encoding=None)
count = int(sys.argv[2])
started = time.perf_counter()
for _ in range(count):
    job = client.reserve(timeout=0)
    client.delete(job)
print(count / (time.perf_counter() - started))
"""

OUR_WORKER = """
import sys, time
import greenstalk
worker = greenstalk.Worker(('127.0.0.1', int(sys.argv[1])), handlers={'default': lambda job: None})
count = int(sys.argv[2])
started = time.perf_counter()
worker.run(burst=True)
elapsed = time.perf_counter() - started
assert worker.counts['deleted'] == count, worker.counts
print(count / elapsed)
"""


def measure(python: str, script: str, port: int, count: int) -> float:
    result = subprocess.run(
        ["taskset", "-c", CLIENT_CPU, python, "-c", script, str(port), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    count = 1000 if arguments.quick else 20000
    peer_python = str(ensure_venv(GREENSTALK_2_1_1, DEFAULT_VENVS))
    rates: dict[str, list[float]] = {"greenstalk 2.1.1": [], "Worker": []}
    with run_beanstalkd() as server:
        assert server.process is not None
        assert isinstance(server.address, tuple)
        subprocess.run(["taskset", "-pc", SERVER_CPU, str(server.process.pid)], check=True,
                       capture_output=True)
        port = server.address[1]
        with greenstalk.Client(server.address) as filler:
            for round_number in range(arguments.rounds):
                for name, python, script in (
                    ("greenstalk 2.1.1", peer_python, PEER_LOOP),
                    ("Worker", sys.executable, OUR_WORKER),
                ):
                    filler.put_many([b"x" * 100] * count)
                    time.sleep(0.2)  # let the server settle after the fill
                    rates[name].append(measure(python, script, port, count))
                print(f"round {round_number + 1}/{arguments.rounds} done", file=sys.stderr)
    theirs = statistics.median(rates["greenstalk 2.1.1"])
    ours = statistics.median(rates["Worker"])
    print(f"greenstalk 2.1.1 reserve+delete loop: {theirs:8.0f} jobs/s")
    print(f"greenstalk.Worker (pipelined ack):     {ours:8.0f} jobs/s   {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
