"""The consumer loop done once, carefully: :class:`Worker`.

A worker watches the tubes it has handlers for, reserves a job, decodes its
body, calls the tube's handler, and then:

* deletes the job when the handler returns (unless the handler released,
  buried or deleted it itself through the :class:`WorkerJob` it got);
* releases it with an exponential backoff delay when the handler raises,
  and buries it once it has been released ``max_releases`` times;
* buries at once a job whose body the codec cannot decode, or whose
  handler returned an awaitable (its work was never done).

The delete (or release, or bury) of a finished job goes out in the same
write as the next reserve: one round trip a job instead of two.

Delivery is **at least once**. A job whose handler is running when the
connection is lost goes back to the ready queue on the server, and its
result is *not* acknowledged on the new connection: another reserve may
hand it out again. Handlers should be idempotent.

While a handler runs past the job's TTR less a second, the worker touches
the job so the server does not give it to another consumer (``auto_touch``).

Stopping: the first SIGTERM or SIGINT stops reserving and lets the
current handler finish (a warm stop, :meth:`Worker.run` then returns 0).
A second one while a handler runs closes the connection, which puts the
job back in the ready queue, and ends the process at once with status
128 + the signal number (130 for SIGINT, 143 for SIGTERM). The signal
handlers only set flags; a watchdog thread acts on them.

The decisions (what a result, an exception or a bad body means, backoff,
the touch schedule, the settings) live in :mod:`greenstalk._worker_rules`,
shared with the asyncio worker; this module is the blocking loop.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import signal
import threading
import time
from typing import Any, Callable, TypeVar

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
    Outcome,
    WorkerBase,
    WorkerJob,
    logger,
    touch_plan,
)
from .client import Client
from .codecs import CODECS, BytesCodec, Codec, JSONCodec

# How often the watchdog looks at the running handler, in seconds.
_WATCH_PERIOD = 0.1

Handler = Callable[[WorkerJob], None]
"""A handler of the sync worker: a plain function of the job. What it returns is ignored."""

HandlerF = TypeVar("HandlerF", bound=Handler)


class _ConnectionActions:
    """What a handler's :class:`WorkerJob` asks of the worker's connection."""

    __slots__ = ("_worker",)

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def priority(self, job_id: int) -> int:
        return int(self._worker._job_stats(job_id)["pri"])

    def touch(self, job_id: int) -> None:
        with self._worker._client_lock:
            self._worker._client().touch(job_id)


class Worker(WorkerBase[Handler]):
    """A consumer: handlers by tube, retries with backoff, auto-touch, graceful stops.

    ``address`` is where the server is (``host:port`` or ``unix:PATH`` text
    is accepted; None means ``$BEANSTALKD_ADDRESS``, else 127.0.0.1:11300).
    ``handlers`` maps tube names to plain functions taking a
    :class:`WorkerJob`; more can be added with :meth:`handler` and
    :meth:`add_handler`. ``codec`` is ``"bytes"``, ``"json"`` or a
    :class:`~greenstalk.codecs.Codec`. A failed job is released with a
    delay of ``backoff_base * 2**releases`` seconds, at most
    ``backoff_cap``, and buried once it has been released ``max_releases``
    times. ``auto_touch`` touches jobs whose handlers outlive their TTR.
    The worker reserves in slices of ``reserve_slice`` seconds, so a stop
    is noticed within one. ``socket_timeout`` bounds each wait for the
    server; a lost server is retried after ``reconnect_base`` seconds,
    doubling up to ``reconnect_cap``.

    Raises ValueError for invalid settings or tube names, TypeError for a
    handler that is not a plain function (a coroutine function belongs to
    :class:`greenstalk.aio.Worker`) or not callable at all.
    """

    def _init_state(self) -> None:
        self._connection: Client[bytes] | None = None
        self._client_lock = threading.Lock()
        self._actions = _ConnectionActions(self)
        self._running: WorkerJob | None = None
        self._running_since = 0.0
        self._reconnecting = False
        self._done = threading.Event()

    # -- set-up ------------------------------------------------------------

    def add_handler(self, tube: str, handler: Handler) -> None:
        """Handle jobs of ``tube`` with ``handler``.

        Raises ValueError for a bad tube name, TypeError for a handler that
        is not callable or is a coroutine function.
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

    # -- the connection ----------------------------------------------------

    def _client(self) -> Client[bytes]:
        client = self._connection
        if client is None:
            raise ClientConnectionError("the worker is not connected")
        return client

    def _connect(self, burst: bool) -> Client[bytes] | None:
        """Connect, retrying with backoff until it works; None when a stop came first.

        In a burst the first failure raises ClientConnectionError instead.
        """
        attempt = 0
        for delay in self._reconnect_delays():
            try:
                client: Client[bytes] = Client(
                    self.address,
                    watch=list(self._handlers),
                    socket_timeout=self.socket_timeout,
                )
            except ClientConnectionError as error:
                if burst:
                    raise self._burst_connect_error(error) from error
                attempt += 1
                self._log_connect_failure(attempt, error, delay)
                if self._sleep_unless_stopped(delay):
                    return None
                continue
            self._log_connected(attempt, self._reconnecting)
            self._reconnecting = False
            return client
        raise AssertionError("the reconnect delays never end")

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep, waking early for a stop; True when a stop was asked for."""
        deadline = time.monotonic() + seconds
        while not self._stop_requests:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.1))
        return True

    def _job_stats(self, job_id: int) -> dict[str, Any]:
        with self._client_lock:
            return dict(self._client().stats_job(job_id))

    # -- the loop ------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work until stopped; with ``burst``, until no job is ready. Returns the exit code.

        Installs SIGTERM and SIGINT handlers when called from the main thread
        (and restores the previous ones on return). Raises ValueError when no
        handler is registered. A burst that cannot connect raises
        :class:`~greenstalk.ClientConnectionError` at once; otherwise the
        worker retries the connection until it works or is stopped.
        """
        self._check_runnable()
        logger.info(self._banner(burst))
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        self._done.clear()
        watchdog = threading.Thread(target=self._watch, name="greenstalk-worker-watchdog",
                                    daemon=True)
        watchdog.start()
        try:
            self._loop(burst)
        finally:
            self._done.set()
            watchdog.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        logger.info(self._stopped_line())
        return EXIT_OK

    def _loop(self, burst: bool) -> None:
        finish: Request[None] | None = None
        outcome = ""
        single_tube = next(iter(self._handlers)) if len(self._handlers) == 1 else None
        timeout = 0 if burst else self.reserve_slice
        while True:
            if self._connection is None:
                self._connection = self._connect(burst)
                if self._connection is None:
                    return  # a stop came while reconnecting
            client = self._connection
            if self._stop_requests:
                if finish is not None:
                    with self._client_lock:
                        self._send_finish(client, finish, outcome)
                return
            try:
                with self._client_lock:
                    finished, reserved = client._finish_and_reserve(finish, timeout)
            except ClientConnectionError as error:
                self._lost(error)
                finish = None
                continue
            if finished is not None:
                logger.warning("the server refused to finish a job: %r", finished)
            elif finish is not None:
                self.counts[outcome] += 1
            finish = None
            if isinstance(reserved, TimedOutError):
                if burst:
                    return
                continue
            if isinstance(reserved, DeadlineSoonError):
                continue
            if isinstance(reserved, BeanstalkdError):
                logger.error("reserve failed: %r", reserved)
                if self._sleep_unless_stopped(1):
                    return
                continue
            job_id, raw_body = reserved
            try:
                finish, outcome = self._handle(client, job_id, raw_body, single_tube)
            except ClientConnectionError as error:
                self._lost(error)
                finish = None
            except NotFoundError:
                logger.warning(JOB_GONE, job_id)
                finish = None

    def _send_finish(self, client: Client[bytes], finish: Request[None], outcome: str) -> None:
        try:
            client._run(finish)
            self.counts[outcome] += 1
        except BeanstalkdError as error:
            logger.warning("the server refused to finish a job: %r", error)
        except ClientConnectionError as error:
            logger.warning("connection lost before the last job was acknowledged: %s", error)

    def _lost(self, error: ClientConnectionError) -> None:
        self._log_lost(error)
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._reconnecting = True

    def _handle(
        self, client: Client[bytes], job_id: int, raw_body: bytes, tube: str | None
    ) -> Outcome:
        """Run the job's handler; return the command that finishes the job, and its outcome."""
        if tube is None:
            with self._client_lock:
                tube = str(client.stats_job(job_id)["tube"])
        # Typed as returning anything, as it may at run time: see the awaitable check below.
        handler: Callable[[WorkerJob], object] = self._handlers[tube]
        try:
            body = self.codec.decode(raw_body)
        except Exception as error:
            return self._undecodable_outcome(job_id, tube, error, self._actions.priority(job_id))
        job = WorkerJob(self._actions, job_id, tube, raw_body, body)
        self._running = job
        self._running_since = time.monotonic()
        try:
            result = handler(job)
        except ClientConnectionError:
            raise
        except Exception:
            return self._failure_outcome(job_id, tube, self._job_stats(job_id))
        finally:
            self._running = None
        if result is not None and inspect.isawaitable(result):
            return self._awaitable_outcome(job_id, tube, result, self._actions.priority(job_id))
        return job.outcome()

    # -- the watchdog ----------------------------------------------------------

    def _watch(self) -> None:
        """Touch long-running jobs; carry out a cold stop. Runs in its own thread.

        It looks every tenth of a second rather than being woken for each
        job, so a fast stream of short jobs costs it nothing.
        """
        job: WorkerJob | None = None
        touch_at = 0.0
        interval: float | None = None
        warned = False
        while not self._done.wait(_WATCH_PERIOD):
            running = self._running
            if running is None:
                job = None
                continue
            if running is not job:
                job, interval, warned = running, None, False
                touch_at = self._running_since + FIRST_TOUCH_CHECK
            if self._stop_requests >= 2:
                self._cold_stop(job)
            if self._stop_requests and not warned:
                warned = True
                logger.warning("stopping once job %d is done; stop again to give it back "
                               "and stop at once", job.id)
            now = time.monotonic()
            if self.auto_touch and now >= touch_at:
                if interval is None:
                    touch_at, interval = self._plan_touches(job, now)
                if interval is not None and now >= touch_at:
                    touch_at = now + interval if self._touch(job) else math.inf

    def _plan_touches(self, job: WorkerJob, now: float) -> tuple[float, float | None]:
        """When to first touch the job, and the interval after; never when it is gone."""
        try:
            stats = self._job_stats(job.id)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d: could not touch it (%s)", job.id, error)
            return math.inf, None
        first, interval = touch_plan(int(stats["ttr"]), int(stats["time-left"]))
        return now + first, interval

    def _touch(self, job: WorkerJob) -> bool:
        """Touch the job while its handler runs; False once it cannot be touched."""
        try:
            with self._client_lock:
                if self._running is not job:
                    return False
                self._client().touch(job.id)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d: could not touch it (%s)", job.id, error)
            return False
        logger.debug("job %d: touched, its handler is still running", job.id)
        return True

    def _cold_stop(self, job: WorkerJob) -> None:
        logger.warning("stopping at once: job %d goes back to the queue", job.id)
        connection = self._connection
        if connection is not None:
            connection.close()  # the server puts the job back, priority unchanged
        logging.shutdown()
        os._exit(128 + int(self._stop_signal))


__all__ = [
    "CODECS",
    "EXIT_OK",
    "BytesCodec",
    "Codec",
    "Handler",
    "JSONCodec",
    "Worker",
    "WorkerJob",
]
