"""``greenstalk worker``: load a worker (or handlers) by name or file, and run it."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Union

import click

from .. import ClientConnectionError, Worker, aio
from . import EXIT_CONNECTION, EXIT_USAGE
from ._common import (
    Failure,
    OneOf,
    Settings,
    common_options,
    connection_failure,
    run_coroutine,
)

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

AnyWorker = Union[Worker, aio.Worker]


@click.command(short_help="Run a worker, or handlers by tube.")
@click.argument("target", metavar="MODULE:OBJECT")
@click.option("--burst", is_flag=True, help="Stop once there is no job left to do.")
@click.option(
    "--log-level",
    type=OneOf("log level", LOG_LEVELS),
    metavar="LEVEL",
    help=f"Log messages of LEVEL and above: {', '.join(LOG_LEVELS)} [default: info].",
)
@click.option("--verbose", "-v", count=True, help="Log more: -v logs debug messages.")
@click.option("--quiet", "-q", count=True, help="Log less: -q logs warnings and errors only.")
@common_options
@click.pass_obj
def worker(
    settings: Settings,
    target: str,
    burst: bool,
    log_level: str | None,
    verbose: int,
    quiet: int,
) -> int:
    """Run a worker: a greenstalk.Worker, a greenstalk.aio.Worker, or handlers by tube.

    MODULE is a module's name, imported with the current directory on the
    module path, or the path of a Python file (./tasks.py, path/to/tasks.py).
    OBJECT is a Worker, an asyncio Worker, or a mapping of tube names to
    handlers (an asyncio Worker is made when a handler is a coroutine
    function). A Worker keeps its own address unless --address or
    $BEANSTALKD_ADDRESS gives one; given several servers, it works for all
    of them. The worker logs to stderr. Exits with the worker's exit code;
    3 when a --burst run cannot reach a server.
    """
    found = load_target(target)
    try:
        runner = _as_worker(settings, target, found)
    except ValueError as error:
        raise Failure(f"{target}: {error}", EXIT_USAGE) from None
    level = logging.INFO + 10 * (quiet - verbose) if log_level is None else LOG_LEVELS[log_level]
    with _logging_to_stderr(max(logging.DEBUG, min(level, logging.CRITICAL))):
        try:
            if isinstance(runner, aio.Worker):
                return run_coroutine(runner.run(burst=burst))
            return runner.run(burst=burst)
        except ValueError as error:  # no handler
            raise Failure(f"{target}: {error}", EXIT_USAGE) from None
        except ClientConnectionError as error:  # a burst run that cannot connect
            if isinstance(runner.address, list):  # several servers: the message names which
                raise Failure(str(error), EXIT_CONNECTION) from None
            raise connection_failure(runner.address, error) from None


def _as_worker(settings: Settings, target: str, found: object) -> AnyWorker:
    """The worker ``found`` is or makes. Raises Failure (exit 2), ValueError for bad handlers."""
    if isinstance(found, Mapping):
        handlers: Mapping[str, Any] = found
        if any(inspect.iscoroutinefunction(handler) for handler in handlers.values()):
            return aio.Worker(settings.worker_address(), handlers=handlers)
        return Worker(settings.worker_address(), handlers=handlers)
    if not isinstance(found, (Worker, aio.Worker)):
        raise Failure(
            f"{target} is neither a greenstalk.Worker, a greenstalk.aio.Worker nor a mapping "
            f"of tube names to handlers: it is a {type(found).__name__}",
            EXIT_USAGE,
        )
    if settings.address_given:
        found.address = settings.worker_address()
    return found


@contextlib.contextmanager
def _logging_to_stderr(level: int) -> Iterator[None]:
    """Log records of ``level`` and above to stderr, each line with its level's name.

    The root logger gets a handler and the level for the block; both are
    put back afterwards, so that main() leaves the process as it found it.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)


def load_target(target: str) -> object:
    """The object ``MODULE:OBJECT`` or ``PATH.py:OBJECT`` names.

    Raises click.BadParameter for text of another shape, and Failure
    (exit 2) when the module cannot be imported (whatever it raised) or has
    no such object. SystemExit and KeyboardInterrupt raised by the module
    go through.
    """
    module_part, colon, name = target.rpartition(":")
    if not (module_part and colon and name.isidentifier()):
        raise click.BadParameter(
            f"{target!r} is not MODULE:OBJECT (such as tasks:worker or ./tasks.py:worker)",
            param_hint="MODULE:OBJECT",
        )
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        module = _import_file(module_part)
    elif all(part.isidentifier() for part in module_part.split(".")):
        directory = os.getcwd()
        if directory not in sys.path:
            sys.path.insert(0, directory)
        module = _import(module_part, lambda: importlib.import_module(module_part))
    else:
        raise click.BadParameter(
            f"{module_part!r} is neither a module name (such as tasks or app.tasks) nor the "
            "path of a .py file",
            param_hint="MODULE:OBJECT",
        )
    try:
        return getattr(module, name)
    except AttributeError:
        raise Failure(f"module {module_part} has no {name}", EXIT_USAGE) from None


def _import_file(given: str) -> ModuleType:
    """Import the Python file at path ``given`` as the module named after it.

    Its directory goes first on the module path, so that it can import the
    modules beside it. Raises Failure (exit 2) as :func:`load_target` does.
    """
    path = Path(given)
    if not path.is_file():
        raise Failure(f"cannot import {given}: no such file", EXIT_USAGE)
    directory = str(path.resolve().parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise Failure(f"cannot import {given}: not a Python file", EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def execute() -> ModuleType:
        sys.modules[path.stem] = module
        try:
            loader.exec_module(module)
        except BaseException:
            del sys.modules[path.stem]
            raise
        return module

    return _import(given, execute)


def _import(label: str, do_import: Callable[[], ModuleType]) -> ModuleType:
    """Run ``do_import``; what it raises (bar SystemExit and Ctrl-C) becomes one line, exit 2."""
    try:
        module = do_import()
    except ImportError as error:
        raise Failure(f"cannot import {label}: {error}", EXIT_USAGE) from None
    except SyntaxError as error:  # its text names the file and line
        raise Failure(f"cannot import {label}: SyntaxError: {error}", EXIT_USAGE) from None
    except Exception as error:
        where = traceback.extract_tb(error.__traceback__)[-1]
        raise Failure(
            f"cannot import {label}: {type(error).__name__}: {error} "
            f"({os.path.basename(where.filename)}, line {where.lineno})",
            EXIT_USAGE,
        ) from None
    return module
