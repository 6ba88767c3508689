"""How long ``greenstalk exporter`` takes to answer a scrape of a server with many tubes.

Run from the repository root::

    .venv/bin/python bench/exporter.py                   # 2,000 tubes, both servers, both namings
    .venv/bin/python bench/exporter.py --tubes 500 --rounds 3
    .venv/bin/python bench/exporter.py --servers beanstalkd --names prometheus

It starts each server (beanstalkd, and greenstalkd as a process) on a free
loopback port and fills it: every tube gets a ready, a delayed and a buried
job, so the default names read every tube's next ready and next delayed job
(the most work a scrape can have). Then it starts the real command,
``greenstalk exporter``, and times whole HTTP scrapes of ``/metrics`` as
Prometheus sends them (gzip accepted): the median, fastest and slowest of
the rounds after one untimed scrape. With two CPUs or more, the server is
pinned to CPU 0 and the exporter to CPU 1.

There is no peer to run beside it here (messagebird's exporter is Go, which
this machine cannot build), so each row is compared with the issue's budget
of one second, and the namings with each other. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import greenstalk  # noqa: E402
from greenstalk.testing import ServerProcess, run_server  # noqa: E402

BUDGET = 1.0
SERVER_CPU = 0
EXPORTER_CPU = 1


def pin(pid: int, cpu: int) -> None:
    """Keep process ``pid`` on ``cpu`` when the machine has two CPUs or more."""
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})


def fill(address: Any, tubes: int) -> None:
    """Give each of ``tubes`` tubes a ready, a delayed and a buried job."""
    with greenstalk.Client(address) as client:
        for number in range(tubes):
            client.use(f"tube-{number:05d}")
            client.put(b'{"job": "ready"}')
            client.put(b'{"job": "later"}', delay=3600)
            buried = client.put(b'{"job": "failed"}')
            client.reserve_job(buried)
            client.bury(buried)


@contextlib.contextmanager
def exporter(address: Any, names: str) -> Iterator[str]:
    """Run ``greenstalk exporter`` for ``address``; yields the URL of its /metrics."""
    command = [
        sys.executable, "-m", "greenstalk", "exporter",
        "-a", greenstalk.describe_address(address),
        "--listen", "127.0.0.1:0", "--names", names, "--timeout", "30",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        pin(process.pid, EXPORTER_CPU)
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"serving (\S+/metrics)", line)
        if found is None:
            raise RuntimeError(f"the exporter did not start: {line}{process.stderr.read()}")
        yield found.group(1)
    finally:
        process.terminate()
        process.wait(30)
        if process.stderr is not None:
            process.stderr.close()


def scrape(url: str) -> tuple[float, int, int]:
    """One scrape as Prometheus makes it: seconds, compressed size, and the up value."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    with opener.open(request, timeout=60) as response:
        body = response.read()
    elapsed = time.perf_counter() - started
    text = gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body
    up = 1 if re.search(rb"^beanstalkd_up\{[^}]*\} 1\.0$", text, re.MULTILINE) else 0
    return elapsed, len(body), up


def measure(server: ServerProcess, names: str, rounds: int) -> dict[str, float]:
    with exporter(server.address, names) as url:
        scrape(url)  # untimed: the connection is made, the code warmed up
        times = []
        for _ in range(rounds):
            elapsed, size, up = scrape(url)
            if not up:
                raise RuntimeError("the scrape says the server is down")
            times.append(elapsed)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "size": size,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tubes", type=int, default=2000, help="tubes to fill [2000]")
    parser.add_argument("--rounds", type=int, default=7, help="timed scrapes per row [7]")
    parser.add_argument("--servers", default="beanstalkd,greenstalkd",
                        help="servers to run, comma-separated [beanstalkd,greenstalkd]")
    parser.add_argument("--names", default="prometheus,messagebird",
                        help="namings to time, comma-separated [prometheus,messagebird]")
    options = parser.parse_args(argv)
    namings = options.names.split(",")
    print(f"{options.tubes} tubes, each with a ready, a delayed and a buried job; "
          f"{options.rounds} scrapes per row (gzip), after one untimed")
    pinned = (os.cpu_count() or 1) >= 2
    print("server on CPU 0, exporter on CPU 1" if pinned else "one CPU: nothing pinned")
    print()
    header = f"{'server':<12} {'names':<12} {'median':>8} {'fastest':>8} {'slowest':>8} " \
             f"{'gzipped':>9} {'vs 1 s':>7}"
    print(header)
    print("-" * len(header))
    for kind in options.servers.split(","):
        with run_server(kind, in_process=False) as server:
            assert server.process is not None
            pin(server.process.pid, SERVER_CPU)
            fill(server.address, options.tubes)
            medians = {}
            for names in namings:
                row = measure(server, names, options.rounds)
                medians[names] = row["median"]
                print(f"{kind:<12} {names:<12} {row['median']:>7.3f}s {row['min']:>7.3f}s "
                      f"{row['max']:>7.3f}s {row['size'] / 1e6:>7.2f}MB "
                      f"{row['median'] / BUDGET:>6.2f}x", flush=True)
            if len(medians) == 2:
                ratio = medians["prometheus"] / medians["messagebird"]
                print(f"{'':<12} prometheus names take {ratio:.2f}x the time of messagebird's "
                      "(they also read each tube's next jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
