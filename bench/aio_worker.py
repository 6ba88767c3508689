"""Benchmark worker for the asyncio comparison: times one client against a running server.

``bench/aio.py`` starts one worker per client, each pinned to a CPU with
``taskset`` and run by the Python of that client's environment: ours
(``greenstalk.aio`` and the sync ``greenstalk.Client``) by the repository's,
aiostalk 1.3.1 by its own (it depends on greenstalk 2.x, which shares our
import name). The worker runs with ``python -E -s``: no environment
variables or user site-packages, but this directory on ``sys.path``, for
``client_worker.py``'s setup connection, sync timing loops and serving
loop (its ``serve`` and ``measure``, which do the draining and checks). That
directory holds only the bench scripts, so nothing else of this repository
reaches a peer's environment.

The protocol is ``client_worker.py``'s: one JSON line describing the client,
then one JSON request a line on stdin, each answered with one JSON line::

    {"op": "put-tasks", "size": 100, "n": 20000}
    -> {"op": "put-tasks", "size": 100, "n": 20000, "seconds": 0.31, "ops_per_s": 64516.1}

Operations, each counting jobs (``n`` in all, shared evenly among the
tasks or threads where there are several):

``put``
    one ``put`` after the other on one connection;
``reserve-delete``
    ``reserve(timeout=0)`` then ``delete``, one job after the other, on one
    connection;
``put-tasks``
    ``--tasks`` asyncio tasks putting at once on one shared connection. Our
    client pipelines concurrent calls by itself; aiostalk allows one call
    at a time on a connection (two waiting readers make asyncio's
    ``StreamReader`` raise), so its calls go through an ``asyncio.Lock``,
    as its users would have to write. Not applicable to the sync client;
``put-connections``
    ``--tasks`` asyncio tasks, each putting on its own connection; for the
    sync client, as many threads, each with its own client.

All asyncio clients run on the standard library's event loop (never
uvloop). Before every measurement ``client_worker.RawConnection`` drains the
tube and, for ``reserve-delete``, inserts the jobs to consume, outside the
timed section; afterwards it drains again and checks what is left.

Run by hand::

    echo '{"op": "put-tasks", "size": 100, "n": 10000}' | \\
        .venv/bin/python -E -s bench/aio_worker.py --client ours-aio --port 11300
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import importlib.metadata
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from client_worker import (
    RawConnection,
    Subject,
    open_ours,
    serve,
    time_puts,
    time_reserve_delete,
)

OURS_AIO = "ours-aio"
AIOSTALK = "aiostalk-1.3.1"
OURS_SYNC = "ours-sync"
CLIENTS = (OURS_AIO, AIOSTALK, OURS_SYNC)
OPERATIONS = ("put", "reserve-delete", "put-tasks", "put-connections")
DEFAULT_TASKS = 8

Put = Callable[[bytes], Awaitable[object]]


class NotApplicableError(ValueError):
    """The client has no way to run this operation (the sync client and ``put-tasks``)."""


# -- asyncio clients -------------------------------------------------------------


@dataclass(frozen=True)
class AsyncConnection:
    """One connection of an asyncio client, reduced to the calls the benchmark times."""

    put: Put
    reserve: Callable[[], Awaitable[Any]]  # reserve with timeout 0
    delete: Callable[[Any], Awaitable[object]]
    close: Callable[[], Awaitable[object]]

    @classmethod
    def of(cls, client: Any) -> AsyncConnection:
        """A connected client with greenstalk's method names (ours and aiostalk share them)."""
        return cls(
            put=client.put,
            reserve=functools.partial(client.reserve, timeout=0),
            delete=client.delete,
            close=client.close,
        )


@dataclass(frozen=True)
class AsyncLibrary:
    """An asyncio client library: how to connect it and what it is."""

    name: str
    version: str
    module_file: str
    connect: Callable[[str, int], Awaitable[AsyncConnection]]
    #: True when concurrent calls on one connection are allowed (ours pipelines them).
    concurrent_calls: bool


def ours_aio() -> AsyncLibrary:
    """This repository's ``greenstalk.aio`` (the Python running this worker must have it)."""
    import greenstalk
    import greenstalk.aio

    async def connect(host: str, port: int) -> AsyncConnection:
        return AsyncConnection.of(await greenstalk.aio.connect((host, port)))

    return AsyncLibrary(
        name=OURS_AIO,
        version=greenstalk.__version__,
        module_file=str(greenstalk.aio.__file__),
        connect=connect,
        concurrent_calls=True,
    )


def aiostalk() -> AsyncLibrary:
    """aiostalk 1.3.1 from PyPI, with bytes bodies (``encoding=None``) like ours."""
    version = importlib.metadata.version("aiostalk")
    if version != "1.3.1":
        raise RuntimeError(f"expected aiostalk 1.3.1 in this environment, found {version}")
    module: Any = importlib.import_module("aiostalk")

    async def connect(host: str, port: int) -> AsyncConnection:
        client = module.Client((host, port), encoding=None)
        await client.connect()
        return AsyncConnection.of(client)

    return AsyncLibrary(
        name=AIOSTALK,
        version=version,
        module_file=str(module.__file__),
        connect=connect,
        concurrent_calls=False,
    )


async def put_loop(put: Put, body: bytes, count: int) -> None:
    """Await ``count`` calls of ``put(body)``, one after the other."""
    for _ in range(count):
        await put(body)


def serialised(put: Put) -> Put:
    """``put`` behind an ``asyncio.Lock``: one call at a time on a connection that needs it."""
    lock = asyncio.Lock()

    async def locked_put(body: bytes) -> object:
        async with lock:
            return await put(body)

    return locked_put


def shares(count: int, parts: int) -> list[int]:
    """Split ``count`` operations into ``parts`` near-equal shares."""
    quotient, remainder = divmod(count, parts)
    return [quotient + (index < remainder) for index in range(parts)]


# -- what the worker times -----------------------------------------------------------


class Bench(ABC):
    """A client set up for every operation: its connections, and how it times each one."""

    name: str
    info: dict[str, object]

    @abstractmethod
    def timed(self, op: str, body: bytes, count: int) -> tuple[float, bytes | None]:
        """Run ``op`` for ``count`` jobs; return its seconds and the last reserved body, if any."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""


class AsyncBench(Bench):
    """An asyncio client on a standard-library event loop, with ``tasks`` open connections.

    The first connection serves the one-connection operations; ``put-connections``
    uses them all.
    """

    def __init__(self, library: AsyncLibrary, host: str, port: int, tasks: int) -> None:
        if "uvloop" in sys.modules:  # never: nothing here imports it
            raise RuntimeError("uvloop is loaded; the benchmark uses asyncio's own loop")
        self.name = library.name
        self._library = library
        self._tasks = tasks
        self._loop = asyncio.new_event_loop()
        self._connections: list[AsyncConnection] = []
        for _ in range(tasks):
            self._connections.append(self._loop.run_until_complete(library.connect(host, port)))
        loop_type = type(self._loop)
        self.info = {
            "version": library.version,
            "module": library.module_file,
            "loop": f"{loop_type.__module__}.{loop_type.__qualname__}",
        }

    def timed(self, op: str, body: bytes, count: int) -> tuple[float, bytes | None]:
        """Run ``op`` on the event loop (see the module's docstring)."""
        return self._loop.run_until_complete(self._timed(op, body, count))

    async def _timed(self, op: str, body: bytes, count: int) -> tuple[float, bytes | None]:
        first = self._connections[0]
        last_body: bytes | None = None
        if op == "put":
            start = time.perf_counter()
            await put_loop(first.put, body, count)
        elif op == "reserve-delete":
            reserve, delete = first.reserve, first.delete
            job: Any = None
            start = time.perf_counter()
            for _ in range(count):
                job = await reserve()
                await delete(job)
            last_body = job.body
        elif op == "put-tasks":
            put = first.put if self._library.concurrent_calls else serialised(first.put)
            start = time.perf_counter()
            await asyncio.gather(*(put_loop(put, body, n) for n in shares(count, self._tasks)))
        elif op == "put-connections":
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    put_loop(connection.put, body, n)
                    for connection, n in zip(self._connections, shares(count, self._tasks))
                )
            )
        else:
            raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")
        return time.perf_counter() - start, last_body

    def close(self) -> None:
        """Close the connections and the event loop."""
        try:
            for connection in self._connections:
                self._loop.run_until_complete(connection.close())
        finally:
            self._loop.close()


class SyncBench(Bench):
    """Our sync client: ``tasks`` clients, and as many threads for ``put-connections``."""

    def __init__(self, host: str, port: int, tasks: int) -> None:
        self.name = OURS_SYNC
        self._subjects: list[Subject] = [open_ours(host, port) for _ in range(tasks)]
        # The threads start with the first (warm-up) measurement and are reused after it.
        self._pool = ThreadPoolExecutor(max_workers=tasks)
        first = self._subjects[0]
        self.info = {"version": first.version, "module": first.module_file, "loop": None}

    def timed(self, op: str, body: bytes, count: int) -> tuple[float, bytes | None]:
        """Run ``op`` (see the module's docstring); ``put-tasks`` does not apply."""
        first = self._subjects[0]
        if op == "put":
            return time_puts(first.put, body, count), None
        if op == "reserve-delete":
            seconds, job = time_reserve_delete(first.reserve, first.delete, count)
            return seconds, first.body_of(job)
        if op == "put-tasks":
            raise NotApplicableError("a sync client makes one call at a time on a connection")
        if op == "put-connections":
            start = time.perf_counter()
            futures = [
                self._pool.submit(time_puts, subject.put, body, n)
                for subject, n in zip(self._subjects, shares(count, len(self._subjects)))
            ]
            for future in futures:
                future.result()
            return time.perf_counter() - start, None
        raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")

    def close(self) -> None:
        """Stop the threads and close the clients."""
        self._pool.shutdown()
        for subject in self._subjects:
            subject.close()


def open_bench(client: str, host: str, port: int, tasks: int) -> Bench:
    """Import and connect the client named ``client``."""
    if client == OURS_SYNC:
        return SyncBench(host, port, tasks)
    library = ours_aio() if client == OURS_AIO else aiostalk()
    return AsyncBench(library, host, port, tasks)


# -- serving -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Connect the chosen client and the setup connection, then serve requests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11300)
    parser.add_argument(
        "--tasks",
        type=int,
        default=DEFAULT_TASKS,
        help=f"concurrent tasks, connections or threads (default {DEFAULT_TASKS})",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    bench = open_bench(args.client, args.host, args.port, args.tasks)
    try:
        raw = RawConnection(args.host, args.port)
        try:
            info: dict[str, object] = {
                "client": bench.name,
                **bench.info,
                "python": sys.version.split()[0],
                "tasks": args.tasks,
            }
            serve(info, bench.timed, raw)
        finally:
            raw.close()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
