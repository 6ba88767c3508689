"""Celery on beanstalkd: real ``celery worker`` processes over greenstalk.kombu, on both servers.

The workers run ``tests.celery_app.tasks`` with late acknowledgements; every
run of a task appends a line to a record file, so the tests see what ran,
how often and when.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

import greenstalk
from greenstalk.testing import ServerProcess, run_server

from .celery_app.tasks import configure
from .conftest import SERVERS_UNDER_TEST, StartServer
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
TASKS = "tests.celery_app.tasks"

# The TTR of the jobs in these tests: short, so that a task outliving it shows.
TTR = 2


def url_of(address: greenstalk.Address) -> str:
    if isinstance(address, tuple):
        return f"beanstalk://{address[0]}:{address[1]}"
    return f"beanstalk+unix://{address}"


class Worker:
    """``celery worker`` processes of one broker, one after the other, logging to one file."""

    def __init__(self, url: str, record: Path, log: Path, name: str) -> None:
        self.url = url
        self.record = record
        self.log = log
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        record.touch()
        log.touch()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GREENSTALK_CELERY_BROKER": self.url,
            "GREENSTALK_CELERY_RECORD": str(self.record),
            "GREENSTALK_CELERY_TTR": str(TTR),
        }

    def start(self, *options: str) -> None:
        """Start a worker (prefork, two processes) and wait until it says it is ready."""
        offset = self.log.stat().st_size
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", TASKS, "worker", "--loglevel", "INFO",
                 "--hostname", self.name, "--concurrency", "2", *options],
                cwd=ROOT, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,
            )

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited: {self.log.read_text()[-3000:]}")
            with self.log.open("rb") as log:
                log.seek(offset)
                return b" ready." in log.read()

        wait_until(ready, "the worker to be ready")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the worker and its pool processes, and wait until it exits."""
        process, self.process = self.process, None
        if process is None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def runs(self) -> list[tuple[str, str, float]]:
        """What ran: (what, key, time) per line of the record file."""
        lines = self.record.read_text().splitlines()
        return [(what, key, float(when)) for what, key, when in (line.split() for line in lines)]

    def run_times(self, what: str, key: str) -> list[float]:
        return [when for done, done_key, when in self.runs() if (done, done_key) == (what, key)]


def producer(url: str) -> Celery:
    """A Celery application that sends the tests' tasks to ``url`` (jobs with TTR 2)."""
    app = Celery("greenstalk_tests_producer", broker=url, set_as_current=False)
    configure(app, TTR)
    return app


def tube_stats(client: greenstalk.Client[bytes], tube: str = "celery") -> dict[str, int]:
    stats = client.stats_tube(tube)
    return {state: stats[f"current-jobs-{state}"]  # type: ignore[literal-required]
            for state in ("ready", "reserved", "delayed", "buried")}


@contextlib.contextmanager
def celery_worker(server: ServerProcess, tmp_path: Path, name: str) -> Iterator[Worker]:
    worker = Worker(url_of(server.address), tmp_path / "record", tmp_path / "log", name)
    try:
        yield worker
    finally:
        worker.kill(signal.SIGTERM)


# -- one worker for the behaviour tests, per server -------------------------------------


@pytest.fixture(scope="module", params=SERVERS_UNDER_TEST)
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Worker, Celery, greenstalk.Client[bytes]]]:
    """A worker (with the default gossip, mingle and heartbeats) on a server of its own."""
    with run_server(request.param) as server, \
            celery_worker(server, tmp_path_factory.mktemp("celery"), "behaviour@test") as worker, \
            greenstalk.Client(server.address, socket_timeout=10) as client:
        worker.start()
        app = producer(worker.url)
        yield worker, app, client
        app.close()


def test_countdown_is_one_delayed_job_run_exactly_once(
    running: tuple[Worker, Celery, greenstalk.Client[bytes]],
) -> None:
    """countdown=600 with TTR 60, scaled down 30 times: 20 s with TTR 2.

    Meanwhile a task that outlives its TTR (5 s) runs once, and one that
    fails twice is retried after 1 s and 2 s.
    """
    worker, app, client = running
    sent = time.time()
    app.send_task(f"{TASKS}.work", args=("countdown",), countdown=20)
    client.use("celery")
    delayed = client.peek_delayed()
    app.send_task(f"{TASKS}.long", args=("past-ttr", 5))
    app.send_task(f"{TASKS}.flaky", args=("retried", 2))
    # Far into the countdown, the message is the same job, never reserved.
    wait_until(lambda: bool(worker.run_times("end", "past-ttr")), "the long task", seconds=30)
    stats = client.stats_job(delayed)
    assert stats["state"] == "delayed"
    assert stats["reserves"] == 0
    assert stats["ttr"] == TTR
    wait_until(lambda: bool(worker.run_times("work", "countdown")), "the countdown", seconds=40)
    wait_until(lambda: tube_stats(client)["reserved"] == 0, "the last acknowledgement")
    # Run once, and its job deleted: it cannot come back.
    (ran,) = worker.run_times("work", "countdown")
    assert ran >= sent + 20
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(delayed)
    assert len(worker.run_times("start", "past-ttr")) == 1
    assert len(worker.run_times("end", "past-ttr")) == 1
    attempts = worker.run_times("attempt", "retried")
    assert len(attempts) == 3
    assert attempts[1] - attempts[0] >= 1
    assert attempts[2] - attempts[1] >= 2
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_celery_inspect_ping_answers(
    running: tuple[Worker, Celery, greenstalk.Client[bytes]],
) -> None:
    worker, _, _ = running
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", TASKS, "inspect", "ping", "--timeout", "30",
         "--destination", worker.name],
        cwd=ROOT, env=worker.env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "pong" in done.stdout
    assert "1 node online" in done.stdout


def test_a_message_the_worker_rejects_is_buried(
    running: tuple[Worker, Celery, greenstalk.Client[bytes]],
) -> None:
    """An unregistered task: Celery rejects it, so its job is buried, not lost."""
    _, app, client = running
    app.send_task("tests.celery_app.no_such_task", args=(1,))
    client.use("celery")
    wait_until(lambda: tube_stats(client)["buried"] == 1, "the job to be buried")
    job = client.peek_buried()
    assert b"no_such_task" in job.body
    client.delete(job)


def test_apply_async_priority_is_the_job_priority(
    running: tuple[Worker, Celery, greenstalk.Client[bytes]],
) -> None:
    """priority=N becomes beanstalkd priority N: lower is reserved first. None gives 0."""
    _, app, client = running
    for priority in (9, None, 1):
        app.send_task(f"{TASKS}.work", args=(f"parked-{priority}",), priority=priority,
                      queue="parked")
    client.use("parked")
    found = []
    for _ in range(3):
        job = client.peek_ready()
        found.append((client.stats_job(job)["pri"], job.body.count(b"parked-")))
        client.delete(job)
    assert [priority for priority, _ in found] == [0, 1, 9]


# -- kills and restarts --------------------------------------------------------------


def test_a_worker_killed_five_times_loses_no_task(
    start_server: StartServer, tmp_path: Path
) -> None:
    """1,000 tasks with late acks; the worker is killed with SIGKILL five times mid-way."""
    server = start_server()
    url = url_of(server.address)
    app = producer(url)
    with app.producer_or_acquire() as publisher:
        for key in range(1000):
            app.send_task(f"{TASKS}.work", args=(key, 0.005), producer=publisher)
    app.close()
    with celery_worker(server, tmp_path, "killed@test") as worker, \
            greenstalk.Client(server.address, socket_timeout=10) as client:

        def done() -> set[str]:
            return {key for what, key, _ in worker.runs() if what == "work"}

        in_hand = []
        for _ in range(5):
            worker.start("--without-mingle", "--without-gossip")
            before = len(done())
            wait_until(lambda before=before: len(done()) >= before + 80,  # type: ignore[misc]
                     "80 more tasks")
            in_hand.append(tube_stats(client)["reserved"])
            worker.kill()
        assert len(done()) < 1000, "the kills came too late to test anything"
        assert any(in_hand), "no kill landed while the worker held jobs"
        worker.start("--without-mingle", "--without-gossip")
        wait_until(lambda: len(done()) == 1000, "every task", seconds=120)
        wait_until(lambda: tube_stats(client)["reserved"] == 0, "the last acknowledgement")
        assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    assert done() == {str(key) for key in range(1000)}


def test_a_warm_shutdown_hands_back_what_it_holds_without_duplicates(
    start_server: StartServer, tmp_path: Path
) -> None:
    """SIGTERM mid-way: tasks running finish, prefetched ones go back; each runs once."""
    server = start_server()
    app = producer(url_of(server.address))
    with app.producer_or_acquire() as publisher:
        for key in range(40):
            app.send_task(f"{TASKS}.work", args=(key, 0.2), producer=publisher)
    app.close()
    with celery_worker(server, tmp_path, "warm@test") as worker, \
            greenstalk.Client(server.address, socket_timeout=10) as client:

        def runs() -> Counter[str]:
            return Counter(key for what, key, _ in worker.runs() if what == "work")

        worker.start("--without-mingle", "--without-gossip")
        wait_until(lambda: len(runs()) >= 4, "a few tasks")
        assert tube_stats(client)["reserved"] > 2
        worker.kill(signal.SIGTERM)
        assert len(runs()) < 40
        stats = tube_stats(client)
        assert stats["reserved"] == 0
        assert stats["ready"] == 40 - len(runs())
        worker.start("--without-mingle", "--without-gossip")
        wait_until(lambda: len(runs()) == 40, "every task")
    assert set(runs().values()) == {1}
