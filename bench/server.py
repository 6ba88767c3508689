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
- ``durable put, 1 connection`` and ``durable put, 8 connections``: with
  ``-b DIR -f 0`` (every reply waits for an fsync), one put in flight per
  connection; puts/s. The log directory is on the disk holding the system
  temporary directory, the same for both servers; the median time of an
  fdatasync there is printed beside (it swings when others write).
- ``memory``: the server's resident size after one million 100-byte puts.
- ``restart``: one million 100-byte jobs in a log, the server killed with
  SIGKILL and started again: the time until it answers, its resident size
  once it does, and its peak (VmHWM) on the way.

``--only throughput,durable,memory,restart`` picks sections.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
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


def measure_durable(address: tuple[str, int], count: int, connections: int = 1) -> float:
    """``connections`` sockets putting one job at a time each; puts/s over all of them."""
    per_connection = count // connections
    peers = {}
    left = {}
    with selectors.DefaultSelector() as selector:
        for _ in range(connections):
            peer = Peer(address)
            peers[peer.sock.fileno()] = peer
            left[peer.sock.fileno()] = per_connection
            selector.register(peer.sock, selectors.EVENT_READ)
        started = time.perf_counter()
        for peer in peers.values():
            peer.sock.sendall(PUT[0])
        remaining = connections
        while remaining:
            for key, _ in selector.select():
                peer = peers[key.fd]
                peer.read()
                while peer.replies:
                    PUT[1](peer.replies.popleft())
                    left[key.fd] -= 1
                    if left[key.fd]:
                        peer.sock.sendall(PUT[0])
                    else:
                        selector.unregister(peer.sock)
                        remaining -= 1
        elapsed = time.perf_counter() - started
    for peer in peers.values():
        peer.close()
    return per_connection * connections / elapsed


def measure_durable_8(address: tuple[str, int], count: int) -> float:
    return measure_durable(address, count, 8)


def fdatasync_time(directory: str, count: int = 200) -> float:
    """The median time in seconds of a 150-byte write and fdatasync in ``directory``."""
    fd, path = tempfile.mkstemp(dir=directory)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        times = []
        for index in range(count):
            started = time.perf_counter()
            os.pwrite(fd, b"x" * 150, index * 150)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        os.close(fd)
        os.unlink(path)


def resident_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


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
def pinned_server(kind: str, args: Sequence[str] = ()) -> Iterator[ServerProcess]:
    with run_server(kind, args=args, in_process=False) as server:
        assert server.process is not None
        os.sched_setaffinity(server.process.pid, {SERVER_CPU})
        yield server


Case = tuple[Callable[[tuple[str, int], int], float], int]


def run_cases(cases: dict[str, Case], rounds: int, durable: bool) -> None:
    """Interleaved rounds of every case on a fresh server each; prints the medians."""
    results: dict[tuple[str, str], list[float]] = {}
    syncs: list[float] = []
    for round_number in range(rounds):
        for case, (function, count) in cases.items():
            for kind in SERVERS:
                with contextlib.ExitStack() as stack:
                    args: list[str] = []
                    if durable:
                        directory = stack.enter_context(tempfile.TemporaryDirectory())
                        args = ["-b", directory, "-f", "0"]
                        syncs.append(fdatasync_time(directory))
                    server = stack.enter_context(pinned_server(kind, args))
                    assert isinstance(server.address, tuple)
                    rate = _in_client_process(function, server.address, count)
                    assert isinstance(rate, float)
                results.setdefault((case, kind), []).append(rate)
        print(f"round {round_number + 1}/{rounds} done", flush=True)
    print()
    print(f"{'case':<28}{'beanstalkd':>14}{'greenstalkd':>14}{'ratio':>8}")
    for case in cases:
        theirs = statistics.median(results[(case, "beanstalkd")])
        ours = statistics.median(results[(case, "greenstalkd")])
        print(f"{case:<28}{theirs:>12.0f}/s{ours:>12.0f}/s{ours / theirs:>7.2f}x")
    if syncs:
        print(f"fdatasync of 150 bytes on that disk: median {statistics.median(syncs) * 1e6:.0f} µs"
              f" (runs: {min(syncs) * 1e6:.0f}-{max(syncs) * 1e6:.0f} µs)")
    print()


def memory(count: int) -> None:
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
    print(f"  ratio {sizes['greenstalkd'] / sizes['beanstalkd']:.2f}x")
    print()


def restart(count: int) -> None:
    """Fill a log, kill the server, start it again: time to answer and memory."""
    print(f"restart with {count} jobs of {len(BODY)} bytes in the log:")
    for kind in SERVERS:
        with tempfile.TemporaryDirectory() as directory:
            with pinned_server(kind, ["-b", directory]) as server:
                assert isinstance(server.address, tuple)
                assert server.process is not None
                _in_client_process(measure_memory, server.address, server.process.pid, count)
                server.process.send_signal(signal.SIGKILL)
                server.process.wait()
            if kind == "beanstalkd":
                command = ["beanstalkd"]
            else:
                command = [sys.executable, "-m", "greenstalk.server"]
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            started = time.perf_counter()
            process = subprocess.Popen(
                [*command, "-l", "127.0.0.1", "-p", str(port), "-b", directory]
            )
            try:
                os.sched_setaffinity(process.pid, {SERVER_CPU})
                answered = _answer_time(("127.0.0.1", port), count, started)
                steady = resident_kib(process.pid)
                peak = resident_kib(process.pid, "VmHWM")
            finally:
                process.kill()
                process.wait()
            print(f"  {kind:<12} answers after {answered:5.2f} s; {steady / 1024:7.1f} MiB then,"
                  f" peak {peak / 1024:7.1f} MiB ({peak / steady:.2f}x)")
    print()


def _answer_time(address: tuple[str, int], count: int, started: float) -> float:
    """Seconds from ``started`` until the server at ``address`` reports ``count`` ready jobs.

    Polls every 10 ms: this is what is being measured.
    """
    while True:
        try:
            peer = Peer(address)
        except OSError:
            time.sleep(0.01)
            continue
        try:
            (stats,) = peer.ask(commands.stats())
        finally:
            peer.close()
        elapsed = time.perf_counter() - started
        if stats["current-jobs-ready"] != count:
            raise RuntimeError(f"{stats['current-jobs-ready']} jobs back, not {count}")
        return elapsed


SECTIONS = ("throughput", "durable", "memory", "restart")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="few jobs: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    if not sections <= set(SECTIONS):
        parser.error(f"unknown section in {args.only!r}")
    scale = 20 if args.quick else 1
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs")
    if "throughput" in sections:
        run_cases({
            "pipelined put": (measure_put, 200_000 // scale),
            "reserve+delete": (measure_reserve_delete, 20_000 // scale),
            "8 connections": (measure_connections, 16_000 // scale),
        }, args.rounds, durable=False)
    if "durable" in sections:
        run_cases({
            "durable put, 1 connection": (measure_durable, 4_000 // scale),
            "durable put, 8 connections": (measure_durable_8, 16_000 // scale),
        }, args.rounds, durable=True)
    if "memory" in sections:
        memory(1_000_000 // scale)
    if "restart" in sections:
        restart(1_000_000 // scale)


if __name__ == "__main__":
    main()
