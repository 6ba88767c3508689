"""The commands of ``greenstalk``, and :func:`run`, which turns their errors into exit codes."""

from __future__ import annotations

import base64
import contextlib
import importlib
import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any, Callable

import click

from .. import (
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    BeanstalkdError,
    Client,
    ClientConnectionError,
    Job,
    PutManyError,
    StatsTube,
    __version__,
    describe_address,
)
from .._protocol import commands
from .._protocol.commands import Request
from . import EXIT_CONNECTION, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._common import (
    JOB_ID,
    U32,
    Failure,
    Settings,
    check_tube_name,
    common_options,
    describe_refusal,
    emit_json,
    key_value_table,
    not_found,
    plural,
    progress_bar,
    show,
    stdout_console,
    table,
    tube_option,
    tube_statistics,
)
from ._top import top

# put --lines sends the lines in chunks of this many jobs, each pipelined.
LINES_PER_CHUNK = 1000

STATES = ("ready", "delayed", "buried")

PEEK_REQUESTS: dict[str, Callable[[], Request[tuple[int, bytes]]]] = {
    "ready": commands.peek_ready,
    "delayed": commands.peek_delayed,
    "buried": commands.peek_buried,
}

PeekFunction = Callable[[Client[bytes]], Job[bytes]]
PEEKS: dict[str, tuple[PeekFunction, str]] = {
    "ready": (Client.peek_ready, "Show the ready job of a tube that would be reserved next."),
    "delayed": (Client.peek_delayed, "Show the delayed job of a tube that becomes ready soonest."),
    "buried": (Client.peek_buried, "Show the oldest buried job of a tube."),
}


def run(argv: list[str]) -> int:
    """Run the command line ``argv`` and return its exit code; errors become one line on stderr."""
    settings = Settings()
    try:
        result = cli.main(argv, prog_name="greenstalk", standalone_mode=False, obj=settings)
    except (click.Abort, KeyboardInterrupt):
        return _report("interrupted", EXIT_INTERRUPTED)
    except click.ClickException as error:  # usage errors (exit 2) among them
        context = error.ctx if isinstance(error, click.UsageError) else None
        hint = "" if context is None else f" (see '{context.command_path} --help')"
        return _report(error.format_message() + hint, error.exit_code)
    except Failure as error:
        return _report(error.message, error.code)
    except ClientConnectionError as error:
        where = settings.connected_to
        prefix = "" if where is None else f"{describe_address(where)}: "
        return _report(f"{prefix}{error}", EXIT_CONNECTION)
    except BeanstalkdError as error:
        return _report(describe_refusal(error), EXIT_FAILURE)
    except SystemExit as exit:
        # greenstalkd's and a worker's exit codes; click exits 1 on a broken pipe.
        if isinstance(exit.code, int):
            return exit.code
        raise
    return result if isinstance(result, int) else EXIT_OK


def _report(message: str, code: int) -> int:
    click.echo(f"greenstalk: {message}", err=True)
    return code


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", "-V", prog_name="greenstalk")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> int | None:
    """Inspect and operate a beanstalkd server (or greenstalkd).

    The server is --address, else $BEANSTALKD_ADDRESS, else 127.0.0.1:11300.
    --address, --json and --timeout may also follow the command's name.

    Exit codes: 0 success, 1 refused or not found, 2 usage error,
    3 connection failed, 130 interrupted.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), err=True)
        return EXIT_USAGE
    return None


# -- put -----------------------------------------------------------------------


@cli.command()
@click.argument("body", required=False)
@click.option(
    "--file",
    "-f",
    "path",
    metavar="PATH",
    help="Read the body (with --lines: the lines) from PATH; - is stdin.",
)
@click.option(
    "--lines",
    is_flag=True,
    help="Put each line (without its line break) as a job, pipelined.",
)
@tube_option("The tube to put into.")
@click.option("--priority", "-p", type=U32, default=DEFAULT_PRIORITY, show_default=True,
              help="0 is the most urgent.")
@click.option("--delay", "-d", type=U32, default=0, show_default=True,
              help="Seconds before the job is ready.")
@click.option("--ttr", type=U32, default=DEFAULT_TTR, show_default=True,
              help="Seconds a worker may hold the job.")
@common_options
@click.pass_obj
def put(
    settings: Settings,
    body: str | None,
    path: str | None,
    lines: bool,
    tube: str,
    priority: int,
    delay: int,
    ttr: int,
) -> None:
    """Put a job, or with --lines one job per line.

    The body is BODY, or the contents of --file, or stdin (when BODY is
    absent or -). Prints the new job's id. With --lines, every line is a
    job of its own, sent in pipelined batches as they are read, and the
    count is printed.
    """
    argument = None if body == "-" else body
    if argument is not None and (path is not None or lines):
        raise click.UsageError("give BODY, or --file and --lines, not both")
    with settings.connect(tube) as client:
        if argument is not None:
            # The argument's bytes as the shell passed them.
            _put_one(settings, client, os.fsencode(argument), priority, delay, ttr)
            return
        with _open_input(path) as stream:
            if lines:
                _put_lines(settings, client, stream, tube, priority, delay, ttr)
            else:
                _put_one(settings, client, stream.read(), priority, delay, ttr)


def _open_input(path: str | None) -> contextlib.AbstractContextManager[IO[bytes]]:
    """The file at ``path``, or stdin for None or ``-``. Raises Failure (exit 2) if unreadable."""
    if path is None or path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as error:
        raise Failure(f"cannot read {path}: {error.strerror}", EXIT_USAGE) from None


def _put_one(
    settings: Settings, client: Client[bytes], body: bytes, priority: int, delay: int, ttr: int
) -> None:
    job_id = client.put(body, priority, delay, ttr)
    if settings.json:
        emit_json({"id": job_id})
    else:
        click.echo(job_id)


def _put_lines(
    settings: Settings,
    client: Client[bytes],
    stream: IO[bytes],
    tube: str,
    priority: int,
    delay: int,
    ttr: int,
) -> None:
    ids: list[int] = []
    with progress_bar() as progress:
        task = progress.add_task("putting", total=None)
        for chunk in _chunks(_lines(stream), LINES_PER_CHUNK):
            try:
                new_ids = client.put_many(chunk, priority, delay, ttr)
            except PutManyError as error:
                index, refusal = min(error.errors.items())
                put_now = sum(job_id is not None for job_id in error.ids)
                raise Failure(
                    f"the server refused {plural(len(error.errors), 'line')}, the first at line "
                    f"{len(ids) + index + 1}: {describe_refusal(refusal)}; "
                    f"{plural(len(ids) + put_now, 'job')} were put"
                ) from None
            ids.extend(new_ids)
            progress.advance(task, len(new_ids))
    if settings.json:
        first, last = (ids[0], ids[-1]) if ids else (None, None)
        emit_json({"count": len(ids), "first_id": first, "last_id": last, "tube": tube})
    elif ids:
        click.echo(f"put {plural(len(ids), 'job')} into tube {tube} (ids {ids[0]} to {ids[-1]})")
    else:
        click.echo(f"put no job into tube {tube}")


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``stream`` without their line break (LF or CRLF)."""
    for line in stream:
        if line.endswith(b"\r\n"):
            yield line[:-2]
        elif line.endswith(b"\n"):
            yield line[:-1]
        else:
            yield line


def _chunks(items: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


# -- peek ----------------------------------------------------------------------

raw_option = click.option(
    "--raw", is_flag=True, help="Write only the body, byte for byte, to stdout."
)


def _check_raw(settings: Settings, raw: bool) -> None:
    """Raises click.UsageError when both --raw and --json are given."""
    if raw and settings.json:
        raise click.UsageError("--raw and --json exclude each other")


def _show_job(settings: Settings, client: Client[bytes], job: Job[bytes], raw: bool) -> None:
    """Print a job: its body (and with --json, its statistics), or with ``raw`` the body only."""
    if raw:
        sys.stdout.buffer.write(job.body)
        sys.stdout.buffer.flush()
        return
    with not_found(f"job {job.id} not found"):
        stats = client.stats_job(job.id)
    try:
        text: str | None = job.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if settings.json:
        if text is None:
            body, encoding = base64.b64encode(job.body).decode("ascii"), "base64"
        else:
            body, encoding = text, "utf-8"
        emit_json({"id": job.id, "body": body, "encoding": encoding, "stats": dict(stats)})
        return
    size = plural(len(job.body), "byte") + ("" if text is not None else ", not UTF-8")
    show(
        stdout_console(),
        key_value_table(
            [
                ("id", job.id),
                ("tube", stats["tube"]),
                ("state", stats["state"]),
                ("priority", stats["pri"]),
                ("age", f"{stats['age']}s"),
                ("time-left", f"{stats['time-left']}s"),
                ("size", size),
            ]
        )
    )
    shown = repr(job.body) if text is None else text
    click.echo()
    click.echo(shown, nl=not shown.endswith("\n"))


@cli.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@raw_option
@common_options
@click.pass_obj
def peek(settings: Settings, job_id: int, raw: bool) -> None:
    """Show job ID, in any tube and state, without reserving it.

    Prints its tube, state and priority, then the body: as text when it is
    UTF-8, else as a Python bytes literal.
    """
    _check_raw(settings, raw)
    with settings.connect() as client:
        with not_found(f"job {job_id} not found"):
            job = client.peek(job_id)
        _show_job(settings, client, job, raw)


def _peek_command(state: str, peek_function: PeekFunction, summary: str) -> click.Command:
    """The ``peek-STATE`` command."""

    @click.command(f"peek-{state}", help=summary)
    @tube_option("The tube to look in.")
    @raw_option
    @common_options
    @click.pass_obj
    def command(settings: Settings, tube: str, raw: bool) -> None:
        _check_raw(settings, raw)
        with settings.connect(tube) as client:
            with not_found(f"tube {tube} has no {state} job"):
                job = peek_function(client)
            _show_job(settings, client, job, raw)

    return command


for _state, (_function, _summary) in PEEKS.items():
    cli.add_command(_peek_command(_state, _function, _summary))


# -- delete, kick, pause ------------------------------------------------------------


def _jobs(ids: list[int]) -> str:
    """``job 4``, ``jobs 4, 5``."""
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(map(str, ids))


@cli.command()
@click.argument("job_ids", metavar="ID...", nargs=-1, required=True, type=JOB_ID)
@common_options
@click.pass_obj
def delete(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Delete jobs by id.

    Ready, delayed and buried jobs can be deleted; a reserved job only by
    the connection that reserved it. Exits with 1 if some of the jobs were
    not found; the others are deleted.
    """
    with settings.connect() as client:
        results = client._pipeline(commands.delete(job_id) for job_id in job_ids)
    deleted = [job_id for job_id, result in zip(job_ids, results) if result is None]
    missing = [job_id for job_id, result in zip(job_ids, results) if result is not None]
    if settings.json:
        emit_json({"deleted": deleted, "not_found": missing})
    elif deleted:
        click.echo(f"deleted {_jobs(deleted)}")
    if missing:
        raise Failure(f"{_jobs(missing)} not found (or reserved by another connection)")


@cli.command()
@click.argument("bound", type=U32)
@tube_option("The tube to kick jobs in.")
@common_options
@click.pass_obj
def kick(settings: Settings, bound: int, tube: str) -> None:
    """Move up to BOUND jobs of a tube to ready.

    The tube's buried jobs are kicked if it has any, else its delayed ones.
    """
    with settings.connect(tube) as client:
        kicked = client.kick(bound)
    if settings.json:
        emit_json({"tube": tube, "kicked": kicked})
    else:
        click.echo(f"kicked {plural(kicked, 'job')} in tube {tube}")


@cli.command("kick-job")
@click.argument("job_id", metavar="ID", type=JOB_ID)
@common_options
@click.pass_obj
def kick_job(settings: Settings, job_id: int) -> None:
    """Move job ID, buried or delayed, to ready."""
    with settings.connect() as client, not_found(f"job {job_id} is not buried or delayed"):
        client.kick_job(job_id)
    if settings.json:
        emit_json({"kicked": job_id})
    else:
        click.echo(f"kicked job {job_id}")


@cli.command()
@click.argument("tube", callback=check_tube_name)
@click.argument("seconds", type=U32)
@common_options
@click.pass_obj
def pause(settings: Settings, tube: str, seconds: int) -> None:
    """Pause reservations from TUBE for SECONDS (0 ends a pause)."""
    with settings.connect() as client, not_found(f"tube {tube} not found"):
        client.pause_tube(tube, seconds)
    if settings.json:
        emit_json({"tube": tube, "seconds": seconds})
    elif seconds:
        click.echo(f"paused tube {tube} for {plural(seconds, 'second')}")
    else:
        click.echo(f"tube {tube} is no longer paused")


# -- stats, tubes --------------------------------------------------------------


@cli.command()
@click.option("--tube", "-t", metavar="TUBE", callback=check_tube_name,
              help="Show this tube's statistics.")
@click.option("--job", "-j", "job_id", metavar="ID", type=JOB_ID,
              help="Show this job's statistics.")
@common_options
@click.pass_obj
def stats(settings: Settings, tube: str | None, job_id: int | None) -> None:
    """Show the statistics of the server, a tube or a job."""
    if tube is not None and job_id is not None:
        raise click.UsageError("give --tube or --job, not both")
    values: Mapping[str, object]
    with settings.connect() as client:
        if tube is not None:
            with not_found(f"tube {tube} not found"):
                values = client.stats_tube(tube)
        elif job_id is not None:
            with not_found(f"job {job_id} not found"):
                values = client.stats_job(job_id)
        else:
            values = client.stats()
    if settings.json:
        emit_json(dict(values))
    else:
        show(stdout_console(), key_value_table(values.items()))


TUBE_COLUMNS = ("tube", "ready", "reserved", "delayed", "buried", "waiting", "urgent", "total",
                "paused")


def _tube_row(stats: StatsTube) -> list[str]:
    paused = f"{stats['pause-time-left']}s" if stats["pause"] else "-"
    counts = [
        stats["current-jobs-ready"],
        stats["current-jobs-reserved"],
        stats["current-jobs-delayed"],
        stats["current-jobs-buried"],
        stats["current-waiting"],
        stats["current-jobs-urgent"],
        stats["total-jobs"],
    ]
    return [stats["name"], *map(str, counts), paused]


@cli.command()
@common_options
@click.pass_obj
def tubes(settings: Settings) -> None:
    """List every tube with its job counts.

    --json prints each tube's full statistics.
    """
    with settings.connect() as client:
        found = tube_statistics(client)
    if settings.json:
        emit_json([dict(stats) for stats in found])
        return
    rows = table(*TUBE_COLUMNS)
    for stats in found:
        rows.add_row(*_tube_row(stats))
    show(stdout_console(), rows)


# -- drain ---------------------------------------------------------------------


def _state_counts(stats: StatsTube) -> dict[str, int]:
    return {
        "ready": stats["current-jobs-ready"],
        "delayed": stats["current-jobs-delayed"],
        "buried": stats["current-jobs-buried"],
    }


@cli.command()
@click.argument("tube", callback=check_tube_name)
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=click.Choice(STATES),
    help="Delete the jobs in this state; repeat for several [default: all three].",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
@click.pass_obj
def drain(settings: Settings, tube: str, states: tuple[str, ...], yes: bool) -> None:
    """Delete every ready, delayed and buried job of TUBE.

    Asks first, unless --yes is given; without --yes and without a terminal
    to ask on, refuses. Reserved jobs cannot be drained: only the
    connection that reserved a job may delete it, so they are counted
    instead.
    """
    chosen = [state for state in STATES if state in states or not states]
    with settings.connect() as client:
        with not_found(f"tube {tube} not found"):
            counts = _state_counts(client.stats_tube(tube))
        client.use(tube)
        total = sum(counts[state] for state in chosen)
        deleted = 0
        if total:
            if not yes:
                listed = ", ".join(f"{counts[state]} {state}" for state in chosen if counts[state])
                _confirm(f"Delete {plural(total, 'job')} ({listed}) from tube {tube}?", total)
            deleted = _delete_jobs(client, chosen, total)
        reserved = client.stats_tube(tube)["current-jobs-reserved"]
    if settings.json:
        emit_json({"tube": tube, "deleted": deleted, "reserved": reserved})
        return
    click.echo(f"deleted {plural(deleted, 'job')} from tube {tube}")
    if reserved:
        click.echo(
            f"{plural(reserved, 'reserved job')} left: "
            "only the connection that reserved a job can delete it"
        )


def _confirm(question: str, total: int) -> None:
    """Ask ``question`` on the terminal; raises Failure unless the answer is yes."""
    if not sys.stdin.isatty():
        raise Failure(
            f"not deleting {plural(total, 'job')} without confirmation: "
            "stdin is not a terminal (pass --yes)",
            EXIT_USAGE,
        )
    if not click.confirm(question, err=True):
        raise Failure("drain cancelled: no job was deleted")


def _delete_jobs(client: Client[bytes], states: list[str], total: int) -> int:
    """Delete the jobs of the used tube in ``states``, state by state; return how many.

    Each round trip deletes the job found last and peeks at the next one.
    """
    deleted = 0
    with progress_bar() as progress:
        task = progress.add_task("deleting", total=total)
        for state in states:
            peek_request = PEEK_REQUESTS[state]
            requests: list[Request[Any]] = [peek_request()]
            while True:
                results = client._pipeline(requests)
                # The delete fails when another connection reserved or deleted the job.
                if len(results) == 2 and results[0] is None:
                    deleted += 1
                    progress.advance(task)
                found = results[-1]
                if isinstance(found, BeanstalkdError):  # NOT_FOUND: no job left in this state
                    break
                job_id, _body = found
                requests = [commands.delete(job_id), peek_request()]
    return deleted


# -- top, worker, serve --------------------------------------------------------

cli.add_command(top)


@cli.command()
@click.argument("target", metavar="MODULE:OBJECT")
@click.option("--burst", is_flag=True, help="Stop once there is no job left to do.")
@common_options
@click.pass_obj
def worker(settings: Settings, target: str, burst: bool) -> int:
    """Run a greenstalk.Worker, or handlers by tube.

    OBJECT of MODULE is a greenstalk.Worker or a mapping of tube names to
    handlers. MODULE is imported with the current directory on the module
    path. A Worker keeps its own address unless --address or
    $BEANSTALKD_ADDRESS gives one. The worker logs to stderr. Exits with
    the worker's exit code.
    """
    from ..worker import Worker

    found = _load(target)
    try:
        if isinstance(found, Mapping):
            found = Worker(settings.resolve(), handlers=found)
        elif not isinstance(found, Worker):
            raise Failure(
                f"{target} is neither a greenstalk.Worker nor a mapping of tube names to "
                f"handlers: it is a {type(found).__name__}",
                EXIT_USAGE,
            )
        elif settings.address_given:
            found.address = settings.resolve()
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return found.run(burst=burst)
    except ValueError as error:
        # No handler, or a tube name that is not valid.
        raise Failure(f"{target}: {error}", EXIT_USAGE) from None


def _load(target: str) -> Any:
    """The object ``MODULE:OBJECT`` names. Raises Failure (exit 2) when there is none."""
    module_name, colon, name = target.partition(":")
    if not (module_name and colon and name):
        raise click.BadParameter(
            f"{target!r} is not MODULE:OBJECT (such as tasks:worker)", param_hint="MODULE:OBJECT"
        )
    directory = os.getcwd()
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise Failure(f"cannot import {module_name}: {error}", EXIT_USAGE) from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise Failure(f"module {module_name} has no {name}", EXIT_USAGE) from None


@cli.command(
    context_settings={"ignore_unknown_options": True, "help_option_names": ["--help"]},
)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def serve(arguments: tuple[str, ...]) -> int:
    """Run greenstalkd, the server included in greenstalk.

    It serves until SIGTERM or Ctrl-C. ARGUMENTS are greenstalkd's flags,
    which are beanstalkd's (greenstalk serve -h lists them), as in
    greenstalk serve -l 127.0.0.1 -p 11300. Exits with greenstalkd's exit
    code.
    """
    from ..server.cli import main as serve_main

    return serve_main(list(arguments))
