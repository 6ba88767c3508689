"""Compare greenstalkd with beanstalkd 1.12: the same load, the same client code, one run.

Run from the repository root::

    .venv/bin/python bench/server.py              # 5 interleaved rounds and the memory test
    .venv/bin/python bench/server.py --quick      # a smoke run with few jobs
    .venv/bin/python bench/server.py --rounds 9 --skip-memory

Each server runs as a process of its own pinned to CPU 0 (greenstalkd as
``python -m greenstalk.server``); the load comes from a raw-socket client
pinned to CPU 1, so client cost is the same for both and as small as
possible. For each case the figure is the median over interleaved rounds
(round 1: beanstalkd, greenstalkd; round 2: ...), each on a fresh server.

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
from collections.abc import Callable, Iterator

from greenstalk.testing import ServerProcess, run_server

SERVER_CPU = 0
CLIENT_CPU = 1
BODY = b"x" * 100
SERVERS = ("beanstalkd", "greenstalkd")


def put_command(body: bytes = BODY) -> bytes:
    return b"put 0 0 60 %d\r\n%b\r\n" % (len(body), body)


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def pipelined_puts(sock: socket.socket, count: int) -> None:
    """Send ``count`` puts from a thread while reading every INSERTED reply."""
    data = put_command() * count

    def send() -> None:
        view = memoryview(data)
        for start in range(0, len(view), 65536):
            sock.sendall(view[start : start + 65536])

    sender = threading.Thread(target=send)
    sender.start()
    lines = 0
    while lines < count:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        lines += chunk.count(b"\r\n")
    sender.join()


def read_until(sock: socket.socket, buffer: bytearray, needed: Callable[[bytearray], bool]) -> None:
    while not needed(buffer):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk


def measure_put(address: tuple[str, int], count: int) -> float:
    with connect(address) as sock:
        started = time.perf_counter()
        pipelined_puts(sock, count)
        return count / (time.perf_counter() - started)


def _take_reserved(sock: socket.socket, buffer: bytearray) -> int:
    """Read one RESERVED reply with its body from ``buffer``/``sock``; returns the job id."""
    read_until(sock, buffer, lambda b: b"\r\n" in b)
    end = buffer.index(b"\r\n")
    words = bytes(buffer[:end]).split()
    if words[0] != b"RESERVED":
        raise RuntimeError(f"expected RESERVED, got {bytes(buffer[:end])!r}")
    total = end + 2 + int(words[2]) + 2
    read_until(sock, buffer, lambda b: len(b) >= total)
    del buffer[:total]
    return int(words[1])


def measure_reserve_delete(address: tuple[str, int], count: int) -> float:
    with connect(address) as sock:
        pipelined_puts(sock, count)
        buffer = bytearray()
        started = time.perf_counter()
        sock.sendall(b"reserve-with-timeout 0\r\n")
        job_id = _take_reserved(sock, buffer)
        for _ in range(count - 1):
            sock.sendall(b"delete %d\r\nreserve-with-timeout 0\r\n" % job_id)
            read_until(sock, buffer, lambda b: b.startswith(b"DELETED\r\n"))
            del buffer[:9]
            job_id = _take_reserved(sock, buffer)
        sock.sendall(b"delete %d\r\n" % job_id)
        read_until(sock, buffer, lambda b: b == b"DELETED\r\n")
        return count / (time.perf_counter() - started)


class _Cycler:
    """One connection cycling put, reserve, delete, one command in flight."""

    def __init__(self, sock: socket.socket, jobs: int) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.left = jobs
        self.step = "put"

    def start(self) -> None:
        self.sock.sendall(put_command())

    def on_readable(self) -> bool:
        """Read, and send the next command once a reply is complete; False when done."""
        buffer = self.buffer
        buffer += self.sock.recv(65536)
        end = buffer.find(b"\r\n")
        if end < 0:
            return True
        if self.step == "reserve":
            words = bytes(buffer[:end]).split()
            total = end + 2 + int(words[2]) + 2
            if len(buffer) < total:
                return True
            del buffer[:total]
            self.sock.sendall(b"delete %d\r\n" % int(words[1]))
            self.step = "delete"
            return True
        del buffer[: end + 2]
        if self.step == "put":
            self.sock.sendall(b"reserve-with-timeout 0\r\n")
            self.step = "reserve"
            return True
        self.left -= 1
        if not self.left:
            return False
        self.sock.sendall(put_command())
        self.step = "put"
        return True


def measure_connections(address: tuple[str, int], count: int, connections: int = 8) -> float:
    """``connections`` sockets, each cycling put, reserve, delete one round trip at a time."""
    per_connection = count // connections
    cyclers = {}
    with selectors.DefaultSelector() as selector:
        for index in range(connections):
            sock = connect(address)
            # Each connection works in a tube of its own, so it reserves its own job.
            sock.sendall(b"use t%d\r\nwatch t%d\r\nignore default\r\n" % (index, index))
            read_until(sock, bytearray(), lambda b: b.count(b"\r\n") >= 3)
            cyclers[sock.fileno()] = _Cycler(sock, per_connection)
            selector.register(sock, selectors.EVENT_READ)
        started = time.perf_counter()
        for cycler in cyclers.values():
            cycler.start()
        remaining = connections
        while remaining:
            for key, _ in selector.select():
                cycler = cyclers[key.fd]
                if not cycler.on_readable():
                    selector.unregister(cycler.sock)
                    remaining -= 1
        elapsed = time.perf_counter() - started
    for cycler in cyclers.values():
        cycler.sock.close()
    return per_connection * connections / elapsed


def resident_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure_memory(address: tuple[str, int], pid: int, count: int) -> tuple[int, int]:
    before = resident_kib(pid)
    with connect(address) as sock:
        for start in range(0, count, 100_000):
            pipelined_puts(sock, min(100_000, count - start))
        sock.sendall(b"stats\r\n")
        buffer = bytearray()
        read_until(sock, buffer, lambda b: b.endswith(b"\r\n") and b.count(b"\r\n") >= 2)
        if b"current-jobs-ready: %d\n" % count not in buffer:
            raise RuntimeError("the server does not hold every job")
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
