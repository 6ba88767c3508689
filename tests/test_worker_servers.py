"""greenstalk.Worker and greenstalk.aio.Worker over several real servers at once.

The servers are mixed: beanstalkd and greenstalkd, over TCP and a Unix socket
(with ``GREENSTALK_TEST_SERVERS`` naming one, all are that one). The
server-side counters (``cmd-delete``, ``cmd-release``, ``cmd-bury``) show that
each job is acknowledged on its own server, whose ids overlap with the
others'.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenstalk
import greenstalk.aio
import greenstalk.worker
from greenstalk.testing import ServerProcess, run_server

from .conftest import SERVERS_UNDER_TEST
from .test_worker import CountingSocket, read_until, wait_for
from .test_worker_shared import InBackground, make_worker, records_about, run_worker
from .waiting import wait_until


@pytest.fixture(params=["sync", "aio"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which worker the test runs: ``sync`` (greenstalk.Worker), then ``aio``."""
    return str(request.param)


def kinds(count: int) -> list[str]:
    """``count`` server kinds, alternating over those under test (greenstalkd first)."""
    under = sorted(SERVERS_UNDER_TEST, reverse=True)
    return [under[index % len(under)] for index in range(count)]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Three fresh servers, mixed; the last one on a Unix socket."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(run_server(kind, unix=index == 2))
            for index, kind in enumerate(kinds(3))
        ]


@pytest.fixture
def clients(servers: list[ServerProcess]) -> Iterator[list[greenstalk.Client[bytes]]]:
    """A client of each server, in the same order."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(greenstalk.Client(s.address, socket_timeout=10))
               for s in servers]


def addresses_of(servers: list[ServerProcess]) -> list[Any]:
    return [server.address for server in servers]


def stat(client: greenstalk.Client[bytes], name: str) -> int:
    return int(client.stats()[name])  # type: ignore[literal-required]


def waiting_on(client: greenstalk.Client[bytes]) -> bool:
    """Whether a reserve waits on ``client``'s server."""
    return stat(client, "current-waiting") == 1


def ask_to_stop(running: InBackground, cold: bool = False) -> None:
    """Ask a worker running in the background to stop, from the test's thread."""
    worker = running.worker
    loop = running._loop
    if loop is not None:
        loop.call_soon_threadsafe(lambda: worker.stop(cold))
    else:
        worker.stop(cold)


# -- acknowledgements ----------------------------------------------------------------


def test_each_job_is_acknowledged_on_its_own_server(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """Ids overlap across servers (each starts at 1); every delete reaches the job's server."""
    counts = [7, 11, 5]
    for index, (client, count) in enumerate(zip(clients, counts)):
        client.put_many([b"%d:%d" % (index, n) for n in range(count)])
    seen: list[tuple[Any, int, bytes]] = []
    lock = threading.Lock()

    def handle(job: greenstalk.WorkerJob) -> None:
        with lock:
            seen.append((job.address, job.id, job.body))

    worker = make_worker(flavour, addresses_of(servers), handlers={"default": handle})
    assert run_worker(worker) == 0
    assert worker.counts == {"deleted": sum(counts), "released": 0, "buried": 0, "failed": 0}
    for index, (server, client, count) in enumerate(zip(servers, clients, counts)):
        assert stat(client, "cmd-delete") == count
        assert stat(client, "current-jobs-ready") == 0
        mine = sorted((job_id, body) for where, job_id, body in seen if where == server.address)
        assert mine == sorted(
            (n + 1, b"%d:%d" % (index, n)) for n in range(count)
        ), f"server {index} ({server.kind})"


def test_release_bury_and_failures_go_to_the_jobs_server(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """Server 0's jobs are released, server 1's buried, server 2's handlers fail."""
    for index, client in enumerate(clients):
        client.put_many([b"%d" % index] * 3, priority=10 + index)

    def decide(job: greenstalk.WorkerJob) -> None:
        if job.body == b"0":
            job.release(delay=100)
        elif job.body == b"1":
            job.bury()
        else:
            raise RuntimeError("server 2's jobs fail")

    worker = make_worker(flavour, addresses_of(servers), handlers={"default": decide},
                         backoff_base=50)
    assert run_worker(worker) == 0
    assert worker.counts == {"deleted": 0, "released": 6, "buried": 3, "failed": 3}
    expected = [(3, 0, 0, "delayed"), (0, 3, 0, "buried"), (3, 0, 0, "delayed")]
    for index, (client, (releases, buries, deletes, state)) in enumerate(
        zip(clients, expected)
    ):
        assert (stat(client, "cmd-release"), stat(client, "cmd-bury"),
                stat(client, "cmd-delete")) == (releases, buries, deletes)
        for job_id in (1, 2, 3):
            stats = client.stats_job(job_id)
            assert (stats["state"], stats["pri"]) == (state, 10 + index)
    assert clients[2].stats_job(1)["delay"] == 50  # backoff_base * 2**0


def test_one_write_a_job_per_server(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sync worker: each server's deletes go out with that server's next reserve."""
    counts = [30, 20, 10]
    for client, count in zip(clients, counts):
        client.put_many([b"x"] * count)
    sockets: dict[Any, CountingSocket] = {}

    class CountingClient(greenstalk.Client[bytes]):
        def __init__(self, address: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(address, *args, **kwargs)
            counting = CountingSocket(self._socket)  # type: ignore[arg-type]
            self._socket = counting  # type: ignore[assignment]
            sockets[address] = counting

    monkeypatch.setattr(greenstalk.worker, "Client", CountingClient)
    worker = greenstalk.Worker(addresses_of(servers), handlers={"default": lambda job: None},
                               socket_timeout=10)
    assert worker.run(burst=True) == 0
    for server, client, count in zip(servers, clients, counts):
        # count jobs: count + 1 reserves, count of them carrying the previous delete.
        assert sockets[server.address].writes == count + 1
        assert stat(client, "cmd-delete") == count


def test_the_asyncio_worker_shares_writes_per_server(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = [30, 20, 10]
    for client, count in zip(clients, counts):
        client.put_many([b"x"] * count)
    writes: dict[Any, int] = {}
    original_open = greenstalk.aio.Client._open

    async def counting_open(self: greenstalk.aio.Client[Any]) -> None:
        await original_open(self)
        assert self._connection is not None
        transport = self._connection.transport
        assert transport is not None
        write = transport.write
        where = self.address
        writes[where] = 0

        def counted(data: bytes) -> None:
            writes[where] += 1
            write(data)

        transport.write = counted  # type: ignore[method-assign,assignment]

    monkeypatch.setattr(greenstalk.aio.Client, "_open", counting_open)

    async def nothing(job: greenstalk.aio.WorkerJob) -> None:
        """Nothing to do."""

    worker = greenstalk.aio.Worker(addresses_of(servers), handlers={"default": nothing},
                                   socket_timeout=10)
    assert run_worker(worker) == 0
    for server, client, count in zip(servers, clients, counts):
        assert writes[server.address] <= count + 2  # the set-up, then one write a job
        assert stat(client, "cmd-delete") == count


# -- at once -------------------------------------------------------------------------


def test_the_sync_worker_runs_a_handler_per_server_at_once(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    for client in clients:
        client.put(b"x")
    all_in = threading.Barrier(3, timeout=20)

    def meet(job: greenstalk.WorkerJob) -> None:
        all_in.wait()  # breaks (and the job fails) unless all three run at once

    worker = make_worker("sync", addresses_of(servers), handlers={"default": meet})
    assert run_worker(worker) == 0
    assert worker.counts["deleted"] == 3


class Gauge:
    """Counts the handlers running at once; each waits until let go."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.done = 0
        self.let_go = threading.Event()

    def handle(self, job: greenstalk.WorkerJob) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            self.let_go.wait(30)
        finally:
            with self.lock:
                self.now -= 1
                self.done += 1


def test_asyncio_concurrency_is_at_least_one_per_server(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """concurrency=1 over three servers: each server still has a handler of its own."""
    for client in clients:
        client.put_many([b"x"] * 2)
    gauge = Gauge()
    worker = make_worker("aio", addresses_of(servers), handlers={"default": gauge.handle},
                         concurrency=1)
    with InBackground(worker) as running:
        wait_until(lambda: gauge.now == 3, what="three handlers at once")
        time.sleep(0.3)  # room for a fourth, which must not start
        assert gauge.now == 3
        gauge.let_go.set()
        wait_until(lambda: gauge.done == 6, what="all six jobs")
        assert running.stop() == 0
    assert gauge.most == 3


def test_asyncio_concurrency_is_shared_by_the_servers(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """concurrency=4 over three servers: one server with all the jobs runs 2 at once (its own
    slot and the one shared), and the idle servers keep theirs."""
    clients[0].put_many([b"x"] * 6)
    gauge = Gauge()
    worker = make_worker("aio", addresses_of(servers), handlers={"default": gauge.handle},
                         concurrency=4)
    with InBackground(worker) as running:
        wait_until(lambda: gauge.now == 2, what="two handlers at once")
        clients[2].put(b"y")  # the third server's own slot is free: handled at once
        wait_until(lambda: gauge.now == 3, what="a third handler")
        time.sleep(0.3)
        assert gauge.now == 3
        gauge.let_go.set()
        wait_until(lambda: gauge.done == 7, what="all seven jobs")
        assert running.stop() == 0
    assert gauge.most == 3
    assert [stat(client, "cmd-delete") for client in clients] == [6, 0, 1]


def test_a_finished_job_is_acknowledged_even_when_another_server_takes_its_slot(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """Every slot in use: a job that ends frees a shared slot another server may take first;
    its delete goes out at once all the same."""
    clients[1].put_many([b"first", b"second"])
    clients[0].put(b"other")
    started: dict[bytes, threading.Event] = {b: threading.Event() for b in (b"first", b"second",
                                                                             b"other")}
    let_go = {body: threading.Event() for body in started}

    def handle(job: greenstalk.WorkerJob) -> None:
        started[job.body].set()
        let_go[job.body].wait(30)

    worker = greenstalk.aio.Worker(addresses_of(servers[:2]), handlers={"default": handle},
                                   concurrency=3, socket_timeout=10)
    try:
        with InBackground(worker) as running:
            for event in started.values():
                assert event.wait(20)
            # Both loops wait for a slot: the one "second" frees goes to the first server's.
            wait_until(lambda: all(server.starved for server in worker._servers),
                       what="both loops waiting for a slot")
            let_go[b"second"].set()
            wait_until(lambda: stat(clients[1], "cmd-delete") == 1, what="the delete")
            assert clients[1].stats_job(1)["state"] == "reserved"
            for event in let_go.values():
                event.set()
            wait_until(lambda: worker.counts["deleted"] == 3, what="all deletes")
            assert running.stop() == 0
    finally:
        for event in let_go.values():
            event.set()


def test_an_idle_worker_waits_on_every_server(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    """No polling: a job put on any server is taken long before a reserve slice ends."""
    taken = threading.Event()
    worker = make_worker(flavour, addresses_of(servers), reserve_slice=8,
                         handlers={"default": lambda job: taken.set()})
    with InBackground(worker):
        for client in clients:
            wait_until(functools.partial(waiting_on, client), what="a waiting reserve")
        for client in clients:
            taken.clear()
            started = time.monotonic()
            client.put(b"x")
            assert taken.wait(10)
            assert time.monotonic() - started < 4
        # (The stop is noticed once the waiting reserves' slices end.)
    assert [stat(client, "cmd-delete") for client in clients] == [1, 1, 1]


# -- failures ------------------------------------------------------------------------


def test_the_worker_keeps_working_while_a_server_is_down(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """One of three servers is killed: the others' jobs keep being done; when it is back at
    the same address it gets work again."""
    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    path = str(tmp_path / "socket")
    kind = kinds(4)[3]
    done: list[tuple[Any, bytes]] = []
    lock = threading.Lock()

    def handle(job: greenstalk.WorkerJob) -> None:
        with lock:
            done.append((job.address, job.body))

    def done_count() -> int:
        with lock:
            return len(done)

    addresses = [*addresses_of(servers[:2]), path]
    worker = make_worker(flavour, addresses, handlers={"default": handle},
                         reconnect_base=0.05, reconnect_cap=0.2, socket_timeout=5)

    def retries() -> int:
        return len(records_about(caplog, f"cannot connect to unix:{path}"))

    with contextlib.ExitStack() as stack:
        with run_server(kind, address=path, in_process=False) as doomed, \
                greenstalk.Client(path) as doomed_client:
            running = stack.enter_context(InBackground(worker))
            for client in [*clients[:2], doomed_client]:
                client.put_many([b"before"] * 3)
            wait_until(lambda: done_count() == 9, what="the first nine jobs")
            assert doomed.process is not None
            doomed.process.kill()
            doomed.process.wait()
        for client in clients[:2]:
            client.put_many([b"while down"] * 5)
        wait_until(lambda: done_count() == 19, what="the jobs of the servers still up")
        wait_until(lambda: retries() >= 2, what="retries")
        with run_server(kind, address=path, in_process=False), \
                greenstalk.Client(path) as back:
            back.put_many([b"back"] * 2)
            wait_until(lambda: done_count() == 21, what="the jobs of the server back")
            assert stat(back, "cmd-delete") == 2
            assert running.stop() == 0
    assert [stat(client, "cmd-delete") for client in clients[:2]] == [8, 8]
    assert sorted(body for where, body in done if where == path) == [b"back"] * 2 + [b"before"] * 3
    # (A kill can race with a connection being accepted: it may be lost twice.)
    lost = records_about(caplog, f"connection to the server unix:{path} lost")
    assert lost
    assert {record.levelno for record in lost} == {logging.WARNING}
    again = records_about(caplog, f"connected again to unix:{path}")
    assert again
    assert {record.levelno for record in again} == {logging.INFO}
    assert not records_about(caplog, "connection to the server lost")


def test_a_job_in_hand_when_its_server_dies_is_not_acknowledged(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Its server is gone when the handler returns: nothing is acknowledged (the job went back
    to the queue of that server, had it lived), and the other server's jobs go on."""
    path = str(tmp_path / "socket")
    holding = threading.Event()
    let_go = threading.Event()
    done: list[Any] = []

    def handle(job: greenstalk.WorkerJob) -> None:
        if job.body == b"held":
            holding.set()
            let_go.wait(30)
        else:
            done.append(job.address)

    worker = make_worker(flavour, [servers[0].address, path], handlers={"default": handle},
                         reconnect_base=0.05, reconnect_cap=0.2, socket_timeout=5)
    try:
        with contextlib.ExitStack() as stack:
            with run_server(kinds(2)[1], address=path, in_process=False) as doomed, \
                    greenstalk.Client(path) as doomed_client:
                running = stack.enter_context(InBackground(worker))
                doomed_client.put(b"held")
                assert holding.wait(20)
                assert doomed.process is not None
                doomed.process.kill()
                doomed.process.wait()
            clients[0].put(b"meanwhile")
            wait_until(lambda: done == [servers[0].address], what="the other server's job")
            let_go.set()
            wait_until(lambda: records_about(caplog, f"connection to the server unix:{path} lost"),
                       what="the lost connection noticed")
            assert running.stop() == 0
    finally:
        let_go.set()
    assert worker.counts["deleted"] == 1
    assert stat(clients[0], "cmd-delete") == 1


@pytest.fixture
def nowhere(tmp_path: Path) -> str:
    """A Unix socket path nothing listens on."""
    return str(tmp_path / "no-server")


def test_a_burst_that_cannot_reach_a_server_raises_naming_it(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    nowhere: str,
) -> None:
    clients[0].put_many([b"x"] * 20)
    worker = make_worker(flavour, [servers[0].address, nowhere],
                         handlers={"default": lambda job: time.sleep(0.01)})
    started = time.monotonic()
    with InBackground(worker, burst=True) as running:
        outcome = running.join(20)
    assert time.monotonic() - started < 15
    assert isinstance(outcome, greenstalk.ClientConnectionError), outcome
    assert re.fullmatch(rf"cannot connect to unix:{re.escape(nowhere)}: \[Errno \d+\] "
                        "[A-Z][a-z ]+", str(outcome))
    # What the reachable server's loop had in hand was acknowledged before the error.
    assert stat(clients[0], "cmd-delete") == worker.counts["deleted"]
    assert stat(clients[0], "current-jobs-reserved") == 0


# -- stops ---------------------------------------------------------------------------


def test_a_warm_stop_lets_every_servers_job_finish(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    for client in clients:
        client.put(b"x")
    gauge = Gauge()
    worker = make_worker(flavour, addresses_of(servers), handlers={"default": gauge.handle})
    with InBackground(worker) as running:
        wait_until(lambda: gauge.now == 3, what="three handlers at once")
        ask_to_stop(running)
        time.sleep(0.3)
        assert running.join(0) is None  # still waiting for the handlers
        gauge.let_go.set()
        assert running.join(20) == 0
    assert [stat(client, "cmd-delete") for client in clients] == [1, 1, 1]


def test_an_asyncio_cold_stop_gives_back_every_servers_jobs(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]]
) -> None:
    for index, client in enumerate(clients):
        client.put(b"x", priority=index + 1)

    async def forever(job: greenstalk.aio.WorkerJob) -> None:
        await asyncio.sleep(60)

    worker = greenstalk.aio.Worker(addresses_of(servers), handlers={"default": forever},
                                   socket_timeout=10)

    async def main() -> int:
        running = asyncio.ensure_future(worker.run())
        while sum(stat(client, "current-jobs-reserved") for client in clients) < 3:
            await asyncio.sleep(0.02)
        worker.stop(cold=True)
        return await running

    assert asyncio.run(asyncio.wait_for(main(), 60)) == 128 + signal.SIGTERM
    for index, client in enumerate(clients):
        stats = client.stats_job(1)
        assert (stats["state"], stats["pri"]) == ("ready", index + 1)


WORKER_SCRIPT = """
import logging, sys, time
from pathlib import Path
import greenstalk

logging.basicConfig(level=logging.INFO)
marks = Path(sys.argv[2])

def slow(job):
    (marks / f"started-{job.body.decode()}").write_text(str(job.id))
    time.sleep(30)

worker = greenstalk.Worker(sys.argv[1], handlers={"default": slow}, socket_timeout=10)
sys.exit(worker.run())
"""


def test_a_second_signal_gives_back_every_servers_job(
    servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]], tmp_path: Path
) -> None:
    """The sync worker, in a process of its own, with $BEANSTALKD_ADDRESS-style text."""
    unix = [server.address for server in servers if isinstance(server.address, str)]
    tcp = [server.address for server in servers if isinstance(server.address, tuple)]
    text = ",".join([*(f"{host}:{port}" for host, port in tcp), *unix])
    for index, client in enumerate(clients):
        client.put(b"%d" % index, priority=index + 4)
    process = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, text, str(tmp_path)],
                               stderr=subprocess.PIPE)
    try:
        for index in range(3):
            wait_for(tmp_path / f"started-{index}")
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        read_until(process.stderr, b"stop again")
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 128 + signal.SIGINT
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stderr is not None
        process.stderr.close()
    for index, client in enumerate(clients):
        stats = client.stats_job(1)
        assert (stats["state"], stats["pri"]) == ("ready", index + 4)


# -- addresses -----------------------------------------------------------------------


def test_addresses_in_every_form(flavour: str, monkeypatch: pytest.MonkeyPatch,
                                 tmp_path: Path) -> None:
    both = [("10.0.0.1", 11300), "/run/b.sock"]
    assert make_worker(flavour, both).address == both
    assert make_worker(flavour, "10.0.0.1:11300, unix:/run/b.sock").addresses == both
    assert make_worker(flavour, ["10.0.0.1:11300", Path("/run/b.sock")]).addresses == both
    assert make_worker(flavour, "10.0.0.1, [::1]:11301,").addresses == [
        ("10.0.0.1", 11300), ("::1", 11301)
    ]
    assert make_worker(flavour, [("10.0.0.1", 11300)]).address == ("10.0.0.1", 11300)
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "10.0.0.1:11300,/run/b.sock")
    assert make_worker(flavour).address == both
    worker = make_worker(flavour, "10.0.0.2:11300")
    assert worker.addresses == [("10.0.0.2", 11300)]
    worker.address = "10.0.0.1:11300,/run/b.sock"
    assert worker.addresses == both


def test_bad_addresses_are_refused(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^no server address given$"):
        make_worker(flavour, [])
    with pytest.raises(ValueError, match=r"^no server address given$"):
        make_worker(flavour, " , ")
    with pytest.raises(ValueError, match=r"^10\.0\.0\.1:11300 is listed twice$"):
        make_worker(flavour, "10.0.0.1:11300,10.0.0.1")
    with pytest.raises(ValueError, match="port must be a number"):
        make_worker(flavour, "10.0.0.1:11300,10.0.0.2:x")
    with socket.socket() as sock, pytest.raises(TypeError, match="not sockets"):
        make_worker(flavour, [("10.0.0.1", 11300), sock])
    with pytest.raises(TypeError, match="not a server address: 11300"):
        make_worker(flavour, [("10.0.0.1", 11300), 11300])
    with pytest.raises(TypeError, match="not a server address: 11300"):
        make_worker(flavour, 11300)
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "10.0.0.1:11300,10.0.0.1:11300")
    with pytest.raises(ValueError, match="listed twice"):
        make_worker(flavour)
    worker = make_worker(flavour, "10.0.0.1:11300", handlers={"default": lambda job: None})
    worker.address = []
    with pytest.raises(ValueError, match="no server address given"):
        run_worker(worker)


def test_the_start_up_line_names_every_server(
    flavour: str, servers: list[ServerProcess], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    names = [greenstalk.describe_address(address) for address in addresses_of(servers)]
    worker = make_worker(flavour, addresses_of(servers), handlers={"default": lambda job: None})
    run_worker(worker)
    [line] = records_about(caplog, "worker starting")
    assert line.getMessage().startswith(f"worker starting: servers {', '.join(names)} (given); "
                                        "tubes default; codec bytes")
    caplog.clear()
    # What `greenstalk worker` does with several addresses in $BEANSTALKD_ADDRESS.
    monkeypatch.setenv("BEANSTALKD_ADDRESS", ",".join(names[:2]))
    worker = make_worker(flavour, names[2], handlers={"default": lambda job: None})
    worker.address = [greenstalk.parse_address(name) for name in names[:2]]
    run_worker(worker)
    [line] = records_about(caplog, "worker starting")
    assert (f"servers {', '.join(names[:2])} (from $BEANSTALKD_ADDRESS, overriding {names[2]} "
            "given in code); ") in line.getMessage()


def test_log_lines_about_a_job_name_its_server(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clients[1].put(b"not json")
    worker = make_worker(flavour, addresses_of(servers[:2]), codec="json",
                         handlers={"default": lambda job: None})
    run_worker(worker)
    name = greenstalk.describe_address(servers[1].address)
    [record] = records_about(caplog, f"job 1 on {name} in 'default': the body does not decode")
    assert record.levelno == logging.WARNING
    assert clients[1].stats_job(1)["state"] == "buried"


def test_the_environment_may_list_several_servers(
    flavour: str, servers: list[ServerProcess], clients: list[greenstalk.Client[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [greenstalk.describe_address(address) for address in addresses_of(servers)]
    monkeypatch.setenv("BEANSTALKD_ADDRESS", ",".join(names))
    for client in clients:
        client.put(b"x")
    worker = make_worker(flavour, handlers={"default": lambda job: None})
    assert run_worker(worker) == 0
    assert [stat(client, "cmd-delete") for client in clients] == [1, 1, 1]
