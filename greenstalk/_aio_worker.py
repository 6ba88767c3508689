"""The asyncio worker, :class:`greenstalk.aio.Worker`: the sync worker's rules, on one event loop.

Handlers are coroutine functions (plain functions work too); up to
``concurrency`` of them run at once, all on one connection. While any
handler runs, the worker reserves without waiting (``reserve-with-timeout
0``, then a short pause when nothing is ready), because a waiting reserve
would hold back the deletes of the jobs that finish meanwhile; with none
running it waits in slices of ``reserve_slice`` seconds.

A finished job's delete (or release, or bury) is sent in the same loop
turn as the next reserve, so both go out in one write. The first SIGTERM
or SIGINT stops reserving and lets the running handlers finish; a second
one cancels them and closes the connection, which puts their jobs back in
the ready queue, and :meth:`Worker.run` returns 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import threading
from collections.abc import Awaitable
from typing import Any, Callable, Union

from ._protocol import commands
from ._protocol.commands import Request
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    DeadlineSoonError,
    NotFoundError,
    TimedOutError,
)
from .aio import Client
from .worker import EXIT_OK, JOB_GONE, JobInHand, Outcome, WorkerBase, logger

# How long to pause between non-waiting reserves that found nothing while
# handlers run, in seconds.
_POLL_PAUSE = 0.05
# When the worker first looks at a running handler's TTR, in seconds.
_FIRST_TOUCH_CHECK = 0.5


class WorkerJob(JobInHand):
    """The job an asyncio handler gets: id, tube, decoded body, and what it may do with it.

    ``release``, ``bury`` and ``delete`` decide what happens to the job when
    the handler returns (the last call wins); ``touch`` restarts its TTR now.
    """

    __slots__ = ("_client",)

    def __init__(self, client: Client[bytes], job_id: int, tube: str, raw_body: bytes,
                 body: Any) -> None:
        super().__init__(job_id, tube, raw_body, body)
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


Handler = Callable[[WorkerJob], Union[Awaitable[object], object]]
# A finished job: its id, the command that finishes it, and the outcome's name.
_Finish = tuple[int, Request[None], str]


class Worker(WorkerBase[Handler]):
    """An asyncio consumer: :class:`greenstalk.Worker`'s settings, plus ``concurrency``.

    Run it with ``await worker.run()``. Raises ValueError for invalid
    settings.
    """

    def __init__(self, *args: Any, concurrency: int = 1, **settings: Any) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        super().__init__(*args, **settings)
        #: How many handlers may run at once.
        self.concurrency = concurrency

    def _init_state(self) -> None:
        self._client: Client[bytes] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # What the main loop waits on when it pauses; resolved to wake it.
        self._waiter: asyncio.Future[None] | None = None
        # Jobs whose handlers have finished, waiting to go out with the next reserve.
        self._finishes: list[_Finish] = []
        # The touching task of each job whose handler has run long enough to need one.
        self._touchers: dict[WorkerJob, asyncio.Task[None]] = {}

    def stop(self, cold: bool = False) -> None:
        """Ask the worker to stop: after the running jobs, or at once when ``cold``.

        Call it from the worker's event loop.
        """
        super().stop(cold)
        self._wake_loop()

    def _on_signal(self, signum: int, frame: object = None) -> None:
        super()._on_signal(signum, frame)
        self._wake_loop()

    async def _connect(self) -> Client[bytes] | None:
        """Connect, retrying with backoff; None when a stop came first."""
        delay = self.reconnect_base
        attempt = 0
        while not self._stop_requests:
            client: Client[bytes] = Client(
                self.address, watch=list(self._handlers), socket_timeout=self.socket_timeout
            )
            try:
                await client._open()
            except ClientConnectionError as error:
                attempt += 1
                logger.warning("cannot connect to the server (attempt %d): %s; retrying in "
                               "%.1f s", attempt, error, delay)
                await self._pause(delay)
                delay = min(delay * 2, self.reconnect_cap)
                continue
            if self._reconnecting:
                self._reconnecting = False
                logger.warning("connected again (after %d failed attempt(s)); watching %s",
                               attempt, ", ".join(self._handlers))
            return client
        return None

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early for a stop or a finished handler."""
        # A plain future, woken directly: the main loop then runs in the very
        # next loop turn, the one in which a finished job's delete is sent, so
        # its next reserve shares that write.
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, self._wake_loop)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def run(self, burst: bool = False) -> int:
        """Work until stopped; with ``burst``, until no job is ready. Returns the exit code.

        Installs SIGTERM and SIGINT handlers on the running loop when it runs
        in the main thread. Raises ValueError when no handler is registered.
        """
        if not self._handlers:
            raise ValueError("the worker has no handler: add one with worker.handler(tube)")
        loop = asyncio.get_running_loop()
        installed = []
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
                installed.append(signum)
        try:
            await self._loop(burst)
            while self._tasks and self._stop_requests < 2:
                # A warm stop: let the running handlers finish, unless a second stop comes.
                await self._pause(self.reserve_slice)
            if self._stop_requests >= 2:
                return await self._cold_stop()
            await self._send_finishes()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            if self._client is not None:
                await self._client.close()
                self._client = None
        logger.info("worker stopped: %s", ", ".join(f"{v} {k}" for k, v in self.counts.items()))
        return EXIT_OK

    async def _cold_stop(self) -> int:
        logger.warning("stopping at once: %d running job(s) go back to the queue",
                       len(self._tasks))
        for task in self._tasks:
            task.cancel()
        await self._send_finishes()  # the jobs already done are acknowledged first
        if self._client is not None:
            await self._client.close()  # the server puts the jobs back, priority unchanged
            self._client = None
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        return 128 + int(self._stop_signal)

    async def _loop(self, burst: bool) -> None:
        single_tube = next(iter(self._handlers)) if len(self._handlers) == 1 else None
        while not self._stop_requests:
            client = self._client
            if client is None or client.closed:
                if client is not None:
                    await self._lost(client, "the connection closed")
                client = self._client = await self._connect()
                if client is None:
                    return
            if len(self._tasks) >= self.concurrency:
                await self._pause(self.reserve_slice)
                continue
            busy = bool(self._tasks)
            timeout = 0 if busy or burst else self.reserve_slice
            # The finished jobs' deletes go out in the same write as the reserve.
            finishes, self._finishes = self._finishes, []
            try:
                refusals, reserved = await client._finish_and_reserve(
                    [request for _, request, _ in finishes], timeout
                )
            except ClientConnectionError as error:
                await self._lost(client, str(error))
                continue
            self._count_finishes(finishes, refusals)
            if isinstance(reserved, TimedOutError):
                if burst and not busy:
                    return
                if busy:
                    await self._pause(_POLL_PAUSE)
                continue
            if isinstance(reserved, DeadlineSoonError):
                continue
            if isinstance(reserved, BeanstalkdError):
                logger.error("reserve failed: %r", reserved)
                await self._pause(1)
                continue
            job_id, raw_body = reserved
            task = asyncio.ensure_future(self._handle(client, job_id, raw_body, single_tube))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _count_finishes(
        self, finishes: list[_Finish], refusals: list[BeanstalkdError | None]
    ) -> None:
        for (job_id, _, outcome), refusal in zip(finishes, refusals):
            if refusal is None:
                self.counts[outcome] += 1
            else:
                logger.warning("the server refused to finish job %d: %r", job_id, refusal)

    async def _send_finishes(self) -> None:
        """Acknowledge the jobs finished since the last reserve (the worker is stopping)."""
        finishes, self._finishes = self._finishes, []
        client = self._client
        if not finishes or client is None:
            return
        try:
            results = await client._pipeline([request for _, request, _ in finishes])
        except ClientConnectionError as error:
            logger.warning("%d job(s) not acknowledged: the connection was lost (%s)",
                           len(finishes), error)
            return
        self._count_finishes(
            finishes, [r if isinstance(r, BeanstalkdError) else None for r in results]
        )

    async def _lost(self, client: Client[bytes], reason: str) -> None:
        logger.warning("connection to the server lost (%s); jobs in hand go back to the queue "
                       "on the server and are not acknowledged; reconnecting", reason)
        await client.close()
        if self._client is client:
            self._client = None
            # Finished on that connection: the server has taken them back.
            self._finishes.clear()
        self._reconnecting = True

    async def _handle(self, client: Client[bytes], job_id: int, raw_body: bytes,
                      tube: str | None) -> None:
        try:
            if tube is None:
                tube = str((await client.stats_job(job_id))["tube"])
            finish, outcome = await self._run_handler(client, job_id, tube, raw_body)
        except ClientConnectionError as error:
            logger.warning("job %d: connection lost while handling it (%s)", job_id, error)
        except NotFoundError:
            logger.warning(JOB_GONE, job_id)
        else:
            if client is self._client:
                self._finishes.append((job_id, finish, outcome))
            else:
                logger.warning("job %d was not acknowledged: its connection was lost", job_id)
        self._tasks.discard(asyncio.current_task())
        self._wake_loop()

    def _wake_loop(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run_handler(self, client: Client[bytes], job_id: int, tube: str,
                           raw_body: bytes) -> Outcome:
        handler = self._handlers[tube]
        try:
            body = self.codec.decode(raw_body)
        except Exception:
            logger.exception("job %d in %r: the body does not decode; burying it", job_id, tube)
            stats = await client.stats_job(job_id)
            return commands.bury(job_id, stats["pri"]), "buried"
        job = WorkerJob(client, job_id, tube, raw_body, body)
        toucher = (asyncio.get_running_loop().call_later(
            _FIRST_TOUCH_CHECK, self._start_touching, client, job) if self.auto_touch else None)
        try:
            result = handler(job)
            if inspect.isawaitable(result):
                await result
        except (ClientConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            self.counts["failed"] += 1
            return self._failure_outcome(job_id, tube, await client.stats_job(job_id))
        finally:
            if toucher is not None:
                toucher.cancel()
            touching = self._touchers.pop(job, None)
            if touching is not None:
                touching.cancel()
        return job._decision or (commands.delete(job_id), "deleted")

    def _start_touching(self, client: Client[bytes], job: WorkerJob) -> None:
        self._touchers[job] = asyncio.ensure_future(self._keep_touching(client, job))

    async def _keep_touching(self, client: Client[bytes], job: WorkerJob) -> None:
        """Touch a job whose handler runs long, a second before each TTR would end."""
        try:
            stats = await client.stats_job(job.id)
            ttr = int(stats["ttr"])
            interval = max(ttr - 1.0, ttr / 2)
            left = int(stats["time-left"])
            await asyncio.sleep(min(float(left), interval) if left >= 1 else 0)
            while True:
                await client.touch(job.id)
                logger.debug("job %d: touched, its handler is still running", job.id)
                await asyncio.sleep(interval)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d: could not touch it (%s)", job.id, error)

