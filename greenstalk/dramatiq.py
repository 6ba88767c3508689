"""Dramatiq on beanstalkd: :class:`BeanstalkBroker`.

Each Dramatiq queue is a tube (``dramatiq.`` + the queue's name by default)
and each message a job, and Dramatiq's verbs map onto beanstalkd's own:

* ``enqueue(message, delay=ms)`` puts a job, delayed by the server (no delay
  queues);
* ``ack`` deletes the job, ``nack`` buries it (the dead letters stay in the
  tube, where ``kick`` brings them back), ``requeue`` releases it;
* ``join`` watches ``stats-tube`` until nothing is ready, delayed or reserved;
* a message's priority is the job's priority.

A consumer holds its prefetched messages as reserved jobs, and only the
connection that reserved a job may delete, release or bury it. Dramatiq
acknowledges from its worker threads while the consumer thread waits for the
next job, so a consumer keeps several connections: it waits for new jobs
only on one that holds no job, and a connection that holds jobs is only ever
busy for quick commands. A worker thread therefore acknowledges on the job's
own connection at once, without waiting for a reserve to time out and
without polling; and, in the same turn on that connection, it reserves the
next ready job for the consumer thread (in the prefetch slot it just freed),
so that under load the round trips are spread over the worker threads
instead of queueing in the one consumer thread. A thread of the broker
touches the jobs held longer than half their TTR, so prefetched messages are
not handed out twice while they wait for a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Callable, cast
from urllib.parse import urlsplit

import dramatiq
from dramatiq.errors import ConnectionClosed, DecodeError, QueueJoinTimeout, QueueNotFound
from dramatiq.message import Message

from . import (
    DEFAULT_PRIORITY,
    Address,
    Client,
    ClientConnectionError,
    DeadlineSoonError,
    Job,
    NotFoundError,
    TimedOutError,
    address_from_environment,
    parse_address,
)

logger = logging.getLogger("greenstalk.dramatiq")

#: The message option (or actor option) that sets a message's job priority:
#: 0 (most urgent) to 2**32-1, as beanstalkd has it.
PRIORITY_OPTION = "beanstalk_priority"

_MAX_PRIORITY = 2**32 - 1
# Dramatiq's exceptions take their message untyped.
_closed = cast("Callable[[object], ConnectionClosed]", ConnectionClosed)
_not_found = cast("Callable[[str], QueueNotFound]", QueueNotFound)
_join_timeout = cast("Callable[[str], QueueJoinTimeout]", QueueJoinTimeout)
# beanstalkd's tube names: up to 200 bytes of these, not starting with a hyphen.
_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def address_from_url(url: str) -> Address:
    """The server address of a ``beanstalk://HOST:PORT`` (or ``beanstalk:///SOCKET/PATH``) URL.

    The port defaults to 11300. Raises ValueError for another scheme, a
    URL without a host or path, or a list of servers.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme != "beanstalk":
        raise ValueError(f"{url!r} is not a beanstalk:// URL (beanstalk://HOST:PORT)")
    if "," in parts.netloc:
        raise ValueError(
            f"{url!r} names several servers; BeanstalkBroker takes one: beanstalk://HOST:PORT"
        )
    if parts.netloc:
        return parse_address(parts.netloc)
    if parts.path:
        return parts.path
    raise ValueError(f"{url!r} names no server: write beanstalk://HOST:PORT or beanstalk:///PATH")


class BeanstalkBroker(dramatiq.Broker):
    """A Dramatiq broker for beanstalkd (or greenstalkd).

    ``url`` is ``beanstalk://HOST:PORT`` (``beanstalk:///PATH`` for a Unix
    socket); ``address`` may be given instead, as :class:`greenstalk.Client`
    takes it; without either the broker uses ``$BEANSTALKD_ADDRESS``, else
    127.0.0.1:11300. Queue ``name`` lives in tube ``tube_prefix + name``.
    ``ttr`` is the jobs' time to run in seconds: the longest a job stays
    reserved by a consumer that stopped answering (a live consumer keeps
    touching its jobs). ``socket_timeout`` bounds every command. Delays are
    rounded up to whole seconds.

    Nothing connects until the first message is sent or consumed. Raises
    ValueError or TypeError for bad arguments.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        address: Address | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
        tube_prefix: str = "dramatiq.",
        ttr: int = 60,
        socket_timeout: float = 30.0,
    ) -> None:
        if url is not None and address is not None:
            raise TypeError("give url or address, not both")
        if isinstance(ttr, bool) or not isinstance(ttr, int) or not 1 <= ttr <= _MAX_PRIORITY:
            raise ValueError(f"ttr must be a whole number of seconds from 1 to 2**32-1: {ttr!r}")
        if not isinstance(tube_prefix, str):
            raise TypeError(f"tube_prefix must be a str, not {type(tube_prefix).__name__}")
        if not socket_timeout > 0:
            raise ValueError(f"socket_timeout must be > 0: {socket_timeout!r}")
        super().__init__(middleware=middleware)
        if address is not None:
            self.address: Address = address
        elif url is not None:
            self.address = address_from_url(url)
        else:
            self.address = address_from_environment()
        self.tube_prefix = tube_prefix
        self.ttr = ttr
        self.socket_timeout = socket_timeout
        self.queues: set[str] = set()
        self.actor_options.add(PRIORITY_OPTION)
        self._producers = _Producers(self)
        self._keeper = _Keeper(ttr)

    def __repr__(self) -> str:
        return f"<BeanstalkBroker {self.address!r}>"

    # -- connections -------------------------------------------------------

    def connect(self) -> Client[bytes]:
        """A new connection to the server. Raises ConnectionClosed when it cannot be made."""
        try:
            return Client(self.address, socket_timeout=self.socket_timeout,
                          socket_connect_timeout=self.socket_timeout)
        except ClientConnectionError as error:
            raise _closed(error) from error

    def tube(self, queue_name: str) -> str:
        """The tube of ``queue_name``. Raises ValueError when beanstalkd would refuse it."""
        tube = self.tube_prefix + queue_name
        if not _TUBE_NAME.fullmatch(tube):
            raise ValueError(
                f"queue {queue_name!r} makes tube {tube!r}, which beanstalkd refuses: up to "
                "200 characters of letters, digits and -+/;.$_(), not starting with -"
            )
        return tube

    def close(self) -> None:
        """Close every connection of the broker; reserved jobs go back to their tubes."""
        self._keeper.stop()
        self._producers.close()

    # -- declaring ---------------------------------------------------------

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue (again is a no-op). Raises ValueError for a name no tube can have."""
        if queue_name in self.queues:
            return
        self.tube(queue_name)
        self.emit_before("declare_queue", queue_name)
        self.queues.add(queue_name)
        self.emit_after("declare_queue", queue_name)

    def get_declared_queues(self) -> set[str]:
        """The names of the declared queues."""
        return self.queues.copy()

    def get_declared_delay_queues(self) -> set[str]:
        """An empty set: beanstalkd delays jobs itself, so there are no delay queues."""
        return set()

    # -- producing -----------------------------------------------------------

    def priority(self, message: Message[Any]) -> int:
        """The job priority of ``message``.

        The message's ``beanstalk_priority`` option, else its actor's, else
        the default priority (2**16) plus the actor's ``priority``, so that
        Dramatiq's order among actors holds on the server too. Raises
        ValueError for an option out of range.
        """
        priority = message.options.get(PRIORITY_OPTION)
        actor = self.actors.get(message.actor_name)
        if priority is None and actor is not None:
            priority = actor.options.get(PRIORITY_OPTION)
        if priority is None:
            offset = actor.priority if actor is not None else 0
            return min(max(DEFAULT_PRIORITY + offset, 0), _MAX_PRIORITY)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValueError(f"{PRIORITY_OPTION} must be an int, not {priority!r}")
        if not 0 <= priority <= _MAX_PRIORITY:
            raise ValueError(f"{PRIORITY_OPTION} must be from 0 to 2**32-1, not {priority}")
        return priority

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Put ``message`` in its queue's tube, ``delay`` milliseconds from now (rounded up to s).

        Returns the message as sent (its ``beanstalk_priority`` option set).
        A put whose reply is lost is sent once more on a new connection (at
        least once). Raises ValueError for a negative delay or a bad
        priority, ConnectionClosed when the server cannot be reached, and
        :class:`greenstalk.JobTooBigError` for a message over the server's
        job size limit.
        """
        tube = self.tube(message.queue_name)
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0 milliseconds: {delay}")
        seconds = 0 if delay is None else math.ceil(delay / 1000)
        message = message.copy(options={PRIORITY_OPTION: self.priority(message)})
        logger.debug("enqueueing message %s on %r", message.message_id, tube)
        self.emit_before("enqueue", message, delay)
        body = message.encode()
        self._producers.put(tube, body, message.options[PRIORITY_OPTION], seconds)
        self.emit_after("enqueue", message, delay)
        return message

    # -- consuming -----------------------------------------------------------

    def consume(
        self, queue_name: str, prefetch: int = 1, timeout: int = 30000
    ) -> dramatiq.Consumer:
        """A consumer of ``queue_name`` holding up to ``prefetch`` jobs, idle after ``timeout`` ms.

        Raises QueueNotFound for a queue that was not declared.
        """
        if queue_name not in self.queues:
            raise _not_found(queue_name)
        return _Consumer(self, queue_name, prefetch, timeout)

    # -- inspecting ----------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        """Delete the ready, delayed and buried jobs of a queue.

        Jobs reserved by a consumer cannot be deleted by another connection:
        they stay. Raises ConnectionClosed when the server cannot be reached.
        """
        tube = self.tube(queue_name)
        with self._producers.client(tube) as client:
            for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
                while True:
                    try:
                        job = peek()
                    except NotFoundError:
                        break
                    # NotFoundError: a consumer reserved it meanwhile.
                    with contextlib.suppress(NotFoundError):
                        client.delete(job)

    def flush_all(self) -> None:
        """Flush every declared queue."""
        for queue_name in self.queues:
            self.flush(queue_name)

    def join(
        self, queue_name: str, *, interval: int = 100, timeout: int | None = None
    ) -> None:
        """Wait until the queue has no ready, delayed or reserved job (buried ones are done).

        Looks every ``interval`` milliseconds; raises QueueJoinTimeout after
        ``timeout`` milliseconds (None: no limit), ConnectionClosed when the
        server cannot be reached. Meant for tests.
        """
        tube = self.tube(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            if self.outstanding(tube) == 0:
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise _join_timeout(queue_name)
            time.sleep(interval / 1000)

    def outstanding(self, tube: str) -> int:
        """How many jobs of ``tube`` are ready, delayed or reserved."""
        with self._producers.client() as client:
            try:
                stats = client.stats_tube(tube)
            except NotFoundError:  # beanstalkd forgets an empty tube nobody uses
                return 0
        return int(
            stats["current-jobs-ready"]
            + stats["current-jobs-delayed"]
            + stats["current-jobs-reserved"]
        )


class _Producers:
    """Connections for puts and inspection, shared by threads: each takes one and gives it back."""

    def __init__(self, broker: BeanstalkBroker) -> None:
        self._broker = broker
        self._lock = threading.Lock()
        # Idle connections, and the tube each uses.
        self._idle: list[tuple[Client[bytes], str]] = []

    @contextlib.contextmanager
    def client(self, tube: str | None = None) -> Iterator[Client[bytes]]:
        """A connection for the ``with`` block, using ``tube`` (None: any tube).

        A connection that failed (the client closes it) is not given back.
        Raises ConnectionClosed for a connection that cannot be made or fails.
        """
        with self._lock:
            client, used = self._idle.pop() if self._idle else (None, "default")
        try:
            if client is None:
                client = self._broker.connect()
            if tube is not None and used != tube:
                client.use(tube)
                used = tube
            yield client
        except ClientConnectionError as error:
            raise _closed(error) from error
        finally:
            if client is not None and not client.closed:
                with self._lock:
                    self._idle.append((client, used))

    def put(self, tube: str, body: bytes, priority: int, delay: int) -> int:
        """Put a job; once more on a new connection when the first one fails. Returns its id.

        Raises ConnectionClosed when the second attempt fails too.
        """
        try:
            with self.client(tube) as client:
                return client.put(body, priority=priority, delay=delay, ttr=self._broker.ttr)
        except ConnectionClosed as error:
            logger.warning("put into %r failed (%s); trying once more on a new connection",
                           tube, error)
        with self.client(tube) as client:
            return client.put(body, priority=priority, delay=delay, ttr=self._broker.ttr)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client, _ in idle:
            client.close()


class _Holder:
    """One connection of a consumer, and the jobs it holds reserved (id -> last reserve or touch).

    Its lock is held for every command on it: worker threads settling and
    reserving, the keeper touching and the consumer thread reserving take
    turns.
    """

    __slots__ = ("client", "consumer", "held", "lock", "retiring")

    def __init__(self, consumer: _Consumer, client: Client[bytes]) -> None:
        self.consumer = consumer
        self.client = client
        self.lock = threading.Lock()
        self.held: dict[int, float] = {}
        # Closed once its last job is settled (its consumer was closed).
        self.retiring = False

    def touch_older(self, before: float) -> None:
        """Touch the held jobs last reserved or touched before ``before`` (monotonic time)."""
        if not self.held:
            return  # perhaps waiting in a reserve: nothing to touch, nothing to send
        with self.lock:
            if self.client.closed:
                return  # the server put the jobs back when the connection failed
            for job_id, since in list(self.held.items()):
                if since > before:
                    continue
                try:
                    self.client.touch(job_id)
                except NotFoundError:
                    logger.warning("job %d: no longer reserved by this consumer (did its TTR "
                                   "run out?); its message may run twice", job_id)
                    self.held[job_id] = math.inf  # not touched again; the ack still tries
                    continue
                except ClientConnectionError as error:
                    logger.warning("touching held jobs failed: %s; the server puts them back",
                                   error)
                    return
                self.held[job_id] = time.monotonic()

    def close(self) -> None:
        with self.lock:
            self.client.close()
        self.consumer.broker._keeper.discard(self)


class _BeanstalkMessage(dramatiq.MessageProxy):
    """A consumed message, with its job's id and priority and the connection that holds the job."""

    def __init__(self, message: Message[Any], holder: _Holder, job_id: int, priority: int) -> None:
        super().__init__(message)
        self._holder = holder
        self._job_id = job_id
        self._priority = priority


class _Consumer(dramatiq.Consumer):
    """Reserves the jobs of one tube for a Dramatiq consumer thread (see the module's notes)."""

    def __init__(self, broker: BeanstalkBroker, queue_name: str, prefetch: int,
                 timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.tube = broker.tube(queue_name)
        self.prefetch = max(1, prefetch)
        self.timeout = timeout
        self._holders: list[_Holder] = []
        # Guarded by _slots, which is notified when they change: how many
        # jobs are held, and the jobs worker threads reserved for __next__.
        self._held = 0
        self._ready: deque[tuple[_Holder, Job[bytes]]] = deque()
        self._slots = threading.Condition()
        self._closed = False

    # -- settling (any thread) -------------------------------------------

    def ack(self, message: dramatiq.MessageProxy) -> None:
        """Delete the message's job, on the connection that reserved it."""
        self._settle(message, "delete")

    def nack(self, message: dramatiq.MessageProxy) -> None:
        """Bury the message's job (a dead letter: ``kick`` brings it back), priority kept."""
        self._settle(message, "bury")

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        """Release the messages' jobs, ready at once with their priorities."""
        for message in messages:
            self._settle(message, "release")

    def _settle(self, message: dramatiq.MessageProxy, verb: str) -> None:
        """Delete, bury or release a message's job.

        A job the server no longer holds for this connection (its TTR ran
        out, or the connection was lost and the server put it back) is
        logged and left: it will be delivered again.
        """
        if not isinstance(message, _BeanstalkMessage):
            raise TypeError(f"not a message of a BeanstalkBroker consumer: {message!r}")
        holder, job_id = message._holder, message._job_id
        with holder.lock:
            if job_id not in holder.held:
                return
            try:
                if verb == "delete":
                    holder.client.delete(job_id)
                elif verb == "bury":
                    holder.client.bury(job_id, message._priority)
                else:
                    holder.client.release(job_id, message._priority)
            except NotFoundError:
                logger.warning("message %s (job %d): the server no longer has it reserved "
                               "(did its TTR run out?); not %s", message.message_id, job_id,
                               _PAST[verb])
            except ClientConnectionError as error:
                logger.warning("message %s (job %d): connection lost (%s); the server puts the "
                               "job back, it will be delivered again", message.message_id,
                               job_id, error)
            finally:
                del holder.held[job_id]
            consumer = holder.consumer
            refilled = verb != "release" and not consumer._closed and consumer._refill(holder)
            retire = holder.retiring and not holder.held
        if retire:
            holder.close()
        if not refilled:
            consumer._freed()

    def _freed(self) -> None:
        with self._slots:
            self._held -= 1
            self._slots.notify()

    def _refill(self, holder: _Holder) -> bool:
        """Reserve a ready job on ``holder`` for ``__next__``, in the slot just freed.

        Called by a worker thread that has just settled a job, with the
        connection's lock held: the reserve costs the worker thread a round
        trip instead of the consumer thread, through which every message
        passes. True when a job came.
        """
        try:
            job = holder.client.reserve(0)
        except (TimedOutError, DeadlineSoonError, ClientConnectionError):
            return False
        holder.held[job.id] = time.monotonic()
        with self._slots:
            if not self._closed:
                self._ready.append((holder, job))
                self._slots.notify()
                return True
        self._give_back(holder, job.id)  # closed meanwhile
        return False

    def _give_back(self, holder: _Holder, job_id: int) -> None:
        """Release a held job no message was made of, priority kept (the lock held)."""
        try:
            holder.client.release(job_id, int(holder.client.stats_job(job_id)["pri"]))
        except (NotFoundError, ClientConnectionError):
            pass  # the server has it back already
        finally:
            del holder.held[job_id]

    # -- reserving (the consumer thread) --------------------------------------

    def __next__(self) -> dramatiq.MessageProxy | None:
        """The next message, or None when none came within the consumer's timeout.

        Waits for a free prefetch slot first. Raises ConnectionClosed when the
        server is lost (the jobs this consumer held go back to the tube).
        """
        deadline = time.monotonic() + self.timeout / 1000
        while not self._closed:
            with self._slots:
                while not self._ready and self._held >= self.prefetch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self._slots.wait(left)
                ready = self._ready.popleft() if self._ready else None
            try:
                holder, job = ready or self._reserve(deadline)
                if job is not None:
                    message = self._message(holder, job)
                    if message is not None:
                        return message
                elif time.monotonic() >= deadline:
                    return None
            except ClientConnectionError as error:
                # The client closed the failed connection; the server puts
                # back what it held. Dramatiq makes a new consumer.
                raise _closed(error) from error
        return None

    def _reserve(self, deadline: float) -> tuple[_Holder, Job[bytes] | None]:
        """Reserve a job: at once on a connection holding jobs, else waiting on one holding none.

        The first connection holding jobs that no other thread is using
        this moment (worker threads acknowledge on them) is asked for a job
        ready now; when there is none, or every such connection is busy, a
        connection holding no job waits for one.
        """
        for holder in self._holders:
            if holder.held and holder.lock.acquire(blocking=False):
                try:
                    job = self._reserve_on(holder, 0)
                finally:
                    holder.lock.release()
                if job is not None:
                    return holder, job
                break  # nothing ready now: wait for a job
        holder = self._idle_holder()
        try:
            wait = max(0, math.ceil(deadline - time.monotonic()))
            return holder, self._reserve_on(holder, wait)
        finally:
            holder.lock.release()

    def _reserve_on(self, holder: _Holder, timeout: int) -> Job[bytes] | None:
        """Reserve on ``holder``, whose lock the caller holds; None when no job came in time."""
        try:
            job = holder.client.reserve(timeout)
        except (TimedOutError, DeadlineSoonError):
            return None
        holder.held[job.id] = time.monotonic()
        with self._slots:
            self._held += 1
        return job

    def _idle_holder(self) -> _Holder:
        """A connection holding no job, its lock taken (made if need be); extra idle ones close.

        A connection is idle only when its lock is free and it holds no job:
        a worker thread that has just settled its last job on a connection
        may still be reserving the next one on it. Holding the lock through
        the waiting reserve keeps out nobody else: the keeper passes over
        connections that hold no job. Connections that failed are dropped.
        """
        for failed in [holder for holder in self._holders if holder.client.closed]:
            self._drop(failed)
        idle: list[_Holder] = []
        for holder in list(self._holders):
            if holder.held or not holder.lock.acquire(blocking=False):
                continue
            if holder.held:  # a worker thread reserved on it just before the lock was taken
                holder.lock.release()
            elif len(idle) < 2:
                idle.append(holder)
            else:
                holder.client.close()
                self._forget(holder)
        if idle:
            for spare in idle[1:]:
                spare.lock.release()
            return idle[0]
        holder = _Holder(self, self.broker.connect())
        holder.client.watch(self.tube)
        holder.client.ignore("default")
        holder.lock.acquire()  # no other thread knows of it yet
        self._holders.append(holder)
        self.broker._keeper.add(holder)
        return holder

    def _drop(self, holder: _Holder) -> None:
        holder.close()
        self._holders.remove(holder)

    def _forget(self, holder: _Holder) -> None:
        """Stop tracking a connection already closed (its lock held by the caller)."""
        self.broker._keeper.discard(holder)
        self._holders.remove(holder)

    def _message(self, holder: _Holder, job: Job[bytes]) -> _BeanstalkMessage | None:
        """The message of a reserved job; None when the body is not a message (it is buried)."""
        try:
            message = Message.decode(job.body)
        except DecodeError as error:
            self._bury_undecodable(holder, job.id, error)
            return None
        if message.queue_name != self.queue_name:
            # Dramatiq hands the message back to the consumer of its queue_name.
            message = message.copy(queue_name=self.queue_name)
        try:
            priority = self.broker.priority(message)
        except ValueError:
            priority = DEFAULT_PRIORITY
        return _BeanstalkMessage(message, holder, job.id, priority)

    def _bury_undecodable(self, holder: _Holder, job_id: int, error: DecodeError) -> None:
        logger.warning("job %d in %r is not a Dramatiq message (%s); burying it",
                       job_id, self.tube, error.__cause__ or error)
        with holder.lock:
            try:
                holder.client.bury(job_id, int(holder.client.stats_job(job_id)["pri"]))
            finally:
                del holder.held[job_id]
        self._freed()

    def close(self) -> None:
        """Close the connections; one still holding jobs closes once they are settled.

        Jobs reserved for messages not handed out yet are released.
        """
        with self._slots:
            self._closed = True
            ready, self._ready = self._ready, deque()
            self._held -= len(ready)
        for holder, job in ready:
            with holder.lock:
                self._give_back(holder, job.id)
        for holder in list(self._holders):
            with holder.lock:
                busy = bool(holder.held) and not holder.client.closed
                holder.retiring = busy
            if not busy:
                holder.close()
        self._holders.clear()


_PAST = {"delete": "deleted", "bury": "buried", "release": "released"}


class _Keeper:
    """The broker's thread that touches held jobs: those held longer than half the TTR."""

    def __init__(self, ttr: int) -> None:
        self._ttr = ttr
        self._holders: set[_Holder] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, holder: _Holder) -> None:
        with self._lock:
            self._holders.add(holder)
            if self._thread is None:
                self._stopped.clear()
                self._thread = threading.Thread(
                    target=self._run, name="greenstalk-dramatiq-touch", daemon=True
                )
                self._thread.start()

    def discard(self, holder: _Holder) -> None:
        with self._lock:
            self._holders.discard(holder)

    def _run(self) -> None:
        # Each job is touched between half and three quarters of its TTR.
        while not self._stopped.wait(self._ttr / 4):
            with self._lock:
                holders = list(self._holders)
            before = time.monotonic() - self._ttr / 2
            for holder in holders:
                holder.touch_older(before)

    def stop(self) -> None:
        """Stop touching and close every consumer connection."""
        with self._lock:
            holders, self._holders = self._holders, set()
            thread, self._thread = self._thread, None
        self._stopped.set()
        if thread is not None:
            thread.join()
        for holder in holders:
            with holder.lock:
                holder.client.close()


__all__ = ["PRIORITY_OPTION", "BeanstalkBroker", "address_from_url"]
