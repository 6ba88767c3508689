"""``greenstalk.Pool``: one client for several beanstalkd servers.

Producers spread jobs over the servers (round-robin, or by key with
rendezvous hashing) and fail over when one stops answering; consumers
reserve from all of them at once. Each server has one connection for puts
and commands, and consumer connections that a thread per server keeps
reserving on while someone waits for a job.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ssl as _ssl
import threading
from collections.abc import Iterable
from time import monotonic
from types import TracebackType
from typing import Any, Callable, TypeVar, cast, overload

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
from .client import Client

T = TypeVar("T")

_Server = PoolServer["Client[Any]"]
_Held = Held["Client[Any]"]

# put_many sends the servers' shares at once (a thread each) from this many bodies.
_SHARES_AT_ONCE = 256


class Pool(PoolBase[TBody, "Client[Any]"]):
    """Several beanstalkd servers used as one.

    ``addresses`` lists the servers (``(host, port)`` tuples and Unix socket
    paths); None reads them from ``$BEANSTALKD_ADDRESS`` (comma-separated
    ``host:port`` and paths). ``encoding``, ``use`` and ``watch`` mean what
    they mean for :class:`~greenstalk.Client`, on every server.

    Puts go to the servers in turn (``strategy='round-robin'``, or
    ``'random'``); ``put(..., key=k)`` sends every job with key ``k`` to the
    same live server (rendezvous hashing: adding a server moves only the
    keys it takes over). A server that refuses connections, drops one, or
    does not answer within ``socket_timeout`` seconds is marked down and
    probed in the background after ``retry_base`` seconds, doubling up to
    ``retry_cap``; meanwhile the others take its work. A put that surely did
    not reach it is placed on another server. A put whose fate is unknown
    (sent, no reply) is placed on another server too and counted in
    :attr:`unknown_puts` (it may exist twice: at-least-once), or, with
    ``at_most_once=True``, raises :class:`~greenstalk.UnknownPutError`.

    What ``put`` and ``reserve`` return is a :class:`~greenstalk.Job` with
    ``address`` set to its server; ``delete``, ``release``, ``bury`` and
    ``touch`` of it go to that server, on the connection that reserved it.
    ``reserve`` waits on every server at once. A pool is used by one thread
    at a time, as a client is; it runs threads of its own for waiting
    reserves and for probing servers that are down.

    Raises ValueError or TypeError for invalid arguments, and
    :class:`~greenstalk.NoServerError` when no server can be reached.
    """

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
        #: Guards the consumer state; the threads wait on it.
        self._lock = threading.Condition()
        self._prober: threading.Thread | None = None
        #: Threads that pipeline put_many's shares at once, made on first use.
        self._putters: concurrent.futures.ThreadPoolExecutor | None = None
        reasons = []
        for server in self._servers:
            try:
                self._producer(server)
            except ClientConnectionError as error:
                self._mark_down(server, error)
                reasons.append(f"{server.name}: {error}")
        if len(reasons) == len(self._servers):
            self.close()
            raise NoServerError("cannot connect to any server of the pool: " + "; ".join(reasons))

    def __enter__(self) -> Pool[TBody]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection and stop the pool's threads.

        Jobs the pool had reserved go back to the ready queue on their servers.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
            threads = [s.consumer for s in self._servers if s.consumer is not None]
            for server in self._servers:
                if server.reserving is not None:
                    server.reserving.interrupt()
        for thread in threads:
            thread.join()
        if self._prober is not None:
            self._prober.join()
        if self._putters is not None:
            self._putters.shutdown()
        clients: list[Client[Any]] = [held.client for held in self._handed.values()]
        clients += [held.client for held in self._ready]
        for each in self._servers:
            if each.producer is not None:
                clients.append(each.producer)
            clients += each.free
            each.producer = None
            each.free = []
        for client in clients:
            client.close()
        self._handed.clear()
        self._ready.clear()

    # -- servers and their health -----------------------------------------

    def _client(self, server: _Server, **tubes: Any) -> Client[Any]:
        return Client(
            server.where,
            self.encoding,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._connect_timeout,
            ssl=self._ssl,
            **tubes,
        )

    def _producer(self, server: _Server) -> Client[Any]:
        """The server's command connection, opened if need be. Raises ClientConnectionError."""
        client = server.producer
        if client is None:
            client = Client(
                server.where,
                self.encoding,
                use=self._use,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._connect_timeout,
                ssl=self._ssl,
                reconnect=True,
            )
            server.producer = client
        return client

    def _check_open(self) -> None:
        """Raise ClientConnectionError once the pool is closed: it opens no new connection."""
        if self._closed:
            raise ClientConnectionError("the pool is closed")

    def _mark_down(self, server: _Server, error: BaseException) -> None:
        """Take ``server`` out of rotation after ``error``; the prober brings it back."""
        with self._lock:
            server.health.failed(monotonic(), str(error))
            if self._prober is None and not self._closed:
                self._prober = threading.Thread(
                    target=self._probe_loop, name="greenstalk-pool-prober", daemon=True
                )
                self._prober.start()
            self._lock.notify_all()

    def _probe_loop(self) -> None:
        """Probe each down server when its retry is due, until the pool closes."""
        while True:
            with self._lock:
                while True:
                    if self._closed:
                        return
                    now = monotonic()
                    due = [s for s in self._servers if s.health.due(now)]
                    if due:
                        break
                    down = [s.health.retry_at for s in self._servers if not s.health.up]
                    self._lock.wait(min(down) - now if down else None)
            for server in due:
                self._probe(server)

    def _probe(self, server: _Server) -> None:
        """Check that ``server`` answers and takes jobs; mark it up or down again."""
        try:
            with self._client(server) as client:
                if client.stats()["draining"]:
                    raise DrainingError("the server is in drain mode")
        except (ClientConnectionError, BeanstalkdError) as error:
            with self._lock:
                server.health.failed(monotonic(), str(error))
            return
        with self._lock:
            server.health.succeeded()
            self._lock.notify_all()

    def _on(self, server: _Server, command: Callable[[Client[Any]], T]) -> T:
        """Run ``command`` on ``server``'s command connection.

        A failed connection marks the server down; raises ClientConnectionError.
        """
        self._check_open()
        try:
            return command(self._producer(server))
        except ClientConnectionError as error:
            self._mark_down(server, error)
            raise

    def _on_each(self, command: Callable[[Client[Any]], T]) -> dict[Where, T | BeanstalkdError]:
        """Run ``command`` on every server that answers; a server's refusal is its result.

        Servers marked down are left out, unless all are.
        Raises NoServerError when no server answered.
        """
        results: dict[Where, T | BeanstalkdError] = {}
        reasons = []
        servers = [s for s in self._servers if s.health.up] or self._servers
        for server in servers:
            try:
                results[server.where] = self._on(server, command)
            except BeanstalkdError as refusal:
                results[server.where] = refusal
            except ClientConnectionError as error:
                reasons.append(f"{server.name}: {error}")
        if not results:
            raise NoServerError("no server of the pool answered: " + "; ".join(reasons))
        return results

    # -- producer ------------------------------------------------------------

    def put(
        self,
        body: bytes | TBody,
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        *,
        key: Key | None = None,
    ) -> Job[TBody]:
        """Insert a job on one server and return it (``job.address`` says which).

        Arguments are those of :meth:`Client.put <greenstalk.Client.put>`;
        ``key`` sends every job with the same key to the same live server.
        Raises :class:`~greenstalk.NoServerError` when no server took it,
        :class:`~greenstalk.UnknownPutError` (``at_most_once``), and the
        errors of ``Client.put`` for invalid arguments or a body too big.
        """
        self._check_open()
        server = self._placement.first(key)
        if server.health.up:
            try:
                producer = server.producer or self._producer(server)
                job_id = producer.put(body, priority, delay, ttr)
            except (ClientConnectionError, *REFUSED_HERE) as error:
                return self._put_elsewhere(body, priority, delay, ttr, key, server, error)
            server.puts += 1
            return cast("Job[TBody]", Job(job_id, body, server.where))
        return self._put_elsewhere(body, priority, delay, ttr, key, None, None)

    def _put_elsewhere(
        self,
        body: bytes | TBody,
        priority: int,
        delay: int,
        ttr: int,
        key: Key | None,
        failed: _Server | None,
        error: BaseException | None,
    ) -> Job[TBody]:
        """Place a put on the servers in turn, after ``failed`` (if any) failed with ``error``.

        Raises NoServerError when none takes it, UnknownPutError (at_most_once).
        """
        reasons: list[str] = []
        if failed is not None and error is not None:
            reasons.append(self._failed_put(failed, error))
        for server in self._candidates(key):
            if server is failed:
                continue
            try:
                job_id = self._producer(server).put(body, priority, delay, ttr)
            except (ClientConnectionError, *REFUSED_HERE) as error:
                reasons.append(self._failed_put(server, error))
                continue
            server.puts += 1
            return cast("Job[TBody]", Job(job_id, body, server.where))
        raise NoServerError("no server of the pool took the put: " + "; ".join(reasons))

    def put_many(
        self,
        bodies: Iterable[bytes | TBody],
        priority: int = DEFAULT_PRIORITY,
        delay: int = DEFAULT_DELAY,
        ttr: int = DEFAULT_TTR,
        *,
        key: Key | None = None,
    ) -> list[Job[TBody]]:
        """Insert many jobs, spread over the live servers and pipelined on each.

        Returns the jobs in the order of ``bodies``. With ``key``, all go to
        the key's server. A server that fails has its share placed on the
        others (as :meth:`put` does). Raises :class:`~greenstalk.PutManyError`
        when servers refused some bodies (its ``ids`` holds a Job or None per
        body), and NoServerError when no server is left.
        """
        self._check_open()
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
            outcomes = self._put_shares(shares, items, priority, delay, ttr)
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

    def _put_shares(
        self,
        shares: list[tuple[_Server, list[int]]],
        items: list[Any],
        priority: int,
        delay: int,
        ttr: int,
    ) -> list[list[int] | BaseException]:
        """Pipeline each server's share of ``items``: the result or the error of each.

        Several large shares are sent at once, a thread each, so that every
        server works while the others' replies are read.
        """

        def put_share(server: _Server, indexes: list[int]) -> list[int] | BaseException:
            try:
                return self._producer(server).put_many(
                    [items[i] for i in indexes], priority, delay, ttr
                )
            except (BeanstalkdError, ClientConnectionError, PutManyError) as error:
                return error

        if len(shares) == 1 or len(items) < _SHARES_AT_ONCE:
            return [put_share(server, indexes) for server, indexes in shares]
        if self._putters is None:
            self._putters = concurrent.futures.ThreadPoolExecutor(
                len(self._servers), thread_name_prefix="greenstalk-pool-put"
            )
        futures = [self._putters.submit(put_share, *share) for share in shares]
        return [future.result() for future in futures]

    def use(self, tube: str) -> None:
        """Make ``put`` insert into ``tube`` on every server."""
        check_tube(tube)
        self._use = tube
        for server in self._servers:
            producer = server.producer
            if producer is not None:
                try:
                    self._on(server, lambda client: client.use(tube))
                except ClientConnectionError:
                    # It would reconnect with the tube it used before: the
                    # next command opens a new connection, which uses ``tube``.
                    server.producer = None
                    producer.close()

    def using(self) -> str:
        """The tube ``put`` inserts into."""
        return self._use

    # -- consumer ------------------------------------------------------------

    def watch(self, tube: str) -> int:
        """Add ``tube`` to the watch list on every server; return how many are watched."""
        check_tube(tube)
        if tube not in self._watch:
            self._change_watch([*self._watch, tube])
        return len(self._watch)

    def ignore(self, tube: str) -> int:
        """Remove ``tube`` from the watch list; return how many are watched.

        Raises :class:`~greenstalk.NotIgnoredError` if it is the only one.
        """
        if tube in self._watch:
            if len(self._watch) == 1:
                raise NotIgnoredError(f"ignore {tube}: NOT_IGNORED (the only watched tube)")
            self._change_watch([t for t in self._watch if t != tube])
        return len(self._watch)

    def watching(self) -> list[str]:
        """The watched tubes."""
        return list(self._watch)

    def _change_watch(self, tubes: list[str]) -> None:
        with self._lock:
            self._watch = tubes
            self._watch_generation += 1
            # Reserves under way may hand out jobs of the old list: stop them.
            for server in self._servers:
                if server.reserving is not None:
                    server.reserving.interrupt()
            stale = list(self._ready)
            self._ready.clear()
        for held in stale:
            self._give_back(held)

    def reserve(self, timeout: int | None = None) -> Job[TBody]:
        """Reserve a job from the watched tubes of any server, waiting until one is ready.

        With ``timeout`` (seconds, 0 to poll) raises
        :class:`~greenstalk.TimedOutError` when no job came in time. The job
        is reserved on the server in ``job.address``.
        """
        if timeout is not None and (type(timeout) is not int or timeout < 0):
            raise ValueError(f"timeout must be a whole number of seconds >= 0, not {timeout!r}")
        with self._lock:
            if self._closed:
                raise ClientConnectionError("the pool is closed")
            self._waiting += 1
            self._start_consumers()
            self._lock.notify_all()
            try:
                deadline = None if timeout is None else monotonic() + max(timeout, 0.05)
                while not self._ready:
                    if self._closed:
                        raise ClientConnectionError("the pool is closed")
                    left = None if deadline is None else deadline - monotonic()
                    if left is not None and left <= 0:
                        raise TimedOutError(f"reserve-with-timeout {timeout}: TIMED_OUT")
                    self._lock.wait(left)
                since = monotonic()
                while (fair := self._fair_wait(since)) is not None:
                    self._lock.wait(fair)
                return cast("Job[TBody]", self._next_ready().job)
            finally:
                self._waiting -= 1

    def _start_consumers(self) -> None:
        for server in self._servers:
            if server.consumer is None:
                server.consumer = threading.Thread(
                    target=self._consume,
                    args=(server,),
                    name=f"greenstalk-pool-{server.name}",
                    daemon=True,
                )
                server.consumer.start()

    def _consume(self, server: _Server) -> None:
        """A server's consumer thread: reserve while jobs are wanted, give back stale ones."""
        while True:
            expired: list[_Held] = []
            with self._lock:
                while not self._closed:
                    expired, next_release = self._expired(server, monotonic())
                    if expired or self._wanted(server):
                        break
                    self._lock.wait(None if next_release is None else next_release - monotonic())
                if self._closed:
                    return
                for held in expired:
                    self._ready.remove(held)
                client = None if expired else self._consumer(server)
                server.reserving = client
            for held in expired:
                self._give_back(held)
            if not expired:
                self._reserve_on(server, client)

    def _consumer(self, server: _Server) -> Client[Any] | None:
        """A consumer connection of ``server`` holding no job, up to date with the watch list.

        The lock is held; connecting happens outside it, in _reserve_on.
        """
        while server.free:
            client = server.free.pop()
            if server.watch_generation.get(client) == self._watch_generation:
                return client
            server.watch_generation.pop(client, None)
            client.close()
        return None

    def _reserve_on(self, server: _Server, client: Client[Any] | None) -> None:
        """Reserve one job on ``client`` (a new connection when None) and offer it."""
        try:
            if client is None:
                generation = self._watch_generation
                client = self._client(server, watch=list(self._watch))
                with self._lock:
                    server.watch_generation[client] = generation
                    server.reserving = client
                    if self._closed or generation != self._watch_generation:
                        client.interrupt()
            job = client.reserve(RESERVE_ROUND)
        except (TimedOutError, DeadlineSoonError):
            with self._lock:
                server.reserving = None
                server.delivering = False
            self._free_client(server, cast(Client[Any], client))
            return
        except (ClientConnectionError, BeanstalkdError) as error:
            with self._lock:
                server.reserving = None
                server.delivering = False
                interrupted = self._closed or (
                    client is not None
                    and server.watch_generation.get(client) != self._watch_generation
                )
                if client is not None:
                    server.watch_generation.pop(client, None)
            if client is not None:
                client.close()
            if not interrupted:
                self._mark_down(server, error)
            return
        held = Held(server, client, Job(job.id, job.body, server.where))
        held.release_at = monotonic() + SURPLUS_GRACE
        with self._lock:
            server.reserving = None
            server.delivering = True
            stale = self._closed or server.watch_generation.get(client) != (
                self._watch_generation
            )
            if not stale:
                self._ready.append(held)
                self._lock.notify_all()
        if stale:
            self._give_back(held)

    def _give_back(self, held: _Held) -> None:
        """Release a job that was never handed out, with its priority unchanged."""
        client = held.client
        try:
            priority = client.stats_job(held.job.id)["pri"]
            client.release(held.job.id, priority)
        except ClientConnectionError:
            client.close()  # the server releases what a closed connection held
            return
        except BeanstalkdError:
            pass  # gone already (its TTR ran out, or it was deleted)
        self._free_client(held.server, client)

    def _free_client(self, server: _Server, client: Client[Any]) -> None:
        """``client`` holds no job any more: it may reserve again."""
        with self._lock:
            if self._closed or client.closed or server.watch_generation.get(client) is None:
                server.watch_generation.pop(client, None)
                client.close()
            else:
                server.free.append(client)
                self._lock.notify_all()

    def _finish(self, job: JobOrID, command: Callable[[Client[Any], int], None]) -> bool:
        """Run ``command`` on the connection that reserved ``job``, if the pool did.

        Returns False when the pool did not reserve it. Raises what the
        command raises; NotFoundError when its connection was lost. Once
        the connection is lost (before or during the command), the pool no
        longer holds the job: the server has put it back.
        """
        server = self._server_of(job)
        job_id = job.id if isinstance(job, Job) else job
        held = self._handed.get((server.where, job_id))
        if held is None:
            return False
        if held.client.closed:
            del self._handed[(server.where, job_id)]
            raise NotFoundError(
                f"job {job_id} on {server.name} was lost with the connection that reserved it"
            )
        try:
            command(held.client, job_id)
        except ClientConnectionError:
            self._done(job)
            raise
        return True

    def delete(self, job: JobOrID) -> None:
        """Delete a job: one this pool reserved, or a ready, delayed or buried one."""
        if not self._finish(job, Client.delete):
            server = self._server_of(job)
            self._on(server, lambda client: client.delete(job_id_of(job)))
            return
        self._done(job)

    def release(
        self, job: JobOrID, priority: int = DEFAULT_PRIORITY, delay: int = DEFAULT_DELAY
    ) -> None:
        """Put a job this pool reserved back into its tube, on its server.

        Raises :class:`~greenstalk.NotFoundError` if the pool does not hold it.
        """
        if not self._finish(job, lambda c, i: c.release(i, priority, delay)):
            raise NotFoundError(f"release {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")
        self._done(job)

    def bury(self, job: JobOrID, priority: int = DEFAULT_PRIORITY) -> None:
        """Move a job this pool reserved to its tube's buried list, on its server.

        Raises :class:`~greenstalk.NotFoundError` if the pool does not hold it.
        """
        if not self._finish(job, lambda c, i: c.bury(i, priority)):
            raise NotFoundError(f"bury {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")
        self._done(job)

    def touch(self, job: JobOrID) -> None:
        """Restart the TTR of a job this pool reserved.

        Raises :class:`~greenstalk.NotFoundError` if the pool does not hold it.
        """
        if not self._finish(job, Client.touch):
            raise NotFoundError(f"touch {job_id_of(job)}: NOT_FOUND (not reserved by this pool)")

    def _done(self, job: JobOrID) -> None:
        server = self._server_of(job)
        held = self._handed.pop((server.where, job_id_of(job)))
        self._free_client(server, held.client)

    def reserve_job(self, job: JobOrID) -> Job[TBody]:
        """Reserve a specific job on its server. Raises :class:`~greenstalk.NotFoundError`."""
        self._check_open()
        server = self._server_of(job)
        with self._lock:
            client = self._consumer(server)
        if client is None:
            try:
                client = self._client(server, watch=list(self._watch))
            except ClientConnectionError as error:
                self._mark_down(server, error)
                raise
            with self._lock:
                server.watch_generation[client] = self._watch_generation
        try:
            found = client.reserve_job(job_id_of(job))
        except BaseException:
            self._free_client(server, client)
            raise
        held = Held(server, client, Job(found.id, found.body, server.where))
        self._handed[(server.where, found.id)] = held
        return cast("Job[TBody]", held.job)

    # -- inspection ----------------------------------------------------------

    def peek(self, job: JobOrID) -> Job[TBody]:
        """Return a job from its server without reserving it. Raises NotFoundError."""
        server = self._server_of(job)
        return self._located(server, self._on(server, lambda c: c.peek(job_id_of(job))))

    def _peek_best(
        self, peek: Callable[[Client[Any]], Job[Any]], rank: Callable[[StatsJob], Any]
    ) -> Job[TBody]:
        found: list[tuple[Any, Job[TBody]]] = []
        for server in self._servers:
            try:
                job = self._on(server, peek)
                stats = self._on(server, functools.partial(Client.stats_job, job=job))
            except (NotFoundError, ClientConnectionError):
                continue
            found.append((rank(stats), self._located(server, job)))
        if not found:
            raise NotFoundError("peek: NOT_FOUND (no server has such a job in the used tube)")
        return min(found, key=lambda pair: pair[0])[1]

    def peek_ready(self) -> Job[TBody]:
        """The ready job of the used tube that is most urgent over all servers.

        Raises :class:`~greenstalk.NotFoundError` if no server has one.
        """
        return self._peek_best(Client.peek_ready, lambda s: (s["pri"], -s["age"]))

    def peek_delayed(self) -> Job[TBody]:
        """The delayed job of the used tube that becomes ready first over all servers.

        Raises :class:`~greenstalk.NotFoundError` if no server has one.
        """
        return self._peek_best(Client.peek_delayed, lambda s: s["time-left"])

    def peek_buried(self) -> Job[TBody]:
        """The oldest buried job of the used tube over all servers.

        Raises :class:`~greenstalk.NotFoundError` if no server has one.
        """
        return self._peek_best(Client.peek_buried, lambda s: -s["age"])

    def kick(self, bound: int) -> int:
        """Kick up to ``bound`` jobs of the used tube, over the servers in turn; return how many."""
        kicked = 0
        for server in self._servers:
            if kicked >= bound:
                break
            try:
                kicked += self._on(server, functools.partial(Client.kick, bound=bound - kicked))
            except ClientConnectionError:
                continue
        return kicked

    def kick_job(self, job: JobOrID) -> None:
        """Move one buried or delayed job to ready, on its server. Raises NotFoundError."""
        server = self._server_of(job)
        self._on(server, lambda c: c.kick_job(job_id_of(job)))

    def stats_job(self, job: JobOrID) -> StatsJob:
        """The statistics of a job, from its server. Raises NotFoundError."""
        server = self._server_of(job)
        return self._on(server, lambda c: c.stats_job(job_id_of(job)))

    def stats(self) -> Stats:
        """The statistics of every server that answers, added up (see :func:`sum_stats`)."""
        results = self._on_each(Client.stats)
        return sum_stats(r for r in results.values() if isinstance(r, dict))

    def stats_by_server(self) -> dict[Where, Stats]:
        """The statistics of each server that answers, by address."""
        results = self._on_each(Client.stats)
        return {where: r for where, r in results.items() if isinstance(r, dict)}

    def stats_tube(self, tube: str) -> StatsTube:
        """The statistics of ``tube`` over the servers that have it, added up.

        Raises :class:`~greenstalk.NotFoundError` if no server has it.
        """
        results = self._on_each(lambda c: c.stats_tube(tube))
        return sum_tube_stats(
            tube, {w: (r if isinstance(r, dict) else None) for w, r in results.items()}
        )

    def tubes(self) -> list[str]:
        """Every tube on any server that answers."""
        results = self._on_each(Client.tubes)
        return merge_tubes(r for r in results.values() if isinstance(r, list))

    def pause_tube(self, tube: str, delay: int) -> None:
        """Pause ``tube`` on every server that has it. Raises NotFoundError if none has."""
        results = self._on_each(lambda c: c.pause_tube(tube, delay))
        if all(isinstance(r, NotFoundError) for r in results.values()):
            raise NotFoundError(f"pause-tube {tube}: NOT_FOUND (no server has this tube)")


__all__ = ["Pool"]
