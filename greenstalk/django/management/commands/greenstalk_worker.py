"""``python manage.py greenstalk_worker``: run the tasks of a BeanstalkBackend."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.tasks import DEFAULT_TASK_BACKEND_ALIAS, task_backends
from django.tasks.exceptions import InvalidTask, InvalidTaskBackend

from greenstalk import ClientConnectionError
from greenstalk.django.backend import BeanstalkBackend
from greenstalk.django.worker import make_worker

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Command(BaseCommand):
    """The ``greenstalk_worker`` command."""

    help = (
        "Run the tasks of a greenstalk.django.BeanstalkBackend: a greenstalk.Worker watching "
        "the backend's queues. The first SIGTERM or SIGINT lets the running task finish; a "
        "second gives its job back and exits at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--backend", default=DEFAULT_TASK_BACKEND_ALIAS,
                            help="The TASKS alias of the backend [default: %(default)s].")
        parser.add_argument("--queue", action="append", dest="queues", metavar="NAME",
                            help="A queue to run (again for more) [default: the backend's "
                                 "QUEUES].")
        parser.add_argument("--burst", action="store_true",
                            help="Stop once no task is ready.")
        parser.add_argument("--max-releases", type=int, default=3,
                            help="Bury a failing task after this many retries [default: 3].")
        parser.add_argument("--backoff-base", type=float, default=1.0,
                            help="Retry after BASE * 2**retries seconds [default: 1].")
        parser.add_argument("--backoff-cap", type=float, default=300.0,
                            help="The longest delay before a retry [default: 300].")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the worker until it is stopped (or, with --burst, until no task is ready)."""
        alias = options["backend"]
        try:
            backend = task_backends[alias]
        except InvalidTaskBackend as error:
            raise CommandError(str(error)) from None
        if not isinstance(backend, BeanstalkBackend):
            raise CommandError(f"TASKS[{alias!r}] is a {type(backend).__name__}, not a "
                               "greenstalk.django.BeanstalkBackend")
        try:
            worker = make_worker(
                backend,
                options["queues"],
                max_releases=options["max_releases"],
                backoff_base=options["backoff_base"],
                backoff_cap=options["backoff_cap"],
            )
        except (ValueError, InvalidTask) as error:
            raise CommandError(str(error)) from None
        with _logging(options["verbosity"]):
            try:
                worker.run(burst=options["burst"])
            except ClientConnectionError as error:  # a burst that cannot connect
                raise CommandError(str(error)) from None


@contextlib.contextmanager
def _logging(verbosity: int) -> Iterator[None]:
    """Log greenstalk's lines to stderr, unless the project's LOGGING already handles them.

    Verbosity 0 logs warnings and errors, 1 (the default) adds the start,
    stop and connection lines, 2 and more debug lines.
    """
    logger = logging.getLogger("greenstalk")
    if logger.hasHandlers():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
