"""The asyncio worker, :class:`greenstalk.aio.Worker`: the sync worker's rules, on one event loop.

Coroutine functions run on the loop; plain functions run in a pool of
``concurrency`` threads, so a blocking handler does not hold up the loop.
Up to ``concurrency`` handlers run at once, all on one connection. While
any handler runs, the worker reserves without waiting (``reserve-with-
timeout 0``, then a short pause when nothing is ready), because a waiting
reserve would hold back the deletes of the jobs that finish meanwhile;
with none running it waits in slices of ``reserve_slice`` seconds.

A finished job's delete (or release, or bury) is sent in the same loop
turn as the next reserve, so both go out in one write. The first SIGTERM
or SIGINT stops reserving and lets the running handlers finish; a second
one cancels them and closes the connection, which puts their jobs back in
the ready queue, and :meth:`Worker.run` returns 128 + the signal number.

The decisions live in :mod:`greenstalk._worker_rules`, shared with the sync
worker; this module never imports the sync worker or the blocking client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import queue
import signal
import threading
from collections.abc import Awaitable, Coroutine, Mapping
from typing import Any, Callable, TypeVar, Union, cast

from ._base import Address, Where
from ._protocol import commands
from ._protocol.commands import Request
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    DeadlineSoonError,
    NotFoundError,
    TimedOutError,
)
from ._worker_rules import (
    EXIT_OK,
    FIRST_TOUCH_CHECK,
    JOB_GONE,
    JobInHand,
    Outcome,
    WorkerAddress,
    WorkerBase,
    WorkerServer,
    check_settings,
    is_coroutine_function,
    logger,
    touch_plan,
)
from ._worker_rules import WorkerJob as BlockingWorkerJob
from .aio import Client
from .codecs import Codec

T = TypeVar("T")

# How long to pause between non-waiting reserves that found nothing while
# handlers run, in seconds.
_POLL_PAUSE = 0.05


class WorkerJob(JobInHand):
    """The job a coroutine handler gets: id, tube, decoded body, and what it may do with it.

    ``address`` is the server it came from (a worker may have several).
    ``release``, ``bury`` and ``delete`` decide what happens to the job when
    the handler returns (the last call wins); ``touch`` restarts its TTR now.
    ``release``, ``bury`` and ``touch`` are coroutines.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Client[bytes], job_id: int, tube: str, raw_body: bytes,
                 body: Any, address: Where | None = None) -> None:
        super().__init__(job_id, tube, raw_body, body, address)
        self._client = client

    async def _priority(self, priority: int | None) -> int:
        if priority is not None:
            return priority
        return int((await self._client.stats_job(self.id))["pri"])

    async def release(self, delay: int = 0, priority: int | None = None) -> None:
        """Put the job back when the handler returns (``priority`` None keeps it)."""
        priority = await self._priority(priority)
        self._decision = (commands.release(self.id, priority, delay), "released")

    async def bury(self, priority: int | None = None) -> None:
        """Bury the job when the handler returns (``priority`` None keeps it)."""
        self._decision = (commands.bury(self.id, await self._priority(priority)), "buried")

    async def touch(self) -> None:
        """Restart the job's TTR now. Raises NotFoundError if the job was lost."""
        await self._client.touch(self.id)


AsyncHandler = Callable[[WorkerJob], Awaitable[object]]
ThreadHandler = Callable[[BlockingWorkerJob], None]
Handler = Union[AsyncHandler, ThreadHandler]
"""A coroutine function of a :class:`WorkerJob`, run on the loop, or a plain function of a
:class:`greenstalk.WorkerJob`, run in a thread."""

HandlerF = TypeVar("HandlerF", bound=Handler)

# A finished job: its id, the command that finishes it, and the outcome's name.
_Finish = tuple[int, Request[None], str]
# A plain handler's call waiting for a thread: the handler, its job, and its result.
_Call = tuple[Callable[[BlockingWorkerJob], object], BlockingWorkerJob,
              "concurrent.futures.Future[object]"]


class _LoopActions:
    """What a thread-run handler's job asks of the connection, done on the worker's loop."""

    __slots__ = ("_client", "_loop")

    def __init__(self, client: Client[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def priority(self, job_id: int) -> int:
        return int(self._on_loop(self._client.stats_job(job_id))["pri"])

    def touch(self, job_id: int) -> None:
        self._on_loop(self._client.touch(job_id))

    def _on_loop(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


class _HandlerThreads:
    """Threads for plain-function handlers: started as needed, at most ``size`` of them.

    Daemon threads rather than a ThreadPoolExecutor, whose threads the
    interpreter waits for at exit: after a cold stop the process must not
    wait for the handlers it gave up on.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._unfinished = 0

    def run(self, handler: Callable[[BlockingWorkerJob], object],
            job: BlockingWorkerJob) -> asyncio.Future[object]:
        """Call ``handler(job)`` in a thread; the future gives its result or exception."""
        result: concurrent.futures.Future[object] = concurrent.futures.Future()
        with self._lock:
            self._unfinished += 1
            start = self._unfinished > len(self._threads) and len(self._threads) < self._size
        if start:
            thread = threading.Thread(target=self._serve, daemon=True,
                                      name=f"greenstalk-handler-{len(self._threads) + 1}")
            thread.start()
            self._threads.append(thread)
        self._calls.put((handler, job, result))
        return asyncio.wrap_future(result)

    def close(self) -> None:
        """Let each thread end once it has finished its handler."""
        for _ in self._threads:
            self._calls.put(None)
        self._threads.clear()

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            handler, job, result = call
            if result.set_running_or_notify_cancel():
                try:
                    value = handler(job)
                except StopIteration as error:
                    # An asyncio future cannot carry StopIteration; a coroutine
                    # would have turned it into a RuntimeError too.
                    result.set_exception(RuntimeError(f"the handler raised {error!r}"))
                except BaseException as error:
                    result.set_exception(error)
                else:
                    result.set_result(value)
            with self._lock:
                self._unfinished -= 1


class _Server(WorkerServer):
    """One server of an asyncio worker: its connection, its running jobs, its finished ones."""

    __slots__ = ("client", "finishes", "own_slot_free", "running", "starved", "waiter")

    def __init__(self, address: Address, several: bool) -> None:
        super().__init__(address, several)
        self.client: Client[bytes] | None = None
        # Jobs whose handlers have finished, waiting to go out with the next reserve.
        self.finishes: list[_Finish] = []
        # How many of its jobs are being handled.
        self.running = 0
        # Whether the slot each server has to itself is free (see Worker._take_slot).
        self.own_slot_free = True
        # True while its loop waits for a slot: a freed shared slot wakes it.
        self.starved = False
        # What its loop waits on when it pauses; resolved to wake it.
        self.waiter: asyncio.Future[None] | None = None


def _resolve(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Worker(WorkerBase[Handler]):
    """An asyncio consumer: :class:`greenstalk.Worker`'s settings, plus ``concurrency``.

    ``handlers`` maps tube names to coroutine functions taking a
    :class:`WorkerJob`, which run on the event loop, or plain functions
    taking a :class:`greenstalk.WorkerJob`, which run in a pool of
    ``concurrency`` threads. Up to ``concurrency`` handlers run at once.
    The other settings are :class:`greenstalk.Worker`'s: ``address``
    (``host:port`` or ``unix:PATH`` text, or None for
    ``$BEANSTALKD_ADDRESS``, else 127.0.0.1:11300; or a list of servers),
    ``codec`` (``"bytes"``, ``"json"`` or a
    :class:`~greenstalk.codecs.Codec`), ``max_releases``,
    ``backoff_base`` and ``backoff_cap`` (failed jobs are released after
    ``backoff_base * 2**releases`` seconds, at most ``backoff_cap``, and
    buried after ``max_releases`` releases), ``auto_touch``,
    ``reserve_slice``, ``socket_timeout``, ``reconnect_base`` and
    ``reconnect_cap``.

    With several servers, each has a connection and a reserving loop of its
    own, on the same event loop, and ``concurrency`` is shared: each server
    always has one slot of its own (so a job on any server is taken at
    once), and the rest, ``concurrency`` less the number of servers, go to
    whichever server has jobs. Up to ``max(concurrency, servers)`` handlers
    run at once.

    Run it with ``await worker.run()``. Raises ValueError for invalid
    settings, addresses or tube names, TypeError for a handler that is not
    callable.
    """

    _runs_coroutines = True

    def __init__(
        self,
        address: WorkerAddress | None = None,
        *,
        handlers: Mapping[str, Handler] | None = None,
        codec: str | Codec = "bytes",
        max_releases: int = 3,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        auto_touch: bool = True,
        reserve_slice: int = 1,
        socket_timeout: float | None = 30.0,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
        concurrency: int = 1,
    ) -> None:
        check_settings(
            max_releases=max_releases, backoff_base=backoff_base, backoff_cap=backoff_cap,
            reserve_slice=reserve_slice, socket_timeout=socket_timeout,
            reconnect_base=reconnect_base, reconnect_cap=reconnect_cap, concurrency=concurrency,
        )
        #: How many handlers may run at once (at least one per server).
        self.concurrency = concurrency
        super().__init__(
            address, handlers=handlers, codec=codec, max_releases=max_releases,
            backoff_base=backoff_base, backoff_cap=backoff_cap, auto_touch=auto_touch,
            reserve_slice=reserve_slice, socket_timeout=socket_timeout,
            reconnect_base=reconnect_base, reconnect_cap=reconnect_cap,
        )

    def _init_state(self) -> None:
        self._servers: list[_Server] = []
        # The slots beyond each server's own, free now, for any server.
        self._shared_slots = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._threads = _HandlerThreads(self.concurrency)
        # What run() waits on while the running handlers finish; resolved to wake it.
        self._waiter: asyncio.Future[None] | None = None
        # The touching task of each job whose handler has run long enough to need one.
        self._touchers: dict[JobInHand, asyncio.Task[None]] = {}
        # Set when a server's loop failed: the other loops stop as for a warm stop.
        self._halted = False

    # -- set-up ------------------------------------------------------------

    def add_handler(self, tube: str, handler: Handler) -> None:
        """Handle jobs of ``tube`` with ``handler``.

        Raises ValueError for a bad tube name, TypeError for a handler that
        is not callable.
        """
        self._register(tube, handler)

    def handler(self, tube: str) -> Callable[[HandlerF], HandlerF]:
        """Decorator: ``@worker.handler('emails')`` registers the function for that tube.

        Raises as :meth:`add_handler`.
        """

        def register(handler: HandlerF) -> HandlerF:
            self._register(tube, handler)
            return handler

        return register

    def stop(self, cold: bool = False) -> None:
        """Ask the worker to stop: after the running jobs, or at once when ``cold``.

        Call it from the worker's event loop.
        """
        super().stop(cold)
        self._wake_loop()

    def _on_signal(self, signum: int, frame: object = None) -> None:
        super()._on_signal(signum, frame)
        self._wake_loop()

    # -- the connection ----------------------------------------------------

    async def _connect(self, server: _Server, burst: bool) -> Client[bytes] | None:
        """Connect, retrying with backoff; None when a stop came first.

        In a burst the first failure raises ClientConnectionError instead.
        """
        attempt = 0
        for delay in self._reconnect_delays():
            if self._stop_requests or self._halted:
                return None
            client: Client[bytes] = Client(
                server.address, watch=list(self._handlers), socket_timeout=self.socket_timeout
            )
            try:
                await client._open()
            except ClientConnectionError as error:
                if burst:
                    raise self._burst_connect_error(server, error) from error
                attempt += 1
                self._log_connect_failure(server, attempt, error, delay)
                await self._pause(delay, server)
                continue
            self._log_connected(server, attempt)
            return client
        raise AssertionError("the reconnect delays never end")

    async def _pause(self, seconds: float, server: _Server | None = None) -> None:
        """Sleep, waking early for a stop or a finished handler (of ``server``'s, if given)."""
        # A plain future, woken directly: the loop then runs in the very next
        # loop turn, the one in which a finished job's delete is sent, so its
        # next reserve shares that write.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if server is None:
            self._waiter = waiter
        else:
            server.waiter = waiter
        timer = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if server is None:
                self._waiter = None
            else:
                server.waiter = None

    def _wake_loop(self) -> None:
        """Wake every loop that pauses, and run() (a stop, or a loop that failed)."""
        for server in self._servers:
            _resolve(server.waiter)
        _resolve(self._waiter)

    # -- slots -------------------------------------------------------------

    def _take_slot(self, server: _Server) -> bool | None:
        """A slot for one more job of ``server``: its own (True), a shared one (False), or None.

        Each server has a slot of its own, so that every server can always
        be waited on; the worker's other ``concurrency - servers`` slots are
        shared.
        """
        if server.own_slot_free:
            server.own_slot_free = False
            return True
        if self._shared_slots:
            self._shared_slots -= 1
            return False
        return None

    def _give_slot(self, server: _Server, own: bool) -> None:
        if own:
            server.own_slot_free = True
            return
        self._shared_slots += 1
        for other in self._servers:
            if other.starved:
                _resolve(other.waiter)

    # -- the loop ------------------------------------------------------------

    async def run(self, burst: bool = False) -> int:
        """Work until stopped; with ``burst``, until no job is ready. Returns the exit code.

        With several servers, each has a loop of its own (a task on the
        running loop); a burst ends once every server has no job ready.
        Installs SIGTERM and SIGINT handlers on the running loop when it runs
        in the main thread. Raises ValueError when no handler is registered
        or an address is not one. A burst that cannot connect to a server
        raises :class:`~greenstalk.ClientConnectionError` naming it (once
        the other servers' running jobs are finished and acknowledged);
        otherwise the worker retries the connection until it works or is
        stopped.
        """
        self._check_runnable()
        addresses = self.addresses
        logger.info(self._banner(burst, addresses, f"concurrency {self.concurrency}"))
        several = len(addresses) > 1
        servers = self._servers = [_Server(address, several) for address in addresses]
        self._shared_slots = max(0, self.concurrency - len(servers))
        self._halted = False
        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        self._threads = _HandlerThreads(max(self.concurrency, len(servers)))
        failure: Exception | None = None
        try:
            if several:
                failure = await self._run_loops(burst)
            else:
                await self._loop(servers[0], burst)
            if self._tasks and self._stop_requests == 1:
                logger.warning("stopping once the %d running job(s) are done; stop again to give "
                               "them back and stop at once", len(self._tasks))
            while self._tasks and self._stop_requests < 2:
                # A warm stop: let the running handlers finish, unless a second stop comes.
                await self._pause(self.reserve_slice)
            if self._stop_requests >= 2:
                return await self._cold_stop()
            for server in servers:
                await self._send_finishes(server)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self._threads.close()
            for server in servers:
                if server.client is not None:
                    await server.client.close()
                    server.client = None
        if failure is not None:
            raise failure
        logger.info(self._stopped_line())
        return EXIT_OK

    async def _run_loops(self, burst: bool) -> Exception | None:
        """Run every server's loop at once; what the first that failed raised, if one did.

        The other loops then stop as for a warm stop.
        """
        failures: list[Exception] = []

        async def serve(server: _Server) -> None:
            try:
                await self._loop(server, burst)
            except Exception as error:
                failures.append(error)
                self._halted = True
                self._wake_loop()

        await asyncio.gather(*(serve(server) for server in self._servers))
        return failures[0] if failures else None

    async def _cold_stop(self) -> int:
        logger.warning("stopping at once: %d running job(s) go back to the queue",
                       len(self._tasks))
        for task in self._tasks:
            task.cancel()
        for server in self._servers:
            await self._send_finishes(server)  # the jobs already done are acknowledged first
            if server.client is not None:
                await server.client.close()  # the server puts the jobs back, priority unchanged
                server.client = None
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        return 128 + int(self._stop_signal)

    async def _loop(self, server: _Server, burst: bool) -> None:
        single_tube = next(iter(self._handlers)) if len(self._handlers) == 1 else None
        while not (self._stop_requests or self._halted):
            client = server.client
            if client is None or client.closed:
                if client is not None:
                    await self._lost(server, client, "the connection closed")
                client = server.client = await self._connect(server, burst)
                if client is None:
                    return
            own = self._take_slot(server)
            if own is None:
                if server.finishes:
                    # Another server took the slot its last job freed: acknowledge now.
                    await self._send_finishes(server)
                    continue
                server.starved = True
                await self._pause(self.reserve_slice, server)
                server.starved = False
                continue
            busy = bool(server.running)
            timeout = 0 if busy or burst else self.reserve_slice
            # The finished jobs' deletes go out in the same write as the reserve.
            finishes, server.finishes = server.finishes, []
            try:
                refusals, reserved = await client._finish_and_reserve(
                    [request for _, request, _ in finishes], timeout
                )
            except ClientConnectionError as error:
                self._give_slot(server, own)
                await self._lost(server, client, str(error))
                continue
            self._count_finishes(server, finishes, refusals)
            if isinstance(reserved, BeanstalkdError):
                self._give_slot(server, own)
                if isinstance(reserved, TimedOutError):
                    if burst and not busy:
                        return
                    if busy:
                        await self._pause(_POLL_PAUSE, server)
                elif not isinstance(reserved, DeadlineSoonError):
                    logger.error("reserve failed%s: %r", server.label, reserved)
                    await self._pause(1, server)
                continue
            job_id, raw_body = reserved
            server.running += 1
            task = asyncio.ensure_future(
                self._handle(server, client, job_id, raw_body, single_tube, own)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _count_finishes(
        self, server: _Server, finishes: list[_Finish], refusals: list[BeanstalkdError | None]
    ) -> None:
        for (job_id, _, outcome), refusal in zip(finishes, refusals):
            if refusal is None:
                self.counts[outcome] += 1
            else:
                logger.warning("the server refused to finish job %d%s: %r", job_id,
                               server.label, refusal)

    async def _send_finishes(self, server: _Server) -> None:
        """Acknowledge the jobs of ``server`` finished since its last reserve."""
        finishes, server.finishes = server.finishes, []
        client = server.client
        if not finishes or client is None:
            return
        try:
            results = await client._pipeline([request for _, request, _ in finishes])
        except ClientConnectionError as error:
            logger.warning("%d job(s)%s not acknowledged: the connection was lost (%s)",
                           len(finishes), server.label, error)
            return
        self._count_finishes(
            server, finishes, [r if isinstance(r, BeanstalkdError) else None for r in results]
        )

    async def _lost(self, server: _Server, client: Client[bytes], reason: str) -> None:
        self._log_lost(server, reason)
        await client.close()
        if server.client is client:
            server.client = None
            # Finished on that connection: the server has taken them back.
            server.finishes.clear()
        server.reconnecting = True

    async def _handle(self, server: _Server, client: Client[bytes], job_id: int,
                      raw_body: bytes, tube: str | None, own: bool) -> None:
        try:
            if tube is None:
                tube = str((await client.stats_job(job_id))["tube"])
            finish, outcome = await self._run_handler(server, client, job_id, tube, raw_body)
        except ClientConnectionError as error:
            logger.warning("job %d%s: connection lost while handling it (%s)", job_id,
                           server.label, error)
        except NotFoundError:
            logger.warning(JOB_GONE, job_id, server.label)
        else:
            if client is server.client:
                server.finishes.append((job_id, finish, outcome))
            else:
                logger.warning("job %d%s was not acknowledged: its connection was lost", job_id,
                               server.label)
        finally:
            self._tasks.discard(cast("asyncio.Task[None]", asyncio.current_task()))
            server.running -= 1
            self._give_slot(server, own)
            _resolve(server.waiter)
            _resolve(self._waiter)

    async def _run_handler(self, server: _Server, client: Client[bytes], job_id: int, tube: str,
                           raw_body: bytes) -> Outcome:
        handler = self._handlers[tube]
        try:
            body = self.codec.decode(raw_body)
        except Exception as error:
            stats = await client.stats_job(job_id)
            return self._undecodable_outcome(job_id, tube, error, stats["pri"], server.label)
        on_loop = is_coroutine_function(handler)
        job: JobInHand
        if on_loop:
            job = WorkerJob(client, job_id, tube, raw_body, body, server.where)
        else:
            actions = _LoopActions(client, asyncio.get_running_loop())
            job = BlockingWorkerJob(actions, job_id, tube, raw_body, body, server.where)
        toucher = (asyncio.get_running_loop().call_later(
            FIRST_TOUCH_CHECK, self._start_touching, server, client, job)
            if self.auto_touch else None)
        try:
            if on_loop:
                await cast(AsyncHandler, handler)(cast(WorkerJob, job))
            else:
                result = await self._threads.run(
                    cast(Callable[[BlockingWorkerJob], object], handler),
                    cast(BlockingWorkerJob, job),
                )
                if result is not None and inspect.isawaitable(result):
                    # A lambda calling a coroutine function, say: the work is in
                    # the awaitable, whose place is the loop.
                    await result
        except (ClientConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            return self._failure_outcome(job_id, tube, await client.stats_job(job_id),
                                         server.label)
        finally:
            if toucher is not None:
                toucher.cancel()
            touching = self._touchers.pop(job, None)
            if touching is not None:
                touching.cancel()
        return job.outcome()

    def _start_touching(self, server: _Server, client: Client[bytes], job: JobInHand) -> None:
        self._touchers[job] = asyncio.ensure_future(self._keep_touching(server, client, job))

    async def _keep_touching(self, server: _Server, client: Client[bytes],
                             job: JobInHand) -> None:
        """Touch a job whose handler runs long, a second before each TTR would end."""
        try:
            stats = await client.stats_job(job.id)
            first, interval = touch_plan(int(stats["ttr"]), int(stats["time-left"]))
            await asyncio.sleep(first)
            while True:
                await client.touch(job.id)
                logger.debug("job %d%s: touched, its handler is still running", job.id,
                             server.label)
                await asyncio.sleep(interval)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d%s: could not touch it (%s)", job.id, server.label, error)
