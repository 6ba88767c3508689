"""greenstalk.django: the django.tasks backend and ``manage.py greenstalk_worker`` (issue 13).

A small project (``tests/django_tasks/project``, settings in code) enqueues
tasks into a real server (beanstalkd, then greenstalkd) and runs the
management command in a subprocess: 100 tasks of random priorities come
out in priority order, ``run_after`` is honoured within a second, SIGTERM
in the middle of a task lets it finish. Django 6 needs Python 3.12: under
older Pythons this module is skipped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6 (Python 3.12+)")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_tasks.project.settings")

import django
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.test import override_settings
from django.utils import timezone

import greenstalk
from greenstalk.django import BeanstalkBackend
from greenstalk.django.worker import TaskRunner
from greenstalk.testing import ServerProcess

from ..conftest import StartServer
from .project import tasks

django.setup()

MANAGE = Path(__file__).resolve().parent / "manage.py"
TUBE = "django.default"


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Wait until ``condition()`` holds, checking every 20 ms. Fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def address_text(server: ServerProcess) -> str:
    assert isinstance(server.address, tuple)
    host, port = server.address
    return f"{host}:{port}"


def backend_settings(address: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "greenstalk.django.BeanstalkBackend",
            "QUEUES": ["default", "other"],
            "OPTIONS": {"address": address, **options},
        },
    }


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """This test's server, over TCP."""
    return start_server()


@pytest.fixture
def backend(server: ServerProcess) -> Iterator[BeanstalkBackend]:
    """The project's default backend, pointed at this test's server."""
    with override_settings(TASKS=backend_settings(address_text(server))):
        backend = task_backends["default"]
        assert isinstance(backend, BeanstalkBackend)
        yield backend
        backend.close()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[greenstalk.Client[bytes]]:
    with greenstalk.Client(server.address, socket_timeout=10, use=TUBE) as client:
        yield client


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """The file the tasks write to."""
    path = tmp_path / "out"
    path.touch()
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def tube_counts(client: greenstalk.Client[bytes]) -> tuple[int, int, int, int]:
    """Ready, reserved, delayed and buried jobs of the default queue's tube."""
    stats = client.stats_tube(TUBE)
    return (
        stats["current-jobs-ready"],
        stats["current-jobs-reserved"],
        stats["current-jobs-delayed"],
        stats["current-jobs-buried"],
    )


class WorkerProcess:
    """``python manage.py greenstalk_worker ARGS`` against this test's server."""

    def __init__(self, server: ServerProcess, log: Path, *args: str) -> None:
        self.log = log
        env = {**os.environ, "GREENSTALK_DJANGO_ADDRESS": address_text(server)}
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(MANAGE), "greenstalk_worker", *args],
                env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            )

    def text(self) -> str:
        return self.log.read_text()

    def wait(self, seconds: float = 60) -> int:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"the worker did not exit in {seconds} s:\n{self.text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait()


@pytest.fixture
def worker(server: ServerProcess, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes; those still running at the end are stopped."""
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        process = WorkerProcess(server, tmp_path / f"worker{len(started)}.log", *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# -- the management command in a subprocess -------------------------------------------


def test_100_tasks_come_out_in_priority_order(
    backend: BeanstalkBackend, worker: Callable[..., WorkerProcess], out: Path
) -> None:
    chance = random.Random(13)
    priorities = [chance.randint(-100, 100) for _ in range(100)]
    for index, priority in enumerate(priorities):
        tasks.record.using(priority=priority).enqueue(str(out), f"{priority}:{index}")
    run = worker("--burst")
    assert run.wait() == 0, run.text()
    ran = [line.split()[0] for line in lines(out)]
    # Higher first; among equals, first enqueued first.
    expected = sorted(enumerate(priorities), key=lambda item: (-item[1], item[0]))
    assert ran == [f"{priority}:{index}" for index, priority in expected]
    assert "worker stopped: 100 deleted, 0 released, 0 buried, 0 failed" in run.text()


def test_run_after_is_honoured_within_a_second(
    backend: BeanstalkBackend,
    worker: Callable[..., WorkerProcess],
    out: Path,
    client: greenstalk.Client[bytes],
) -> None:
    run = worker()
    wait_for(lambda: "worker starting" in run.text(), "the worker to start")
    now = timezone.now()
    wanted = {}
    # Delays are whole seconds, rounded up: "a" may start up to 0.5 s late.
    for label, seconds in [("a", 1.5), ("b", 2.0), ("c", 2.9), ("now", 0)]:
        run_after = now + timedelta(seconds=seconds)
        wanted[label] = run_after.timestamp()
        tasks.record.using(run_after=run_after).enqueue(str(out), label)
    assert tube_counts(client)[2] == 3  # delayed on the server
    wait_for(lambda: len(lines(out)) == 4, "the tasks to run")
    ran = dict(line.split() for line in lines(out))
    for label, at in wanted.items():
        late = float(ran[label]) - at
        assert 0 <= late < 1, (label, late)
    assert run.stop() == 0


def test_sigterm_in_the_middle_of_a_task_lets_it_finish(
    backend: BeanstalkBackend,
    worker: Callable[..., WorkerProcess],
    out: Path,
    client: greenstalk.Client[bytes],
) -> None:
    result = tasks.slow.enqueue(str(out), 2)
    run = worker()
    wait_for(lambda: lines(out) == ["started"], "the task to start")
    assert backend.get_result(result.id).status == TaskResultStatus.RUNNING
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 0
    assert lines(out) == ["started", "finished"]
    assert tube_counts(client) == (0, 0, 0, 0)
    assert f"stopping once job {result.id} is done" in run.text()
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(result.id)


def test_failures_retries_context_and_jobs_that_cannot_run(
    backend: BeanstalkBackend,
    worker: Callable[..., WorkerProcess],
    out: Path,
    client: greenstalk.Client[bytes],
) -> None:
    failing = tasks.fail.enqueue(str(out))
    flaky = tasks.flaky.enqueue(str(out))
    tasks.coroutine.enqueue(str(out))
    unserializable = tasks.unserializable.enqueue(str(out))
    not_json = client.put(b"{not json")
    nowhere = client.put(json.dumps({"task": "tests.nowhere.task", "args": [],
                                     "kwargs": {}}).encode())
    run = worker("--burst", "--max-releases", "1", "--backoff-base", "0")
    assert run.wait() == 0, run.text()
    ran = lines(out)
    assert ran.count("fail") == 2
    assert ran.count("unserializable") == 2
    assert [line for line in ran if line.startswith("attempt")] == [
        f"attempt 1 of {flaky.id}", f"attempt 2 of {flaky.id}"]
    assert "async" in ran
    for result in (failing, unserializable):
        assert backend.get_result(result.id).status == TaskResultStatus.FAILED
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(flaky.id)
    for job_id in (not_json, nowhere):
        assert client.stats_job(job_id)["state"] == "buried"
    text = run.text()
    assert f"job {failing.id} in 'django.default' failed; releasing it" in text
    assert f"job {failing.id} in 'django.default' failed after 1 release(s); burying it" in text
    assert "RuntimeError: this task always fails" in text
    assert f"job {nowhere} in 'django.default' cannot run: cannot import task" in text
    assert f"job {not_json} in 'django.default' cannot run: not a task of" in text
    assert tube_counts(client) == (0, 0, 0, 4)


# -- the backend, in this process ------------------------------------------------


def test_enqueue_puts_a_job(backend: BeanstalkBackend, client: greenstalk.Client[bytes]) -> None:
    assert (backend.supports_defer, backend.supports_priority, backend.supports_async_task,
            backend.supports_get_result) == (True, True, True, False)
    result = tasks.record.using(priority=100).enqueue("/nowhere", "x")
    assert result.status == TaskResultStatus.READY
    job = client.peek(int(result.id))
    assert json.loads(job.body)["args"] == ["/nowhere", "x"]
    stats = client.stats_job(job)
    assert (stats["tube"], stats["pri"], stats["ttr"]) == (TUBE, 2**16 - 100, 60)
    low = tasks.record.using(priority=-100).enqueue("/nowhere", "y")
    assert client.stats_job(int(low.id))["pri"] == 2**16 + 100
    other = tasks.record.using(queue_name="other").enqueue("/nowhere", "z")
    assert client.stats_job(int(other.id))["tube"] == "django.other"
    fetched = backend.get_result(result.id)
    assert (fetched.status, fetched.args, fetched.task.priority) == (
        TaskResultStatus.READY, ["/nowhere", "x"], 100)
    assert fetched.enqueued_at == result.enqueued_at
    result.refresh()
    assert result.status == TaskResultStatus.READY


def test_run_after_becomes_a_delay(
    backend: BeanstalkBackend, client: greenstalk.Client[bytes]
) -> None:
    later = tasks.record.using(run_after=timezone.now() + timedelta(hours=24)).enqueue("/n", "x")
    stats = client.stats_job(int(later.id))
    assert (stats["state"], stats["delay"]) == ("delayed", 86400)
    assert backend.get_result(later.id).status == TaskResultStatus.READY
    past = tasks.record.using(run_after=timezone.now() - timedelta(hours=1)).enqueue("/n", "y")
    assert client.stats_job(int(past.id))["state"] == "ready"


def test_what_cannot_be_enqueued(
    backend: BeanstalkBackend, client: greenstalk.Client[bytes]
) -> None:
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid"):
        tasks.record.using(queue_name="elsewhere").enqueue("/n", "x")
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.record.enqueue("/n", object())
    assert client.stats()["current-jobs-ready"] == 0


def test_get_result_of_what_the_server_does_not_have(
    backend: BeanstalkBackend, client: greenstalk.Client[bytes]
) -> None:
    foreign = client.put(b"not a task")
    gone_task = client.put(json.dumps({"task": "tests.nowhere.task", "args": [],
                                       "kwargs": {}}).encode())
    array = client.put(b"[1, 2]")
    wrong_types = client.put(json.dumps({"task": 1, "args": [], "kwargs": {}}).encode())
    not_a_task = client.put(json.dumps({"task": "tests.django_tasks.project.tasks.note",
                                        "args": [], "kwargs": {}}).encode())
    ids = ["not a number", "99999", *map(str, (foreign, gone_task, array, wrong_types,
                                               not_a_task))]
    for result_id in ids:
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


def test_options(server: ServerProcess, client: greenstalk.Client[bytes]) -> None:
    address = address_text(server)
    with override_settings(TASKS=backend_settings(address, tubes={"other": "mail"}, ttr=5)):
        result = tasks.record.using(queue_name="other").enqueue("/n", "x")
        stats = client.stats_job(int(result.id))
        assert (stats["tube"], stats["ttr"]) == ("mail", 5)
    problems: list[tuple[dict[str, Any], str]] = [
        ({"adress": address}, "unknown option"),
        ({"address": "host:port"}, "the port must be a number"),
        ({"address": 11300}, "must be 'host:port'"),
        ({"ttr": 0}, "ttr'] must be an int"),
        ({"socket_timeout": "1"}, "socket_timeout'] must be a number"),
        ({"tubes": ["mail"]}, "tubes a mapping"),
        ({"tube_prefix": "-"}, "makes tube '-default'"),
    ]
    for options, problem in problems:
        with override_settings(TASKS=backend_settings(**{"address": address, **options})), \
                pytest.raises(ImproperlyConfigured, match=problem):
            task_backends["default"]
    with override_settings(TASKS=backend_settings(f"unix:{server.address}")):
        assert task_backends["default"].address == str(server.address)
    with override_settings(TASKS=backend_settings(address)):
        settings = task_backends["default"].options
        assert settings["address"] == address
    tuple_settings = backend_settings(address)
    tuple_settings["default"]["OPTIONS"]["address"] = ("127.0.0.1", 11300)
    with override_settings(TASKS=tuple_settings):
        assert task_backends["default"].address == ("127.0.0.1", 11300)


def test_the_command_in_this_process(
    backend: BeanstalkBackend, out: Path, client: greenstalk.Client[bytes]
) -> None:
    tasks.record.enqueue(str(out), "here")
    tasks.record.using(queue_name="other").enqueue(str(out), "there")
    call_command("greenstalk_worker", "--burst", "--queue", "default", verbosity=0)
    assert [line.split()[0] for line in lines(out)] == ["here"]
    call_command("greenstalk_worker", "--burst")
    assert [line.split()[0] for line in lines(out)] == ["here", "there"]


def test_a_task_whose_own_connection_fails_is_a_failed_task(
    backend: BeanstalkBackend, client: greenstalk.Client[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Not a lost worker connection: the job is buried as a failure, not put back."""
    result = tasks.lose_own_connection.enqueue()
    call_command("greenstalk_worker", "--burst", "--max-releases", "0")
    assert client.stats_job(int(result.id))["state"] == "buried"
    assert "RuntimeError: task tests.django_tasks.project.tasks.lose_own_connection failed" in (
        caplog.text)
    assert "connection to the server lost" not in caplog.text


def test_attempts_of_a_job_the_server_no_longer_has(
    backend: BeanstalkBackend, caplog: pytest.LogCaptureFixture
) -> None:
    runner = TaskRunner(backend)
    assert runner._worker_ids(99999) == [runner.worker_id]
    assert "job 99999: cannot count its attempts" in caplog.text


def test_the_address_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "10.1.2.3:4567")
    settings = backend_settings("")
    del settings["default"]["OPTIONS"]["address"]
    with override_settings(TASKS=settings):
        assert task_backends["default"].address == ("10.1.2.3", 4567)


def test_enqueue_after_a_server_restart_and_while_it_is_down(server_kind: str) -> None:
    with greenstalk.testing.run_server(server_kind) as first:
        address = address_text(first)
        with override_settings(TASKS=backend_settings(address)):
            tasks.record.enqueue("/n", "before")
            backend = task_backends["default"]
            first.stop()
            # The same address, a new server: the kept connection is dead.
            with greenstalk.testing.run_server(server_kind, address=first.address) as second, \
                    greenstalk.Client(second.address, use=TUBE) as client:
                result = tasks.record.enqueue("/n", "after")
                assert json.loads(client.peek(int(result.id)).body)["args"] == ["/n", "after"]
            with pytest.raises(greenstalk.ClientConnectionError):
                tasks.record.enqueue("/n", "while down")
            backend.close()


def test_the_command_refuses_what_it_cannot_run(server: ServerProcess) -> None:
    with pytest.raises(CommandError, match="The connection 'nope' doesn't exist"):
        call_command("greenstalk_worker", "--backend", "nope")
    dummy = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
    with override_settings(TASKS=dummy), \
            pytest.raises(CommandError, match="is a DummyBackend, not a greenstalk"):
        call_command("greenstalk_worker")
    no_queues = backend_settings(address_text(server))
    no_queues["default"]["QUEUES"] = []
    with override_settings(TASKS=no_queues), pytest.raises(CommandError, match="no queue"):
        call_command("greenstalk_worker")
    with override_settings(TASKS=no_queues), pytest.raises(CommandError, match="refuses"):
        call_command("greenstalk_worker", "--queue", "bad name")
    # A burst against a server that is not there.
    gone = greenstalk.testing.run_server("greenstalkd")
    with gone as stopped:
        address = address_text(stopped)
    with override_settings(TASKS=backend_settings(address)), \
            pytest.raises(CommandError, match="cannot connect"):
        call_command("greenstalk_worker", "--burst")


def test_import_greenstalk_imports_no_django_here_either() -> None:
    """Where Django is installed, ``import greenstalk`` still leaves it alone."""
    code = (
        "import sys, greenstalk, greenstalk.aio\n"
        "greenstalk.Client, greenstalk.Worker\n"
        "loaded = {'dramatiq', 'django'} & {name.split('.')[0] for name in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
