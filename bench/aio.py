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
round 2: ...). It shares its set-up, pinning, worker plumbing, rounds
loop and common options with ``bench/clients.py``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aio_worker import AIOSTALK, DEFAULT_TASKS, OURS_AIO, OURS_SYNC
from clients import (
    BENCH_DIR,
    SMALL,
    Peer,
    Results,
    WorkerScript,
    add_common_arguments,
    chosen_modes,
    ensure_venv,
    mode_heading,
    parse_common_arguments,
    run_mode,
    server_version,
    spread,
    text_table,
)

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
    def size(self) -> int:
        """The body size: always 100 bytes."""
        return SMALL

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


def aio_worker(tasks: int) -> WorkerScript:
    """``aio_worker.py``, with ``-E -s`` so that it finds ``client_worker.py`` beside it."""
    return WorkerScript(BENCH_DIR / "aio_worker.py", ("-E", "-s"), ("--tasks", str(tasks)))


def runs(case: Case, client: str) -> bool:
    """Whether ``client`` is measured for ``case``."""
    return client != OURS_SYNC or case.sync_applies


def describe(case: Case) -> str:
    """A case in the ``--verbose`` lines."""
    return f"{case.op:<16}"


# -- output --------------------------------------------------------------------


def ratio(results: Results, case: Case, client: str) -> float:
    """ours-aio's median ops/s over ``client``'s."""
    return results.median(OURS_AIO, case.op, SMALL) / results.median(client, case.op, SMALL)


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
                spread(
                    results.round_ratios((OURS_AIO, case.op, SMALL), (AIOSTALK, case.op, SMALL))
                ),
                f"{ratio(results, case, OURS_SYNC):.2f}x" if sync else "-",
            ]
        )
    return text_table(headings, rows, left=1)


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
    add_common_arguments(parser, "job", "aiostalk's virtual environment")
    parser.add_argument(
        "--tasks",
        type=int,
        default=DEFAULT_TASKS,
        help=f"concurrent tasks, connections or threads (default {DEFAULT_TASKS})",
    )
    args = parse_common_arguments(parser, argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Set up aiostalk, run the chosen CPU modes and print one table per mode."""
    args = parse_args(argv)
    modes = chosen_modes(args.cpus)
    aiostalk_python = ensure_venv(AIOSTALK_1_3_1, args.venvs)
    pythons = {  # in round order: the workers start, and are measured, in this order
        name: aiostalk_python if name == AIOSTALK else Path(sys.executable)
        for name in CLIENT_ORDER
    }
    plan = cases(args.scale)
    server = server_version()
    for mode in modes:
        results, infos = run_mode(
            mode,
            pythons,
            plan,
            args.rounds,
            args.verbose,
            runs=runs,
            describe=describe,
            script=aio_worker(args.tasks),
        )
        print(mode_heading(mode, server))
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
