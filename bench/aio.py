"""Compare greenstalk.aio with aiostalk 1.3.1 and with our sync client against one beanstalkd.

Run from the repository root::

    .venv/bin/python bench/aio.py            # both CPU modes, 5 rounds
    .venv/bin/python bench/aio.py --quick    # a smoke run with few operations
    .venv/bin/python bench/aio.py --cpus split --rounds 9 --verbose

It starts its own beanstalkd (TCP on 127.0.0.1), creates aiostalk's virtual
environment when missing, and runs each client in a worker process
(``bench/aio_worker.py``) pinned with ``taskset``: ``greenstalk.aio`` and our
sync client with this Python, aiostalk with its environment's. Each cell is
the median of interleaved rounds (round 1: ours-aio, aiostalk, ours-sync;
round 2: ...). It shares its set-up, pinning and worker plumbing with
``bench/clients.py``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from aio_worker import AIOSTALK, DEFAULT_TASKS, OURS_AIO, OURS_SYNC
from clients import (
    BENCH_DIR,
    CPU_MODES,
    DEFAULT_VENVS,
    SMALL,
    CpuMode,
    Peer,
    Results,
    Worker,
    check_cpus,
    ensure_venv,
    pin,
    spread,
)

from greenstalk.testing import find_beanstalkd, run_beanstalkd

AIO_WORKER = BENCH_DIR / "aio_worker.py"

AIOSTALK_1_3_1 = Peer(AIOSTALK, "aiostalk", "aiostalk==1.3.1", "aiostalk", "1.3.1")
CLIENT_ORDER = (OURS_AIO, AIOSTALK, OURS_SYNC)  # the order within every round

# The targets for ours-aio over aiostalk, by operation.
TARGETS = {"put": 1.2, "reserve-delete": 1.2, "put-tasks": 3.0}


@dataclass(frozen=True)
class Case:
    """One measured operation (100-byte bodies) with its job count."""

    op: str  # the worker's operation name
    count: int

    @property
    def sync_applies(self) -> bool:
        """False for concurrent calls on one connection, which a sync client cannot make."""
        return self.op != "put-tasks"

    def label(self, tasks: int) -> str:
        """The operation's name in the table."""
        return {
            "put": "put, sequential",
            "reserve-delete": "reserve+delete, sequential",
            "put-tasks": f"put, {tasks} tasks on one connection",
            "put-connections": f"put, {tasks} connections (sync: threads)",
        }[self.op]


def cases(scale: float) -> list[Case]:
    """The measured cases; ``scale`` multiplies every job count."""

    def n(count: int) -> int:
        return max(10, round(count * scale))

    return [
        Case("put", n(10_000)),
        Case("reserve-delete", n(5_000)),
        Case("put-tasks", n(20_000)),
        Case("put-connections", n(20_000)),
    ]


# -- workers -------------------------------------------------------------------


class AioWorker(Worker):
    """A worker process running ``aio_worker.py`` for one client."""

    def __init__(
        self, name: str, python: Path, cpu: int, address: tuple[str, int], tasks: int
    ) -> None:
        # Worker's own __init__ runs client_worker.py; only the command differs.
        self.name = name
        host, port = address
        self._process = subprocess.Popen(
            ["taskset", "--cpu-list", str(cpu), str(python), "-E", "-s", str(AIO_WORKER),
             "--client", name, "--host", host, "--port", str(port), "--tasks", str(tasks)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._answer()


@contextmanager
def running_workers(
    pythons: dict[str, Path], cpu: int, address: tuple[str, int], tasks: int
) -> Iterator[dict[str, Worker]]:
    """Start one worker per client, in round order, and stop them all on exit."""
    with ExitStack() as stack:
        workers: dict[str, Worker] = {}
        for name in CLIENT_ORDER:
            worker = AioWorker(name, pythons[name], cpu, address, tasks)
            stack.callback(worker.close)
            workers[name] = worker
        yield workers


def runs(case: Case, client: str) -> bool:
    """Whether ``client`` is measured for ``case``."""
    return client != OURS_SYNC or case.sync_applies


def run_mode(
    mode: CpuMode,
    pythons: dict[str, Path],
    plan: list[Case],
    rounds: int,
    tasks: int,
    verbose: bool,
) -> tuple[Results, dict[str, dict[str, object]]]:
    """Measure every case for every client in interleaved rounds, under one CPU pinning."""
    results = Results()
    with run_beanstalkd() as server, ExitStack() as stack:
        pin(server.process.pid, mode.server_cpu)
        address = server.address
        if not isinstance(address, tuple):  # never: run_beanstalkd() listens on TCP here
            raise RuntimeError(f"expected a TCP address, got {address!r}")
        workers = stack.enter_context(running_workers(pythons, mode.client_cpu, address, tasks))
        # An untimed warm-up round with fewer jobs: imports, connections, the
        # sync client's threads and the server's first allocations.
        for case in plan:
            for name, worker in workers.items():
                if runs(case, name):
                    worker.measure(case.op, SMALL, min(case.count, 500))
        for round_number in range(1, rounds + 1):
            for case in plan:
                for name, worker in workers.items():
                    if not runs(case, name):
                        continue
                    rate = worker.measure(case.op, SMALL, case.count)
                    results.add(name, case.op, SMALL, rate)
                    if verbose:
                        print(
                            f"  {mode.name} round {round_number}: {name:<16} "
                            f"{case.op:<16} {rate:>10,.0f} ops/s",
                            file=sys.stderr,
                            flush=True,
                        )
        infos = {name: worker.info for name, worker in workers.items()}
    return results, infos


# -- output --------------------------------------------------------------------


def ratio(results: Results, case: Case, client: str) -> float:
    """ours-aio's median ops/s over ``client``'s."""
    return results.median(OURS_AIO, case.op, SMALL) / results.median(client, case.op, SMALL)


def round_ratios(results: Results, case: Case) -> list[float]:
    """ours-aio's ops/s over aiostalk's, round by round (measured moments apart)."""
    ours = results.rates[OURS_AIO, case.op, SMALL]
    theirs = results.rates[AIOSTALK, case.op, SMALL]
    return [mine / other for mine, other in zip(ours, theirs)]


def table(results: Results, plan: list[Case], tasks: int, aiostalk_label: str) -> str:
    """The results of one CPU mode as a text table."""
    headings = [
        "operation (100 B bodies)",
        "ours-aio",
        aiostalk_label,
        "ours-sync",
        "aio/aiostalk",
        "  (rounds)",
        "aio/sync",
    ]
    rows = []
    for case in plan:
        sync = case.sync_applies
        rows.append(
            [
                case.label(tasks),
                f"{results.median(OURS_AIO, case.op, SMALL):,.0f}",
                f"{results.median(AIOSTALK, case.op, SMALL):,.0f}",
                f"{results.median(OURS_SYNC, case.op, SMALL):,.0f}" if sync else "-",
                f"{ratio(results, case, AIOSTALK):.2f}x",
                spread(round_ratios(results, case)),
                f"{ratio(results, case, OURS_SYNC):.2f}x" if sync else "-",
            ]
        )
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]

    def line(cells: Sequence[str]) -> str:
        rest = "  ".join(f"{cell:>{width}}" for cell, width in zip(cells[1:], widths[1:]))
        return f"{cells[0]:<{widths[0]}}  {rest}"

    return "\n".join([line(headings), line(["-" * w for w in widths]), *map(line, rows)])


def target_check(results: Results, plan: list[Case], tasks: int) -> str:
    """The issue's targets: sequential >= 1.2x aiostalk, tasks on one connection >= 3x."""
    notes = []
    for case in plan:
        goal = TARGETS.get(case.op)
        if goal is None:
            continue
        achieved = ratio(results, case, AIOSTALK)
        if achieved < goal:
            notes.append(f"{case.label(tasks)} {achieved:.2f}x < {goal:g}x")
    goals = f"sequential >= 1.2x aiostalk, {tasks} tasks on one connection >= 3x"
    return f"targets ({goals}): " + ("missed: " + "; ".join(notes) if notes else "all met")


# -- main ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Compare greenstalk.aio with aiostalk 1.3.1 and our sync client."
    )
    parser.add_argument(
        "--cpus",
        choices=["same", "split", "both"],
        default="both",
        help="same: server and client on CPU 0; split: server on CPU 0, client on CPU 1 "
        "(the realistic case); both (default): run both and print both tables",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1/20 of the jobs")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--scale", type=float, default=None, help="multiply every job count by this"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=DEFAULT_TASKS,
        help=f"concurrent tasks, connections or threads (default {DEFAULT_TASKS})",
    )
    parser.add_argument(
        "--venvs",
        type=Path,
        default=DEFAULT_VENVS,
        help=f"where aiostalk's virtual environment lives (default {DEFAULT_VENVS})",
    )
    parser.add_argument("--verbose", action="store_true", help="print every round to stderr")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    if args.scale is None:
        args.scale = 0.05 if args.quick else 1.0
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Set up aiostalk, run the chosen CPU modes and print one table per mode."""
    args = parse_args(argv)
    modes = list(CPU_MODES.values()) if args.cpus == "both" else [CPU_MODES[args.cpus]]
    check_cpus(modes)
    ours = Path(sys.executable)
    pythons = {OURS_AIO: ours, OURS_SYNC: ours, AIOSTALK: ensure_venv(AIOSTALK_1_3_1, args.venvs)}
    plan = cases(args.scale)
    server_version = subprocess.run(
        [find_beanstalkd(), "-v"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for mode in modes:
        results, infos = run_mode(mode, pythons, plan, args.rounds, args.tasks, args.verbose)
        print(f"\n== --cpus {mode.name}: {mode.description}; {server_version} over TCP 127.0.0.1")
        print(
            f"   ops/s, medians of {args.rounds} interleaved rounds; ours = greenstalk "
            f"{infos[OURS_AIO]['version']} (Python {infos[OURS_AIO]['python']}, "
            f"{infos[OURS_AIO]['loop']}); (rounds) is the range of the per-round aio/aiostalk "
            "ratio"
        )
        print(
            "   aiostalk allows one call at a time per connection: its tasks on one connection "
            "share an asyncio.Lock; sync 'connections' are threads, each with its own client"
        )
        print(
            "   jobs per measurement: " + ", ".join(f"{case.op} {case.count}" for case in plan)
        )
        print()
        print(table(results, plan, args.tasks, f"aiostalk {infos[AIOSTALK]['version']}"))
        print(target_check(results, plan, args.tasks))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
