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

Several servers: given a list of addresses, the worker runs the loop
above once per server, each in a thread of its own with its own
connection, sharing the handlers, codec, settings, counts and stop
requests. Each job is acknowledged on the server it came from, in the
write of that server's next reserve; up to one handler per server runs at
once; a server that goes away is reconnected to by its own loop while the
others keep working. A stop (warm or cold) applies to every loop.

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

from ._base import Address
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
    WorkerServer,
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
    """What a handler's :class:`WorkerJob` asks of its server's connection."""

    __slots__ = ("_server",)

    def __init__(self, server: _Server) -> None:
        self._server = server

    def priority(self, job_id: int) -> int:
        return int(self._server.job_stats(job_id)["pri"])

    def touch(self, job_id: int) -> None:
        with self._server.lock:
            self._server.client().touch(job_id)


class _Server(WorkerServer):
    """One server of a sync worker: its connection, and the job its loop has in hand."""

    __slots__ = ("actions", "connection", "interval", "lock", "running", "running_since",
                 "touch_at", "warned", "watched")

    def __init__(self, address: Address, several: bool) -> None:
        super().__init__(address, several)
        self.connection: Client[bytes] | None = None
        # Held for each command: the watchdog thread touches jobs on this connection too.
        self.lock = threading.Lock()
        self.actions = _ConnectionActions(self)
        self.running: WorkerJob | None = None
        self.running_since = 0.0
        # The watchdog's view of the running job: which it is, whether the stop was
        # announced, when to touch it next and how often after that.
        self.watched: WorkerJob | None = None
        self.warned = False
        self.touch_at = 0.0
        self.interval: float | None = None

    def client(self) -> Client[bytes]:
        client = self.connection
        if client is None:
            raise ClientConnectionError("the worker is not connected")
        return client

    def job_stats(self, job_id: int) -> dict[str, Any]:
        with self.lock:
            return dict(self.client().stats_job(job_id))


class Worker(WorkerBase[Handler]):
    """A consumer: handlers by tube, retries with backoff, auto-touch, graceful stops.

    ``address`` is where the server is (``host:port`` or ``unix:PATH`` text
    is accepted; None means ``$BEANSTALKD_ADDRESS``, else 127.0.0.1:11300),
    or a list of servers (or ``host:port,host:port`` text) to work for all
    of them: one loop a server, each in a thread of its own with its own
    connection, so up to one handler a server runs at once.
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

    Raises ValueError for invalid settings, addresses or tube names,
    TypeError for a handler that is not a plain function (a coroutine
    function belongs to :class:`greenstalk.aio.Worker`) or not callable at
    all.
    """

    def _init_state(self) -> None:
        self._servers: list[_Server] = []
        self._done = threading.Event()
        # Set when a server's loop failed: the other loops stop as for a warm stop.
        self._halted = False

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

    def _connect(self, server: _Server, burst: bool) -> Client[bytes] | None:
        """Connect, retrying with backoff until it works; None when a stop came first.

        In a burst the first failure raises ClientConnectionError instead.
        """
        attempt = 0
        for delay in self._reconnect_delays():
            try:
                client: Client[bytes] = Client(
                    server.address,
                    watch=list(self._handlers),
                    socket_timeout=self.socket_timeout,
                )
            except ClientConnectionError as error:
                if burst:
                    raise self._burst_connect_error(server, error) from error
                attempt += 1
                self._log_connect_failure(server, attempt, error, delay)
                if self._sleep_unless_stopped(delay):
                    return None
                continue
            self._log_connected(server, attempt)
            return client
        raise AssertionError("the reconnect delays never end")

    def _sleep_unless_stopped(self, seconds: float) -> bool:
        """Sleep, waking early for a stop; True when a stop was asked for."""
        deadline = time.monotonic() + seconds
        while not (self._stop_requests or self._halted):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.1))
        return True

    # -- the loop ------------------------------------------------------------

    def run(self, burst: bool = False) -> int:
        """Work until stopped; with ``burst``, until no job is ready. Returns the exit code.

        With several servers, each has a loop of its own, in a thread; a
        burst ends once every server has no job ready. Installs SIGTERM and
        SIGINT handlers when called from the main thread (and restores the
        previous ones on return). Raises ValueError when no handler is
        registered or an address is not one. A burst that cannot connect to
        a server raises :class:`~greenstalk.ClientConnectionError` naming it
        (once the other servers' loops have finished their jobs in hand);
        otherwise the worker retries the connection until it works or is
        stopped.
        """
        self._check_runnable()
        addresses = self.addresses
        logger.info(self._banner(burst, addresses))
        several = len(addresses) > 1
        self._servers = [_Server(address, several) for address in addresses]
        self._halted = False
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        self._done.clear()
        watchdog = threading.Thread(target=self._watch, name="greenstalk-worker-watchdog",
                                    daemon=True)
        watchdog.start()
        try:
            if several:
                self._run_threads(burst)
            else:
                self._loop(self._servers[0], burst)
        finally:
            self._done.set()
            watchdog.join()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for server in self._servers:
                if server.connection is not None:
                    server.connection.close()
                    server.connection = None
        logger.info(self._stopped_line())
        return EXIT_OK

    def _run_threads(self, burst: bool) -> None:
        """Run each server's loop in a thread of its own; raise what the first that failed raised.

        The other loops then stop as for a warm stop: their jobs in hand are
        finished and acknowledged first.
        """
        failures: list[BaseException] = []

        def serve(server: _Server) -> None:
            try:
                self._loop(server, burst)
            except BaseException as error:
                failures.append(error)
                self._halted = True

        threads = [
            threading.Thread(target=serve, args=(server,), daemon=True,
                             name=f"greenstalk-worker {server.name}")
            for server in self._servers
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()  # a signal still reaches its handler meanwhile
        if failures:
            raise failures[0]

    def _loop(self, server: _Server, burst: bool) -> None:
        finish: Request[None] | None = None
        outcome = ""
        single_tube = next(iter(self._handlers)) if len(self._handlers) == 1 else None
        timeout = 0 if burst else self.reserve_slice
        # With one server this thread alone counts: no lock on the way of every job.
        shared_counts = len(self._servers) > 1
        while True:
            if server.connection is None:
                server.connection = self._connect(server, burst)
                if server.connection is None:
                    return  # a stop came while reconnecting
            client = server.connection
            if self._stop_requests or self._halted:
                if finish is not None:
                    with server.lock:
                        self._send_finish(client, finish, outcome)
                return
            try:
                with server.lock:
                    finished, reserved = client._finish_and_reserve(finish, timeout)
            except ClientConnectionError as error:
                self._lost(server, error)
                finish = None
                continue
            if finished is not None:
                logger.warning("the server refused to finish a job%s: %r", server.label,
                               finished)
            elif finish is not None:
                if shared_counts:
                    self._count(outcome)
                else:
                    self.counts[outcome] += 1
            finish = None
            if isinstance(reserved, TimedOutError):
                if burst:
                    return
                continue
            if isinstance(reserved, DeadlineSoonError):
                continue
            if isinstance(reserved, BeanstalkdError):
                logger.error("reserve failed%s: %r", server.label, reserved)
                if self._sleep_unless_stopped(1):
                    return
                continue
            job_id, raw_body = reserved
            try:
                finish, outcome = self._handle(server, client, job_id, raw_body, single_tube)
            except ClientConnectionError as error:
                self._lost(server, error)
                finish = None
            except NotFoundError:
                logger.warning(JOB_GONE, job_id, server.label)
                finish = None

    def _send_finish(self, client: Client[bytes], finish: Request[None], outcome: str) -> None:
        try:
            client._run(finish)
            self._count(outcome)
        except BeanstalkdError as error:
            logger.warning("the server refused to finish a job: %r", error)
        except ClientConnectionError as error:
            logger.warning("connection lost before the last job was acknowledged: %s", error)

    def _lost(self, server: _Server, error: ClientConnectionError) -> None:
        self._log_lost(server, error)
        if server.connection is not None:
            server.connection.close()
        server.connection = None
        server.reconnecting = True

    def _handle(
        self, server: _Server, client: Client[bytes], job_id: int, raw_body: bytes,
        tube: str | None,
    ) -> Outcome:
        """Run the job's handler; return the command that finishes the job, and its outcome."""
        if tube is None:
            with server.lock:
                tube = str(client.stats_job(job_id)["tube"])
        # Typed as returning anything, as it may at run time: see the awaitable check below.
        handler: Callable[[WorkerJob], object] = self._handlers[tube]
        try:
            body = self.codec.decode(raw_body)
        except Exception as error:
            return self._undecodable_outcome(job_id, tube, error,
                                             server.actions.priority(job_id), server.label)
        job = WorkerJob(server.actions, job_id, tube, raw_body, body, server.where)
        server.running_since = time.monotonic()
        server.running = job
        try:
            result = handler(job)
        except ClientConnectionError:
            raise
        except Exception:
            return self._failure_outcome(job_id, tube, server.job_stats(job_id), server.label)
        finally:
            server.running = None
        if result is not None and inspect.isawaitable(result):
            return self._awaitable_outcome(job_id, tube, result, server.actions.priority(job_id),
                                           server.label)
        return job.outcome()

    # -- the watchdog ----------------------------------------------------------

    def _watch(self) -> None:
        """Touch long-running jobs; carry out a cold stop. Runs in its own thread.

        It looks every tenth of a second rather than being woken for each
        job, so a fast stream of short jobs costs it nothing.
        """
        while not self._done.wait(_WATCH_PERIOD):
            for server in self._servers:
                self._watch_job(server)

    def _watch_job(self, server: _Server) -> None:
        """Look at the job ``server``'s loop has in hand: touch it, announce or carry out a stop."""
        job = server.running
        if job is None:
            server.watched = None
            return
        if job is not server.watched:
            server.watched, server.interval, server.warned = job, None, False
            server.touch_at = server.running_since + FIRST_TOUCH_CHECK
        if self._stop_requests >= 2:
            self._cold_stop()
        if self._stop_requests and not server.warned:
            server.warned = True
            logger.warning("stopping once job %d%s is done; stop again to give it back "
                           "and stop at once", job.id, server.label)
        now = time.monotonic()
        if self.auto_touch and now >= server.touch_at:
            if server.interval is None:
                server.touch_at, server.interval = self._plan_touches(server, job, now)
            if server.interval is not None and now >= server.touch_at:
                touched = self._touch(server, job)
                server.touch_at = now + server.interval if touched else math.inf

    def _plan_touches(
        self, server: _Server, job: WorkerJob, now: float
    ) -> tuple[float, float | None]:
        """When to first touch the job, and the interval after; never when it is gone."""
        try:
            stats = server.job_stats(job.id)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d%s: could not touch it (%s)", job.id, server.label, error)
            return math.inf, None
        first, interval = touch_plan(int(stats["ttr"]), int(stats["time-left"]))
        return now + first, interval

    def _touch(self, server: _Server, job: WorkerJob) -> bool:
        """Touch the job while its handler runs; False once it cannot be touched."""
        try:
            with server.lock:
                if server.running is not job:
                    return False
                server.client().touch(job.id)
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d%s: could not touch it (%s)", job.id, server.label, error)
            return False
        logger.debug("job %d%s: touched, its handler is still running", job.id, server.label)
        return True

    def _cold_stop(self) -> None:
        """Close every connection, which gives back the jobs in hand, and end the process."""
        held = [f"{job.id}{server.label}" for server in self._servers
                if (job := server.running) is not None]
        if len(held) == 1:
            logger.warning("stopping at once: job %s goes back to the queue", held[0])
        else:
            logger.warning("stopping at once: jobs %s go back to their queues", ", ".join(held))
        for server in self._servers:
            connection = server.connection
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
