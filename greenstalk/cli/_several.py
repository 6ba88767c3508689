"""The commands of ``greenstalk`` over several servers: each server's part, then the totals.

``stats``, ``tubes``, ``kick``, ``pause`` and ``drain`` come here when
``--address`` (or ``$BEANSTALKD_ADDRESS``) names more than one server. A
server that cannot be reached does not stop the others: its part is an
error, the others' parts and the totals over them are shown, and the
command then fails with exit status 3, naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Coroutine, Mapping
from typing import Any, Callable, Generic, TypeVar, cast

import click
from rich.progress import MofNCompleteColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .. import (
    Client,
    ClientConnectionError,
    NotFoundError,
    Stats,
    StatsTube,
    aio,
)
from .._address import TextAddress
from .._pool_common import merge_tubes, sum_stats, sum_tube_stats
from . import EXIT_CONNECTION, EXIT_INTERRUPTED
from ._commands import (
    ASYNC_PEEKS,
    Drain,
    _confirm,
    _deleted,
    _missing,
    _peeked,
    _tube_exists,
    kick_line,
    pause_line,
    pause_tube,
    tubes_table,
)
from ._common import (
    Failure,
    Settings,
    address_text,
    connection_failure,
    emit_json,
    plural,
    progress_bar,
    run_coroutine,
    show,
    stdout_console,
    table,
    tube_statistics,
)

T = TypeVar("T")

# Server statistics that say which server it is rather than count anything:
# they have no total.
SERVER_ONLY = frozenset({
    "pid", "version", "id", "hostname", "os", "platform",
    "binlog-oldest-index", "binlog-current-index", "binlog-max-size",
})


@dataclasses.dataclass
class Part(Generic[T]):
    """One server's part of a command: what it gave, or why it could not."""

    address: TextAddress
    value: T | None = None
    #: Why the server could not do its part (it cannot be reached, or stopped answering).
    error: str | None = None

    @property
    def name(self) -> str:
        """The server's address as text."""
        return address_text(self.address)

    def as_json(self, **fields: object) -> dict[str, object]:
        """``{"address": ..., **fields}``, or ``{"address": ..., "error": ...}``."""
        if self.error is not None:
            return {"address": self.name, "error": self.error}
        return {"address": self.name, **fields}


def unreachable(address: TextAddress, error: ClientConnectionError, connected: bool) -> str:
    """Why a server could not do its part, in one sentence that names it."""
    if not connected:
        return connection_failure(address, error).message
    return f"{address_text(address)}: {error}"


def each_server(
    settings: Settings, servers: list[TextAddress], action: Callable[[Client[bytes]], T]
) -> list[Part[T]]:
    """Run ``action`` on a connection to each server in turn; a failed connection is its part.

    Raises what ``action`` raises otherwise (a server's refusal, say).
    """
    parts: list[Part[T]] = []
    for address in servers:
        part: Part[T] = Part(address)
        try:
            client = settings.open_client(address=address)
        except ClientConnectionError as error:
            part.error = unreachable(address, error, connected=False)
        else:
            with client:
                try:
                    part.value = action(client)
                except ClientConnectionError as error:
                    part.error = unreachable(address, error, connected=True)
        parts.append(part)
    return parts


def check_reached(parts: list[Part[Any]]) -> None:
    """Raise Failure (exit 3) naming the servers that could not do their part, if any."""
    errors = [part.error for part in parts if part.error is not None]
    if errors:
        raise Failure("; ".join(errors), EXIT_CONNECTION)


def _shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _columns(names: list[str], columns: list[Mapping[str, object] | None],
             total: Mapping[str, object]) -> Table:
    """Statistics side by side: a row per name, a column per server ("-" where it has none),
    then the total ("" for what has none)."""
    result = table("", *names, "total")
    keys = dict.fromkeys(key for values in columns if values is not None for key in values)
    for key in keys:
        values = ["-" if values is None else _shown(values.get(key, "")) for values in columns]
        summed = _shown(total[key]) if key in total else ""
        result.add_row(Text(key, style="bold"), *map(Text, values), Text(summed))
    return result


# -- stats, tubes ------------------------------------------------------------------


def server_total(per_server: list[Stats]) -> dict[str, object]:
    """The servers' statistics added up, without those that only name a server.

    Sums of times are rounded to the microseconds the servers give them in.
    """
    return {
        key: round(value, 6) if isinstance(value, float) else value
        for key, value in sum_stats(per_server).items()
        if key not in SERVER_ONLY
    }


def stats_several(settings: Settings, servers: list[TextAddress], tube: str | None) -> None:
    """``stats`` and ``stats --tube`` over several servers: each server's, and the totals."""

    def read(client: Client[bytes]) -> dict[str, Any] | None:
        if tube is None:
            return dict(client.stats())
        try:
            return dict(client.stats_tube(tube))
        except NotFoundError:
            return None

    parts = each_server(settings, servers, read)
    live = [part for part in parts if part.error is None]
    if not live:
        check_reached(parts)
    total: dict[str, Any]
    if tube is None:
        total = server_total([cast(Stats, part.value) for part in live])
    else:
        having = {part.address: cast("StatsTube | None", part.value) for part in live}
        try:
            total = dict(sum_tube_stats(tube, having))
        except NotFoundError:
            check_reached(parts)
            raise Failure(f"tube {tube} not found") from None
    if settings.json:
        document: dict[str, object] = {} if tube is None else {"tube": tube}
        document["servers"] = [part.as_json(stats=part.value) for part in parts]
        document["total"] = total
        emit_json(document)
    else:
        if tube is not None:
            total["name"] = tube
        show(stdout_console(),
             _columns([part.name for part in live], [part.value for part in live], total))
    check_reached(parts)


def _tube_totals(parts: list[Part[list[StatsTube]]]) -> list[StatsTube]:
    """Each tube's statistics added up over the servers, by name."""
    live = [part for part in parts if part.value is not None]
    by_server = [{stats["name"]: stats for stats in part.value or []} for part in live]
    names = sorted(merge_tubes([list(found) for found in by_server]))
    return [
        sum_tube_stats(name, {part.address: found.get(name)
                              for part, found in zip(live, by_server)})
        for name in names
    ]


def tubes_several(settings: Settings, servers: list[TextAddress]) -> None:
    """``tubes`` over several servers: each server's tubes, then the totals."""
    parts = each_server(settings, servers, tube_statistics)
    live = [part for part in parts if part.error is None]
    if not live:
        check_reached(parts)
    totals = _tube_totals(parts)
    if settings.json:
        emit_json({
            "servers": [part.as_json(tubes=[dict(s) for s in part.value or []])
                        for part in parts],
            "total": [dict(stats) for stats in totals],
        })
    else:
        console = stdout_console()
        for part in live:
            click.echo(part.name)
            show(console, tubes_table(part.value or []))
            click.echo()
        click.echo(f"total of {plural(len(live), 'server')}")
        show(console, tubes_table(totals))
    check_reached(parts)


# -- kick, pause -------------------------------------------------------------------


def kick_several(settings: Settings, servers: list[TextAddress], bound: int, tube: str) -> None:
    """``kick`` over several servers: up to ``bound`` jobs in all, the servers in turn."""
    left = bound

    def kick(client: Client[bytes]) -> tuple[bool, int]:
        nonlocal left
        exists = _tube_exists(client, tube)
        kicked = 0
        if exists and left:
            client.use(tube)
            kicked = client.kick(left)
            left -= kicked
        return exists, kicked

    parts = each_server(settings, servers, kick)
    done = [(part, *part.value) for part in parts if part.value is not None]
    kicked = sum(count for _, _, count in done)
    if settings.json:
        emit_json({
            "tube": tube,
            "kicked": kicked,
            "exists": any(exists for _, exists, _ in done),
            "servers": [part.as_json(kicked=part.value[1], exists=part.value[0])
                        if part.value is not None else part.as_json() for part in parts],
        })
    else:
        for part, exists, count in done:
            click.echo(f"{part.name}: {kick_line(tube, count, exists)}")
        click.echo(f"kicked {plural(kicked, 'job')} in tube {tube} on "
                   f"{plural(len(done), 'server')}")
    check_reached(parts)


def pause_several(settings: Settings, servers: list[TextAddress], tube: str,
                  seconds: int) -> None:
    """``pause`` over several servers: the tube is paused on each that has it."""
    parts = each_server(settings, servers, lambda client: pause_tube(client, tube, seconds))
    if settings.json:
        emit_json({
            "tube": tube,
            "seconds": seconds,
            "exists": any(part.value for part in parts),
            "servers": [part.as_json(exists=part.value) for part in parts],
        })
    else:
        for part in parts:
            if part.value is not None:
                click.echo(f"{part.name}: {pause_line(tube, seconds, part.value)}")
    check_reached(parts)


# -- drain -------------------------------------------------------------------------


@dataclasses.dataclass
class ServerDrain(Drain):
    """What ``drain`` found and has done so far on one server."""

    address: str = ""
    #: Why the server could not be drained, or not to the end.
    error: str | None = None
    #: The jobs it has in the states to drain, when it was asked.
    found: dict[str, int] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        """The server's part of the JSON document of ``--json drain``."""
        document: dict[str, object] = {
            "address": self.address, "exists": self.exists, "deleted": self.deleted,
            "reserved": self.reserved,
        }
        if self.error is not None:
            document["error"] = self.error
        return document


def drain_several(settings: Settings, servers: list[TextAddress], tube: str,
                  states: list[str], yes: bool) -> None:
    """``drain`` over several servers: one question for all, then each drained at once."""
    parts = [ServerDrain(tube, address=address_text(address)) for address in servers]
    try:
        run_coroutine(_drain_all(settings, servers, parts, states, yes))
    except KeyboardInterrupt:
        if settings.json:
            emit_json(_drain_json(tube, parts))
        deleted = sum(part.deleted for part in parts)
        raise Failure(
            f"interrupted: deleted {plural(deleted, 'job')} from tube {tube}", EXIT_INTERRUPTED
        ) from None
    if settings.json:
        emit_json(_drain_json(tube, parts))
    else:
        reached = [part for part in parts if part.error is None]
        for part in reached:
            if not part.exists:
                click.echo(f"{part.address}: deleted 0 jobs: {_missing(tube)}")
            else:
                left = f", {plural(part.reserved, 'reserved job')} left" if part.reserved else ""
                click.echo(f"{part.address}: deleted {plural(part.deleted, 'job')}{left}")
        deleted = sum(part.deleted for part in parts)
        click.echo(f"deleted {plural(deleted, 'job')} from tube {tube} on "
                   f"{plural(len(reached), 'server')}")
        reserved = sum(part.reserved for part in parts)
        if reserved:
            click.echo(f"{plural(reserved, 'reserved job')} left: only the connection that "
                       "reserved a job can delete it")
    errors = [part.error for part in parts if part.error is not None]
    if errors:
        raise Failure("; ".join(errors), EXIT_CONNECTION)


def _drain_json(tube: str, parts: list[ServerDrain]) -> dict[str, object]:
    return {
        "tube": tube,
        "exists": any(part.exists for part in parts if part.error is None),
        "deleted": sum(part.deleted for part in parts),
        "reserved": sum(part.reserved for part in parts),
        "servers": [part.as_json() for part in parts],
    }


async def _drain_all(settings: Settings, servers: list[TextAddress], parts: list[ServerDrain],
                     states: list[str], yes: bool) -> None:
    """Count the jobs to delete on every server, ask once, then drain the servers at once."""
    tube = parts[0].tube
    async with contextlib.AsyncExitStack() as stack:
        clients: list[tuple[aio.Client[bytes], ServerDrain]] = []
        for address, part in zip(servers, parts):
            connected = False
            try:
                client = await stack.enter_async_context(settings.connect_aio(address))
                connected = True
                stats = await client.stats_tube(tube)
            except NotFoundError:
                part.exists = False
                continue
            except Failure as failure:  # it cannot be reached
                part.error = failure.message
                continue
            except ClientConnectionError as error:
                part.error = unreachable(address, error, connected)
                continue
            part.found = {
                "ready": stats["current-jobs-ready"],
                "delayed": stats["current-jobs-delayed"],
                "buried": stats["current-jobs-buried"],
            }
            clients.append((client, part))
        counts = {state: sum(part.found.get(state, 0) for part in parts) for state in states}
        total = sum(counts.values())
        if total and not yes:
            listed = ", ".join(f"{counts[state]} {state}" for state in states if counts[state])
            _confirm(f"Delete {plural(total, 'job')} ({listed}) from tube {tube} on "
                     f"{plural(len(clients), 'server')}?", total)
        with progress_bar(MofNCompleteColumn(), TimeRemainingColumn()) as progress:
            task = progress.add_task(f"draining {tube}", total=total)
            walks = [_Walk(client, part, states if total else []) for client, part in clients]
            for walk in walks:
                if walk.states:
                    await _use(walk.client, walk.part)
            await _drain_together(walks, lambda: progress.advance(task))
        for client, part in clients:
            if part.error is None:
                await _count_reserved(client, part)


class _Walk:
    """One server's way through the states to drain: the states left, the job found last."""

    def __init__(self, client: aio.Client[bytes], part: ServerDrain, states: list[str]) -> None:
        self.client = client
        self.part = part
        self.states = list(states)
        self.found: int | None = None

    def steps(self) -> list[Coroutine[Any, Any, bool | int | None]]:
        """This round's commands: delete the job found last (if any) and look for the next."""
        peek = _peeked(ASYNC_PEEKS[self.states[0]], self.client)
        if self.found is None:
            return [peek]
        return [_deleted(self.client, self.found), peek]

    def take(self, results: list[object], advance: Callable[[], None]) -> None:
        """Note what this round's commands gave. Raises what one raised, bar a lost connection."""
        for result in results:
            if isinstance(result, ClientConnectionError):
                self.part.error = f"{self.part.address}: {result}"
                return
            if isinstance(result, BaseException):
                raise result
        if len(results) == 2 and results[0]:
            self.part.deleted += 1
            advance()
        found = results[-1]
        self.found = found if isinstance(found, int) else None
        if self.found is None:
            self.states.pop(0)


async def _drain_together(walks: list[_Walk], advance: Callable[[], None]) -> None:
    """Delete the jobs of every server, all at once, one round trip a job on each.

    Each round deletes, on every server, the job found last and looks for the
    next one. The commands of a round are awaited together in this task, with
    no task in between: an interrupt then reaches the task that holds the
    connections, as with one server.
    """
    while True:
        active = [walk for walk in walks if walk.states and walk.part.error is None]
        if not active:
            return
        steps = [walk.steps() for walk in active]
        results = await asyncio.gather(*(step for each in steps for step in each),
                                       return_exceptions=True)
        start = 0
        for walk, each in zip(active, steps):
            walk.take(list(results[start:start + len(each)]), advance)
            start += len(each)


async def _use(client: aio.Client[bytes], part: ServerDrain) -> None:
    """Use the tube to drain on one server: the peeks look in it."""
    try:
        await client.use(part.tube)
    except ClientConnectionError as error:
        part.error = f"{part.address}: {error}"


async def _count_reserved(client: aio.Client[bytes], part: ServerDrain) -> None:
    """Count the jobs of the tube left reserved on one server."""
    try:
        part.reserved = (await client.stats_tube(part.tube))["current-jobs-reserved"]
    except NotFoundError:  # emptied and unused meanwhile: the server dropped it
        part.reserved = 0
    except ClientConnectionError as error:
        part.error = f"{part.address}: {error}"
