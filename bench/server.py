"""Compare greenstalkd with beanstalkd 1.12: the same load, the same client code, one run.

Run from the repository root::

    .venv/bin/python bench/server.py              # 5 interleaved rounds and the memory test
    .venv/bin/python bench/server.py --quick      # a smoke run with few jobs
    .venv/bin/python bench/server.py --rounds 9 --skip-memory

Each server runs as a process of its own pinned to CPU 0 (greenstalkd as
``python -m greenstalk.server``); the load comes from bare sockets driven
by greenstalk's protocol core (no client library around it) pinned to
CPU 1, so client cost is the same for both and small. For each case the
figure is the median over interleaved rounds (round 1: beanstalkd,
greenstalkd; round 2: ...), each on a fresh server.

Cases:

- ``pipelined put``: 100-byte puts written as fast as the server takes them
  on one connection, while the replies are read; jobs/s.
- ``reserve+delete``: one round trip a job on one connection: the delete
  of the previous job goes out in the same write as the next
  ``reserve-with-timeout 0``; jobs/s from a prefilled tube.
- ``8 connections``: eight connections, each doing put, reserve, delete
  one round trip at a time (a selector keeps all eight busy); jobs/s.
- ``memory``: the server's resident size after one million 100-byte puts.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import selectors
import socket
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from greenstalk._protocol import commands
from greenstalk._protocol.commands import Request
from greenstalk._protocol.responses import Reply, ReplyReader
from greenstalk.testing import ServerProcess, run_server

SERVER_CPU = 0
CLIENT_CPU = 1
BODY = b"x" * 100
SERVERS = ("beanstalkd", "greenstalkd")


PUT = commands.put(BODY, 0, 0, 60)
RESERVE_NOW = commands.reserve(0)


class Peer:
    """A bare connection: commands formatted and replies parsed by greenstalk's protocol core."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = ReplyReader()
        self.replies: deque[Reply] = deque()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> None:
        """Read once from the socket, keeping the replies that are complete."""
        # 64 KiB: a larger recv buffer is mmapped and unmapped on every call.
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.replies.extend(self.reader.receive(data))

    def ask(self, *requests: Request[Any]) -> list[Any]:
        """Send the requests in one write; return their results in order."""
        self.sock.sendall(b"".join(data for data, _ in requests))
        while len(self.replies) < len(requests):
            self.read()
        return [parse(self.replies.popleft()) for _, parse in requests]


def pipelined_puts(peer: Peer, count: int) -> None:
    """Send ``count`` puts from a thread while reading every INSERTED reply."""
    data = PUT[0] * count

    def send() -> None:
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            peer.sock.sendall(view[start : start + 65536])

    sender = threading.Thread(target=send)
    sender.start()
    parse = PUT[1]
    done = 0
    while done < count:
        peer.read()
        while peer.replies:
            parse(peer.replies.popleft())
            done += 1
    sender.join()


def measure_put(address: tuple[str, int], count: int) -> float:
    peer = Peer(address)
    try:
        started = time.perf_counter()
        pipelined_puts(peer, count)
        return count / (time.perf_counter() - started)
    finally:
        peer.close()


def measure_reserve_delete(address: tuple[str, int], count: int) -> float:
    peer = Peer(address)
    try:
        pipelined_puts(peer, count)
        started = time.perf_counter()
        (job,) = peer.ask(RESERVE_NOW)
        for _ in range(count - 1):
            _, job = peer.ask(commands.delete(job[0]), RESERVE_NOW)
        peer.ask(commands.delete(job[0]))
        return count / (time.perf_counter() - started)
    finally:
        peer.close()


class _Cycler:
    """One connection cycling put, reserve, delete, one command in flight."""

    def __init__(self, peer: Peer, jobs: int) -> None:
        self.peer = peer
        self.left = jobs
        self.pending: Request[Any] = PUT

    def send(self, request: Request[Any]) -> None:
        self.pending = request
        self.peer.sock.sendall(request[0])

    def on_readable(self) -> bool:
        """Read, and send the next command once a reply is complete; False when done."""
        peer = self.peer
        peer.read()
        if not peer.replies:
            return True
        request = self.pending
        result = request[1](peer.replies.popleft())
        if request is PUT:
            self.send(RESERVE_NOW)
        elif request is RESERVE_NOW:
            self.send(commands.delete(result[0]))
        else:
            self.left -= 1
            if not self.left:
                return False
            self.send(PUT)
        return True


def measure_connections(address: tuple[str, int], count: int, connections: int = 8) -> float:
    """``connections`` sockets, each cycling put, reserve, delete one round trip at a time."""
    per_connection = count // connections
    cyclers = {}
    with selectors.DefaultSelector() as selector:
        for index in range(connections):
            peer = Peer(address)
            # Each connection works in a tube of its own, so it reserves its own job.
            tube = f"t{index}"
            peer.ask(commands.use(tube), commands.watch(tube), commands.ignore("default"))
            cyclers[peer.sock.fileno()] = _Cycler(peer, per_connection)
            selector.register(peer.sock, selectors.EVENT_READ)
        started = time.perf_counter()
        for cycler in cyclers.values():
            cycler.send(PUT)
        remaining = connections
        while remaining:
            for key, _ in selector.select():
                cycler = cyclers[key.fd]
                if not cycler.on_readable():
                    selector.unregister(cycler.peer.sock)
                    remaining -= 1
        elapsed = time.perf_counter() - started
    for cycler in cyclers.values():
        cycler.peer.close()
    return per_connection * connections / elapsed


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_memory(address: tuple[str, int], pid: int, count: int) -> tuple[int, int]:
    before = resident_kib(pid)
    peer = Peer(address)
    try:
        for start in range(0, count, 100_000):
            pipelined_puts(peer, min(100_000, count - start))
        (stats,) = peer.ask(commands.stats())
        if stats["current-jobs-ready"] != count:
            raise RuntimeError("the server does not hold every job")
    finally:
        peer.close()
    return before, resident_kib(pid)


def _in_client_process(function: Callable[..., object], *args: object) -> object:
    """Run ``function(*args)`` in a child process pinned to the client CPU."""
    context = multiprocessing.get_context("fork")
    with context.Pool(1, os.sched_setaffinity, (0, {CLIENT_CPU})) as pool:
        return pool.apply(function, args)


@contextlib.contextmanager
def pinned_server(kind: str) -> Iterator[ServerProcess]:
    with run_server(kind, in_process=False) as server:
        assert server.process is not None
        os.sched_setaffinity(server.process.pid, {SERVER_CPU})
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="few jobs: a smoke run")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    scale = 20 if args.quick else 1
    cases: dict[str, tuple[Callable[[tuple[str, int], int], float], int]] = {
        "pipelined put": (measure_put, 200_000 // scale),
        "reserve+delete": (measure_reserve_delete, 20_000 // scale),
        "8 connections": (measure_connections, 16_000 // scale),
    }
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs")
    results: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        for case, (function, count) in cases.items():
            for kind in SERVERS:
                with pinned_server(kind) as server:
                    assert isinstance(server.address, tuple)
                    rate = _in_client_process(function, server.address, count)
                    assert isinstance(rate, float)
                results.setdefault((case, kind), []).append(rate)
        print(f"round {round_number + 1}/{args.rounds} done", flush=True)
    print()
    print(f"{'case':<16}{'beanstalkd':>14}{'greenstalkd':>14}{'ratio':>8}")
    for case in cases:
        theirs = statistics.median(results[(case, "beanstalkd")])
        ours = statistics.median(results[(case, "greenstalkd")])
        print(f"{case:<16}{theirs:>12.0f}/s{ours:>12.0f}/s{ours / theirs:>7.2f}x")
    if args.skip_memory:
        return
    count = 1_000_000 // scale
    print()
    print(f"memory after {count} puts of {len(BODY)} bytes (resident set):")
    sizes = {}
    for kind in SERVERS:
        with pinned_server(kind) as server:
            assert isinstance(server.address, tuple)
            assert server.process is not None
            result = _in_client_process(measure_memory, server.address, server.process.pid, count)
            assert isinstance(result, tuple)
            before, after = result
            sizes[kind] = after
            print(f"  {kind:<12} {before / 1024:8.1f} MiB at start, {after / 1024:8.1f} MiB after")
    ratio = sizes["greenstalkd"] / sizes["beanstalkd"]
    print(f"  ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
