"""The tasks of the test project. Each writes what it did to a file, one line at a time."""

from __future__ import annotations

import time

from django.tasks import TaskContext, task

import greenstalk


def note(path: str, line: str) -> None:
    """Append ``line`` to the file at ``path``."""
    with open(path, "a") as out:
        out.write(line + "\n")


@task(priority=0)
def record(path: str, label: str) -> None:
    """Note ``label`` and the time it ran."""
    note(path, f"{label} {time.time()}")


@task()
def slow(path: str, seconds: float) -> None:
    """Note the start, take ``seconds``, note the end."""
    note(path, "started")
    time.sleep(seconds)
    note(path, "finished")


@task()
def fail(path: str) -> None:
    """Note the attempt and fail, always."""
    note(path, "fail")
    raise RuntimeError("this task always fails")


@task(takes_context=True)
def flaky(context: TaskContext, path: str) -> str:
    """Fail on the first attempt, succeed on the second; note each attempt's number."""
    note(path, f"attempt {context.attempt} of {context.task_result.id}")
    if context.attempt == 1:
        raise ValueError("first attempts fail")
    return "done"


@task()
async def coroutine(path: str) -> None:
    """An async task: the worker runs it too."""
    note(path, "async")


@task()
def unserializable(path: str) -> object:
    """Return what JSON cannot hold: the task fails, as with Django's own backends."""
    note(path, "unserializable")
    return object()


@task()
def lose_own_connection() -> None:
    """Fail as a task whose own connection to a server failed."""
    raise greenstalk.ClientConnectionError("the task's own server went away")
