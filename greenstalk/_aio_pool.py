"""``greenstalk.aio.Pool``: the pool of :mod:`greenstalk.pool` over asyncio clients.

The same placement, failover and fan-in as the blocking pool; tasks take the
place of its threads. Each server has one connection for puts and commands
(shared by concurrent callers, whose commands are pipelined) and consumer
connections that a task per server keeps reserving on while someone waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl as _ssl
from collections.abc import Awaitable, Iterable
from time import monotonic
from types import TracebackType
from typing import Any, Callable, TypeVar, cast, overload

from . import aio
from ._base import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    Job,
    JobOrID,
    TBody,
    Where,
)
from ._placement import Key
from ._pool_common import (
    REFUSED_HERE,
    RESERVE_ROUND,
    SURPLUS_GRACE,
    Held,
    PoolAddresses,
    PoolBase,
    PoolServer,
    job_id_of,
    merge_tubes,
    split_shares,
    sum_stats,
    sum_tube_stats,
)
from ._protocol.commands import check_tube
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    DeadlineSoonError,
    DrainingError,
    NoServerError,
    NotFoundError,
    NotIgnoredError,
    PutManyError,
    TimedOutError,
)
from ._protocol.stats import Stats, StatsJob, StatsTube

T = TypeVar("T")
Client = aio.Client

_Server = PoolServer["Client[Any]"]
_Held = Held["Client[Any]"]


class Pool(PoolBase[TBody, "Client[Any]"]):
    """Several beanstalkd servers used as one, from asyncio.

    The arguments, the placement, the failover and the methods are those of
    :class:`greenstalk.Pool`, as coroutines. The pool connects in
    ``async with Pool(...) as pool:`` (or ``await pool.open()``) and closes
    at the end of the block. Unlike the blocking pool it may be shared by
    many tasks: their commands to one server are pipelined on its
    connection, and each waiting ``reserve`` gets its own job.
    """

    _name = "greenstalk.aio.Pool"

    @overload
    def __init__(
        self: Pool[bytes],
        addresses: PoolAddresses = None,
        encoding: None = None,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        strategy: str = "round-robin",
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
        ssl: _ssl.SSLContext | None = None,
        at_most_once: bool = False,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None: ...

    @overload
    def __init__(
        self: Pool[str],
        addresses: PoolAddresses,
        encoding: str,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        strategy: str = "round-robin",
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
        ssl: _ssl.SSLContext | None = None,
        at_most_once: bool = False,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None: ...

    def __init__(
        self,
        addresses: PoolAddresses = None,
        encoding: str | None = None,
        use: str = DEFAULT_TUBE,
        watch: str | Iterable[str] = DEFAULT_TUBE,
        *,
        strategy: str = "round-robin",
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float | None = 2.0,
        ssl: _ssl.SSLContext | None = None,
        at_most_once: bool = False,
        retry_base: float = 0.5,
        retry_cap: float = 30.0,
    ) -> None:
        super().__init__(
            addresses, encoding, use, watch, strategy, socket_timeout,
            socket_connect_timeout, ssl, at_most_once, retry_base, retry_cap,
        )
        self._changed: asyncio.Condition | None = None
        self._opened = False
        self._prober: asyncio.Task[None] | None = None
        #: Closes of stale consumer connections under way.
        self._closing: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> Pool[TBody]:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Connect to every server that answers.

        Raises :class:`~greenstalk.NoServerError` when none does.
        """
        if self._opened:
            raise ClientConnectionError("the pool is already open")
        self._opened = True
        self._changed = asyncio.Condition()
        results = await asyncio.gather(
            *(self._producer(server) for server in self._servers), return_exceptions=True
        )
        reasons = []
        for server, result in zip(self._servers, results):
            if isinstance(result, ClientConnectionError):
                self._mark_down(server, result)
                reasons.append(f"{server.name}: {result}")
            elif isinstance(result, BaseException):
                await self.close()
                raise result
        if len(reasons) == len(self._servers):
            await self.close()
            raise NoServerError("cannot connect to any server of the pool: " + "; ".join(reasons))

    async def close(self) -> None:
        """Close every connection and stop the pool's tasks.

        Jobs the pool had reserved go back to the ready queue on their servers.
        """
        if self._closed:
            return
        self._closed = True
        await self._notify()  # consumers waiting for demand see the pool closed
        tasks = [s.consumer for s in self._servers if s.consumer is not None]
        if self._prober is not None:
            tasks.append(self._prober)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        clients: list[Client[Any]] = []
        for server in self._servers:
            clients += [c for c in (server.producer, server.reserving) if c is not None]
            clients += server.free
            server.producer = server.reserving = None
            server.free = []
        clients += [held.client for held in self._handed.values()]
        clients += [held.client for held in self._ready]
        self._handed.clear()
        self._ready.clear()
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            raise ClientConnectionError("the pool is not open: use 'async with' or open()")
        if self._closed:
            raise ClientConnectionError("the pool is closed")
        return self._changed

    async def _notify(self) -> None:
        changed = self._changed
        if changed is not None:
            async with changed:
                changed.notify_all()

    # -- servers and their health -----------------------------------------

    async def _client(self, server: _Server, **tubes: Any) -> Client[Any]:
        return await aio.connect(
            server.where,
            self.encoding,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._connect_timeout,
            ssl=self._ssl,
            **tubes,
        )

    async def _producer(self, server: _Server) -> Client[Any]:
        client = server.producer
        if client is None:
            client = await aio.connect(
                server.where,
                self.encoding,
                use=self._use,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._connect_timeout,
                ssl=self._ssl,
                reconnect=True,
            )
            if server.producer is None:
                server.producer = client
            else:  # another task connected first
                await client.close()
                client = server.producer
        return client

    def _mark_down(self, server: _Server, error: BaseException) -> None:
        server.health.failed(monotonic(), str(error))
        if (self._prober is None or self._prober.done()) and not self._closed:
            self._prober = asyncio.ensure_future(self._probe_loop())

    async def _probe_loop(self) -> None:
        while not self._closed:
            now = monotonic()
            down = [s for s in self._servers if not s.health.up]
            if not down:
                return
            due = [s for s in down if s.health.due(now)]
            if not due:
                await asyncio.sleep(min(s.health.retry_at for s in down) - now)
                continue
            await asyncio.gather(*(self._probe(server) for server in due))

    async def _probe(self, server: _Server) -> None:
        try:
            client = await self._client(server)
            try:
                if (await client.stats())["draining"]:
                    raise DrainingError("the server is in drain mode")
            finally:
                await client.close()
        except (ClientConnectionError, BeanstalkdError) as error:
            server.health.failed(monotonic(), str(error))
            return
        server.health.succeeded()
        await self._notify()

    async def _on(self, server: _Server, command: Callable[[Client[Any]], Awaitable[T]]) -> T:
        self._condition()
        try:
            return await command(await self._producer(server))
        except ClientConnectionError as error:
            self._mark_down(server, error)
            raise

    async def _on_each(
        self, command: Callable[[Client[Any]], Awaitable[T]]
    ) -> dict[Where, T | BeanstalkdError]:
        servers = [s for s in self._servers if s.health.up] or self._servers
        outcomes = await asyncio.gather(
            *(self._on(server, command) for server in servers), return_exceptions=True
        )
        results: dict[Where, T | BeanstalkdError] = {}
        reasons = []
        for server, outcome in zip(servers, outcomes):
            if isinstance(outcome, BeanstalkdError):
                results[server.where] = outcome
            elif isinstance(outcome, ClientConnectionError):
                reasons.append(f"{server.name}: {outcome}")
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results[server.where] = outcome
        if not results:
            raise NoServerError("no server of the pool answered: " + "; ".join(reasons))
        return results

    # -- producer ------------------------------------------------------------

    async def put(
        self,
        body: bytes | TBody,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        *,
        key: Key | None = None,
    ) -> Job[TBody]:
        """Insert a job on one server and return it; see :meth:`greenstalk.Pool.put`."""
        self._condition()
        server = self._placement.first(key)
        if server.health.up:
            try:
                producer = server.producer or await self._producer(server)
                job_id = await producer.put(body, priority, delay, ttr)
            except (ClientConnectionError, *REFUSED_HERE) as error:
                return await self._put_elsewhere(body, priority, delay, ttr, key, server, error)
            server.puts += 1
            return cast("Job[TBody]", Job(job_id, body, server.where))
        return await self._put_elsewhere(body, priority, delay, ttr, key, None, None)

    async def _put_elsewhere(
        self,
        body: bytes | TBody,
        priority: int,
        delay: int,
        ttr: int,
        key: Key | None,
        failed: _Server | None,
        error: BaseException | None,
    ) -> Job[TBody]:
        reasons: list[str] = []
        if failed is not None and error is not None:
            reasons.append(self._failed_put(failed, error))
        for server in self._candidates(key):
            if server is failed:
                continue
            try:
                producer = await self._producer(server)
                job_id = await producer.put(body, priority, delay, ttr)
            except (ClientConnectionError, *REFUSED_HERE) as error:
                reasons.append(self._failed_put(server, error))
                continue
            server.puts += 1
            return cast("Job[TBody]", Job(job_id, body, server.where))
        raise NoServerError("no server of the pool took the put: " + "; ".join(reasons))

    async def put_many(
        self,
        bodies: Iterable[bytes | TBody],
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        *,
        key: Key | None = None,
    ) -> list[Job[TBody]]:
        """Insert many jobs, spread over the servers, every server's share at once.

        See :meth:`greenstalk.Pool.put_many`.
        """
        self._condition()
        items = list(bodies)
        self._check_bodies(items)
        jobs: list[Job[TBody] | None] = [None] * len(items)
        refused: dict[int, BeanstalkdError] = {}
        pending = list(range(len(items)))
        reasons: list[str] = []
        rounds = 0
        while pending:
            rounds += 1
            if rounds > len(self._servers) + 1:
                raise NoServerError("no server of the pool took the puts: " + "; ".join(reasons))
            shares = split_shares(pending, self._candidates(key), key)
            outcomes = await asyncio.gather(
                *(self._put_share(server, [items[i] for i in indexes], priority, delay, ttr)
                  for server, indexes in shares),
                return_exceptions=True,
            )
            pending = []
            for (server, indexes), outcome in zip(shares, outcomes):
                if isinstance(outcome, PutManyError):
                    ids: list[int | None] = list(outcome.ids)
                    for position, error in outcome.errors.items():
                        if isinstance(error, REFUSED_HERE):
                            pending.append(indexes[position])
                            ids[position] = None
                            self._mark_down(server, error)
                        else:
                            refused[indexes[position]] = error
                elif isinstance(outcome, ClientConnectionError):
                    self._put_failed(server, outcome, len(indexes))
                    reasons.append(f"{server.name}: {outcome}")
                    pending.extend(indexes)
                    continue
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    ids = list(outcome)
                for index, job_id in zip(indexes, ids):
                    if job_id is not None:
                        jobs[index] = cast("Job[TBody]", Job(job_id, items[index], server.where))
                        server.puts += 1
        if refused:
            raise PutManyError(cast(Any, jobs), refused)
        return cast("list[Job[TBody]]", jobs)

    async def _put_share(
        self, server: _Server, bodies: list[Any], priority: int, delay: int, ttr: int
    ) -> list[int]:
        client = await self._producer(server)
        return await client.put_many(bodies, priority, delay, ttr)

    async def use(self, tube: str) -> None:
        """Make ``put`` insert into ``tube`` on every server."""
        check_tube(tube)
        self._use = tube
        for server in self._servers:
            producer = server.producer
            if producer is not None:
                try:
                    await self._on(server, lambda client: client.use(tube))
                except ClientConnectionError:
                    # It would reconnect with the tube it used before: the
                    # next command opens a new connection, which uses ``tube``.
                    if server.producer is producer:
                        server.producer = None
                    await producer.close()

    async def using(self) -> str:
        """The tube ``put`` inserts into."""
        return self._use

    # -- consumer ------------------------------------------------------------

    async def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list on every server; return how many are watched."""
        check_tube(tube)
        if tube not in self._watch:
            await self._change_watch([*self._watch, tube])
        return len(self._watch)

    async def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list; return how many are watched.

        Raises :class:`~greenstalk.NotIgnoredError` if it is the only one.
        """
        if tube in self._watch:
            if len(self._watch) == 1:
                raise NotIgnoredError(f"ignore {tube}: NOT_IGNORED (the only watched tube)")
            await self._change_watch([t for t in self._watch if t != tube])
        return len(self._watch)

    async def watching(self) -> list[str]:
        """The watched tubes."""
        return list(self._watch)

    async def _change_watch(self, tubes: list[str]) -> None:
        self._watch = tubes
        self._watch_generation += 1
        reserving = [s.reserving for s in self._servers if s.reserving is not None]
        stale = list(self._ready)
        self._ready.clear()
        await asyncio.gather(*(client.close() for client in reserving))
        await asyncio.gather(*(self._give_back(held) for held in stale))

    async def reserve(self, timeout: int | None = None) -> Job[TBody]:
        """Reserve a job from any server; see :meth:`greenstalk.Pool.reserve`."""
        if timeout is not None and (type(timeout) is not int or timeout < 0):
            raise ValueError(f"timeout must be a whole number of seconds >= 0, not {timeout!r}")
        changed = self._condition()
        async with changed:
            self._waiting += 1
            self._start_consumers()
            changed.notify_all()
            try:
                wait = None if timeout is None else max(timeout, 0.05)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait_for(self._has_job), wait)
                since = monotonic()
                while not self._closed and (fair := self._fair_wait(since)) is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), fair)
                if self._closed:
                    raise ClientConnectionError("the pool is closed")
                if not self._ready:
                    raise TimedOutError(f"reserve-with-timeout {timeout}: TIMED_OUT")
                return cast("Job[TBody]", self._next_ready().job)
            finally:
                self._waiting -= 1

    def _has_job(self) -> bool:
        return bool(self._ready) or self._closed

    def _start_consumers(self) -> None:
        for server in self._servers:
            if server.consumer is None:
                server.consumer = asyncio.ensure_future(self._consume(server))

    async def _consume(self, server: _Server) -> None:
        changed = self._condition()
        while True:
            async with changed:
                # The pool's closing is checked on each wake-up, not left to
                # the task's cancellation: wait_for can swallow a cancel that
                # comes as the wait ends (Python before 3.12).
                while not self._closed:
                    expired, next_release = self._expired(server, monotonic())
                    if expired or self._wanted(server):
                        break
                    wait = None if next_release is None else next_release - monotonic()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), wait)
                if self._closed:
                    return
                for held in expired:
                    self._ready.remove(held)
            if expired:
                await asyncio.gather(*(self._give_back(held) for held in expired))
            else:
                await self._reserve_on(server)

    def _consumer(self, server: _Server) -> Client[Any] | None:
        while server.free:
            client = server.free.pop()
            if server.watch_generation.get(client) == self._watch_generation:
                return client
            server.watch_generation.pop(client, None)
            self._closing.add(asyncio.ensure_future(client.close()))
            self._closing = {task for task in self._closing if not task.done()}
        return None

    async def _reserve_on(self, server: _Server) -> None:
        client = self._consumer(server)
        generation = self._watch_generation
        try:
            if client is None:
                client = await self._client(server, watch=list(self._watch))
                server.watch_generation[client] = generation
            server.reserving = client
            if self._closed or server.watch_generation.get(client) != self._watch_generation:
                await client.close()
            job = await client.reserve(RESERVE_ROUND)
        except (TimedOutError, DeadlineSoonError):
            server.reserving = None
            server.delivering = False
            await self._free_client(server, cast(Client[Any], client))
            return
        except (ClientConnectionError, BeanstalkdError) as error:
            server.reserving = None
            server.delivering = False
            interrupted = self._closed or (
                client is not None and server.watch_generation.get(client) != self._watch_generation
            )
            if client is not None:
                server.watch_generation.pop(client, None)
                await client.close()
            if not interrupted:
                self._mark_down(server, error)
            return
        server.reserving = None
        server.delivering = True
        held = Held(server, client, Job(job.id, job.body, server.where))
        if self._closed or server.watch_generation.get(client) != self._watch_generation:
            await self._give_back(held)
            return
        held.release_at = monotonic() + SURPLUS_GRACE
        changed = self._condition()
        async with changed:
            self._ready.append(held)
            changed.notify_all()

    async def _give_back(self, held: _Held) -> None:
        client = held.client
        try:
            priority = (await client.stats_job(held.job.id))["pri"]
            await client.release(held.job.id, priority)
        except ClientConnectionError:
            await client.close()
            return
        except BeanstalkdError:
            pass
        await self._free_client(held.server, client)

    async def _free_client(self, server: _Server, client: Client[Any]) -> None:
        if self._closed or client.closed or server.watch_generation.get(client) is None:
            server.watch_generation.pop(client, None)
            await client.close()
            return
        server.free.append(client)
        await self._notify()

    async def _finish(
        self, job: JobOrID, command: Callable[[Client[Any], int], Awaitable[None]]
    ) -> bool:
        server = self._server_of(job)
        job_id = job_id_of(job)
        held = self._handed.get((server.where, job_id))
        if held is None:
            return False
        if held.client.closed:
            del self._handed[(server.where, job_id)]
            raise NotFoundError(
                f"job {job_id} on {server.name} was lost with the connection that reserved it"
            )
        try:
            await command(held.client, job_id)
        except ClientConnectionError:
            await self._done(job)  # the server has put the job back
            raise
        return True

    async def _done(self, job: JobOrID) -> None:
        server = self._server_of(job)
        held = self._handed.pop((server.where, job_id_of(job)), None)
        if held is not None:
            await self._free_client(server, held.client)

    async def delete(self, job: JobOrID) -> None:
        """Delete a job: one this pool reserved, or a ready, delayed or buried one."""
        if await self._finish(job, lambda c, i: c.delete(i)):
            await self._done(job)
            return
        server = self._server_of(job)
        await self._on(server, lambda client: client.delete(job_id_of(job)))

    async def release(
        self, job: JobOrID, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY
    ) -> None:
        """Put a job this pool reserved back into its tube. Raises NotFoundError."""
        if not await self._finish(job, lambda c, i: c.release(i, priority, delay)):
            raise NotFoundError(f"release {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")
        await self._done(job)

    async def bury(self, job: JobOrID, priority: int = DEFAULT_PRIORITY) -> None:
        """Bury a job this pool reserved. Raises NotFoundError."""
        if not await self._finish(job, lambda c, i: c.bury(i, priority)):
            raise NotFoundError(f"bury {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")
        await self._done(job)

    async def touch(self, job: JobOrID) -> None:
        """Restart the TTR of a job this pool reserved. Raises NotFoundError."""
        if not await self._finish(job, lambda c, i: c.touch(i)):
            raise NotFoundError(f"touch {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")

    async def reserve_job(self, job: JobOrID) -> Job[TBody]:
        """Reserve a specific job on its server. Raises NotFoundError."""
        self._condition()
        server = self._server_of(job)
        client = self._consumer(server)
        if client is None:
            try:
                client = await self._client(server, watch=list(self._watch))
            except ClientConnectionError as error:
                self._mark_down(server, error)
                raise
            server.watch_generation[client] = self._watch_generation
        try:
            found = await client.reserve_job(job_id_of(job))
        except BaseException:
            await self._free_client(server, client)
            raise
        held = Held(server, client, Job(found.id, found.body, server.where))
        self._handed[(server.where, found.id)] = held
        return cast("Job[TBody]", held.job)

    # -- inspection ----------------------------------------------------------

    async def peek(self, job: JobOrID) -> Job[TBody]:
        """Return a job from its server without reserving it. Raises NotFoundError."""
        server = self._server_of(job)
        return self._located(server, await self._on(server, lambda c: c.peek(job_id_of(job))))

    async def _peek_best(
        self,
        peek: Callable[[Client[Any]], Awaitable[Job[Any]]],
        rank: Callable[[StatsJob], Any],
    ) -> Job[TBody]:
        async def candidate(server: _Server) -> tuple[Any, Job[TBody]] | None:
            try:
                job = await self._on(server, peek)
                stats = await self._on(server, lambda c: c.stats_job(job))
            except (NotFoundError, ClientConnectionError):
                return None
            return rank(stats), self._located(server, job)

        found = [
            pair
            for pair in await asyncio.gather(*(candidate(s) for s in self._servers))
            if pair is not None
        ]
        if not found:
            raise NotFoundError("peek: NOT_FOUND (no server has such a job in the used tube)")
        return min(found, key=lambda pair: pair[0])[1]

    async def peek_ready(self) -> Job[TBody]:
        """The most urgent ready job of the used tube over all servers. Raises NotFoundError."""
        return await self._peek_best(lambda c: c.peek_ready(), lambda s: (s["pri"], -s["age"]))

    async def peek_delayed(self) -> Job[TBody]:
        """The delayed job of the used tube ready first over all servers. Raises NotFoundError."""
        return await self._peek_best(lambda c: c.peek_delayed(), lambda s: s["time-left"])

    async def peek_buried(self) -> Job[TBody]:
        """The oldest buried job of the used tube over all servers. Raises NotFoundError."""
        return await self._peek_best(lambda c: c.peek_buried(), lambda s: -s["age"])

    async def kick(self, bound: int) -> int:
        """Kick up to ``bound`` jobs of the used tube over the servers in turn; return how many."""
        kicked = 0
        for server in self._servers:
            if kicked >= bound:
                break
            try:
                kick = functools.partial(Client.kick, bound=bound - kicked)
                kicked += await self._on(server, kick)
            except ClientConnectionError:
                continue
        return kicked

    async def kick_job(self, job: JobOrID) -> None:
        """Move one buried or delayed job to ready, on its server. Raises NotFoundError."""
        server = self._server_of(job)
        await self._on(server, lambda c: c.kick_job(job_id_of(job)))

    async def stats_job(self, job: JobOrID) -> StatsJob:
        """The statistics of a job, from its server. Raises NotFoundError."""
        server = self._server_of(job)
        return await self._on(server, lambda c: c.stats_job(job_id_of(job)))

    async def stats(self) -> Stats:
        """The statistics of every server that answers, added up."""
        results = await self._on_each(lambda c: c.stats())
        return sum_stats(r for r in results.values() if isinstance(r, dict))

    async def stats_by_server(self) -> dict[Where, Stats]:
        """The statistics of each server that answers, by address."""
        results = await self._on_each(lambda c: c.stats())
        return {where: r for where, r in results.items() if isinstance(r, dict)}

    async def stats_tube(self, tube: str) -> StatsTube:
        """The statistics of ``tube`` over the servers that have it. Raises NotFoundError."""
        results = await self._on_each(lambda c: c.stats_tube(tube))
        return sum_tube_stats(
            tube, {w: (r if isinstance(r, dict) else None) for w, r in results.items()}
        )

    async def tubes(self) -> list[str]:
        """Every tube on any server that answers."""
        results = await self._on_each(lambda c: c.tubes())
        return merge_tubes(r for r in results.values() if isinstance(r, list))

    async def pause_tube(self, tube: str, delay: int) -> None:
        """Pause ``tube`` on every server that has it. Raises NotFoundError if none has."""
        results = await self._on_each(lambda c: c.pause_tube(tube, delay))
        if all(isinstance(r, NotFoundError) for r in results.values()):
            raise NotFoundError(f"pause-tube {tube}: NOT_FOUND (no server has this tube)")

__all__ = ["Pool"]
