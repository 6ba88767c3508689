"""The thread that owns a channel's reserving connection.

beanstalkd lets only the connection that reserved a job delete, release,
bury or touch it, and a connection waiting in ``reserve`` answers nothing
else until the reserve returns. Celery acknowledges from pool threads, the
event loop and result handlers, so one thread owns the connection: it
reserves, touches what it holds, and runs every other thread's requests,
which they queue with :meth:`Reserver.post`. When it is waiting in a
reserve, a request wakes it by putting a job into a tube only it watches
(its wake tube): no polling, and an acknowledgement goes out at once.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future
from time import monotonic
from typing import Any, Callable, NamedTuple

from kombu.utils.json import loads

import greenstalk

logger = logging.getLogger("greenstalk.kombu")

# Key of the job body's own object: the queue, priority and TTR it was put with.
META = "greenstalk"

# Seconds a stopping reserver gets to hand its jobs back before the channel gives up on it.
_STOP_GRACE = 10.0


class Finish(enum.Enum):
    """What to do with a reserved job once the application is done with it."""

    DELETE = "delete"
    RELEASE = "release"
    BURY = "bury"


class Reserved(NamedTuple):
    """A job the reserver holds, with the kombu message in its body."""

    reserver: Reserver
    job_id: int
    queue: str
    payload: dict[str, Any]
    priority: int


class _Held:
    """A job held by the reserving connection: its priority, TTR and next touch."""

    __slots__ = ("due", "priority", "ttr")

    def __init__(self, priority: int, ttr: int, now: float) -> None:
        self.priority = priority
        self.ttr = ttr
        self.due = now + touch_interval(ttr)


def touch_interval(ttr: int) -> float:
    """Seconds between touches of a held job with this TTR: half of it, so a late touch
    still comes in time (beanstalkd answers a waiting reserve with DEADLINE_SOON in
    the last second)."""
    return max(ttr / 2, 0.5)


def decode(job: greenstalk.Job[bytes]) -> tuple[str, dict[str, Any], int, int] | None:
    """The queue, kombu payload, priority and TTR in a job's body; None if it holds no message."""
    try:
        payload = loads(job.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict):
        return None
    meta = payload.pop(META, None)
    properties = payload.get("properties")
    if not (isinstance(meta, dict) and isinstance(properties, dict)):
        return None
    queue, priority, ttr = meta.get("queue"), meta.get("priority"), meta.get("ttr")
    if not (isinstance(queue, str) and isinstance(priority, int) and isinstance(ttr, int)):
        return None
    return queue, payload, priority, ttr


class Reserver:
    """Owns one reserving connection in a thread of its own; every method is thread-safe.

    ``hand_over`` receives each reserved job (a :class:`Reserved`), or the
    connection error that ended the thread. ``wake`` puts a wake-up job
    into ``wake_tube`` on another connection. ``body`` is what wake-up jobs
    hold.
    """

    def __init__(
        self,
        client: greenstalk.Client[bytes],
        *,
        wake_tube: str,
        wake_body: bytes,
        wake: Callable[[str, bytes], None],
        hand_over: Callable[[Reserved | BaseException], None],
        limit: int,
        name: str,
    ) -> None:
        self._client = client
        self._wake_tube = wake_tube
        self._wake_body = wake_body
        self._wake = wake
        self._hand_over = hand_over
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # Guarded by _lock: the queued requests, the read-ahead and its
        # limits, and the state of the wait.
        self._requests: deque[Callable[[], None]] = deque()
        self._limit = limit
        self._undelivered = 0
        self._wanted: frozenset[str] = frozenset()
        self._waiting = False
        self._wakes = 0
        self._stopping = False
        # The thread's own: the jobs held, the tubes watched and used.
        self._held: dict[int, _Held] = {}
        self._watching: set[str] = set()
        self._using = greenstalk.DEFAULT_TUBE
        #: The error that ended the thread, if one did.
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # -- any thread ---------------------------------------------------------

    def post(self, request: Callable[[], None]) -> bool:
        """Queue ``request`` to run on the reserver's thread; False if the thread has ended."""
        with self._lock:
            if not self._thread.is_alive() or self._stopping:
                return False
            self._requests.append(request)
            wake = self._must_wake()
        self._send_wake(wake)
        return True

    def finish(self, job_id: int, how: Finish, priority: int) -> None:
        """Delete, release (with ``priority``) or bury a job this connection reserved."""

        def run() -> None:
            self._held.pop(job_id, None)
            try:
                if how is Finish.DELETE:
                    self._client.delete(job_id)
                elif how is Finish.RELEASE:
                    self._client.release(job_id, priority)
                else:
                    self._client.bury(job_id, priority)
            except greenstalk.NotFoundError:
                logger.warning(
                    "job %d is no longer reserved by this worker (did its TTR run out?): "
                    "it could not be %s", job_id, _PAST[how]
                )

        if not self.post(run):
            logger.warning(
                "job %d cannot be %s: its connection is closed, and the server put it back "
                "when it closed", job_id, _PAST[how]
            )

    def consume(self, tubes: Iterable[str]) -> None:
        """Reserve from exactly these tubes from now on (none: stop reserving)."""
        wanted = frozenset(tubes)
        with self._lock:
            self._wanted = wanted
        self.post(lambda: self._watch(wanted))

    def set_limit(self, limit: int) -> None:
        """Hold at most ``limit`` unfinished jobs (0: read one ahead of the consumer)."""
        with self._lock:
            self._limit = limit
            self._changed.notify()

    def delivered(self) -> None:
        """Note that the consumer took one of the jobs handed over."""
        with self._lock:
            self._undelivered -= 1
            if self._undelivered == 0:
                self._changed.notify()

    def get(self, tube: str) -> Reserved | None:
        """Reserve the next ready job of ``tube`` now, or return None when it has none.

        Raises the connection error that ended the thread, if one did.
        """
        result: Future[Reserved | None] = Future()

        def run() -> None:
            try:
                result.set_result(self._get(tube))
            except BaseException as error:
                result.set_exception(error)
                raise

        if not self.post(run):
            raise self._ended()
        return result.result()

    def stop(self) -> None:
        """Hand back every job still held, close the connection and end the thread."""
        with self._lock:
            self._stopping = True
            self._changed.notify()
            wake = self._must_wake()
        self._send_wake(wake)
        self._thread.join(_STOP_GRACE)
        if self._thread.is_alive():
            logger.warning("the reserving connection did not close in time")

    def forget_after_fork(self) -> None:
        """In a child process: drop the parent's connection, which the thread (gone here) owns.

        Closing the child's copy of the socket leaves the parent's alone, and
        lets the server see the connection close when the parent dies, even
        while the child lives on (Celery's prefork pool forks new children
        from a worker that is connected).
        """
        self._client.close()
        self.error = greenstalk.ClientConnectionError("the reserver belongs to the parent process")

    def check(self) -> None:
        """Raise ClientConnectionError if the connection failed (and the thread ended)."""
        if self.error is not None:
            raise self._ended()

    def _ended(self) -> greenstalk.ClientConnectionError:
        error = greenstalk.ClientConnectionError(
            f"the connection reserving jobs failed: {self.error or 'it was closed'}"
        )
        error.__cause__ = self.error
        return error

    def _must_wake(self) -> bool:
        """Under the lock: whether the thread waits in a reserve that no wake-up will end yet."""
        if self._waiting and self._wakes == 0:
            self._wakes += 1
            return True
        self._changed.notify()
        return False

    def _send_wake(self, wake: bool) -> None:
        if not wake:
            return
        try:
            self._wake(self._wake_tube, self._wake_body)
        except greenstalk.Error as error:
            # The reserve ends with the connection, or with the next job.
            logger.warning("could not wake the reserving connection: %s", error)
            with self._lock:
                self._wakes -= 1

    # -- the reserver's thread ----------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except greenstalk.ClientConnectionError as error:
            self.error = error
            with self._lock:
                self._stopping = True
                abandoned = list(self._requests)
                self._requests.clear()
            self._fail_requests(abandoned)
            self._hand_over(error)
        except BaseException as error:  # a bug: say so, and end like a dead connection
            logger.exception("the reserving connection's thread failed")
            self.error = error
            self._hand_over(greenstalk.ClientConnectionError(f"reserver failed: {error!r}"))
        finally:
            self._client.close()

    def _fail_requests(self, requests: list[Callable[[], None]]) -> None:
        # A get() waiting on one of them must not wait forever: run each
        # against the closed connection, which fails at once.
        for request in requests:
            with contextlib.suppress(greenstalk.ClientConnectionError):
                request()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while True:
                    requests = list(self._requests)
                    self._requests.clear()
                    if requests or self._stopping:
                        break
                    if self._may_reserve():
                        self._waiting = True
                        break
                    wait = self._until_touch()
                    if wait is not None and wait <= 0:
                        break
                    self._changed.wait(wait)
                reserve = self._waiting
                stopping = self._stopping and not requests
            for request in requests:
                request()
            if stopping:
                self._hand_back()
                return
            self._touch_due()
            if reserve:
                self._reserve()

    def _may_reserve(self) -> bool:
        if not self._wanted:
            return False
        if self._limit:
            return len(self._held) < self._limit
        return self._undelivered == 0

    def _until_touch(self) -> float | None:
        if not self._held:
            return None
        return min(held.due for held in self._held.values()) - monotonic()

    def _reserve(self) -> None:
        wait = self._until_touch()
        try:
            try:
                job = self._client.reserve(None if wait is None else max(math.ceil(wait), 0))
            finally:
                with self._lock:
                    self._waiting = False
        except greenstalk.TimedOutError:
            return
        except greenstalk.DeadlineSoonError:
            self._touch(list(self._held))
            return
        self._take(job, hand_over=True)

    def _take(self, job: greenstalk.Job[bytes], *, hand_over: bool) -> Reserved | None:
        """Hold a reserved job and return it (handed over to the consumer, when asked).

        A wake-up is deleted; a job that holds no kombu message is buried
        where people can look at it. Both give None.
        """
        if job.body == self._wake_body:
            self._client.delete(job)
            with self._lock:
                self._wakes -= 1
            return None
        decoded = decode(job)
        if decoded is None:
            priority = self._client.stats_job(job)["pri"]
            self._client.bury(job, priority)
            logger.error(
                "job %d holds no kombu message (it was not put by greenstalk.kombu): "
                "buried; look at it with `greenstalk peek %d`", job.id, job.id
            )
            return None
        queue, payload, priority, ttr = decoded
        self._held[job.id] = _Held(priority, ttr, monotonic())
        reserved = Reserved(self, job.id, queue, payload, priority)
        if hand_over:
            with self._lock:
                self._undelivered += 1
            self._hand_over(reserved)
        return reserved

    def _get(self, tube: str) -> Reserved | None:
        if self._using != tube:
            self._client.use(tube)
            self._using = tube
        while True:
            try:
                ready = self._client.peek_ready()
            except greenstalk.NotFoundError:
                return None
            try:
                job = self._client.reserve_job(ready)
            except greenstalk.NotFoundError:  # another consumer took it first
                continue
            reserved = self._take(job, hand_over=False)
            if reserved is not None:
                return reserved

    def _watch(self, tubes: frozenset[str]) -> None:
        for tube in sorted(tubes - self._watching):
            self._client.watch(tube)
        for tube in sorted(self._watching - tubes):
            self._client.ignore(tube)
        self._watching = set(tubes)

    def _touch_due(self) -> None:
        now = monotonic()
        due = [job_id for job_id, held in self._held.items() if held.due <= now]
        if due:
            self._touch(due)

    def _touch(self, job_ids: list[int]) -> None:
        for job_id in job_ids:
            held = self._held[job_id]
            try:
                self._client.touch(job_id)
            except greenstalk.NotFoundError:
                logger.warning(
                    "job %d was taken back by the server before it could be touched "
                    "(its TTR of %d s ran out): it will run again", job_id, held.ttr
                )
                del self._held[job_id]
                continue
            held.due = monotonic() + touch_interval(held.ttr)

    def _hand_back(self) -> None:
        """Release every job still held, and delete wake-ups nobody will reserve."""
        for job_id, held in list(self._held.items()):
            with contextlib.suppress(greenstalk.NotFoundError):
                self._client.release(job_id, held.priority)
        self._held.clear()
        with self._lock:
            wakes = self._wakes
        if wakes:
            self._watch(frozenset())
            while True:
                try:
                    job = self._client.reserve(0)
                except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                    break
                self._client.delete(job)  # the wake tube holds nothing else


_PAST = {Finish.DELETE: "deleted", Finish.RELEASE: "released", Finish.BURY: "buried"}
