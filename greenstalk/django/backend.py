"""The ``django.tasks`` backend: :class:`BeanstalkBackend`.

A task is a job whose body is UTF-8 JSON naming the task function and
carrying its arguments; the job's id is the result's id. ``run_after``
becomes the job's delay, and Django's priority (-100 to 100, higher first)
the job's priority, ``2**16 - priority``, so that the order holds and
priority 0 is greenstalk's default priority.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils import timezone
from django.utils.module_loading import import_string

from .. import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    Address,
    Client,
    ClientConnectionError,
    NotFoundError,
    address_from_environment,
    parse_address,
)

# beanstalkd's tube names: up to 200 bytes of these, not starting with a hyphen.
_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")

_OPTIONS = ("address", "tube_prefix", "tubes", "ttr", "socket_timeout")

# What a job's state says of its task: beanstalkd keeps no finished jobs.
_STATUS = {
    "ready": TaskResultStatus.READY,
    "delayed": TaskResultStatus.READY,
    "reserved": TaskResultStatus.RUNNING,
    "buried": TaskResultStatus.FAILED,
}


def job_priority(priority: int) -> int:
    """The beanstalkd priority of a Django task priority: higher runs first, 0 is 2**16."""
    return DEFAULT_PRIORITY - priority


class BeanstalkBackend(BaseTaskBackend):
    """Runs ``django.tasks`` through beanstalkd: enqueued here, run by ``greenstalk_worker``.

    ``OPTIONS``: ``address`` (``"host:port"``, ``"unix:PATH"``, a socket path
    or ``(host, port)``; default ``$BEANSTALKD_ADDRESS``, else
    127.0.0.1:11300), ``tube_prefix`` (``"django."``: queue ``emails`` is
    tube ``django.emails``), ``tubes`` (a mapping of queue names to tube
    names, overriding the prefix), ``ttr`` (seconds, 60) and
    ``socket_timeout`` (seconds, 30).

    Nothing connects until the first task is enqueued. Raises
    ImproperlyConfigured for an unknown option or a bad value.
    """

    supports_defer = True
    supports_async_task = True
    supports_priority = True
    # beanstalkd deletes a job once it has run: no status or return value
    # outlives it. get_result() tells what the server still knows.
    supports_get_result = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        options: Mapping[str, Any] = self.options
        unknown = sorted(set(options) - set(_OPTIONS))
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(_OPTIONS)}"
            )
        self.address: Address = _address(alias, options.get("address"))
        self.tube_prefix: str = options.get("tube_prefix", "django.")
        tubes = options.get("tubes", {})
        if not isinstance(self.tube_prefix, str) or not isinstance(tubes, Mapping):
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']: tube_prefix must be a str and tubes a mapping "
                "of queue names to tube names"
            )
        self.tubes: dict[str, str] = dict(tubes)
        self.ttr = options.get("ttr", DEFAULT_TTR)
        self.socket_timeout = options.get("socket_timeout", 30.0)
        if isinstance(self.ttr, bool) or not isinstance(self.ttr, int) or self.ttr < 1:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['ttr'] must be an int >= 1")
        if not isinstance(self.socket_timeout, (int, float)) or self.socket_timeout <= 0:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['socket_timeout'] must be a number > 0"
            )
        for queue_name in sorted(self.queues | set(self.tubes)):
            try:
                self.tube(queue_name)
            except InvalidTask as error:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]: {error}") from None
        self._lock = threading.Lock()
        self._idle: list[Client[bytes]] = []

    def tube(self, queue_name: str) -> str:
        """The tube of ``queue_name``. Raises InvalidTask when beanstalkd would refuse it."""
        tube = self.tubes.get(queue_name, self.tube_prefix + queue_name)
        if not _TUBE_NAME.fullmatch(tube):
            raise InvalidTask(
                f"queue {queue_name!r} makes tube {tube!r}, which beanstalkd refuses: up to 200 "
                "characters of letters, digits and -+/;.$_(), not starting with -"
            )
        return tube

    @contextlib.contextmanager
    def client(self) -> Iterator[Client[bytes]]:
        """A connection to the server for the ``with`` block, shared with other threads in turn.

        Raises :class:`greenstalk.ClientConnectionError` when the server
        cannot be reached.
        """
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is None:
            client = Client(self.address, socket_timeout=self.socket_timeout,
                            socket_connect_timeout=self.socket_timeout)
        try:
            yield client
        finally:
            if not client.closed:  # a connection that failed is not used again
                with self._lock:
                    self._idle.append(client)

    def close(self) -> None:
        """Close the backend's idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Put the task in its queue's tube, delayed until ``run_after``.

        A delay is rounded up to whole seconds: a task never runs early.
        Returns its TaskResult, whose id is the job's. A put whose
        connection fails is tried once more on a new connection (should the
        first have reached the server, the task is enqueued twice: at least
        once). Raises InvalidTask as Django's backends do, TypeError or
        ValueError for arguments JSON cannot hold, and
        :class:`greenstalk.ClientConnectionError` when the server cannot be
        reached.
        """
        self.validate_task(task)
        tube = self.tube(task.queue_name)
        now = timezone.now()
        result = TaskResult(
            task=task,
            id="",
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        body = json.dumps({
            "task": task.module_path,
            "args": result.args,
            "kwargs": result.kwargs,
            "queue_name": task.queue_name,
            "priority": task.priority,
            "enqueued_at": now.isoformat(),
        }).encode()
        delay = 0
        if task.run_after is not None:
            delay = max(0, math.ceil((task.run_after - now).total_seconds()))
        try:
            job_id = self._put(tube, body, job_priority(task.priority), delay)
        except ClientConnectionError:
            # A connection kept from before a server restart fails at its
            # first use: once more, on a new connection.
            job_id = self._put(tube, body, job_priority(task.priority), delay)
        object.__setattr__(result, "id", str(job_id))
        task_enqueued.send(type(self), task_result=result)
        return result

    def _put(self, tube: str, body: bytes, priority: int, delay: int) -> int:
        with self.client() as client:
            client.use(tube)
            return client.put(body, priority=priority, delay=delay, ttr=self.ttr)

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as long as its job is on the server.

        Ready or delayed: READY; reserved by a worker: RUNNING; buried (it
        failed for good, or could not run): FAILED, with no error details.
        Once a task has succeeded its job is gone, and this raises
        TaskResultDoesNotExist, as for an id that never existed.
        """
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        with self.client() as client:
            try:
                job = client.peek(job_id)
                state = client.stats_job(job_id)["state"]
            except NotFoundError:
                raise TaskResultDoesNotExist(result_id) from None
        try:
            fields = read_body(job.body)
            task = load_task(fields["task"]).using(
                priority=fields["priority"], queue_name=fields["queue_name"], backend=self.alias
            )
        except (ValueError, ImportError, InvalidTask):
            raise TaskResultDoesNotExist(result_id) from None
        return TaskResult(
            task=task,
            id=result_id,
            status=_STATUS[state],
            enqueued_at=fields["enqueued_at"],
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=fields["args"],
            kwargs=fields["kwargs"],
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )


def read_body(body: bytes) -> dict[str, Any]:
    """The fields of a task's job body. Raises ValueError for a body this backend did not write."""
    try:
        fields = json.loads(body)
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        task, args, kwargs = fields["task"], fields["args"], fields["kwargs"]
        if not (isinstance(task, str) and isinstance(args, list) and isinstance(kwargs, dict)):
            raise ValueError("task, args or kwargs of the wrong type")
        fields.setdefault("priority", 0)
        fields.setdefault("queue_name", "default")
        enqueued_at = fields.get("enqueued_at")
        fields["enqueued_at"] = None if enqueued_at is None else datetime.fromisoformat(enqueued_at)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"not a task of greenstalk.django's backend: {error}") from error
    return fields


def load_task(path: str) -> Task:
    """The task named by ``path`` (``module.function``). Raises ImportError when there is none."""
    try:
        task = import_string(path)
    except Exception as error:  # ImportError, or what importing its module raised
        raise ImportError(f"cannot import task {path!r}: {error}") from error
    if not isinstance(task, Task):
        raise ImportError(f"{path!r} is not a task (decorate it with @task)")
    return task


def _address(alias: str, address: object) -> Address:
    """The server address of the ``address`` option. Raises ImproperlyConfigured."""
    if address is None:
        return address_from_environment()
    if isinstance(address, str):
        try:
            return parse_address(address)
        except ValueError as error:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']['address']: {error}") from None
    if (
        isinstance(address, tuple)
        and len(address) == 2
        and isinstance(address[0], str)
        and isinstance(address[1], int)
    ):
        return (address[0], address[1])
    raise ImproperlyConfigured(
        f"TASKS[{alias!r}]['OPTIONS']['address'] must be 'host:port', 'unix:PATH' or "
        f"(host, port), not {address!r}"
    )
