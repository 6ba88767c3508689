"""Compare this greenstalk with greenstalk 2.1.1 and pystalk against one beanstalkd.

Run from the repository root::

    .venv/bin/python bench/clients.py            # both CPU modes, 5 rounds
    .venv/bin/python bench/clients.py --quick    # a smoke run with few operations
    .venv/bin/python bench/clients.py --cpus split --rounds 9 --verbose

It starts its own beanstalkd (TCP on 127.0.0.1), creates the peers' virtual
environments when missing, and runs each client in a worker process
(``bench/client_worker.py``) with its own environment's Python, pinned with
``taskset``. For each operation and body size it takes the median of
interleaved rounds (round 1: ours, greenstalk 2.1.1, pystalk; round 2: ...)
and prints ops/s and our ratio to each peer. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, TypeVar

from greenstalk.testing import find_beanstalkd, run_beanstalkd

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
DEFAULT_VENVS = REPO_DIR / ".bench-venvs"

SMALL = 100
LARGE = 16 * 1024


@dataclass(frozen=True)
class Peer:
    """A client library measured beside ours, installed in its own virtual environment."""

    name: str  # the worker's --client value
    short: str  # its name in the ratio columns
    requirement: str  # what pip installs
    distribution: str  # the name importlib.metadata knows it by
    version: str | None  # the exact version required, if pinned


GREENSTALK_2_1_1 = Peer(
    "greenstalk-2.1.1", "greenstalk", "greenstalk==2.1.1", "greenstalk", "2.1.1"
)
PYSTALK = Peer("pystalk", "pystalk", "pystalk", "pystalk", None)
PEERS = (GREENSTALK_2_1_1, PYSTALK)
OURS = "ours"


@dataclass(frozen=True)
class Case:
    """One measured operation at one body size, with its operation count."""

    op: str  # the worker's operation name
    size: int
    count: int

    @property
    def ours_only(self) -> bool:
        """True when only our worker runs it: put_many (peers have none) and raw-put."""
        return self.op in ("put-many", "raw-put")

    @property
    def in_table(self) -> bool:
        """False for the raw-put reference, which measures no client library."""
        return self.op != "raw-put"

    @property
    def label(self) -> str:
        """The operation's name in the table."""
        return {
            "put": "put",
            "reserve-delete": "reserve+delete",
            "put-many": "put_many (peers: put)",
            "raw-put": "raw pipelined put",
        }[self.op]

    @property
    def peer_op(self) -> str:
        """The peers' operation this row compares with: their single put for put_many."""
        return "put" if self.ours_only else self.op


def cases(scale: float) -> list[Case]:
    """The measured cases; ``scale`` multiplies every operation count."""

    def n(count: int) -> int:
        return max(10, round(count * scale))

    return [
        Case("put", SMALL, n(10_000)),
        Case("put", LARGE, n(3_000)),
        Case("reserve-delete", SMALL, n(5_000)),
        Case("reserve-delete", LARGE, n(3_000)),
        Case("put-many", SMALL, n(50_000)),
        Case("put-many", LARGE, n(5_000)),
        Case("raw-put", SMALL, n(50_000)),
        Case("raw-put", LARGE, n(5_000)),
    ]


@dataclass(frozen=True)
class CpuMode:
    """Where the server and the client workers run."""

    name: str
    server_cpu: int
    client_cpu: int

    @property
    def description(self) -> str:
        """A one-line account of the pinning."""
        if self.server_cpu == self.client_cpu:
            return f"server and client on CPU {self.server_cpu}"
        return f"server on CPU {self.server_cpu}, client on CPU {self.client_cpu}"


CPU_MODES = {"same": CpuMode("same", 0, 0), "split": CpuMode("split", 0, 1)}


# -- virtual environments ------------------------------------------------------


def installed_version(python: Path, distribution: str) -> str | None:
    """Return the version of ``distribution`` installed for ``python``, or None."""
    if not python.exists():
        return None
    result = subprocess.run(
        [str(python), "-I", "-c", "import sys, importlib.metadata as m; "
         "print(m.version(sys.argv[1]))", distribution],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_venv(peer: Peer, root: Path) -> Path:
    """Return the Python of ``peer``'s virtual environment, creating it first if needed."""
    directory = root / peer.name
    python = directory / "bin" / "python"
    version = installed_version(python, peer.distribution)
    if version is not None and (peer.version is None or version == peer.version):
        return python
    print(f"setting up {directory} ({peer.requirement}) ...", file=sys.stderr, flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(directory)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         peer.requirement],
        check=True,
    )
    if installed_version(python, peer.distribution) is None:
        raise RuntimeError(f"{peer.requirement} did not install into {directory}")
    return python


# -- workers -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerScript:
    """How to start a worker: its script, the Python flags it needs and any more arguments."""

    path: Path
    python_flags: tuple[str, ...]
    extra_args: tuple[str, ...] = ()


# Run with -I: nothing of this repository reaches a peer's environment.
CLIENT_WORKER = WorkerScript(BENCH_DIR / "client_worker.py", ("-I",))


class Worker:
    """A client worker process: send it a case, get back its ops/s."""

    def __init__(
        self,
        name: str,
        python: Path,
        cpu: int,
        address: tuple[str, int],
        script: WorkerScript = CLIENT_WORKER,
    ) -> None:
        self.name = name
        host, port = address
        self._process = subprocess.Popen(
            ["taskset", "--cpu-list", str(cpu), str(python), *script.python_flags,
             str(script.path), "--client", name, "--host", host, "--port", str(port),
             *script.extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = self._answer()

    def _streams(self) -> tuple[IO[str], IO[str]]:
        stdin, stdout = self._process.stdin, self._process.stdout
        if stdin is None or stdout is None:  # never: both are pipes
            raise RuntimeError(f"worker {self.name} has no pipes")
        return stdin, stdout

    def _answer(self) -> dict[str, object]:
        line = self._streams()[1].readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited (status {self._process.wait()})")
        answer: dict[str, object] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker {self.name}: {answer['error']}")
        return answer

    def measure(self, op: str, size: int, count: int) -> float:
        """Run one measurement in the worker and return its ops/s."""
        stdin = self._streams()[0]
        stdin.write(json.dumps({"op": op, "size": size, "n": count}) + "\n")
        stdin.flush()
        return float(str(self._answer()["ops_per_s"]))

    def close(self) -> None:
        """Let the worker finish and wait for it."""
        with suppress(OSError):  # a worker that already died leaves a broken pipe
            self._streams()[0].close()
        if self._process.wait(timeout=30) != 0:
            raise RuntimeError(f"worker {self.name} failed (status {self._process.returncode})")


@contextmanager
def running_workers(
    pythons: dict[str, Path], cpu: int, address: tuple[str, int], script: WorkerScript
) -> Iterator[dict[str, Worker]]:
    """Start one worker per client, in ``pythons``' order, and stop them all on exit."""
    with ExitStack() as stack:
        workers: dict[str, Worker] = {}
        for name, python in pythons.items():
            worker = Worker(name, python, cpu, address, script)
            stack.callback(worker.close)
            workers[name] = worker
        yield workers


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of process ``pid`` to ``cpu`` with taskset."""
    subprocess.run(
        ["taskset", "--all-tasks", "--cpu-list", "--pid", str(cpu), str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


# -- measuring -----------------------------------------------------------------


@dataclass
class Results:
    """ops/s of every round, by client and (operation, size)."""

    rates: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)

    def add(self, client: str, op: str, size: int, rate: float) -> None:
        """Record one round's ops/s."""
        self.rates.setdefault((client, op, size), []).append(rate)

    def median(self, client: str, op: str, size: int) -> float:
        """The median ops/s over the rounds."""
        return statistics.median(self.rates[client, op, size])

    def round_ratios(
        self, mine: tuple[str, str, int], theirs: tuple[str, str, int]
    ) -> list[float]:
        """One (client, op, size)'s ops/s over another's, round by round (moments apart)."""
        return [a / b for a, b in zip(self.rates[mine], self.rates[theirs])]


class Measured(Protocol):
    """What run_mode needs of a case: the worker's operation, body size and count."""

    @property
    def op(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def count(self) -> int: ...


CaseT = TypeVar("CaseT", bound=Measured)


def run_mode(
    mode: CpuMode,
    pythons: dict[str, Path],
    plan: Sequence[CaseT],
    rounds: int,
    verbose: bool,
    *,
    runs: Callable[[CaseT, str], bool],
    describe: Callable[[CaseT], str],
    script: WorkerScript = CLIENT_WORKER,
) -> tuple[Results, dict[str, dict[str, object]]]:
    """Measure every case for every client in interleaved rounds, under one CPU pinning.

    ``runs(case, client)`` tells whether a client is measured for a case, and
    ``describe(case)`` is its name in the ``--verbose`` lines.
    """
    results = Results()
    with run_beanstalkd() as server, ExitStack() as stack:
        assert server.process is not None  # beanstalkd always runs as a process
        pin(server.process.pid, mode.server_cpu)
        address = server.address
        if not isinstance(address, tuple):  # never: run_beanstalkd() listens on TCP here
            raise RuntimeError(f"expected a TCP address, got {address!r}")
        workers = stack.enter_context(
            running_workers(pythons, mode.client_cpu, address, script)
        )
        # An untimed warm-up round with fewer operations: imports, connections,
        # threads and the server's first allocations are not what we measure.
        for case in plan:
            for name, worker in workers.items():
                if runs(case, name):
                    worker.measure(case.op, case.size, min(case.count, 500))
        for round_number in range(1, rounds + 1):
            for case in plan:
                for name, worker in workers.items():
                    if not runs(case, name):
                        continue
                    rate = worker.measure(case.op, case.size, case.count)
                    results.add(name, case.op, case.size, rate)
                    if verbose:
                        print(
                            f"  {mode.name} round {round_number}: {name:<16} "
                            f"{describe(case)} {rate:>10,.0f} ops/s",
                            file=sys.stderr,
                            flush=True,
                        )
        infos = {name: worker.info for name, worker in workers.items()}
    return results, infos


def runs_case(case: Case, client: str) -> bool:
    """Whether ``client`` is measured for ``case``: the peers skip ours-only cases."""
    return client == OURS or not case.ours_only


def describe_case(case: Case) -> str:
    """A case in the ``--verbose`` lines."""
    return f"{case.op:<14} {format_size(case.size):>6}"


# -- output --------------------------------------------------------------------


def format_size(size: int) -> str:
    """100 -> '100 B', 16384 -> '16 KiB'."""
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def spread(ratios: list[float]) -> str:
    """The lowest and highest of some ratios: '0.97-1.04x'."""
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def table(mode: CpuMode, results: Results, plan: list[Case], labels: dict[str, str]) -> str:
    """The results of one CPU mode as a text table."""
    peers = [peer for peer in PEERS if peer.name in labels]
    headings = [
        "operation",
        "body",
        "ours",
        *(labels[peer.name] for peer in peers),
        *(f"ours/{peer.short}" for peer in peers),
        *(["  (rounds)"] if peers else []),
    ]
    rows = []
    for case in plan:
        if not case.in_table:
            continue
        ours = results.median(OURS, case.op, case.size)
        rates = [results.median(peer.name, case.peer_op, case.size) for peer in peers]
        first_peer = [(peers[0].name, case.peer_op, case.size)] if peers else []
        rows.append(
            [
                case.label,
                format_size(case.size),
                f"{ours:,.0f}",
                *(f"{rate:,.0f}" for rate in rates),
                *(f"{ours / rate:.2f}x" for rate in rates),
                *(spread(results.round_ratios((OURS, case.op, case.size), p)) for p in first_peer),
            ]
        )
    return text_table(headings, rows, left=2)


def text_table(headings: list[str], rows: list[list[str]], left: int) -> str:
    """Headings, a rule and rows, in columns: the first ``left`` aligned left, the rest right."""
    widths = [max(len(row[i]) for row in [headings, *rows]) for i in range(len(headings))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:<{width}}" if i < left else f"{cell:>{width}}"
            for i, (cell, width) in enumerate(zip(cells, widths))
        )

    return "\n".join([line(headings), line(["-" * w for w in widths]), *map(line, rows)])


def target_check(mode: CpuMode, results: Results, plan: list[Case]) -> str:
    """The issue's targets: single commands >= 0.95x greenstalk 2.1.1; put_many >= 5x its put."""
    peer = GREENSTALK_2_1_1.name
    if (peer, "put", SMALL) not in results.rates:
        return ""
    notes = []
    for case in plan:
        if not case.in_table:
            continue
        ratio = results.median(OURS, case.op, case.size) / results.median(
            peer, case.peer_op, case.size
        )
        if case.ours_only:
            if mode.name != "split":
                continue
            goal = 5.0
        else:
            goal = 0.95
        if ratio < goal:
            notes.append(f"{case.label} {format_size(case.size)} {ratio:.2f}x < {goal:g}x")
    goals = "single commands >= 0.95x greenstalk 2.1.1"
    if mode.name == "split":
        goals += ", put_many >= 5x its put"
    return f"targets ({goals}): " + ("missed: " + "; ".join(notes) if notes else "all met")


def raw_reference(results: Results, plan: list[Case]) -> str:
    """The raw-put reference line: put_many's wire pattern without any client library."""
    rates = [
        f"{format_size(case.size)} {results.median(OURS, case.op, case.size):,.0f}/s"
        for case in plan
        if not case.in_table
    ]
    if not rates:
        return ""
    return "raw pipelined puts, batched like put_many, no client library: " + ", ".join(rates)


# -- main ----------------------------------------------------------------------


def chosen_modes(cpus: str) -> list[CpuMode]:
    """The CPU modes ``--cpus`` names; fail early when taskset or a CPU they need is missing."""
    modes = list(CPU_MODES.values()) if cpus == "both" else [CPU_MODES[cpus]]
    if shutil.which("taskset") is None:
        raise SystemExit("taskset is not installed (Debian: apt-get install util-linux)")
    available = os.sched_getaffinity(0)
    for mode in modes:
        missing = {mode.server_cpu, mode.client_cpu} - available
        if missing:
            raise SystemExit(f"--cpus {mode.name} needs CPUs {sorted(missing)}, not available")
    return modes


def server_version() -> str:
    """What ``beanstalkd -v`` says: 'beanstalkd 1.12'."""
    return subprocess.run(
        [find_beanstalkd(), "-v"], capture_output=True, text=True, check=True
    ).stdout.strip()


def mode_heading(mode: CpuMode, server: str) -> str:
    """The first line of a mode's table: the pinning and the server's version."""
    return f"\n== --cpus {mode.name}: {mode.description}; {server} over TCP 127.0.0.1"


def add_common_arguments(parser: argparse.ArgumentParser, counted: str, venvs: str) -> None:
    """--cpus, --quick, --rounds, --scale, --venvs and --verbose.

    ``counted`` is what --scale multiplies ("operation" or "job"); ``venvs``
    says whose virtual environments --venvs holds.
    """
    parser.add_argument(
        "--cpus",
        choices=["same", "split", "both"],
        default="both",
        help="same: server and client on CPU 0; split: server on CPU 0, client on CPU 1 "
        "(the realistic case); both (default): run both and print both tables",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: 1/20 of the {counted}s"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument(
        "--scale", type=float, default=None, help=f"multiply every {counted} count by this"
    )
    parser.add_argument(
        "--venvs",
        type=Path,
        default=DEFAULT_VENVS,
        help=f"where {venvs} live (default {DEFAULT_VENVS})",
    )
    parser.add_argument("--verbose", action="store_true", help="print every round to stderr")


def parse_common_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse the command line, check --rounds and fill in --scale's default."""
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.scale is None:
        args.scale = 0.05 if args.quick else 1.0
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Compare greenstalk (this repository) with greenstalk 2.1.1 and pystalk."
    )
    add_common_arguments(parser, "operation", "the peers' virtual environments")
    parser.add_argument(
        "--peers",
        default=",".join(peer.name for peer in PEERS),
        help="comma-separated peers to compare with (default: all)",
    )
    args = parse_common_arguments(parser, argv)
    known = {peer.name for peer in PEERS}
    args.peer_names = [name for name in args.peers.split(",") if name]
    if unknown := set(args.peer_names) - known:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {sorted(known)}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Set up the peers, run the chosen CPU modes and print one table per mode."""
    args = parse_args(argv)
    modes = chosen_modes(args.cpus)
    peers = [peer for peer in PEERS if peer.name in args.peer_names]
    pythons = {OURS: Path(sys.executable)}
    pythons.update({peer.name: ensure_venv(peer, args.venvs) for peer in peers})
    plan = cases(args.scale)
    server = server_version()
    labels: dict[str, str] = {}
    for mode in modes:
        results, infos = run_mode(
            mode,
            pythons,
            plan,
            args.rounds,
            args.verbose,
            runs=runs_case,
            describe=describe_case,
        )
        labels = {
            peer.name: f"{peer.distribution} {infos[peer.name]['version']}" for peer in peers
        }
        print(mode_heading(mode, server))
        print(
            f"   ops/s, medians of {args.rounds} interleaved rounds; ours = greenstalk "
            f"{infos[OURS]['version']} (Python {infos[OURS]['python']}); (rounds) is the "
            "range of the per-round ratio to the first peer"
        )
        print(
            "   reserve+delete counts jobs (two commands each); put_many rows set our "
            "pipelined put_many against each peer's single put"
        )
        print(
            "   jobs per measurement: "
            + ", ".join(f"{case.op} {format_size(case.size)} {case.count}" for case in plan)
        )
        print()
        print(table(mode, results, plan, labels))
        for note in (raw_reference(results, plan), target_check(mode, results, plan)):
            if note:
                print(note)
        sys.stdout.flush()


if __name__ == "__main__":
    main()
