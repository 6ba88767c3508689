"""The tasks a ``celery -A tests.celery_app.tasks worker`` process runs in the tests.

The broker is ``$GREENSTALK_CELERY_BROKER`` (``beanstalk://`` or
``beanstalk+unix://``), the TTR of the jobs ``$GREENSTALK_CELERY_TTR`` seconds
(60 by default). Each run of a task appends a line to the file named by
``$GREENSTALK_CELERY_RECORD``: the task, its key and the time, so a test can
see what ran, how often and when.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import greenstalk.kombu  # noqa: F401  (registers beanstalk:// with kombu)


def configure(app: Celery, ttr: int) -> None:
    """The settings of the tests' workers and producers: late acks, jobs with TTR ``ttr``."""
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"ttr": ttr, "socket_timeout": 30},
    )


app = Celery("greenstalk_tests", broker=os.environ.get("GREENSTALK_CELERY_BROKER", "beanstalk://"))
configure(app, int(os.environ.get("GREENSTALK_CELERY_TTR", "60")))


def record(what: str, key: object) -> None:
    """Append ``what key time`` to the record file (O_APPEND: lines of processes never mix)."""
    line = f"{what} {key} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["GREENSTALK_CELERY_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@app.task  # type: ignore[untyped-decorator]
def work(key: int, seconds: float = 0.0) -> None:
    """Record a run of ``key``, after ``seconds`` of "work"."""
    if seconds:
        time.sleep(seconds)
    record("work", key)


@app.task  # type: ignore[untyped-decorator]
def long(key: str, seconds: float) -> None:
    """Record the start and the end of a run that takes ``seconds``."""
    record("start", key)
    time.sleep(seconds)
    record("end", key)


@app.task(  # type: ignore[untyped-decorator]
    bind=True, autoretry_for=(RuntimeError,), retry_backoff=1, retry_jitter=False, max_retries=5
)
def flaky(self: Any, key: str, failures: int) -> None:
    """Record each attempt; fail the first ``failures`` of them (retried with backoff 1, 2, 4 s)."""
    record("attempt", key)
    if self.request.retries < failures:
        raise RuntimeError(f"attempt {self.request.retries + 1} of {key} fails on purpose")


@app.task  # type: ignore[untyped-decorator]
def noop() -> None:
    """Nothing: what a task costs the worker and the broker, for the benchmark."""
