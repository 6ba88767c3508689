"""Running ``django.tasks`` from beanstalkd: a :class:`greenstalk.Worker` whose handler runs tasks.

The worker's rules hold as they are (see :doc:`worker`): a task that
returns has its job deleted; one that raises is released with a growing
delay and buried after ``max_releases`` releases; long tasks have their
jobs touched; the first SIGTERM or SIGINT lets the running task finish,
a second gives its job back at once. :class:`TaskRunner` adds what Django
expects around a task: the ``task_started`` and ``task_finished`` signals,
a :class:`~django.tasks.TaskContext` for tasks that take one, and stale
database connections closed before and after, as after a request.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from traceback import format_exception
from typing import Any

from django.db import close_old_connections
from django.tasks import TaskContext, TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json

from .. import ClientConnectionError, NotFoundError, Worker, WorkerJob
from .backend import BeanstalkBackend, load_task, read_body

logger = logging.getLogger("greenstalk.django")


class TaskRunner:
    """The worker's handler: runs the task a job names, as Django's own backends run them."""

    def __init__(self, backend: BeanstalkBackend) -> None:
        self.backend = backend
        #: Names this worker in ``TaskResult.worker_ids``: host and process.
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, job: WorkerJob) -> None:
        """Run the job's task. Raises what the task raised, so the worker retries or buries.

        A job that names no task this process can import is buried at once:
        it could never run.
        """
        try:
            fields = read_body(job.raw_body)
            task = load_task(fields["task"]).using(
                priority=fields["priority"],
                queue_name=fields["queue_name"],
                backend=self.backend.alias,
            )
        except (ValueError, ImportError, InvalidTask) as error:
            logger.error("job %d in %r cannot run: %s; burying it", job.id, job.tube, error)
            job.bury()
            return
        started = timezone.now()
        result = TaskResult(
            task=task,
            id=str(job.id),
            status=TaskResultStatus.RUNNING,
            enqueued_at=fields["enqueued_at"],
            started_at=started,
            finished_at=None,
            last_attempted_at=started,
            args=fields["args"],
            kwargs=fields["kwargs"],
            backend=self.backend.alias,
            errors=[],
            worker_ids=self._worker_ids(job.id),
        )
        task_started.send(type(self.backend), task_result=result)
        failure = self._run(result)
        object.__setattr__(result, "finished_at", timezone.now())
        if failure is not None:
            result.errors.append(TaskError(
                exception_class_path=f"{type(failure).__module__}.{type(failure).__qualname__}",
                traceback="".join(format_exception(failure)),
            ))
        object.__setattr__(
            result,
            "status",
            TaskResultStatus.SUCCESSFUL if failure is None else TaskResultStatus.FAILED,
        )
        # Outside the except block: the worker logs the traceback, once.
        task_finished.send(type(self.backend), task_result=result)
        if isinstance(failure, ClientConnectionError):
            # The task's own connection failed, not the worker's.
            raise RuntimeError(f"task {task.module_path} failed: {failure}") from failure
        if failure is not None:
            raise failure

    def _run(self, result: TaskResult) -> Exception | None:
        """Call the task; returns what it raised, or None when it succeeded."""
        task = result.task
        close_old_connections()
        try:
            if task.takes_context:
                value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
            else:
                value = task.call(*result.args, **result.kwargs)
            # As Django's backends: a result JSON cannot hold fails the task.
            object.__setattr__(result, "_return_value", normalize_json(value))
        except Exception as error:
            return error
        finally:
            close_old_connections()
        return None

    def _worker_ids(self, job_id: int) -> list[str]:
        """One entry per attempt (the job's reserves), so ``attempts`` counts them.

        beanstalkd does not record who reserved a job before: earlier
        attempts read ``"unknown"``.
        """
        try:
            with self.backend.client() as client:
                reserves = int(client.stats_job(job_id)["reserves"])
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d: cannot count its attempts (%s)", job_id, error)
            reserves = 1
        return ["unknown"] * (reserves - 1) + [self.worker_id]


def make_worker(
    backend: BeanstalkBackend, queues: Iterable[str] | None = None, **settings: Any
) -> Worker:
    """A :class:`greenstalk.Worker` running the tasks of ``queues`` (default: the backend's).

    ``settings`` go to the Worker (``max_releases``, ``backoff_base``, ...).
    Raises ValueError when there is no queue to watch, InvalidTask for a
    queue whose tube beanstalkd would refuse.
    """
    names = sorted(backend.queues if queues is None else set(queues))
    if not names:
        raise ValueError("no queue to watch: the backend's QUEUES is empty; name queues to run")
    runner = TaskRunner(backend)
    settings.setdefault("socket_timeout", backend.socket_timeout)
    return Worker(backend.address, handlers={backend.tube(name): runner for name in names},
                  **settings)
