"""Read the state of a server for the exporter: its statistics, its tubes', their oldest jobs.

Everything goes over the server's one connection, pipelined: the
statistics of two thousand tubes cost a few round trips, not two thousand.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, cast

from .. import (
    DEFAULT_TUBE,
    ClientConnectionError,
    Error,
    Job,
    NotFoundError,
    Stats,
    StatsJob,
    StatsTube,
    aio,
)
from ._links import ServerLink

# The states whose next job the exporter reads: the oldest ready job (of the
# most urgent priority) and the delayed job that becomes ready first.
NEXT_JOB_STATES = ("ready", "delayed")


@dataclasses.dataclass(frozen=True)
class TubeFilter:
    """Which tubes to read: names ``include`` matches (whole) and ``exclude`` does not."""

    include: re.Pattern[str] | None = None
    exclude: re.Pattern[str] | None = None

    def __call__(self, name: str) -> bool:
        """Whether the tube ``name`` is read."""
        if self.include is not None and self.include.fullmatch(name) is None:
            return False
        return self.exclude is None or self.exclude.fullmatch(name) is None


@dataclasses.dataclass
class TubeState:
    """A tube's statistics, and the statistics of its next job in each state (None: none)."""

    stats: StatsTube
    next_jobs: dict[str, StatsJob] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ServerState:
    """What one scrape of one server found."""

    link: ServerLink
    #: False when the server could not be reached or did not answer in time.
    up: bool = False
    #: Why the server is not up.
    error: str = ""
    stats: Stats | None = None
    tubes: list[TubeState] = dataclasses.field(default_factory=list)
    #: Seconds the scrape took.
    duration: float = 0.0
    #: Commands answered (stats, list-tubes, stats-tube), and those that failed.
    succeeded: int = 0
    failed: int = 0
    #: True when connecting failed.
    connect_failed: bool = False


async def scrape(
    link: ServerLink, tubes: TubeFilter, next_jobs: bool, timeout: float
) -> ServerState:
    """Read the state of ``link``'s server within ``timeout`` seconds.

    With ``next_jobs``, also the statistics of each tube's next ready job
    and next delayed job. Never raises for a server that
    cannot be reached, fails or is too slow: the state then says it is down
    (and the connection is closed, so that the next scrape starts afresh).
    """
    state = ServerState(link)
    started = time.perf_counter()
    async with link.lock:
        try:
            await asyncio.wait_for(_read(link, state, tubes, next_jobs), timeout)
            state.up = True
        except Error as error:  # connection failures, and a server's refusals
            state.error = str(error) or type(error).__name__
            state.failed += 1
            await link.close()
        except asyncio.TimeoutError:
            state.error = f"no answer within {timeout:g} s"
            state.failed += 1
            await link.close()
    state.duration = time.perf_counter() - started
    return state


async def _read(link: ServerLink, state: ServerState, wanted: TubeFilter, next_jobs: bool) -> None:
    try:
        client = await link.client()
    except ClientConnectionError:
        state.connect_failed = True
        raise
    stats, names = await asyncio.gather(client.stats(), client.tubes())
    state.stats = stats
    state.succeeded += 2
    chosen = sorted(name for name in names if wanted(name))
    for result in await _gather(client.stats_tube(name) for name in chosen):
        if isinstance(result, NotFoundError):  # gone since list-tubes
            state.failed += 1
        else:
            state.succeeded += 1
            state.tubes.append(TubeState(result))
    if next_jobs:
        await _read_next_jobs(client, state.tubes)


async def _read_next_jobs(client: aio.Client[bytes], tubes: list[TubeState]) -> None:
    """Fill in each tube's next job of each state, in two pipelined rounds.

    The peeks need the tube in use; they go out in order on the one
    connection, so each ``use`` applies to the peeks after it.
    """
    calls: list[Awaitable[Any]] = []
    slots: list[tuple[TubeState, str] | None] = []
    for tube in tubes:
        states = [state for state in NEXT_JOB_STATES if count(tube.stats, state)]
        if not states:
            continue
        calls.append(client.use(tube.stats["name"]))
        slots.append(None)
        for state in states:
            calls.append(_PEEKS[state](client))
            slots.append((tube, state))
    if not calls:
        return
    # Leave the last tube: the server keeps a tube in use even once it is empty.
    calls.append(client.use(DEFAULT_TUBE))
    slots.append(None)
    peeked = [
        (slot, result)
        for slot, result in zip(slots, await _gather(calls))
        if slot is not None and isinstance(result, Job)  # else gone since stats-tube
    ]
    found = await _gather(client.stats_job(job.id) for _, job in peeked)
    for ((tube, state), _), stats in zip(peeked, found):
        if not isinstance(stats, NotFoundError):
            tube.next_jobs[state] = stats


def count(stats: StatsTube, state: str) -> int:
    """How many jobs of a tube are in ``state`` (ready, reserved, delayed, buried, urgent)."""
    return int(cast(Mapping[str, Any], stats)[f"current-jobs-{state}"])


_PEEKS = {"ready": aio.Client.peek_ready, "delayed": aio.Client.peek_delayed}


async def _gather(calls: Iterable[Awaitable[Any]]) -> list[Any]:
    """Run calls on one connection together (pipelined); NotFoundError comes back as a result.

    Raises any other exception of a call, after all have finished.
    """
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, NotFoundError):
            raise result
    return results
