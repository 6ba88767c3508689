"""What greenstalk.Worker and greenstalk.aio.Worker share, run on both against real servers.

Every test here takes ``flavour``: it runs once with the sync worker and once
with the asyncio one. The handlers are plain functions, which both accept
(the asyncio worker runs them in threads), and get a greenstalk.WorkerJob.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Union

import pytest

import greenstalk
import greenstalk.aio
from greenstalk.codecs import get_codec
from greenstalk.testing import run_server

from .conftest import MakeClient

AnyWorker = Union[greenstalk.Worker, greenstalk.aio.Worker]


@pytest.fixture(params=["sync", "aio"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which worker the test runs: ``sync`` (greenstalk.Worker), then ``aio``."""
    return str(request.param)


def make_worker(flavour: str, address: Any = None, **options: Any) -> AnyWorker:
    options.setdefault("socket_timeout", 10)
    if flavour == "sync":
        return greenstalk.Worker(address, **options)
    return greenstalk.aio.Worker(address, **options)


def run_worker(worker: AnyWorker, burst: bool = True) -> int:
    """Run the worker in this thread until it stops (at most a minute for the asyncio one)."""
    if isinstance(worker, greenstalk.aio.Worker):
        return asyncio.run(asyncio.wait_for(worker.run(burst=burst), 60))
    return worker.run(burst=burst)


class InBackground:
    """A worker running in a thread of its own (the asyncio one on its own loop there)."""

    def __init__(self, worker: AnyWorker, burst: bool = False) -> None:
        self.worker = worker
        self.outcome: int | BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(burst,), daemon=True)

    def __enter__(self) -> InBackground:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, burst: bool) -> None:
        try:
            if isinstance(self.worker, greenstalk.aio.Worker):
                self.outcome = asyncio.run(self._main(self.worker, burst))
            else:
                self._started.set()
                self.outcome = self.worker.run(burst=burst)
        except BaseException as error:
            self.outcome = error

    async def _main(self, worker: greenstalk.aio.Worker, burst: bool) -> int:
        self._loop = asyncio.get_running_loop()
        self._started.set()
        return await worker.run(burst=burst)

    def join(self, timeout: float) -> int | BaseException | None:
        """Wait for the worker to end by itself; its exit code or exception (None: still runs)."""
        self._thread.join(timeout)
        return None if self._thread.is_alive() else self.outcome

    def stop(self) -> int | BaseException | None:
        """Ask for a warm stop and wait for it: the exit code, or what the worker raised."""
        if self._thread.is_alive():
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self.worker.stop)
            else:
                self.worker.stop()
            self._thread.join(20)
            assert not self._thread.is_alive(), "the worker did not stop"
        return self.outcome


class LogWatch(logging.Handler):
    """Sets an event once a record of the greenstalk.worker logger matches a pattern."""

    def __init__(self, pattern: str, times: int = 1,
                 then: Callable[[], object] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.pattern = re.compile(pattern)
        self.left = times
        self.then = then
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.left and self.pattern.search(record.getMessage()):
            self.left -= 1
            if not self.left:
                self.seen.set()
                if self.then is not None:
                    self.then()


@pytest.fixture
def watch_log() -> Iterator[Callable[..., LogWatch]]:
    logger = logging.getLogger("greenstalk.worker")
    watches: list[LogWatch] = []

    def watch(pattern: str, times: int = 1, then: Callable[[], object] | None = None) -> LogWatch:
        handler = LogWatch(pattern, times, then)
        logger.addHandler(handler)
        watches.append(handler)
        return handler

    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield watch
    logger.setLevel(previous)
    for handler in watches:
        logger.removeHandler(handler)


def records_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    """The records whose message starts with ``text``."""
    return [record for record in caplog.records if record.getMessage().startswith(text)]


def text_of(address: Any) -> str:
    return greenstalk.describe_address(address)


# -- outcomes ----------------------------------------------------------------------


def test_success_deletes_each_job(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client(use="emails")
    ids = client.put_many([b"a", b"b", b"c"])
    seen: list[tuple[int, str, bytes]] = []
    worker = make_worker(flavour, address)

    @worker.handler("emails")
    def send(job: greenstalk.WorkerJob) -> None:
        seen.append((job.id, job.tube, job.body))

    assert run_worker(worker) == 0
    assert seen == [(ids[0], "emails", b"a"), (ids[1], "emails", b"b"), (ids[2], "emails", b"c")]
    assert client.stats_tube("emails")["current-jobs-ready"] == 0
    assert worker.counts == {"deleted": 3, "released": 0, "buried": 0, "failed": 0}


def test_a_producer_encodes_with_the_workers_codec(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    """What a producer puts with get_codec('json').encode is what the handler gets."""
    client = make_sync_client()
    sent = {"user": 7, "name": "Zoë", "tags": ["a", "b"]}
    client.put(get_codec("json").encode(sent))
    bodies: list[Any] = []
    worker = make_worker(flavour, address, codec="json",
                         handlers={"default": lambda job: bodies.append(job.body)})
    client.put(worker.codec.encode([1, None, True]))
    run_worker(worker)
    assert bodies == [sent, [1, None, True]]


def test_a_body_that_does_not_decode_is_buried_with_one_log_line(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_sync_client()
    bad = client.put(b"not json", priority=5)
    good = client.put(b'{"user": 7}')
    bodies: list[Any] = []
    worker = make_worker(flavour, address, codec="json",
                         handlers={"default": lambda job: bodies.append(job.body)})
    run_worker(worker)
    assert bodies == [{"user": 7}]
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(good)
    stats = client.stats_job(bad)
    assert (stats["state"], stats["pri"]) == ("buried", 5)
    [record] = records_about(caplog, f"job {bad} in")
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.getMessage() == (
        f"job {bad} in 'default': the body does not decode (JSONDecodeError: Expecting value: "
        "line 1 column 1 (char 0)); burying it"
    )


def failing(job: greenstalk.WorkerJob) -> None:
    raise RuntimeError("the handler failed")


def test_a_failure_is_released_with_backoff_then_buried(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = make_sync_client()
    job_id = client.put(b"x", priority=9)
    worker = make_worker(flavour, address, handlers={"default": failing}, max_releases=2,
                         backoff_base=2)
    delays = []
    for _ in range(2):
        run_worker(worker)
        stats = client.stats_job(job_id)
        assert (stats["state"], stats["pri"]) == ("delayed", 9)
        delays.append(stats["delay"])
        client.kick_job(job_id)
    assert delays == [2, 4]
    run_worker(worker)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["releases"], stats["pri"]) == ("buried", 2, 9)
    assert worker.counts == {"deleted": 0, "released": 2, "buried": 1, "failed": 3}
    failures = records_about(caplog, f"job {job_id} in 'default' failed")
    assert [record.levelno for record in failures] == [logging.ERROR] * 3
    assert all(record.exc_info is not None for record in failures)
    assert failures[-1].getMessage().endswith("failed after 2 release(s); burying it")
    assert "RuntimeError: the handler failed" in caplog.text


def test_a_handler_decides_itself(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    """A plain handler's job has blocking release, bury, delete and touch, in both workers."""
    client = make_sync_client()
    released, buried, deleted = (client.put(body, priority=3) for body in (b"r", b"b", b"d"))

    def decide(job: greenstalk.WorkerJob) -> None:
        job.touch()
        if job.body == b"r":
            job.release(delay=100)
        elif job.body == b"b":
            job.bury()
        else:
            job.bury(priority=1)
            job.delete()  # the last decision wins

    worker = make_worker(flavour, address, handlers={"default": decide})
    run_worker(worker)
    stats = client.stats_job(released)
    assert (stats["state"], stats["pri"]) == ("delayed", 3)
    stats = client.stats_job(buried)
    assert (stats["state"], stats["pri"]) == ("buried", 3)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(deleted)
    assert client.stats()["cmd-touch"] == 3
    assert worker.counts == {"deleted": 1, "released": 1, "buried": 1, "failed": 0}


def test_handlers_by_tube(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    client = make_sync_client()
    seen: list[tuple[str, bytes]] = []
    for tube in ("one", "two"):
        client.use(tube)
        client.put(tube.encode())
    worker = make_worker(flavour, address)
    worker.add_handler("one", lambda job: seen.append(("one", job.body)))
    worker.add_handler("two", lambda job: seen.append(("two", job.body)))
    run_worker(worker)
    assert sorted(seen) == [("one", b"one"), ("two", b"two")]


def test_auto_touch_keeps_a_slow_job(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient
) -> None:
    """A handler that blocks for longer than the TTR: touched, never timed out (in a thread,
    for the asyncio worker, while its loop touches)."""
    client = make_sync_client()
    job_id = client.put(b"slow", ttr=2)
    worker = make_worker(flavour, address, handlers={"default": lambda job: time.sleep(3.5)})
    run_worker(worker)
    assert client.stats()["cmd-touch"] >= 2
    assert client.stats()["job-timeouts"] == 0
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_without_auto_touch_the_ttr_runs_out(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient, server_kind: str
) -> None:
    client = make_sync_client()
    job_id = client.put(b"slow", ttr=1)
    worker = make_worker(flavour, address, handlers={"default": lambda job: time.sleep(3)},
                         auto_touch=False)
    run_worker(worker)
    assert client.stats()["cmd-touch"] == 0
    if server_kind == "greenstalkd":
        # beanstalkd 1.12 can lose a TTR until the holder sends another
        # command (docs/server.rst); here that is the delete that follows.
        assert client.stats()["job-timeouts"] == 1
    # (The job was ready again, or still held, when the handler returned: the delete took it.)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_a_job_gone_from_the_server_is_not_acknowledged(
    flavour: str, address: greenstalk.Address, make_sync_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job's TTR runs out, someone else deletes it, then the handler fails: the worker
    says so and carries on."""
    client = make_sync_client()
    other = make_sync_client()
    job_id = client.put(b"x", ttr=1)
    later = client.put(b"y")
    seen: list[bytes] = []

    def taken_away(job: greenstalk.WorkerJob) -> bool:
        try:
            other.delete(job_id)
        except greenstalk.NotFoundError:
            # Still reserved: beanstalkd 1.12 can lose track of a TTR until the
            # holder's connection sends a command (docs/server.rst). A touch is
            # one; it restarts the TTR, or finds it over.
            with contextlib.suppress(greenstalk.NotFoundError):
                job.touch()
            return False
        return True

    def handle(job: greenstalk.WorkerJob) -> None:
        seen.append(job.body)
        if job.id == job_id:
            give_up = time.monotonic() + 20
            time.sleep(1.5)  # past the TTR
            while not taken_away(job):
                assert time.monotonic() < give_up
                time.sleep(1.1)  # past the TTR again
            raise RuntimeError("too late")

    worker = make_worker(flavour, address, handlers={"default": handle}, auto_touch=False)
    assert run_worker(worker) == 0
    assert seen == [b"x", b"y"]
    assert f"job {job_id} is gone from the server" in caplog.text
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(later)


# -- connecting ----------------------------------------------------------------------


@pytest.fixture(params=["unix", "tcp"])
def nowhere(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[greenstalk.Address]:
    """An address nothing listens on: a missing Unix socket, or a bound port not listening."""
    if request.param == "unix":
        yield str(tmp_path / "no-server")
        return
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()


def test_a_burst_that_cannot_connect_raises_at_once(
    flavour: str, nowhere: greenstalk.Address, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker(flavour, nowhere, handlers={"default": lambda job: None},
                         reconnect_base=0.05, reconnect_cap=0.05)
    started = time.monotonic()
    with InBackground(worker, burst=True) as running:
        outcome = running.join(10)
    assert time.monotonic() - started < 5
    assert isinstance(outcome, greenstalk.ClientConnectionError), outcome
    assert re.fullmatch(rf"cannot connect to {re.escape(text_of(nowhere))}: \[Errno \d+\] "
                        "[A-Z][a-z ]+", str(outcome))
    assert "cannot connect" not in caplog.text  # nothing retried


def test_a_long_running_worker_keeps_trying_to_connect(
    flavour: str, nowhere: greenstalk.Address, caplog: pytest.LogCaptureFixture,
    watch_log: Callable[..., LogWatch],
) -> None:
    worker = make_worker(flavour, nowhere, handlers={"default": lambda job: None},
                         reconnect_base=0.1, reconnect_cap=0.4)
    watch_log("^cannot connect", times=4, then=worker.stop)
    assert run_worker(worker, burst=False) == 0
    failures = records_about(caplog, "cannot connect")
    assert [record.levelno for record in failures] == [logging.WARNING] * 4
    assert [record.getMessage().rpartition("; retrying in ")[2] for record in failures] == [
        "0.1 s", "0.2 s", "0.4 s", "0.4 s"
    ]
    assert re.fullmatch(rf"cannot connect to {re.escape(text_of(nowhere))} \(attempt 1\): "
                        r"\[Errno \d+\] [A-Z][a-z ]+; retrying in 0.1 s",
                        failures[0].getMessage())


def test_a_worker_started_before_its_server_connects_once_it_is_up(
    flavour: str, server_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    watch_log: Callable[..., LogWatch],
) -> None:
    path = str(tmp_path / "socket")
    done = threading.Event()
    worker = make_worker(flavour, path, handlers={"default": lambda job: done.set()},
                         reconnect_base=0.05, reconnect_cap=0.1)
    failing = watch_log("^cannot connect", times=2)
    with InBackground(worker) as running:
        assert failing.seen.wait(10)
        with run_server(server_kind, address=path) as server, \
                greenstalk.Client(server.address) as client:
            client.put(b"late")
            assert done.wait(10)
            assert running.stop() == 0
    [connected] = records_about(caplog, "connected to")
    assert connected.levelno == logging.INFO
    assert re.fullmatch(rf"connected to unix:{re.escape(path)} \(after \d+ failed attempt\(s\)\); "
                        "watching default", connected.getMessage())


def test_reconnects_when_the_server_comes_back(
    flavour: str, server_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away mid-job and comes back: the job is done again, and the log says so."""
    path = str(tmp_path / "socket")
    done: list[bytes] = []
    first_attempt = threading.Event()
    server_back = threading.Event()
    again = threading.Event()

    def handle(job: greenstalk.WorkerJob) -> None:
        if not first_attempt.is_set():
            first_attempt.set()
            server_back.wait(10)  # the server was restarted meanwhile: this result is dropped
            return
        done.append(job.body)
        again.set()

    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    worker = make_worker(flavour, path, handlers={"default": handle}, reconnect_base=0.05,
                         reconnect_cap=0.2, socket_timeout=5)
    (tmp_path / "log").mkdir()
    with InBackground(worker) as running:
        with run_server(server_kind, address=path, args=["-b", str(tmp_path / "log"), "-f", "0"],
                        in_process=False) as server:
            with greenstalk.Client(path) as client:
                client.put(b"job")
            assert first_attempt.wait(10)
            server.stop()
        with run_server(server_kind, address=path, args=["-b", str(tmp_path / "log")],
                        in_process=False):
            server_back.set()
            assert again.wait(20)
            assert running.stop() == 0
    assert done == [b"job"]
    [lost] = records_about(caplog, "connection to the server lost")
    assert lost.levelno == logging.WARNING
    [back] = records_about(caplog, "connected again to")
    assert back.levelno == logging.INFO


# -- set-up ------------------------------------------------------------------------


def test_handlers_are_checked_when_they_are_registered(flavour: str) -> None:
    with pytest.raises(TypeError, match=r"^the handler of tube 'orders' is not callable: 42$"):
        make_worker(flavour, handlers={"orders": 42})
    with pytest.raises(ValueError, match="tube name"):
        make_worker(flavour, handlers={"bad tube": lambda job: None})
    with pytest.raises(TypeError, match="tube name must be a str"):
        make_worker(flavour, handlers={b"orders": lambda job: None})
    with pytest.raises(TypeError, match="handlers must be a mapping"):
        make_worker(flavour, handlers=[("orders", lambda job: None)])
    worker = make_worker(flavour)
    with pytest.raises(TypeError, match="'orders' is not callable"):
        worker.add_handler("orders", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'orders' is not callable"):
        worker.handler("orders")("send")  # type: ignore[type-var]
    with pytest.raises(ValueError, match="tube name"):
        worker.add_handler("-orders", lambda job: None)

    async def generator(job: Any) -> Any:
        yield job

    with pytest.raises(TypeError, match=r"'orders' .*generator.* is an async generator function"):
        worker.add_handler("orders", generator)
    assert worker._handlers == {}


def test_settings_are_checked(flavour: str) -> None:
    for setting, value, message in [
        ("codec", "yaml", "codec must be one of"),
        ("max_releases", -1, "max_releases must be an int >= 0"),
        ("backoff_base", -1, "backoff_base must be >= 0"),
        ("backoff_cap", -0.5, "backoff_cap must be >= 0"),
        ("reserve_slice", 0, "reserve_slice must be an int >= 1"),
        ("socket_timeout", 0, "socket_timeout must be None or > 0"),
        ("reconnect_base", 0, "reconnect_base must be > 0"),
        ("reconnect_cap", 0.1, "reconnect_cap must be >= reconnect_base"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_worker(flavour, ("127.0.0.1", 1), **{setting: value})
    with pytest.raises(ValueError, match="no handler"):
        run_worker(make_worker(flavour, ("127.0.0.1", 1)))


def test_backoff_is_capped(flavour: str) -> None:
    worker = make_worker(flavour, ("127.0.0.1", 1), backoff_base=1.5, backoff_cap=10)
    assert [worker.backoff(n) for n in range(6)] == [2, 3, 6, 10, 10, 10]


def test_address_text_and_environment(flavour: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert make_worker(flavour, "10.0.0.1:11301").address == ("10.0.0.1", 11301)
    assert make_worker(flavour, "/run/beanstalkd.sock").address == "/run/beanstalkd.sock"
    assert make_worker(flavour, "unix:/run/beanstalkd.sock").address == "/run/beanstalkd.sock"
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "unix:/tmp/q")
    assert make_worker(flavour).address == "/tmp/q"


# -- the start-up line ---------------------------------------------------------------------


def banner(caplog: pytest.LogCaptureFixture) -> str:
    [record] = records_about(caplog, "worker starting")
    assert record.levelno == logging.INFO
    return record.getMessage()


def test_the_start_up_line(
    flavour: str, address: greenstalk.Address, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    worker = make_worker(flavour, address, codec="json",
                         handlers={"emails": lambda job: None, "sms": lambda job: None})
    run_worker(worker)
    concurrency = "; concurrency 1" if flavour == "aio" else ""
    assert banner(caplog) == (
        f"worker starting: server {text_of(address)} (given); tubes emails, sms; codec json"
        f"{concurrency}; until no job is ready (burst)"
    )


def test_the_start_up_line_says_where_the_address_came_from(
    flavour: str, address: greenstalk.Address, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="greenstalk.worker")
    monkeypatch.setenv("BEANSTALKD_ADDRESS", text_of(address))
    run_worker(make_worker(flavour, handlers={"default": lambda job: None}))
    assert f"server {text_of(address)} (from $BEANSTALKD_ADDRESS); " in banner(caplog)
    caplog.clear()
    # What `greenstalk worker` does when $BEANSTALKD_ADDRESS is set: it overrides the code's.
    worker = make_worker(flavour, "127.0.0.1:1", handlers={"default": lambda job: None})
    worker.address = greenstalk.parse_address(text_of(address))
    run_worker(worker)
    assert (f"server {text_of(address)} (from $BEANSTALKD_ADDRESS, overriding 127.0.0.1:1 "
            "given in code); ") in banner(caplog)
    caplog.clear()
    monkeypatch.delenv("BEANSTALKD_ADDRESS")
    worker.address = address
    run_worker(worker)
    assert (f"server {text_of(address)} (set after the worker was made, replacing 127.0.0.1:1 "
            "given in code); ") in banner(caplog)
