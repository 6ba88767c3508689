"""The commands of ``greenstalk``, and :func:`run`, which turns their errors into exit codes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import sys
from collections.abc import Awaitable, Mapping
from typing import Callable

import click
from rich.progress import MofNCompleteColumn, TimeRemainingColumn
from rich.table import Table

from .. import (
    BeanstalkdError,
    Client,
    ClientConnectionError,
    Job,
    NotFoundError,
    StatsTube,
    __version__,
    aio,
)
from .._protocol.commands import U32_MAX
from . import EXIT_CONNECTION, EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ._common import (
    JOB_ID,
    Failure,
    OneOf,
    Settings,
    WholeNumber,
    address_text,
    check_tube_name,
    common_options,
    complete_tubes,
    describe_refusal,
    emit_json,
    key_value_table,
    not_found,
    plural,
    progress_bar,
    run_coroutine,
    server_option,
    show,
    stdout_console,
    table,
    tube_argument,
    tube_option,
    tube_statistics,
)
from ._ops import exporter, web
from ._put import put
from ._top import top
from ._worker import worker

STATES = ("ready", "delayed", "buried")
# A body that is not text is shown as a bytes literal of its first bytes.
PREVIEW_BYTES = 64

PeekFunction = Callable[[Client[bytes]], Job[bytes]]
PEEKS: dict[str, tuple[PeekFunction, str]] = {
    "ready": (Client.peek_ready, "Show the ready job of a tube that would be reserved next."),
    "delayed": (Client.peek_delayed, "Show the delayed job of a tube that becomes ready soonest."),
    "buried": (Client.peek_buried, "Show the oldest buried job of a tube."),
}

AsyncPeek = Callable[[aio.Client[bytes]], Awaitable[Job[bytes]]]
ASYNC_PEEKS: dict[str, AsyncPeek] = {
    "ready": aio.Client.peek_ready,
    "delayed": aio.Client.peek_delayed,
    "buried": aio.Client.peek_buried,
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
        return _report(_usage_message(error) + hint, error.exit_code)
    except Failure as error:
        return _report(error.message, error.code)
    except ClientConnectionError as error:
        where = settings.connected_to
        prefix = "" if where is None else f"{address_text(where)}: "
        return _report(f"{prefix}{error}", EXIT_CONNECTION)
    except BeanstalkdError as error:
        return _report(describe_refusal(error), EXIT_FAILURE)
    except SystemExit as exit:
        # greenstalkd's and a worker's exit codes; click exits 1 on a broken pipe.
        if isinstance(exit.code, int):
            return exit.code
        raise
    return result if isinstance(result, int) else EXIT_OK


def _usage_message(error: click.ClickException) -> str:
    """The message of a click error; a bad value's is ours alone, without click's preamble."""
    if isinstance(error, click.BadParameter) and not isinstance(error, click.MissingParameter):
        return error.message
    return error.format_message()


def _report(message: str, code: int) -> int:
    click.echo(f"greenstalk: {message}", err=True)
    return code


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", "-V", prog_name="greenstalk",
                      help="Print the version and exit.")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> int | None:
    """Inspect and operate a beanstalkd server (or greenstalkd).

    The server is --address, else $BEANSTALKD_ADDRESS, else 127.0.0.1:11300.
    --address, --json and --timeout may also follow the command's name.
    Repeat --address, or separate addresses with commas, for several
    servers: each command then works on all of them.

    -V is --version here; for greenstalkd (and greenstalk serve), as for
    beanstalkd, -V means verbose.

    Exit codes: 0 success, 1 refused or not found, 2 usage error,
    3 connection failed, 130 interrupted.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help(), err=True)
        return EXIT_USAGE
    return None


cli.add_command(put)


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
    click.echo()
    if text is not None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    cut = len(job.body) > PREVIEW_BYTES
    click.echo(repr(job.body[:PREVIEW_BYTES]) + ("..." if cut else ""))
    shown = f"the first {PREVIEW_BYTES} of {len(job.body)} bytes are shown; " if cut else ""
    click.echo(f"(not text: {shown}--raw writes the body byte for byte)")


@cli.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@raw_option
@server_option
@common_options
@click.pass_obj
def peek(settings: Settings, job_id: int, raw: bool) -> None:
    """Show job ID, in any tube and state, without reserving it.

    Prints its tube, state and priority, then the body: as text when it is
    UTF-8, else the start of it as a Python bytes literal (--raw writes it
    all).
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
    @server_option
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
@server_option
@common_options
@click.pass_obj
def delete(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Delete jobs by id.

    Ready, delayed and buried jobs can be deleted; a reserved job only by
    the connection that reserved it. Exits with 1 if some of the jobs were
    not found; the others are deleted.
    """
    found = run_coroutine(_delete_each(settings, job_ids))
    deleted = [job_id for job_id, there in zip(job_ids, found) if there]
    missing = [job_id for job_id, there in zip(job_ids, found) if not there]
    if settings.json:
        emit_json({"deleted": deleted, "not_found": missing})
    elif deleted:
        click.echo(f"deleted {_jobs(deleted)}")
    if missing:
        raise Failure(f"{_jobs(missing)} not found (or reserved by another connection)")


async def _delete_each(settings: Settings, job_ids: tuple[int, ...]) -> list[bool]:
    """Delete the jobs, pipelined; for each, whether it was there to delete."""
    async with settings.connect_aio() as client:
        return list(await asyncio.gather(*(_deleted(client, job_id) for job_id in job_ids)))


async def _deleted(client: aio.Client[bytes], job_id: int) -> bool:
    """Delete a job; False when the server does not have it (or another connection holds it)."""
    try:
        await client.delete(job_id)
    except NotFoundError:
        return False
    return True


def _missing(tube: str) -> str:
    return f"tube {tube} does not exist"


@cli.command()
@click.argument("bound", type=WholeNumber("BOUND", 0, U32_MAX))
@tube_option("The tube to kick jobs in.")
@common_options
@click.pass_obj
def kick(settings: Settings, bound: int, tube: str) -> None:
    """Move up to BOUND jobs of a tube to ready.

    The tube's buried jobs are kicked if it has any, else its delayed ones.
    A tube that does not exist has no job to kick: that is said, and the
    exit status is 0. With several servers, up to BOUND jobs in all, the
    servers in turn.
    """
    servers = settings.servers()
    if len(servers) > 1:
        from ._several import kick_several

        kick_several(settings, servers, bound, tube)
        return
    kicked = 0
    with settings.connect() as client:
        exists = _tube_exists(client, tube)
        if exists:
            client.use(tube)
            kicked = client.kick(bound)
    if settings.json:
        emit_json({"tube": tube, "kicked": kicked, "exists": exists})
    else:
        click.echo(kick_line(tube, kicked, exists))


def kick_line(tube: str, kicked: int, exists: bool) -> str:
    """What ``kick`` says it did."""
    if exists:
        return f"kicked {plural(kicked, 'job')} in tube {tube}"
    return f"kicked 0 jobs: {_missing(tube)}"


def _tube_exists(client: Client[bytes], tube: str) -> bool:
    """Whether the server has ``tube`` now (without creating it, as ``use`` would)."""
    try:
        client.stats_tube(tube)
    except NotFoundError:
        return False
    return True


@cli.command("kick-job")
@click.argument("job_id", metavar="ID", type=JOB_ID)
@server_option
@common_options
@click.pass_obj
def kick_job(settings: Settings, job_id: int) -> None:
    """Move job ID, buried or delayed, to ready."""
    with settings.connect() as client, not_found(f"job {job_id} is not buried or delayed"):
        client.kick_job(job_id)
    if settings.json:
        emit_json({"id": job_id, "kicked": 1})
    else:
        click.echo(f"kicked job {job_id}")


@cli.command()
@tube_argument
@click.argument("seconds", type=WholeNumber("SECONDS", 0, U32_MAX))
@common_options
@click.pass_obj
def pause(settings: Settings, tube: str, seconds: int) -> None:
    """Pause reservations from TUBE for SECONDS (0 ends a pause).

    A tube that does not exist cannot be paused (the server keeps a tube
    only while it has jobs or clients): that is said, and the exit status
    is 0. With several servers, the tube is paused on each.
    """
    servers = settings.servers()
    if len(servers) > 1:
        from ._several import pause_several

        pause_several(settings, servers, tube, seconds)
        return
    with settings.connect() as client:
        exists = pause_tube(client, tube, seconds)
    if settings.json:
        emit_json({"tube": tube, "seconds": seconds, "exists": exists})
    else:
        click.echo(pause_line(tube, seconds, exists))


def pause_tube(client: Client[bytes], tube: str, seconds: int) -> bool:
    """Pause ``tube``; False when the server does not have it."""
    try:
        client.pause_tube(tube, seconds)
    except NotFoundError:
        return False
    return True


def pause_line(tube: str, seconds: int, exists: bool) -> str:
    """What ``pause`` says it did."""
    if not exists:
        return f"paused nothing: {_missing(tube)}"
    if seconds:
        return f"paused tube {tube} for {plural(seconds, 'second')}"
    return f"tube {tube} is no longer paused"


# -- stats, tubes --------------------------------------------------------------


@cli.command()
@click.option("--tube", "-t", metavar="TUBE", callback=check_tube_name,
              shell_complete=complete_tubes, help="Show this tube's statistics.")
@click.option("--job", "-j", "job_id", metavar="ID", type=JOB_ID,
              help="Show this job's statistics.")
@server_option
@common_options
@click.pass_obj
def stats(settings: Settings, tube: str | None, job_id: int | None) -> None:
    """Show the statistics of the server, a tube or a job.

    With several servers, those of each and their totals (a job's: of one
    server, chosen with --server).
    """
    if tube is not None and job_id is not None:
        raise click.UsageError("give --tube or --job, not both")
    servers = settings.servers()
    if len(servers) > 1 and job_id is None:
        from ._several import stats_several

        stats_several(settings, servers, tube)
        return
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

    --json prints each tube's full statistics. With several servers, each
    server's tubes, then the totals.
    """
    servers = settings.servers()
    if len(servers) > 1:
        from ._several import tubes_several

        tubes_several(settings, servers)
        return
    with settings.connect() as client:
        found = tube_statistics(client)
    if settings.json:
        emit_json([dict(stats) for stats in found])
        return
    show(stdout_console(), tubes_table(found))


def tubes_table(found: list[StatsTube]) -> Table:
    """The table of ``tubes``: a row of counts for each tube."""
    rows = table(*TUBE_COLUMNS)
    for stats in found:
        rows.add_row(*_tube_row(stats))
    return rows


# -- drain ---------------------------------------------------------------------


@dataclasses.dataclass
class Drain:
    """What ``drain`` found and has done so far."""

    tube: str
    exists: bool = True
    deleted: int = 0
    reserved: int = 0

    def as_json(self) -> dict[str, object]:
        """The JSON document ``--json drain`` prints."""
        return dataclasses.asdict(self)


@cli.command()
@tube_argument
@click.option(
    "--state",
    "-s",
    "states",
    multiple=True,
    type=OneOf("state", STATES),
    metavar="STATE",
    help="Delete the jobs in STATE (ready, delayed or buried); repeat for several "
    "[default: all three].",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@common_options
@click.pass_obj
def drain(settings: Settings, tube: str, states: tuple[str, ...], yes: bool) -> None:
    """Delete every ready, delayed and buried job of TUBE.

    Asks first, unless --yes is given; without --yes and without a terminal
    to ask on, refuses. Reserved jobs cannot be drained: only the
    connection that reserved a job may delete it, so they are counted
    instead. An empty tube, or one that does not exist, drains to 0 jobs
    with exit status 0. Ctrl-C stops it and says how many were deleted.
    With several servers, the tube is drained on each (one question for
    all).
    """
    chosen = [state for state in STATES if state in states or not states]
    servers = settings.servers()
    if len(servers) > 1:
        from ._several import drain_several

        drain_several(settings, servers, tube, chosen, yes)
        return
    done = Drain(tube)
    try:
        run_coroutine(_drain(settings, done, chosen, yes))
    except KeyboardInterrupt:
        if settings.json:
            emit_json(done.as_json())
        raise Failure(
            f"interrupted: deleted {plural(done.deleted, 'job')} from tube {tube}",
            EXIT_INTERRUPTED,
        ) from None
    if settings.json:
        emit_json(done.as_json())
        return
    if not done.exists:
        click.echo(f"deleted 0 jobs: {_missing(tube)}")
        return
    click.echo(f"deleted {plural(done.deleted, 'job')} from tube {tube}")
    if done.reserved:
        click.echo(
            f"{plural(done.reserved, 'reserved job')} left: "
            "only the connection that reserved a job can delete it"
        )


async def _drain(settings: Settings, done: Drain, states: list[str], yes: bool) -> None:
    """Delete the jobs of ``done.tube`` in ``states``, counting them in ``done`` as it goes."""
    async with settings.connect_aio() as client:
        try:
            stats = await client.stats_tube(done.tube)
        except NotFoundError:
            done.exists = False
            return
        counts = {
            "ready": stats["current-jobs-ready"],
            "delayed": stats["current-jobs-delayed"],
            "buried": stats["current-jobs-buried"],
        }
        total = sum(counts[state] for state in states)
        if total:
            if not yes:
                listed = ", ".join(f"{counts[state]} {state}" for state in states if counts[state])
                _confirm(f"Delete {plural(total, 'job')} ({listed}) from tube {done.tube}?", total)
            await client.use(done.tube)
            with progress_bar(MofNCompleteColumn(), TimeRemainingColumn()) as progress:
                task = progress.add_task(f"draining {done.tube}", total=total)
                for state in states:
                    await _delete_state(client, ASYNC_PEEKS[state], done,
                                        lambda: progress.advance(task))
        try:
            done.reserved = (await client.stats_tube(done.tube))["current-jobs-reserved"]
        except NotFoundError:  # emptied and unused meanwhile: the server dropped it
            done.reserved = 0


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


async def _delete_state(
    client: aio.Client[bytes], peek: AsyncPeek, done: Drain, advance: Callable[[], None]
) -> None:
    """Delete the jobs of the used tube that ``peek`` finds, until it finds none.

    Each round trip deletes the job found last and peeks at the next one:
    both go out together. A delete fails when another connection reserved
    or deleted the job meanwhile; it is not counted.
    """
    found = await _peeked(peek, client)
    while found is not None:
        deleted, found = await asyncio.gather(_deleted(client, found), _peeked(peek, client))
        if deleted:
            done.deleted += 1
            advance()


async def _peeked(peek: AsyncPeek, client: aio.Client[bytes]) -> int | None:
    """The id of the job ``peek`` finds, or None when there is none."""
    try:
        return (await peek(client)).id
    except NotFoundError:
        return None


# -- top, worker, serve --------------------------------------------------------

cli.add_command(top)
cli.add_command(worker)
cli.add_command(exporter)
cli.add_command(web)


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
