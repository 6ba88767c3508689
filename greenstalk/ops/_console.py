"""What the web console does to a server, over the asyncio client: read and act.

Each function takes the server's :class:`~greenstalk.ops._links.ServerLink`
and holds its lock while it uses the connection, since ``use`` changes the
connection's state. Results are plain JSON-able data.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping
from typing import Any, Callable, cast

from .. import (
    DEFAULT_TUBE,
    Error,
    Job,
    NotFoundError,
    StatsJob,
    StatsTube,
    UnknownCommandError,
    aio,
)
from ._links import ServerLink
from ._scrape import ServerState, TubeFilter, scrape

Json = dict[str, Any]

# How much of a body the console shows: characters of text, or bytes otherwise.
PREVIEW_CHARACTERS = 300
PREVIEW_BYTES = 120
# A buried job moved to another tube is put there delayed by this much, taken
# (reserve-job) and buried: no worker can reserve it in between.
_HOLD_DELAY = 86400
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

SERVER_FIELDS = (
    "version", "uptime", "current-connections", "current-producers", "current-workers",
    "current-waiting", "current-tubes", "current-jobs-ready", "current-jobs-reserved",
    "current-jobs-delayed", "current-jobs-buried", "total-jobs", "job-timeouts", "draining",
    "cmd-put", "cmd-reserve", "cmd-reserve-with-timeout", "cmd-delete",
)
TUBE_FIELDS = {
    "ready": "current-jobs-ready",
    "reserved": "current-jobs-reserved",
    "delayed": "current-jobs-delayed",
    "buried": "current-jobs-buried",
    "urgent": "current-jobs-urgent",
    "waiting": "current-waiting",
    "watching": "current-watching",
    "using": "current-using",
    "total": "total-jobs",
    "pause": "pause",
    "pause_time_left": "pause-time-left",
}

_PEEKS: dict[str, Callable[[aio.Client[bytes]], Any]] = {
    "ready": aio.Client.peek_ready,
    "delayed": aio.Client.peek_delayed,
    "buried": aio.Client.peek_buried,
}


class ConsoleError(Exception):
    """A request the console refuses or cannot carry out; ``status`` is its HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def tube_row(stats: StatsTube) -> Json:
    """A tube's counts as the console's table shows them."""
    values = cast(Mapping[str, Any], stats)
    row: Json = {"name": stats["name"]}
    for key, field in TUBE_FIELDS.items():
        row[key] = values.get(field, 0)
    return row


def server_view(state: ServerState) -> Json:
    """A server as the console shows it: whether it is up, its main statistics, its tubes."""
    view: Json = {"name": state.link.name, "up": state.up, "error": state.error}
    if state.up and state.stats is not None:
        values = cast(Mapping[str, Any], state.stats)
        view["stats"] = {field: values[field] for field in SERVER_FIELDS if field in values}
        view["tubes"] = [tube_row(tube.stats) for tube in state.tubes]
    else:
        view["stats"] = {}
        view["tubes"] = []
    return view


async def overview(link: ServerLink) -> Json:
    """The server and all its tubes. Never raises for a server that is down: it says so."""
    return server_view(await scrape(link, TubeFilter(), False, link.timeout))


def preview(body: bytes) -> Json:
    """How the console shows a body: text when it is UTF-8 without control characters
    (tabs and line ends aside), else the first bytes, escaped as a Python bytes literal."""
    text: str | None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or _CONTROL.search(text):
        shown = repr(body[:PREVIEW_BYTES])
        return {
            "size": len(body),
            "text": False,
            "preview": shown,
            "truncated": len(body) > PREVIEW_BYTES,
        }
    return {
        "size": len(body),
        "text": True,
        "preview": text[:PREVIEW_CHARACTERS],
        "truncated": len(text) > PREVIEW_CHARACTERS,
    }


def job_view(job: Job[bytes], stats: StatsJob) -> Json:
    """A job as the console shows it: its statistics and a preview of its body."""
    return {
        "id": job.id,
        "tube": stats["tube"],
        "state": stats["state"],
        "priority": stats["pri"],
        "age": stats["age"],
        "delay": stats["delay"],
        "ttr": stats["ttr"],
        "time_left": stats["time-left"],
        "reserves": stats["reserves"],
        "timeouts": stats["timeouts"],
        "releases": stats["releases"],
        "buries": stats["buries"],
        "kicks": stats["kicks"],
        **preview(job.body),
    }


async def tube_view(link: ServerLink, tube: str) -> Json:
    """A tube's counts and its next ready, next delayed and oldest buried job.

    ``exists`` is false (and the rest empty) for a tube the server does not
    have. Raises what the client raises (ValueError for a bad name,
    ClientConnectionError).
    """
    async with link.lock:
        client = await link.client()
        try:
            stats = await client.stats_tube(tube)
        except NotFoundError:
            return {"name": tube, "exists": False, "jobs": {}}
        await client.use(tube)
        peeked = await asyncio.gather(
            *(_peek(peek, client) for peek in _PEEKS.values()), client.use(DEFAULT_TUBE)
        )
        found: list[Job[bytes] | None] = list(peeked[: len(_PEEKS)])
        job_stats = await asyncio.gather(
            *(_stats_job(client, job) for job in found if job is not None)
        )
    jobs: Json = {}
    listed = iter(job_stats)
    for state, job in zip(_PEEKS, found):
        if job is None:
            jobs[state] = None
            continue
        stats_of_job = next(listed)
        jobs[state] = None if stats_of_job is None else job_view(job, stats_of_job)
    return {"name": tube, "exists": True, "stats": tube_row(stats), "jobs": jobs}


async def _peek(
    peek: Callable[[aio.Client[bytes]], Any], client: aio.Client[bytes]
) -> Job[bytes] | None:
    try:
        return cast(Job[bytes], await peek(client))
    except NotFoundError:
        return None


async def _stats_job(client: aio.Client[bytes], job: Job[bytes]) -> StatsJob | None:
    try:
        return await client.stats_job(job.id)
    except NotFoundError:  # gone since the peek
        return None


# -- actions ------------------------------------------------------------------------


async def put(
    link: ServerLink, tube: str, body: bytes, priority: int, delay: int, ttr: int
) -> Json:
    """Put a job into ``tube``; returns its id."""
    async with link.lock:
        client = await link.client()
        await client.use(tube)
        job_id = await client.put(body, priority=priority, delay=delay, ttr=ttr)
    return {"id": job_id}


async def kick(link: ServerLink, tube: str, bound: int) -> Json:
    """Kick up to ``bound`` jobs of ``tube`` (its buried ones, else its delayed ones)."""
    async with link.lock:
        client = await link.client()
        try:
            await client.stats_tube(tube)
        except NotFoundError:
            return {"kicked": 0}
        await client.use(tube)
        return {"kicked": await client.kick(bound)}


async def kick_job(link: ServerLink, job_id: int) -> Json:
    """Kick one buried or delayed job."""
    async with link.lock:
        client = await link.client()
        try:
            await client.kick_job(job_id)
        except NotFoundError:
            raise ConsoleError(f"job {job_id} is not buried or delayed", 404) from None
    return {"kicked": 1}


async def delete(link: ServerLink, job_id: int) -> Json:
    """Delete a ready, delayed or buried job."""
    async with link.lock:
        client = await link.client()
        try:
            await client.delete(job_id)
        except NotFoundError:
            raise ConsoleError(
                f"job {job_id} not found (or reserved by a worker)", 404
            ) from None
    return {"deleted": 1}


async def pause(link: ServerLink, tube: str, seconds: int) -> Json:
    """Pause ``tube`` for ``seconds`` (0 ends a pause)."""
    async with link.lock:
        client = await link.client()
        try:
            await client.pause_tube(tube, seconds)
        except NotFoundError:
            raise ConsoleError(f"tube {tube} does not exist", 404) from None
    return {"paused": seconds}


async def delete_buried(link: ServerLink, tube: str) -> Json:
    """Delete every buried job of ``tube``; returns how many were deleted.

    Each round trip deletes the job found last and peeks at the next one.
    """
    deleted = 0
    async with link.lock:
        client = await link.client()
        try:
            await client.stats_tube(tube)
        except NotFoundError:
            return {"deleted": 0}
        await client.use(tube)
        found = await _peek(_PEEKS["buried"], client)
        while found is not None:
            gone, found = await asyncio.gather(
                _delete_if_there(client, found.id), _peek(_PEEKS["buried"], client)
            )
            deleted += gone
        await client.use(DEFAULT_TUBE)
    return {"deleted": deleted}


async def _delete_if_there(client: aio.Client[bytes], job_id: int) -> bool:
    try:
        await client.delete(job_id)
    except NotFoundError:  # taken or deleted meanwhile
        return False
    return True


async def move(link: ServerLink, job_id: int, target: str) -> Json:
    """Move a ready, delayed or buried job to ``target``, keeping its priority, TTR,
    remaining delay and state; returns the new job's id.

    The job is taken first (``reserve-job``), so no worker gets it while it
    moves; if the put fails, it is put back as it was. Raises
    :class:`ConsoleError` for a reserved job, a job already in ``target``,
    or a server without ``reserve-job`` (beanstalkd before 1.12).
    """
    async with link.lock:
        client = await link.client()
        try:
            stats = await client.stats_job(job_id)
        except NotFoundError:
            raise ConsoleError(f"job {job_id} not found", 404) from None
        state = stats["state"]
        if stats["tube"] == target:
            raise ConsoleError(f"job {job_id} is already in tube {target}", 400)
        if state == "reserved":
            raise ConsoleError(f"job {job_id} is reserved by a worker: it cannot be moved")
        priority, ttr = stats["pri"], stats["ttr"]
        delay = stats["time-left"] if state == "delayed" else 0
        await client.use(target)  # a bad name fails here, before the job is taken
        try:
            job = await client.reserve_job(job_id)
        except NotFoundError:
            raise ConsoleError(f"job {job_id} was taken by a worker meanwhile") from None
        except UnknownCommandError:
            raise ConsoleError(
                "the server has no reserve-job command (beanstalkd 1.12 or later moves jobs)"
            ) from None
        try:
            new_id = await _put_like(client, job.body, state, priority, delay, ttr)
        except BaseException:
            await _put_back(client, job_id, state, priority, delay)
            raise
        await client.delete(job_id)
    return {"id": new_id}


async def _put_like(
    client: aio.Client[bytes], body: bytes, state: str, priority: int, delay: int, ttr: int
) -> int:
    """Put ``body`` into the used tube in ``state`` (ready, delayed or buried)."""
    if state != "buried":
        return await client.put(body, priority=priority, delay=delay, ttr=ttr)
    new_id = await client.put(body, priority=priority, delay=_HOLD_DELAY, ttr=ttr)
    await client.reserve_job(new_id)
    await client.bury(new_id, priority)
    return new_id


async def _put_back(
    client: aio.Client[bytes], job_id: int, state: str, priority: int, delay: int
) -> None:
    """Return a job taken by ``reserve-job`` to its state, as far as the connection allows.

    A connection that failed gives the job back to the server by closing
    (ready, its delay lost): nothing more can be done then.
    """
    with contextlib.suppress(Error):
        if state == "buried":
            await client.bury(job_id, priority)
        else:
            await client.release(job_id, priority, delay)
