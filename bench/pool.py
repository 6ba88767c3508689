"""A pool of three servers against one client and one server: puts, one by one and pipelined.

Run from the repository root::

    .venv/bin/python bench/pool.py                 # beanstalkd, 5 rounds
    .venv/bin/python bench/pool.py --server greenstalkd --rounds 3
    .venv/bin/python bench/pool.py --quick         # a smoke run

It starts three servers (pinned to the last CPU) and measures, in this
process (pinned to the first CPU), interleaved round by round:

* ``put``: 100-byte puts one at a time, by a :class:`greenstalk.Client` of
  one server, by three clients used in turn (what spreading costs the
  servers, without a pool), and by a :class:`greenstalk.Pool` of the three
  (round-robin);
* ``put_many``: the same puts pipelined, by the client into one server and by
  the blocking and the asyncio pool over three.

It prints the median ops/s of each and the pool's ratio to the client: the
targets are >= 0.95x for single puts (no pool overhead worth naming) and
>= 2x for put_many. The servers are emptied (restarted) between rounds.

Last, it measures what one pipelined put costs in CPU time, the server's
and the client's (from ``/proc``), during a client's ``put_many`` into one
server, and prints the most any client could reach on this machine: three
servers sharing one CPU cannot take puts faster than one server's CPU
allows, and a client with every CPU cannot go past the number of CPUs over
the CPU time a put costs the server and the client together. When the
single client already keeps its server's CPU busy, no pool can double it
on two CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import greenstalk
import greenstalk.aio
from greenstalk.testing import ServerProcess, run_server

BODY = b"x" * 100


@contextlib.contextmanager
def servers(kind: str, count: int, cpu: int) -> Iterator[list[ServerProcess]]:
    """``count`` fresh servers of ``kind``, each pinned to ``cpu``."""
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(run_server(kind, in_process=False)) for _ in range(count)
        ]
        for server in started:
            assert server.process is not None
            subprocess.run(
                ["taskset", "--all-tasks", "--cpu-list", "--pid", str(cpu),
                 str(server.process.pid)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        yield started


def timed(operation: Callable[[], object], count: int) -> float:
    """Run ``operation`` (which does ``count`` puts) and return puts per second."""
    started = time.perf_counter()
    operation()
    return count / (time.perf_counter() - started)


def client_puts(address: Any, count: int) -> float:
    with greenstalk.Client(address) as client:
        put = client.put
        return timed(lambda: [put(BODY) for _ in range(count)], count)


def clients_in_turn_puts(addresses: list[Any], count: int) -> float:
    clients = [greenstalk.Client(address) for address in addresses]
    try:
        puts = [client.put for client in clients]

        def put_in_turn() -> None:
            for n in range(count):
                puts[n % 3](BODY)

        return timed(put_in_turn, count)
    finally:
        for client in clients:
            client.close()


def pool_puts(addresses: list[Any], count: int) -> float:
    with greenstalk.Pool(addresses) as pool:
        put = pool.put
        return timed(lambda: [put(BODY) for _ in range(count)], count)


def client_put_many(address: Any, count: int) -> float:
    with greenstalk.Client(address) as client:
        return timed(lambda: client.put_many([BODY] * count), count)


def pool_put_many(addresses: list[Any], count: int) -> float:
    with greenstalk.Pool(addresses) as pool:
        return timed(lambda: pool.put_many([BODY] * count), count)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def put_many_costs(kind: str, cpu: int, count: int) -> tuple[float, float, float]:
    """A client's ``put_many``: puts/s, then CPU seconds a put costs the server and the client."""
    with servers(kind, 1, cpu) as (server,), greenstalk.Client(server.address) as client:
        assert server.process is not None
        pid = server.process.pid
        bodies = [BODY] * count
        server_before, client_before = cpu_seconds(pid), cpu_seconds(os.getpid())
        started = time.perf_counter()
        client.put_many(bodies)
        elapsed = time.perf_counter() - started
        server_cost = (cpu_seconds(pid) - server_before) / count
        client_cost = (cpu_seconds(os.getpid()) - client_before) / count
    return count / elapsed, server_cost, client_cost


def aio_pool_put_many(addresses: list[Any], count: int) -> float:
    async def run() -> float:
        async with greenstalk.aio.Pool(addresses) as pool:
            started = time.perf_counter()
            await pool.put_many([BODY] * count)
            return count / (time.perf_counter() - started)

    return asyncio.run(run())


CASES: dict[str, tuple[str, Callable[[list[Any], int], float]]] = {
    "put, client (1 server)": ("put", lambda a, n: client_puts(a[0], n)),
    "put, 3 clients in turn (no pool)": ("put", clients_in_turn_puts),
    "put, Pool (3 servers)": ("put", pool_puts),
    "put_many, client (1 server)": ("put_many", lambda a, n: client_put_many(a[0], n)),
    "put_many, Pool (3 servers)": ("put_many", pool_put_many),
    "put_many, aio.Pool (3 servers)": ("put_many", aio_pool_put_many),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("beanstalkd", "greenstalkd"), default="beanstalkd")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="few operations, one round")
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    counts = {"put": 2_000 if args.quick else 20_000, "put_many": 5_000 if args.quick else 150_000}
    cpus = sorted(os.sched_getaffinity(0))
    client_cpu, server_cpu = cpus[0], cpus[-1]
    os.sched_setaffinity(0, {client_cpu})
    results: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(rounds):
        for name, (kind, measure) in CASES.items():
            with servers(args.server, 3, server_cpu) as started:
                results[name].append(measure([s.address for s in started], counts[kind]))
    print(f"{args.server}, client on CPU {client_cpu}, servers on CPU {server_cpu}, "
          f"median of {rounds} round(s)")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"  {name:32} {value:>10,.0f} puts/s")
    single = medians["put, Pool (3 servers)"] / medians["put, client (1 server)"]
    many = medians["put_many, Pool (3 servers)"] / medians["put_many, client (1 server)"]
    aio_many = medians["put_many, aio.Pool (3 servers)"] / medians["put_many, client (1 server)"]
    in_turn = medians["put, Pool (3 servers)"] / medians["put, 3 clients in turn (no pool)"]
    print(f"  Pool put / client put:            {single:.2f}x (target >= 0.95x)")
    print(f"  Pool put / 3 clients in turn:     {in_turn:.2f}x (the pool's own cost)")
    print(f"  Pool put_many / client put_many:  {many:.2f}x (target >= 2x)")
    print(f"  aio.Pool put_many / client:       {aio_many:.2f}x")
    rate, server_cost, client_cost = put_many_costs(args.server, server_cpu, counts["put_many"] * 2)
    shared_cpu = min(1 / server_cost, 1 / client_cost) / rate
    any_cpus = len(cpus) / (server_cost + client_cost) / rate
    print(f"  a put in put_many costs {server_cost * 1e6:.1f} µs of server CPU and "
          f"{client_cost * 1e6:.1f} µs of client CPU ({rate:,.0f} puts/s)")
    print(f"  so put_many over 3 servers can reach at most {shared_cpu:.2f}x here with the "
          f"servers on one CPU, {any_cpus:.2f}x with all {len(cpus)} CPUs shared")


if __name__ == "__main__":
    main()
