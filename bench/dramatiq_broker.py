"""Messages per second through a real Dramatiq worker: BeanstalkBroker against RedisBroker.

Run from the repository root::

    .venv/bin/python bench/dramatiq_broker.py            # 3 interleaved rounds
    .venv/bin/python bench/dramatiq_broker.py --quick    # a smoke run

Needs ``redis-server`` (Debian: ``apt-get install redis-server``) and the
``redis`` package in the environment (``.venv/bin/pip install redis``) for
the peer; without them only beanstalkd and greenstalkd are measured.

Each round, for each server (greenstalkd, beanstalkd, Redis), in turn:
the queue is filled with ``--messages`` messages for an actor that does
nothing; a ``dramatiq`` worker process (one process, ``--threads``
threads, Dramatiq's default middleware) starts pinned to CPU 1, with the
server pinned to CPU 0; this script, on CPU 0 too, watches how many
messages are still unacknowledged and times the middle 80% of the run
(from 10% done to 90% done), so that the worker's start-up does not
count. The figure is the median of the rounds, in messages per second.

This file also serves as the worker's application: ``dramatiq
dramatiq_broker --path bench`` imports it with ``$BENCH_BROKER_URL`` set,
and it declares its broker and its ``noop`` actor. (It is not called
``bench/dramatiq.py``: that name would shadow the dramatiq package for
mypy, and for this script, whose directory comes first on sys.path.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import dramatiq
from dramatiq import Message

import greenstalk
from greenstalk.dramatiq import BeanstalkBroker, address_from_url
from greenstalk.testing import run_server

HERE = Path(__file__).resolve().parent
URL_VARIABLE = "BENCH_BROKER_URL"
SERVER_CPU = 0
WORKER_CPU = 1


def make_broker(url: str) -> dramatiq.Broker:
    """A BeanstalkBroker for ``beanstalk://`` URLs, Dramatiq's RedisBroker for ``redis://``."""
    if url.startswith("redis://"):
        redis_broker = importlib.import_module("dramatiq.brokers.redis")
        return cast(dramatiq.Broker, redis_broker.RedisBroker(url=url))
    return BeanstalkBroker(url=url)


if os.environ.get(URL_VARIABLE):
    # Imported by the dramatiq worker process: the application.
    dramatiq.set_broker(make_broker(os.environ[URL_VARIABLE]))

    @dramatiq.actor(max_retries=0)
    def noop() -> None:
        """Nothing: what the broker and Dramatiq cost per message."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on a free port, pinned to the server CPU; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        process = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CPU), "redis-server", "--port", str(port),
             "--save", "", "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            redis = importlib.import_module("redis")
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            yield url
        finally:
            process.terminate()
            process.wait()


@contextlib.contextmanager
def beanstalk_server(kind: str) -> Iterator[str]:
    """beanstalkd or greenstalkd (a process of its own), pinned to the server CPU."""
    with run_server(kind, in_process=False) as server:
        assert server.process is not None
        assert isinstance(server.address, tuple)
        os.sched_setaffinity(server.process.pid, {SERVER_CPU})
        host, port = server.address
        yield f"beanstalk://{host}:{port}"


def unacknowledged(url: str) -> Callable[[], int]:
    """How many messages of the ``default`` queue are not yet acknowledged, as a function."""
    if url.startswith("redis://"):
        client = importlib.import_module("redis").Redis.from_url(url)
        return lambda: int(client.hlen("dramatiq:default.msgs"))
    address = address_from_url(url)
    beanstalk = greenstalk.Client(address)

    def count() -> int:
        try:
            stats = beanstalk.stats_tube("dramatiq.default")
        except greenstalk.NotFoundError:
            return 0
        return int(stats["current-jobs-ready"] + stats["current-jobs-reserved"])

    return count


def measure(url: str, messages: int, threads: int) -> float:
    """Messages per second of one run: fill, start a worker, time the middle 80%."""
    broker = make_broker(url)
    broker.declare_queue("default")
    for _ in range(messages):
        broker.enqueue(Message(queue_name="default", actor_name="noop", args=(), kwargs={},
                               options={}))
    left = unacknowledged(url)
    assert left() == messages, left()
    worker = subprocess.Popen(
        ["taskset", "-c", str(WORKER_CPU), sys.executable, "-m", "dramatiq", "dramatiq_broker",
         "--path", str(HERE), "--processes", "1", "--threads", str(threads)],
        env={**os.environ, URL_VARIABLE: url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        marks = {}
        deadline = time.monotonic() + 600
        for fraction in (0.9, 0.1):
            while left() > messages * fraction:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker stalled or died ({left()} messages left)")
                time.sleep(0.005)
            marks[fraction] = time.perf_counter()
        while left():
            time.sleep(0.01)
    finally:
        worker.terminate()
        worker.wait()
        broker.close()
    return 0.8 * messages / (marks[0.1] - marks[0.9])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 round of 2,000 messages")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.messages = 1, 2000
    os.sched_setaffinity(0, {SERVER_CPU})
    servers: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {
        "greenstalkd": lambda: beanstalk_server("greenstalkd"),
        "beanstalkd": lambda: beanstalk_server("beanstalkd"),
    }
    try:
        importlib.import_module("redis")
    except ImportError:
        print("no redis package: pip install redis to measure Redis", file=sys.stderr)
    else:
        if shutil.which("redis-server"):
            servers["Redis (RedisBroker)"] = redis_server
        else:
            print("no redis-server: apt-get install redis-server to measure Redis",
                  file=sys.stderr)
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for round_number in range(arguments.rounds):
        for name, server in servers.items():
            with server() as url:
                rates[name].append(measure(url, arguments.messages, arguments.threads))
        print(f"round {round_number + 1}/{arguments.rounds}: "
              + ", ".join(f"{name} {values[-1]:.0f}" for name, values in rates.items()),
              file=sys.stderr)
    peer = "Redis (RedisBroker)"
    print(f"{arguments.messages} messages, empty actor, dramatiq {dramatiq.__version__}, "
          f"1 process x {arguments.threads} threads, median of {arguments.rounds} round(s)")
    for name, values in rates.items():
        line = f"  {name:22} {statistics.median(values):8.0f} messages/s"
        if peer in rates and name != peer:
            line += f"   {statistics.median(values) / statistics.median(rates[peer]):.2f}x Redis"
        print(line)


if __name__ == "__main__":
    main()
