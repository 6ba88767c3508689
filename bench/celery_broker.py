"""Tasks per second through a real Celery worker: greenstalk.kombu against Celery on Redis.

Run from the repository root::

    .venv/bin/python bench/celery_broker.py              # 3 interleaved rounds
    .venv/bin/python bench/celery_broker.py --quick      # a smoke run
    .venv/bin/python bench/celery_broker.py --rounds 5 --tasks 20000

Needs ``redis-server`` (Debian: ``apt-get install redis-server``) and the
``redis`` package in the environment (``.venv/bin/pip install redis``) for
the peer; without them only greenstalkd and beanstalkd are measured.

Each round, for each pool (prefork with 2 processes, threads with 4
threads), acknowledgement mode (Celery's default, acknowledging on receipt,
and ``task_acks_late``) and server (greenstalkd, beanstalkd, Redis), in
turn: a fresh server, pinned to CPU 0, gets ``--tasks`` messages for a task
that does nothing; a ``celery worker`` process (its pool inherits the pin)
starts on CPU 1, without gossip, mingle or heartbeats; this script, on CPU
0 too, watches how many messages are left (waiting or unacknowledged) and
times the middle 80% of the run (from 10% done to 90% done), so that the
worker's start-up does not count. The figure is the median of the rounds,
in tasks per second, with its ratio to Redis.

This file also serves as the worker's application: ``celery -A
celery_broker worker``, run in ``bench/`` with ``$BENCH_CELERY_BROKER`` set,
imports it and finds ``app`` and its ``noop`` task. (It is not called
``bench/celery.py``: that name would shadow the celery package for mypy,
and for this script, whose directory comes first on sys.path.)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from celery import Celery

import greenstalk
import greenstalk.kombu
from greenstalk.testing import run_server

HERE = Path(__file__).resolve().parent
BROKER_VARIABLE = "BENCH_CELERY_BROKER"
ACKS_LATE_VARIABLE = "BENCH_CELERY_ACKS_LATE"
SERVER_CPU = 0
WORKER_CPU = 1
POOLS = {"prefork": 2, "threads": 4}
REDIS = "Redis"


def make_app(url: str, acks_late: bool) -> Celery:
    app = Celery("celery_broker", broker=url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=acks_late,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
    )
    return app


if os.environ.get(BROKER_VARIABLE):
    # Imported by the celery worker process: the application.
    app = make_app(os.environ[BROKER_VARIABLE], os.environ.get(ACKS_LATE_VARIABLE) == "1")

    @app.task(name="celery_broker.noop")  # type: ignore[untyped-decorator]
    def noop() -> None:
        """Nothing: what the broker and Celery cost per task."""


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
            yield f"redis://127.0.0.1:{port}/0"
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


def left_to_do(url: str) -> Callable[[], int]:
    """How many tasks of the ``celery`` queue wait or are unacknowledged, as a function."""
    if url.startswith("redis://"):
        client = importlib.import_module("redis").Redis.from_url(url)
        # kombu's Redis transport keeps delivered, unacknowledged messages in "unacked".
        return lambda: int(client.llen("celery")) + int(client.hlen("unacked"))
    beanstalk = greenstalk.Client(greenstalk.kombu.server_address(
        importlib.import_module("kombu").Connection(url)))

    def count() -> int:
        try:
            stats = beanstalk.stats_tube("celery")
        except greenstalk.NotFoundError:
            return 0
        return int(stats["current-jobs-ready"] + stats["current-jobs-reserved"])

    return count


def measure(url: str, tasks: int, pool: str, acks_late: bool) -> float:
    """Tasks per second of one run: fill, start a worker, time the middle 80%."""
    app = make_app(url, acks_late)
    with app.producer_or_acquire() as producer:
        for _ in range(tasks):
            app.send_task("celery_broker.noop", producer=producer)
    app.close()
    left = left_to_do(url)
    assert left() == tasks, left()
    worker = subprocess.Popen(
        ["taskset", "-c", str(WORKER_CPU), sys.executable, "-m", "celery", "-A",
         "celery_broker", "worker", "--pool", pool, "--concurrency", str(POOLS[pool]),
         "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=HERE,
        env={**os.environ, BROKER_VARIABLE: url, ACKS_LATE_VARIABLE: "1" if acks_late else "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        marks = {}
        deadline = time.monotonic() + 600
        for fraction in (0.9, 0.1):
            while left() > tasks * fraction:
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError(f"the worker stalled or died ({left()} tasks left)")
                time.sleep(0.005)
            marks[fraction] = time.perf_counter()
        while left():
            time.sleep(0.01)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait()
    return 0.8 * tasks / (marks[0.1] - marks[0.9])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10000)
    parser.add_argument("--quick", action="store_true", help="1 round of 2,000 tasks")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.tasks = 1, 2000
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
            servers[REDIS] = redis_server
        else:
            print("no redis-server: apt-get install redis-server to measure Redis",
                  file=sys.stderr)
    cases = [(pool, acks_late) for pool in POOLS for acks_late in (False, True)]
    rates: dict[tuple[str, bool, str], list[float]] = {
        (pool, acks_late, name): [] for pool, acks_late in cases for name in servers
    }
    for round_number in range(arguments.rounds):
        for pool, acks_late in cases:
            for name, server in servers.items():
                with server() as url:
                    rates[pool, acks_late, name].append(
                        measure(url, arguments.tasks, pool, acks_late)
                    )
        print(f"round {round_number + 1}/{arguments.rounds} done", file=sys.stderr)
    version = importlib.import_module("celery").__version__
    print(f"{arguments.tasks} tasks, empty task, celery {version}, worker on 1 CPU and the "
          f"server on the other, median of {arguments.rounds} round(s), tasks/s")
    for pool, acks_late in cases:
        acks = "task_acks_late" if acks_late else "acks on receipt"
        print(f"  {pool} ({POOLS[pool]}), {acks}:")
        peer = rates.get((pool, acks_late, REDIS))
        for name in servers:
            rate = statistics.median(rates[pool, acks_late, name])
            line = f"    {name:12} {rate:7.0f}"
            if peer and name != REDIS:
                line += f"   {rate / statistics.median(peer):.2f}x Redis"
            print(line)


if __name__ == "__main__":
    main()
