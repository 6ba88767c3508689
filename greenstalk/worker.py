"""The consumer loop done once, carefully: :class:`Worker`.

A worker watches the tubes it has handlers for, reserves a job, decodes its
body, calls the tube's handler, and then:

* deletes the job when the handler returns (unless the handler released,
  buried or deleted it itself through the :class:`WorkerJob` it got);
* releases it with an exponential backoff delay when the handler raises,
  and buries it once it has been released ``max_releases`` times;
* buries at once a job whose body the codec cannot decode.

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
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from collections.abc import Mapping
from typing import Any, Callable, Generic, TypeVar

from ._address import TextAddress, address_from_environment, parse_address
from ._base import Address
from ._protocol import commands
from ._protocol.commands import Request
from ._protocol.errors import (
    BeanstalkdError,
    ClientConnectionError,
    DeadlineSoonError,
    NotFoundError,
    TimedOutError,
)
from .client import Client
from .codecs import CODECS, BytesCodec, Codec, JSONCodec, get_codec

logger = logging.getLogger("greenstalk.worker")

# How often the watchdog looks at the running handler, in seconds.
_WATCH_PERIOD = 0.1

# Logged when the server no longer knows a job the worker is finishing: its
# TTR ran out and another consumer took and deleted it, say.
JOB_GONE = "job %d is gone from the server (did its TTR run out?); nothing to acknowledge"

EXIT_OK = 0
""":meth:`Worker.run` returns this after a warm stop or a finished burst."""


# What finishes a job (its delete, release or bury), and the name of that outcome.
Outcome = tuple[Request[None], str]


class JobInHand:
    """What the sync and asyncio workers' jobs share: the fields, the decision, delete."""

    __slots__ = ("_decision", "body", "id", "raw_body", "tube")

    def __init__(self, job_id: int, tube: str, raw_body: bytes, body: Any) -> None:
        self.id = job_id
        self.tube = tube
        #: The body as it came from the server.
        self.raw_body = raw_body
        #: The body as the codec decoded it.
        self.body = body
        self._decision: Outcome | None = None

    def __repr__(self) -> str:
        return f"<WorkerJob id={self.id} tube={self.tube!r}>"

    def delete(self) -> None:
        """Delete the job when the handler returns (what happens anyway on success)."""
        self._decision = (commands.delete(self.id), "deleted")


class WorkerJob(JobInHand):
    """The job a handler gets: its id, tube and decoded body, and what it may do with it.

    ``release``, ``bury`` and ``delete`` decide what happens to the job when
    the handler returns (the last call wins); ``touch`` restarts its TTR now.
    """

    __slots__ = ("_worker",)

    def __init__(self, worker: Worker, job_id: int, tube: str, raw_body: bytes, body: Any) -> None:
        super().__init__(job_id, tube, raw_body, body)
        self._worker = worker

    def release(self, delay: int = 0, priority: int | None = None) -> None:
        """Put the job back when the handler returns, after ``delay`` seconds.

        ``priority`` None keeps the job's priority (asked of the server).
        """
        if priority is None:
            priority = self._worker._job_stats(self.id)["pri"]
        self._decision = (commands.release(self.id, priority, delay), "released")

    def bury(self, priority: int | None = None) -> None:
        """Bury the job when the handler returns (``priority`` None keeps it)."""
        if priority is None:
            priority = self._worker._job_stats(self.id)["pri"]
        self._decision = (commands.bury(self.id, priority), "buried")

    def touch(self) -> None:
        """Restart the job's TTR now. Raises NotFoundError if the job was lost."""
        with self._worker._client_lock:
            self._worker._client().touch(self.id)


Handler = Callable[[WorkerJob], object]


HandlerT = TypeVar("HandlerT", bound=Callable[..., object])


class WorkerBase(Generic[HandlerT]):
    """The settings and handler table the sync and asyncio workers share."""

    def __init__(
        self,
        address: Address | str | None = None,
        *,
        handlers: Mapping[str, HandlerT] | None = None,
        codec: str | Codec = "bytes",
        max_releases: int = 3,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        auto_touch: bool = True,
        reserve_slice: int = 1,
        socket_timeout: float | None = 30.0,
        reconnect_base: float = 0.5,
        reconnect_cap: float = 30.0,
    ) -> None:
        codec = get_codec(codec)
        if max_releases < 0 or backoff_base < 0 or backoff_cap < 0 or reserve_slice < 1:
            raise ValueError("max_releases, backoff_base and backoff_cap must be >= 0, "
                             "reserve_slice >= 1")
        #: Where the server is.
        self.address: Address | TextAddress = (
            address_from_environment() if address is None else _parse(address)
        )
        self.codec = codec
        self.max_releases = max_releases
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.auto_touch = auto_touch
        self.reserve_slice = reserve_slice
        self.socket_timeout = socket_timeout
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self._handlers: dict[str, HandlerT] = {}
        for tube, handler in (handlers or {}).items():
            self.add_handler(tube, handler)
        self._stop_requests = 0
        self._stop_signal = signal.SIGTERM
        self._reconnecting = False
        #: Counts of acknowledged jobs by outcome (and of handler failures), for logs and tests.
        self.counts = {"deleted": 0, "released": 0, "buried": 0, "failed": 0}
        self._init_state()

    def _init_state(self) -> None:
        """Set up what the worker keeps while it runs."""

    # -- set-up ------------------------------------------------------------

    def add_handler(self, tube: str, handler: HandlerT) -> None:
        """Handle jobs of ``tube`` with ``handler``. Raises ValueError for a bad tube name."""
        commands.check_tube(tube)
        self._handlers[tube] = handler

    def handler(self, tube: str) -> Callable[[HandlerT], HandlerT]:
        """Decorator: ``@worker.handler('emails')`` registers the function for that tube."""

        def register(handler: HandlerT) -> HandlerT:
            self.add_handler(tube, handler)
            return handler

        return register

    def stop(self, cold: bool = False) -> None:
        """Ask the worker to stop: after the current job, or at once when ``cold``.

        A cold stop while a handler runs gives its job back and ends the
        process (status 128 + the last stop signal's number, 143 without
        one), since a running handler cannot be interrupted otherwise. Safe
        from signal handlers and other threads.
        """
        self._stop_requests = max(self._stop_requests + 1, 2 if cold else 1)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_signal = signal.Signals(signum)
        self._stop_requests += 1

    def backoff(self, releases: int) -> int:
        """The delay, in whole seconds, of a release after ``releases`` earlier ones."""
        return math.ceil(min(self.backoff_cap, self.backoff_base * 2.0**releases))

    def _failure_outcome(self, job_id: int, tube: str, stats: Mapping[str, Any]) -> Outcome:
        """What to do with a job whose handler raised: release with backoff, or bury."""
        releases = int(stats["releases"])
        if releases >= self.max_releases:
            logger.exception("job %d in %r failed after %d release(s); burying it",
                             job_id, tube, releases)
            return commands.bury(job_id, stats["pri"]), "buried"
        delay = self.backoff(releases)
        logger.exception("job %d in %r failed; releasing it with a delay of %d s",
                         job_id, tube, delay)
        return commands.release(job_id, stats["pri"], delay), "released"


class Worker(WorkerBase[Handler]):
    """A consumer: handlers by tube, retries with backoff, auto-touch, graceful stops.

    ``address`` is where the server is (``host:port`` text is accepted; None
    means ``$BEANSTALKD_ADDRESS`` or 127.0.0.1:11300). ``handlers`` maps
    tube names to callables taking a :class:`WorkerJob`; more can be added
    with :meth:`handler`. ``codec`` is ``"bytes"``, ``"json"`` or a
    :class:`Codec`. A failed job is released with a delay of
    ``backoff_base * 2**releases`` seconds, at most ``backoff_cap``, and
    buried once it has been released ``max_releases`` times.

    Raises ValueError for invalid settings.
    """

    def _init_state(self) -> None:
        self._connection: Client[bytes] | None = None
        self._client_lock = threading.Lock()
        self._running: WorkerJob | None = None
        self._running_since = 0.0
        self._done = threading.Event()

    # -- the connection ----------------------------------------------------

    def _client(self) -> Client[bytes]:
        client = self._connection
        if client is None:
            raise ClientConnectionError("the worker is not connected")
        return client

    def _connect(self) -> Client[bytes]:
        """Connect, retrying with backoff until it works or a stop is asked for."""
        delay = self.reconnect_base
        attempt = 0
        while True:
            try:
                client: Client[bytes] = Client(
                    self.address,
                    watch=list(self._handlers),
                    socket_timeout=self.socket_timeout,
                )
            except ClientConnectionError as error:
                attempt += 1
                logger.warning("cannot connect to the server (attempt %d): %s; retrying in "
                               "%.1f s", attempt, error, delay)
                if self._sleep_unless_stopped(delay):
                    raise
                delay = min(delay * 2, self.reconnect_cap)
                continue
            if self._reconnecting:
                self._reconnecting = False
                logger.warning("connected again (after %d failed attempt(s)); watching %s",
                               attempt, ", ".join(self._handlers))
            return client

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
        handler is registered.
        """
        if not self._handlers:
            raise ValueError("the worker has no handler: add one with worker.handler(tube)")
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
        logger.info("worker stopped: %s", ", ".join(f"{v} {k}" for k, v in self.counts.items()))
        return EXIT_OK

    def _loop(self, burst: bool) -> None:
        finish: Request[None] | None = None
        outcome = ""
        single_tube = next(iter(self._handlers)) if len(self._handlers) == 1 else None
        timeout = 0 if burst else self.reserve_slice
        while True:
            if self._connection is None:
                try:
                    self._connection = self._connect()
                except ClientConnectionError:
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
        logger.warning("connection to the server lost (%s); a job in hand goes back to the "
                       "queue on the server and is not acknowledged; reconnecting", error)
        if self._connection is not None:
            self._connection.close()
        self._connection = None
        self._reconnecting = True

    def _handle(
        self, client: Client[bytes], job_id: int, raw_body: bytes, tube: str | None
    ) -> tuple[Request[None], str]:
        """Run the job's handler; return the command that finishes the job, and its outcome."""
        if tube is None:
            with self._client_lock:
                tube = str(client.stats_job(job_id)["tube"])
        handler = self._handlers[tube]
        try:
            body = self.codec.decode(raw_body)
        except Exception:
            logger.exception("job %d in %r: the body does not decode; burying it", job_id, tube)
            return commands.bury(job_id, self._job_stats(job_id)["pri"]), "buried"
        job = WorkerJob(self, job_id, tube, raw_body, body)
        self._running = job
        self._running_since = time.monotonic()
        try:
            handler(job)
        except ClientConnectionError:
            raise
        except Exception:
            return self._failed(job)
        finally:
            self._running = None
        return job._decision or (commands.delete(job_id), "deleted")

    def _failed(self, job: WorkerJob) -> Outcome:
        self.counts["failed"] += 1
        return self._failure_outcome(job.id, job.tube, self._job_stats(job.id))

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
                touch_at = self._running_since + 0.5
            if self._stop_requests >= 2:
                self._cold_stop(job)
            if self._stop_requests and not warned:
                warned = True
                logger.warning("stopping once job %d is done; stop again to give it back "
                               "and stop at once", job.id)
            now = time.monotonic()
            if self.auto_touch and now >= touch_at:
                interval = self._touch(job, interval)
                touch_at = math.inf if interval is None else now + interval

    def _touch(self, job: WorkerJob, interval: float | None) -> float | None:
        """Touch the job (first asking its TTR); returns when to touch again, None to stop."""
        try:
            if interval is None:
                stats = self._job_stats(job.id)
                ttr = int(stats["ttr"])
                interval = max(ttr - 1.0, ttr / 2)
                if int(stats["time-left"]) >= 1:
                    # Not yet inside the last second: touch when it comes.
                    return min(float(stats["time-left"]), interval)
            with self._client_lock:
                if self._running is not job:
                    return None
                self._client().touch(job.id)
            logger.debug("job %d: touched, its handler is still running", job.id)
            return interval
        except (NotFoundError, ClientConnectionError) as error:
            logger.warning("job %d: could not touch it (%s)", job.id, error)
            return None

    def _cold_stop(self, job: WorkerJob) -> None:
        logger.warning("stopping at once: job %d goes back to the queue", job.id)
        connection = self._connection
        if connection is not None:
            connection.close()  # the server puts the job back, priority unchanged
        logging.shutdown()
        os._exit(128 + int(self._stop_signal))


def _parse(address: Address | str) -> Address | TextAddress:
    """Text in the forms ``host:port`` and ``unix:PATH`` becomes an address; the rest stays."""
    if isinstance(address, str) and (
        address.startswith("unix:") or (":" in address and "/" not in address)
    ):
        return parse_address(address)
    return address


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
