"""Attacks on a server's memory and time: greenstalkd beside beanstalkd 1.12 (issue 9).

Run from the repository root::

    .venv/bin/python bench/attacks.py              # every attack on both servers (under 2 minutes)
    .venv/bin/python bench/attacks.py --quick      # smaller loads, shorter holds
    .venv/bin/python bench/attacks.py --only a,g   # some attacks

Each attack gets a fresh server of each kind, started as bench/server.py
starts them (greenstalkd as ``python -m greenstalk.server``) and pinned to
CPU 0. The attackers are bare sockets in this process, and a probe is a
process of its own, both pinned to CPU 1; commands are formatted by
greenstalk's protocol core. While an attack runs, the probe does ``stats``,
``put`` and ``delete`` round trips (in a tube of its own) about every 2 ms.

Printed for each attack and server: the probe's round trip (p50, p99 and
the longest: one stall of seconds hides below a p99 of a thousand),
the server's peak resident set growth during the attack (VmHWM, reset at
its start, against VmRSS then), its VmRSS growth one second after the
attackers closed, and the attack's own figure. The issue's targets: p99
under 50 ms, peak growth at most 100 MiB, and a closed connection's memory
returned within a second.

Attacks:

- a. 1 and 4 clients each pipeline 200 ``peek`` of a 16 MiB job and read nothing.
- b. 4 clients each pipeline 200 ``list-tubes`` with 20,000 tubes and read nothing.
- c. Closing a connection that watches 20,000 tubes (and 100,000, greenstalkd
  only: watching them takes beanstalkd minutes); ``use`` churn over 20,000
  tubes (ms per ``use``).
- d. Rounds of 500 connections that leave halfway through a 65,535-byte body;
  one connection that leaves halfway through a 400 MiB body.
- e. 300 connections waiting in ``reserve``, each sending 1.25 MB more.
- f. A server limited to 64 descriptors while 400 clients connect: its CPU
  use, its lines on stderr, and how soon it serves once they leave.
- g. A connection closes, and at once another asks ``stats``: how often
  ``current-connections`` still counts the closed one, in 300 tries each of
  two ways to leave: a round trip then one more command and close (as a
  client that sends ``quit`` does), or connect and close at once.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from greenstalk._protocol import commands
from greenstalk.server.net import bind_tcp
from greenstalk.testing import find_beanstalkd, spawn_activated

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import Peer

SERVER_CPU = 0
CLIENT_CPU = 1
SERVERS = ("beanstalkd", "greenstalkd")
MIB = 1 << 20
PROBE_TUBE = "probe"
# How long a probe waits for one reply before the run is declared stuck.
PROBE_TIMEOUT = 120.0
# How long the server gets to forget the closed watcher's tubes in attack c.
CLOSE_TIMEOUT = 60.0


@dataclass
class Scale:
    """The sizes of a run: full, or --quick."""

    hold: float = 2.0
    peek_body: int = 16 * MIB
    tubes: int = 20_000
    many_tubes: int = 100_000
    use_churn: int = 2_000
    rounds: int = 5
    partial_connections: int = 500
    big_body: int = 400 * MIB
    waiters: int = 300
    stale_tries: int = 300


QUICK = Scale(
    hold=1.0,
    tubes=20_000,
    many_tubes=0,
    use_churn=500,
    rounds=2,
    big_body=100 * MIB,
    stale_tries=100,
)


@dataclass
class Running:
    """A server under attack."""

    kind: str
    address: tuple[str, int]
    pid: int
    #: Lines the server has written on stderr so far.
    stderr_lines: list[int] = field(default_factory=lambda: [0])


def _count_lines(stream: Any, counter: list[int]) -> None:
    # Drained, so that a server that warns on every failed accept never
    # blocks on a full pipe.
    for _ in stream:
        counter[0] += 1


@contextlib.contextmanager
def run(kind: str, args: Sequence[str] = (), descriptors: int | None = None) -> Iterator[Running]:
    """Start a ``kind`` server pinned to the server CPU; ``descriptors`` caps its open files."""
    listener = bind_tcp("127.0.0.1", 0)
    with listener:
        address: tuple[str, int] = listener.getsockname()
        if kind == "beanstalkd":
            command = [find_beanstalkd(), *args]
        else:
            command = [sys.executable, "-m", "greenstalk.server", *args]
        if descriptors is not None:
            command = ["bash", "-c", f'ulimit -n {descriptors} && exec "$@"', "bash", *command]
        process = spawn_activated(command, listener)
    running = Running(kind, address, process.pid)
    drain = threading.Thread(target=_count_lines, args=(process.stderr, running.stderr_lines))
    drain.start()
    try:
        os.sched_setaffinity(process.pid, {SERVER_CPU})
        with contextlib.closing(Peer(address)) as peer:
            peer.ask(commands.stats())  # it is up
        yield running
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        drain.join(10)
        assert process.stderr is not None
        process.stderr.close()


def resident_kib(pid: int) -> tuple[int, int]:
    """The process's (VmRSS, VmHWM) in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def reset_peak(pid: int) -> None:
    """Make VmHWM the current VmRSS (Linux 4.0 and later)."""
    with open(f"/proc/{pid}/clear_refs", "w") as file:
        file.write("5")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=PROBE_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def pipeline(peer: Peer, requests: Sequence[commands.Request[Any]], batch: int = 1000) -> None:
    """Send ``requests`` in batches, reading each batch's replies."""
    for start in range(0, len(requests), batch):
        peer.ask(*requests[start : start + batch])


# The probe


def _probe(address: tuple[str, int], stop: Any, results: Connection) -> None:
    """Round trips until ``stop`` is set; sends "ready" first, then the times in seconds."""
    os.sched_setaffinity(0, {CLIENT_CPU})
    peer = Peer(address)
    peer.sock.settimeout(PROBE_TIMEOUT)
    peer.ask(commands.use(PROBE_TUBE))
    results.send("ready")
    stats = commands.stats()
    times: list[float] = []
    clock = time.perf_counter
    while not stop.is_set():
        started = clock()
        peer.ask(stats)
        asked = clock()
        (job_id,) = peer.ask(commands.put(b"probe", 0, 0, 60))
        put = clock()
        peer.ask(commands.delete(job_id))
        times += (asked - started, put - asked, clock() - put)
        time.sleep(0.002)
    peer.close()
    results.send(times)


class Probe:
    """A probe client in a process of its own (spawned: it inherits no socket of ours)."""

    def __init__(self, address: tuple[str, int]) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_probe, args=(address, self._stop, sender))
        self._process.start()
        sender.close()
        if self._results.recv() != "ready":
            raise RuntimeError("the probe did not start")

    def finish(self) -> list[float]:
        """Stop the probe; its round trip times."""
        self._stop.set()
        if not self._results.poll(PROBE_TIMEOUT):
            self._process.kill()
            raise RuntimeError("the probe is stuck")
        times: list[float] = self._results.recv()
        self._process.join(10)
        return times


# Measuring one attack


@dataclass
class Result:
    times: list[float]
    peak_kib: int
    after_kib: int
    figure: str


class Session:
    """One attack on one server: the measuring around it."""

    def __init__(self, server: Running, scale: Scale) -> None:
        self.server = server
        self.scale = scale
        self.probe: Probe | None = None
        self.base_kib = 0
        #: Closed after the last reading (connections that set the attack up).
        self.keep = contextlib.ExitStack()

    def start(self) -> None:
        """The attack begins: start the probe, note the memory."""
        self.probe = Probe(self.server.address)
        self.base_kib = resident_kib(self.server.pid)[0]
        reset_peak(self.server.pid)

    def hold(self) -> None:
        time.sleep(self.scale.hold)


Attack = Callable[[Session], str]


def measure(server: Running, scale: Scale, attack: Attack) -> Result:
    session = Session(server, scale)
    with session.keep:
        figure = attack(session)
        time.sleep(1)
        rss, peak = resident_kib(server.pid)
        assert session.probe is not None
        times = session.probe.finish()
    return Result(times, peak - session.base_kib, rss - session.base_kib, figure)


# The attacks


def peek_flood(clients: int) -> Attack:
    def attack(session: Session) -> str:
        address = session.server.address
        body = b"x" * session.scale.peek_body
        control = session.keep.enter_context(contextlib.closing(Peer(address)))
        (job_id,) = control.ask(commands.put(body, 0, 0, 60))
        del body
        session.start()
        attackers = [connect(address) for _ in range(clients)]
        for sock in attackers:
            sock.sendall(commands.peek(job_id)[0] * 200)
        session.hold()
        (stats,) = control.ask(commands.stats())
        for sock in attackers:
            sock.close()
        return f"{stats['cmd-peek']} of {200 * clients} peeks run"

    return attack


def tube_names(count: int, prefix: str = "attack-tube") -> list[str]:
    return [f"{prefix}-{number:08d}" for number in range(count)]


def watcher(session: Session, count: int) -> Peer:
    """A connection that watches ``count`` tubes (which exist while it does)."""
    peer = Peer(session.server.address)
    pipeline(peer, [commands.watch(name) for name in tube_names(count)])
    return peer


def list_tubes_flood(session: Session) -> str:
    address = session.server.address
    session.keep.enter_context(contextlib.closing(watcher(session, session.scale.tubes)))
    control = session.keep.enter_context(contextlib.closing(Peer(address)))
    session.start()
    attackers = [connect(address) for _ in range(4)]
    for sock in attackers:
        sock.sendall(commands.list_tubes()[0] * 200)
    session.hold()
    (stats,) = control.ask(commands.stats())
    for sock in attackers:
        sock.close()
    return f"{stats['cmd-list-tubes']} of 800 list-tubes run"


def close_watcher(count: int) -> Attack:
    def attack(session: Session) -> str:
        control = session.keep.enter_context(contextlib.closing(Peer(session.server.address)))
        (before,) = control.ask(commands.stats())
        holder = watcher(session, count)
        session.start()
        started = time.perf_counter()
        holder.close()
        deadline = started + CLOSE_TIMEOUT
        left = int(before["current-tubes"]) + 1  # and the probe's
        while int(control.ask(commands.stats())[0]["current-tubes"]) > left:
            if time.perf_counter() > deadline:
                return f"tubes not all gone {CLOSE_TIMEOUT:.0f} s after the close"
        took = time.perf_counter() - started
        return f"tubes gone {took * 1000:.0f} ms after the close"

    return attack


def use_churn(session: Session) -> str:
    session.keep.enter_context(contextlib.closing(watcher(session, session.scale.tubes)))
    churner = session.keep.enter_context(contextlib.closing(Peer(session.server.address)))
    uses = [commands.use(name) for name in tube_names(session.scale.use_churn, "churn")]
    session.start()
    started = time.perf_counter()
    pipeline(churner, uses, batch=100)
    took = time.perf_counter() - started
    return f"{took * 1000 / len(uses):.3f} ms per use"


def partial_bodies(session: Session) -> str:
    address = session.server.address
    scale = session.scale
    line = commands.put(b"p" * 65535, 0, 0, 60)[0]
    partial = line[: len(line) - 537]  # 65,000 bytes of the body
    session.start()
    sizes = []
    for _ in range(scale.rounds):
        peers = [connect(address) for _ in range(scale.partial_connections)]
        for sock in peers:
            sock.sendall(partial)
        time.sleep(0.3)  # the server reads them
        for sock in peers:
            sock.close()
        time.sleep(0.2)
        sizes.append(resident_kib(session.server.pid)[0] - session.base_kib)
    growth = ", ".join(f"{size / 1024:+.0f}" for size in sizes)
    return f"RSS after each round: {growth} MiB"


def big_partial_body(session: Session) -> str:
    address = session.server.address
    size = session.scale.big_body
    data = commands.put(bytes(size), 0, 0, 60)[0]
    session.start()
    sock = connect(address)
    view = memoryview(data)[: len(data) - 1000]
    for start in range(0, len(view), MIB):
        sock.sendall(view[start : start + MIB])
    del view, data
    time.sleep(0.3)  # the server reads the end
    peak = resident_kib(session.server.pid)[0] - session.base_kib
    sock.close()
    closed = time.perf_counter()
    while resident_kib(session.server.pid)[0] - session.base_kib > 32 * 1024:
        if time.perf_counter() - closed > 5:
            return f"+{peak / 1024:.0f} MiB held, still held 5 s after the close"
        time.sleep(0.01)
    took = time.perf_counter() - closed
    return f"+{peak / 1024:.0f} MiB held, returned {took * 1000:.0f} ms after the close"


def waiting_reserves(session: Session) -> str:
    address = session.server.address
    control = session.keep.enter_context(contextlib.closing(Peer(address)))
    session.start()
    target = 1_250_000
    filler = memoryview(commands.list_tube_used()[0] * (target // 16))
    waiters = [connect(address) for _ in range(session.scale.waiters)]
    for sock in waiters:
        sock.sendall(commands.reserve(None)[0])
        sock.setblocking(False)
    sent = [0] * len(waiters)
    deadline = time.monotonic() + session.scale.hold
    while time.monotonic() < deadline:
        for index, sock in enumerate(waiters):
            with contextlib.suppress(BlockingIOError):
                sent[index] += sock.send(filler[sent[index] :])
        time.sleep(0.05)
    (stats,) = control.ask(commands.stats())
    for sock in waiters:
        sock.close()
    return f"{stats['current-waiting']} waiting; {sum(sent) / MIB:.0f} MiB sent behind them"


def descriptor_exhaustion(session: Session) -> str:
    address = session.server.address
    server = session.server
    session.start()
    lines = server.stderr_lines[0]
    used = cpu_seconds(server.pid)
    started = time.perf_counter()
    clients = [connect(address) for _ in range(400)]
    session.hold()
    share = (cpu_seconds(server.pid) - used) / (time.perf_counter() - started)
    for sock in clients:
        sock.close()
    closed = time.perf_counter()
    with contextlib.closing(Peer(address)) as fresh:
        fresh.sock.settimeout(PROBE_TIMEOUT)
        fresh.ask(commands.list_tube_used())
    again = time.perf_counter() - closed
    return (
        f"server CPU {share:.0%}, {server.stderr_lines[0] - lines} lines on stderr,"
        f" serves a new client {again * 1000:.0f} ms after they leave"
    )


def stale_count(session: Session) -> str:
    """Two ways to leave: a round trip, then a command and close; connect and close at once."""
    address = session.server.address
    control = session.keep.enter_context(contextlib.closing(Peer(address)))
    session.start()
    (stats,) = control.ask(commands.stats())
    base = int(stats["current-connections"])
    tries = session.scale.stale_tries
    counts = []
    command = commands.list_tube_used()
    for after_a_command in (True, False):
        stale = 0
        for _ in range(tries):
            if after_a_command:
                leaving = Peer(address)
                leaving.ask(command)
                leaving.sock.sendall(command[0])  # its reply is never read
                leaving.close()
            else:
                connect(address).close()
            (stats,) = control.ask(commands.stats())
            stale += int(stats["current-connections"]) > base
        counts.append(stale)
    return (
        f"closed one counted: {counts[0]} after a command, {counts[1]} after connect+close,"
        f" of {tries} each"
    )


@dataclass
class Case:
    letter: str
    name: str
    attack: Attack
    args: Callable[[Scale], Sequence[str]] = lambda scale: ()
    descriptors: int | None = None
    wanted: Callable[[Scale], bool] = lambda scale: True
    servers: Sequence[str] = SERVERS


CASES = [
    Case(
        "a",
        "1 client, 200 peeks of 16 MiB",
        peek_flood(1),
        lambda scale: ["-z", str(scale.peek_body)],
    ),
    Case(
        "a",
        "4 clients, 200 peeks of 16 MiB",
        peek_flood(4),
        lambda scale: ["-z", str(scale.peek_body)],
    ),
    Case("b", "4 clients, 200 list-tubes of 20,000", list_tubes_flood),
    Case("c", "close a watcher of 20,000 tubes", close_watcher(Scale().tubes)),
    # greenstalkd only: beanstalkd's watch scans the watch list, so watching
    # 100,000 tubes takes it minutes.
    Case(
        "c",
        "close a watcher of 100,000 tubes",
        close_watcher(Scale().many_tubes),
        wanted=lambda scale: bool(scale.many_tubes),
        servers=("greenstalkd",),
    ),
    Case("c", "use churn over 20,000 tubes", use_churn),
    Case("d", "rounds of 500 partial 65 KB bodies", partial_bodies),
    Case(
        "d",
        "one partial body, then close",
        big_partial_body,
        lambda scale: ["-z", str(scale.big_body + MIB)],
    ),
    Case("e", "300 waiting reserves + 1.25 MB each", waiting_reserves),
    Case("f", "64 descriptors, 400 clients connect", descriptor_exhaustion, descriptors=64),
    Case("g", "stats right after a close", stale_count),
]


def percentile(times: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``times`` fall (nearest rank)."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads, shorter holds")
    parser.add_argument("--only", default="", help="attack letters, such as a,g")
    args = parser.parse_args()
    scale = QUICK if args.quick else Scale()
    only = set(args.only.replace(",", "")) if args.only else set("abcdefg")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs")
    os.sched_setaffinity(0, {CLIENT_CPU})
    print(
        f"{'attack':<40}{'server':<13}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>9}"
        f"{'peak':>10}{'after 1 s':>11}  figure"
    )
    failed = []
    for case in CASES:
        if case.letter not in only or not case.wanted(scale):
            continue
        for kind in case.servers:
            with run(kind, case.args(scale), case.descriptors) as server:
                result = measure(server, scale, case.attack)
            p50 = percentile(result.times, 0.5) * 1000
            p99 = percentile(result.times, 0.99) * 1000
            longest = max(result.times) * 1000
            if p99 >= 50:
                failed.append(f"{case.letter}. {case.name}: {kind} p99 {p99:.1f} ms")
            print(
                f"{case.letter + '. ' + case.name:<40}{kind:<13}"
                f"{p50:>8.1f}{p99:>8.1f}{longest:>9.1f}"
                f"{result.peak_kib / 1024:>+9.0f}M{result.after_kib / 1024:>+10.0f}M"
                f"  {result.figure}",
                flush=True,
            )
    if failed:
        print("\nprobe p99 at or over 50 ms:\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    main()
