"""A kombu transport for beanstalkd, so that Celery runs on it (the ``celery`` extra).

Importing this module registers the ``beanstalk://HOST:PORT`` and
``beanstalk+unix:///PATH`` URL schemes with kombu::

    import greenstalk.kombu  # noqa: F401  (registers beanstalk://)
    app = Celery(broker='beanstalk://127.0.0.1:11300')

``broker_transport='greenstalk.kombu:Transport'`` selects it too.

Each queue is a tube. A message stays reserved until it is acknowledged:
ack deletes its job, requeue releases it, reject buries it. Only the
connection that reserved a job may finish or touch it, so each consuming
channel has one reserving connection owned by one thread
(:mod:`greenstalk.kombu._reserver`), which runs every acknowledgement and
touches the jobs it holds so that a long task is never handed out twice.
ETA and countdown become beanstalkd delays, message priorities beanstalkd
priorities (lower first), and fanout exchanges are emulated on tubes. See
``docs/celery.rst``.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import socket
import threading
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from queue import Empty
from time import monotonic
from typing import Any, Union
from urllib.parse import unquote

from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.utils.json import dumps

import greenstalk

from ._reserver import META, Finish, Reserved, Reserver
from ._tubes import (
    Binding,
    binding_tube,
    check_prefix,
    check_priority,
    delay_until,
    is_wake_tube,
    parse_binding,
    queue_tube,
    wake_tube,
)

logger = logging.getLogger("greenstalk.kombu")

DEFAULT_PORT = 11300
#: The smallest TTR the transport puts jobs with: with less, beanstalkd
#: answers every reserve with DEADLINE_SOON as soon as a job is held.
MIN_TTR = 2

# What the reserver hands the transport: a job for a channel, or the error
# that closed the channel's reserving connection.
_Item = tuple["Channel", Union[Reserved, BaseException]]


class Options:
    """The transport options (``broker_transport_options`` in Celery), checked.

    ``tube_prefix`` (default ``''``) is put before every tube name, to keep
    applications apart on one server. ``ttr`` (default 60) is the TTR of
    every job put, in seconds: how long a worker that stops responding
    (frozen, or cut off without its connection closing) keeps its jobs; a
    working worker touches the jobs it holds, so tasks may run longer.
    ``default_priority`` (default 0) is the priority of a message sent
    without one. ``socket_timeout`` (default 30 seconds, None for no limit)
    bounds each command but a waiting reserve. ``binding_refresh`` (default 1
    second) is how long the list of other processes' bindings is reused
    before it is read again.

    Raises ValueError or TypeError naming the first option that is out of range.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.tube_prefix = check_prefix(options.get("tube_prefix", ""))
        ttr = options.get("ttr", greenstalk.DEFAULT_TTR)
        if not isinstance(ttr, int) or isinstance(ttr, bool) or not MIN_TTR <= ttr < 2**32:
            raise ValueError(f"ttr must be an int from {MIN_TTR} to {2**32 - 1} (seconds), not "
                             f"{ttr!r}")
        self.ttr: int = ttr
        self.default_priority = check_priority(
            options.get("default_priority", 0), "default_priority"
        )
        timeout = options.get("socket_timeout", 30.0)
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"socket_timeout must be None or a number > 0, not {timeout!r}")
        self.socket_timeout: float | None = timeout
        refresh = options.get("binding_refresh", 1.0)
        if not (isinstance(refresh, (int, float)) and refresh >= 0):
            raise ValueError(f"binding_refresh must be a number >= 0, not {refresh!r}")
        self.binding_refresh = float(refresh)


def server_address(connection: Any) -> greenstalk.Address:
    """The server a kombu ``Connection`` names: ``(host, port)``, or a Unix socket's path.

    ``beanstalk://HOST:PORT`` (port 11300 by default) and
    ``beanstalk+unix:///PATH``. Raises ValueError for a user or password
    (beanstalkd has no authentication), a virtual host (use ``tube_prefix``)
    or a ``beanstalk+unix://`` URL without a path.
    """
    if connection.userid or connection.password:
        raise ValueError("beanstalkd has no authentication: remove the user and password from "
                         "the broker URL")
    host = connection.hostname or ""
    if host.startswith("unix://"):  # beanstalk+unix:///PATH as kombu splits it first
        path = host[len("unix://"):]
    elif connection.transport_cls == "beanstalk+unix":  # ... and after a failover switch
        path = host or "/" + (connection.virtual_host or "").lstrip("/")
    elif host.startswith("/"):  # beanstalk+unix://%2Frun%2Fbeanstalkd.sock
        path = host
    else:
        if (connection.virtual_host or "/") != "/":
            raise ValueError(
                f"beanstalkd has no virtual hosts ({connection.virtual_host!r} in the broker "
                "URL): keep applications apart with the tube_prefix transport option"
            )
        return (host or "localhost", connection.port or DEFAULT_PORT)
    if path in ("", "/"):
        raise ValueError("a beanstalk+unix:// URL needs the socket's path, as in "
                         "beanstalk+unix:///run/beanstalkd.sock")
    return unquote(path)


class _Control:
    """The transport's connection for all but reserving: puts, stats, tube lists, wake-ups.

    It also keeps the tubes that advertise this process's bindings watched,
    so that they exist while the process lives. Thread-safe; reopened on
    the next use after it failed.
    """

    def __init__(self, connect: Any) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._client: greenstalk.Client[bytes] | None = None
        self._using = greenstalk.DEFAULT_TUBE
        self._advertised: set[str] = set()

    def _live(self) -> greenstalk.Client[bytes]:
        client = self._client
        if client is None or client.closed:
            client = self._connect(watch=[greenstalk.DEFAULT_TUBE, *sorted(self._advertised)])
            self._client = client
            self._using = greenstalk.DEFAULT_TUBE
        return client

    def _use(self, client: greenstalk.Client[bytes], tube: str) -> None:
        if self._using != tube:
            client.use(tube)
            self._using = tube

    def open(self) -> None:
        """Connect now. Raises ClientConnectionError when the server cannot be reached."""
        with self._lock:
            self._live()

    def close(self) -> None:
        """Close the connection (the next use opens another)."""
        with self._lock:
            self.forget()

    def forget(self) -> None:
        """Close the connection without taking the lock (after a fork, it may be held forever)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def put(self, tube: str, body: bytes, priority: int, delay: int, ttr: int) -> int:
        """Put a job into ``tube`` and return its id."""
        with self._lock:
            client = self._live()
            self._use(client, tube)
            return client.put(body, priority, delay, ttr)

    def wake(self, tube: str, body: bytes) -> None:
        """Put a wake-up into a reserving connection's wake tube."""
        self.put(tube, body, 0, 0, greenstalk.DEFAULT_TTR)

    def tubes(self) -> list[str]:
        """The names of the server's tubes."""
        with self._lock:
            return self._live().tubes()

    def stats_tube(self, tube: str) -> greenstalk.StatsTube | None:
        """The statistics of ``tube``, or None when it does not exist."""
        with self._lock:
            try:
                return self._live().stats_tube(tube)
            except greenstalk.NotFoundError:
                return None

    def purge(self, tube: str, states: Iterable[str]) -> int:
        """Delete the jobs of ``tube`` in these states (ready, delayed, buried); return how many."""
        with self._lock:
            return self._purge(self._live(), tube, states)

    def _purge(self, client: greenstalk.Client[bytes], tube: str, states: Iterable[str]) -> int:
        self._use(client, tube)
        peeks = {
            "ready": client.peek_ready,
            "delayed": client.peek_delayed,
            "buried": client.peek_buried,
        }
        deleted = 0
        for state in states:
            while True:
                try:
                    job = peeks[state]()
                except greenstalk.NotFoundError:
                    break
                try:
                    client.delete(job)
                except greenstalk.NotFoundError:  # a consumer reserved it meanwhile
                    continue
                deleted += 1
        # A tube in use exists: let an emptied one go.
        self._use(client, greenstalk.DEFAULT_TUBE)
        return deleted

    def advertise(self, tube: str) -> None:
        """Keep ``tube`` watched (so that it exists) for as long as this connection lives."""
        with self._lock:
            self._live().watch(tube)
            self._advertised.add(tube)

    def withdraw(self, tube: str) -> None:
        """Stop keeping ``tube`` watched."""
        with self._lock:
            if tube in self._advertised:
                self._advertised.discard(tube)
                client = self._client
                if client is not None and not client.closed:
                    client.ignore(tube)

    def collect_orphans(self, prefix: str) -> int:
        """Delete the wake-ups left in the wake tubes of reserving connections that are gone.

        A wake tube is watched by its reserving connection for as long as it
        lives; one nobody watches belonged to a process that was killed.
        Returns how many jobs were deleted.
        """
        with self._lock:
            client = self._live()
            deleted = 0
            for tube in client.tubes():
                if not is_wake_tube(prefix, tube):
                    continue
                try:
                    watched = client.stats_tube(tube)["current-watching"]
                except greenstalk.NotFoundError:
                    continue
                if not watched:
                    deleted += self._purge(client, tube, ("ready", "delayed", "buried"))
            return deleted


class _Deliveries:
    """Jobs the reservers of a transport's channels handed over, waiting for the consumer.

    ``take`` waits for them (``drain_events``); an event loop watches
    ``fileno()``, which is readable while some are waiting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._items: deque[_Item] = deque()
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        # None once closed.
        self._pipe: tuple[int, int] | None = (read, write)
        self._signalled = False

    def fileno(self) -> int:
        """The read end of a pipe, readable while items wait. Raises ValueError once closed."""
        pipe = self._pipe
        if pipe is None:
            raise ValueError("the deliveries are closed")
        return pipe[0]

    def _signal(self) -> None:
        if self._pipe is not None and not self._signalled:
            self._signalled = True
            os.write(self._pipe[1], b"\0")

    def push(self, item: _Item) -> None:
        """Add an item, waking whoever waits for one."""
        with self._lock:
            self._items.append(item)
            self._arrived.notify()
            self._signal()

    def put_back(self, items: list[_Item]) -> None:
        """Return items taken but not delivered, in front of the others."""
        with self._lock:
            self._items.extendleft(reversed(items))
            self._arrived.notify()
            self._signal()

    def take_reserved(self, channel: Channel, queue: str) -> Reserved | None:
        """Take the first job of ``queue`` reserved by ``channel`` and not yet delivered."""
        with self._lock:
            for item in self._items:
                reserved = item[1]
                if item[0] is channel and isinstance(reserved, Reserved) and (
                    reserved.queue == queue
                ):
                    self._items.remove(item)
                    return reserved
        return None

    def take(self, timeout: float | None) -> list[_Item]:
        """Every waiting item, once there is one; [] when none came within ``timeout`` seconds."""
        with self._lock:
            if not self._items:
                if timeout is None:
                    while not self._items:
                        self._arrived.wait()
                else:
                    deadline = monotonic() + timeout
                    while not self._items:
                        left = deadline - monotonic()
                        if left <= 0:
                            return []
                        self._arrived.wait(left)
            items = list(self._items)
            self._items.clear()
            if self._signalled:
                assert self._pipe is not None  # _signal writes only to an open pipe
                self._signalled = False
                os.read(self._pipe[0], 64)
            return items

    def close(self) -> None:
        """Close the pipe; items pushed from now on only wake ``take``."""
        with self._lock:
            if self._pipe is not None:
                for fd in self._pipe:
                    os.close(fd)
                self._pipe = None
                self._signalled = False


class QoS(virtual.QoS):  # type: ignore[misc]
    """Acknowledgements as beanstalkd verbs: ack deletes, requeue releases, reject buries."""

    channel: Channel

    def ack(self, delivery_tag: str) -> None:
        """Delete the message's job (on the connection that reserved it, soon after)."""
        self.channel.finish(delivery_tag, Finish.DELETE)
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Release the message's job with ``requeue``, else bury it."""
        self.channel.finish(delivery_tag, Finish.RELEASE if requeue else Finish.BURY)
        super().ack(delivery_tag)  # done with, as far as kombu's bookkeeping goes


class Channel(virtual.Channel):  # type: ignore[misc]
    """A kombu channel on beanstalkd: queues are tubes; it reserves on a connection of its own."""

    QoS = QoS
    supports_fanout = True

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        super().__init__(connection, **kwargs)
        self._transport = connection
        self._reserver: Reserver | None = None
        self._limit = 0

    # -- consuming ------------------------------------------------------------

    def _reserving(self) -> Reserver:
        """This channel's reserver, started on first use. Raises if its connection failed."""
        reserver = self._reserver
        if reserver is not None:
            reserver.check()
            return reserver
        transport = self._transport
        transport.collect_orphans()
        token = secrets.token_hex(8)
        tube = wake_tube(transport.options.tube_prefix, token)
        reserver = self._reserver = Reserver(
            transport.connect(watch=tube),
            wake_tube=tube,
            wake_body=f"wake {token}".encode(),
            wake=transport.control.wake,
            hand_over=self._hand_over,
            limit=self._limit,
            name=f"greenstalk.kombu reserver {token}",
        )
        return reserver

    def _hand_over(self, item: Reserved | BaseException) -> None:
        if isinstance(item, BaseException) and self.closed:
            return
        self._transport.deliveries.push((self, item))

    def _consumed_tubes(self) -> set[str]:
        return {self._transport.tube_of(queue) for queue in self._active_queues}

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> None:
        """Consume from ``queue``: the reserving connection watches its tube."""
        self._transport.tube_of(queue)
        super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)
        if no_ack:
            self._transport.no_ack.add(queue)
        else:
            self._transport.no_ack.discard(queue)
        self._reserving().consume(self._consumed_tubes())

    def basic_cancel(self, consumer_tag: str) -> None:
        """Stop consuming: the tube leaves the watch list; messages held stay until finished."""
        queue = self._tag_to_queue.get(consumer_tag)
        super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self._transport.no_ack.discard(queue)
        if self._reserver is not None:
            self._reserver.consume(self._consumed_tubes())

    def basic_qos(
        self, prefetch_size: int = 0, prefetch_count: int = 0, apply_global: bool = False
    ) -> None:
        """Hold at most ``prefetch_count`` unacknowledged messages (0: read one message ahead)."""
        super().basic_qos(prefetch_size, prefetch_count, apply_global)
        self._limit = prefetch_count
        if self._reserver is not None:
            self._reserver.set_limit(prefetch_count)

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        """Reserve the next ready message of ``queue`` now; raises queue.Empty when there is none.

        A message this channel's consumer reserved ahead and has not
        delivered yet comes first.
        """
        reserved = self._transport.deliveries.take_reserved(self, queue)
        if reserved is not None:
            reserved.reserver.delivered()
        else:
            reserved = self._reserving().get(self._transport.tube_of(queue))
        if reserved is None:
            raise Empty()
        return self._transport.accept(reserved)

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Get the next message of ``queue`` now, or None. With ``no_ack`` its job is deleted."""
        try:
            payload = self._get(queue)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if no_ack:
            self.finish(message.delivery_tag, Finish.DELETE)
        else:
            self.qos.append(message, message.delivery_tag)
        return message

    def finish(self, delivery_tag: str, how: Finish) -> bool:
        """Delete, release or bury the job of a delivered message; False if it was finished."""
        return self._transport.finish(delivery_tag, how)

    def _restore(self, message: Any) -> None:
        """Put an unacknowledged message back: its job is released, not copied."""
        self.finish(message.delivery_tag, Finish.RELEASE)

    def close(self) -> None:
        """Close the channel: unacknowledged messages go back to their queues."""
        reserver = self._reserver
        super().close()
        if reserver is not None:
            self._reserver = None
            reserver.stop()

    # -- publishing -----------------------------------------------------------

    def prepare_message(
        self,
        body: Any,
        priority: int | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        headers: dict[str, Any] | None = None,
        properties: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """kombu's message dict; without a priority, the ``default_priority`` option's."""
        properties = dict(properties or {})
        properties.setdefault("delivery_info", {})
        if priority is None:
            priority = self._transport.options.default_priority
        properties.setdefault("priority", priority)
        return {
            "body": body,
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": headers or {},
            "properties": properties,
        }

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """Put a message into the tube of ``queue``.

        Its priority becomes the job's (lower first), Celery's ``eta``
        header a delay. Raises ValueError or TypeError for a priority out
        of range, :class:`~greenstalk.JobTooBigError` for a message larger
        than the server's ``-z``.
        """
        transport = self._transport
        options = transport.options
        priority = message["properties"].get("priority")
        priority = check_priority(
            options.default_priority if priority is None else priority, "message priority"
        )
        delay = delay_until((message.get("headers") or {}).get("eta"))
        meta = {"queue": queue, "priority": priority, "ttr": options.ttr}
        body = dumps({**message, META: meta}).encode()
        transport.control.put(transport.tube_of(queue), body, priority, delay, options.ttr)

    def _put_fanout(self, exchange: str, message: dict[str, Any], routing_key: str,
                    **kwargs: Any) -> None:
        """Put a copy into every queue bound to the fanout ``exchange``, here or elsewhere."""
        queues = {queue for _, _, queue in self._local_table(exchange)}
        queues.update(
            binding.queue for binding in self._transport.bindings(exchange, fresh=True)
            if binding.kind == "fanout"
        )
        for queue in sorted(queues):
            self._put(queue, message)

    def _local_table(self, exchange: str) -> list[tuple[str, Any, str]]:
        try:
            table: list[tuple[str, Any, str]] = self.get_table(exchange)
        except KeyError:
            return []
        return table

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        """The queues a message to ``exchange`` with ``routing_key`` goes to.

        The bindings declared in this process, and those other processes
        advertise (read again when none matched, or when older than
        ``binding_refresh``).
        """
        if default is None:
            default = self.deadletter_queue
        if not exchange:
            return [routing_key or default]
        queues: set[str] = set()
        local = self._local_table(exchange)
        if local:
            queues.update(self.typeof(exchange).lookup(local, exchange, routing_key, default))
        remote: dict[str, list[tuple[str, Any, str]]] = defaultdict(list)
        for binding in self._transport.bindings(exchange, fresh=not queues):
            kind = self.exchange_types[binding.kind]
            remote[binding.kind].append(
                kind.prepare_bind(binding.queue, exchange, binding.routing_key, None)
            )
        for kind_name, table in remote.items():
            queues.update(
                self.exchange_types[kind_name].lookup(table, exchange, routing_key, default)
            )
        if not queues and default is not None:
            logger.warning("no queue is bound to exchange %r with routing key %r: the message "
                           "goes to the dead letter queue %r", exchange, routing_key, default)
            self._new_queue(default)
            return [default]
        return sorted(queues)

    # -- queues and bindings --------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Check that ``queue`` can be a tube (ValueError if not); tubes need no creating."""
        self._transport.tube_of(queue)
        self._transport.declared.add(queue)

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        """True if ``queue`` was declared here, or its tube exists on the server."""
        transport = self._transport
        return queue in transport.declared or transport.tube_of(queue) in transport.control.tubes()

    def _size(self, queue: str) -> int:
        """How many messages wait in ``queue``: its ready and delayed jobs, from stats-tube."""
        stats = self._transport.control.stats_tube(self._transport.tube_of(queue))
        if stats is None:
            return 0
        return stats["current-jobs-ready"] + stats["current-jobs-delayed"]

    def _purge(self, queue: str) -> int:
        """Delete the ready and delayed messages of ``queue`` (not buried ones); return how many."""
        return self._transport.control.purge(
            self._transport.tube_of(queue), ("ready", "delayed")
        )

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        """Delete every message of ``queue``, buried ones too."""
        self._transport.control.purge(
            self._transport.tube_of(queue), ("ready", "delayed", "buried")
        )

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        """Delete ``queue``: its messages and its bindings.

        With ``if_unused``, only when no connection watches its tube; with
        ``if_empty``, only when it holds no ready or delayed message.
        """
        transport = self._transport
        if if_unused or if_empty:
            stats = transport.control.stats_tube(transport.tube_of(queue))
            if stats is not None and (
                (if_unused and stats["current-watching"])
                or (if_empty and stats["current-jobs-ready"] + stats["current-jobs-delayed"])
            ):
                return
        for exchange, routing_key, _ in list(self.state.queue_bindings(queue)):
            self._withdraw(queue, exchange, routing_key)
        self.state.queue_bindings_delete(queue)
        self._delete(queue)
        transport.declared.discard(queue)

    def _binding_tube(self, queue: str, exchange: str, routing_key: str) -> str:
        kind = self.typeof(exchange).type
        return binding_tube(
            self._transport.options.tube_prefix, kind, exchange, routing_key, queue
        )

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        """Advertise the binding to other processes: its tube stays watched while we live."""
        self._transport.control.advertise(self._binding_tube(queue, exchange, routing_key))

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Remove a binding, here and from what other processes see."""
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        if exchange is not None:
            self._withdraw(queue, exchange, routing_key)

    def _withdraw(self, queue: str, exchange: str, routing_key: str) -> None:
        self._transport.control.withdraw(self._binding_tube(queue, exchange, routing_key))
        self._transport.forget_bindings()


class Transport(virtual.Transport):  # type: ignore[misc]
    """kombu's transport for beanstalkd, on greenstalk.

    One connection per kombu connection for puts and the rest, and one per
    consuming channel that reserves. :meth:`connect` opens them all, to the
    one server of the URL: the place where a pool of several servers would
    plug in.
    """

    Channel = Channel
    default_port = DEFAULT_PORT
    driver_type = "beanstalk"
    driver_name = "greenstalk"
    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
        heartbeats=False,
    )
    connection_errors = (*virtual.Transport.connection_errors, greenstalk.ClientConnectionError)
    channel_errors = (*virtual.Transport.channel_errors, greenstalk.BeanstalkdError)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        self.options = Options(client.transport_options)
        self.address = server_address(client)
        super().__init__(client, **kwargs)
        self.control = _Control(self.connect)
        self.deliveries = _Deliveries()
        #: Delivery tag -> the reserver holding the message's job, the job's id and priority.
        self.jobs: dict[str, tuple[Reserver, int, int]] = {}
        #: Queues whose consumer acknowledges nothing: their jobs are deleted on delivery.
        self.no_ack: set[str] = set()
        #: Queues declared by this process.
        self.declared: set[str] = set()
        self._tubes: dict[str, str] = {}
        self._tags = itertools.count(1)
        self._bindings: tuple[float, dict[str, list[Binding]]] | None = None
        self._orphans_collected = False
        self._loop: Any = None
        _TRANSPORTS.add(self)

    def driver_version(self) -> str:
        """greenstalk's version."""
        return greenstalk.__version__

    def _forget_after_fork(self) -> None:
        """In a forked child: close its copies of the parent's sockets (see the reserver's)."""
        self.control.forget()
        for channel in self.channels:
            if channel._reserver is not None:
                channel._reserver.forget_after_fork()

    def connect(self, watch: str | list[str] = greenstalk.DEFAULT_TUBE) -> greenstalk.Client[bytes]:
        """Open a connection to the server, watching ``watch``.

        Raises :class:`~greenstalk.ClientConnectionError` when it cannot be reached.
        """
        return greenstalk.Client(
            self.address,
            watch=watch,
            socket_timeout=self.options.socket_timeout,
            socket_connect_timeout=self.client.connect_timeout or None,
        )

    def establish_connection(self) -> Transport:
        """Connect (raising ClientConnectionError when the server cannot be reached)."""
        self.control.open()
        established: Transport = super().establish_connection()
        return established

    def close_connection(self, connection: Any) -> None:
        """Close the channels (their unacknowledged messages go back), then the connection."""
        super().close_connection(connection)
        self.control.close()
        if self._loop is not None:
            self._loop.remove(self.deliveries.fileno())
            self._loop = None
        self.deliveries.close()

    def tube_of(self, queue: str) -> str:
        """The tube of ``queue``. Raises ValueError when the name cannot be one."""
        tube = self._tubes.get(queue)
        if tube is None:
            tube = self._tubes[queue] = queue_tube(self.options.tube_prefix, queue)
        return tube

    def collect_orphans(self) -> None:
        """Once per transport: delete wake-ups left by reserving connections of dead processes."""
        if not self._orphans_collected:
            self._orphans_collected = True
            self.control.collect_orphans(self.options.tube_prefix)

    def bindings(self, exchange: str, fresh: bool) -> list[Binding]:
        """The bindings to ``exchange`` that processes advertise, read from the server's tubes.

        The list is read again when ``fresh``, or when older than ``binding_refresh``.
        """
        cached = self._bindings
        now = monotonic()
        if fresh or cached is None or now - cached[0] > self.options.binding_refresh:
            table: dict[str, list[Binding]] = defaultdict(list)
            for tube in self.control.tubes():
                binding = parse_binding(self.options.tube_prefix, tube)
                if binding is not None:
                    table[binding.exchange].append(binding)
            cached = self._bindings = (now, table)
        return cached[1].get(exchange, [])

    def forget_bindings(self) -> None:
        """Read the bindings again next time: this process changed its own."""
        self._bindings = None

    # -- deliveries -----------------------------------------------------------

    def accept(self, reserved: Reserved) -> dict[str, Any]:
        """Give a reserved job's message its delivery tag and return its payload."""
        tag = f"{reserved.job_id}.{next(self._tags)}"
        reserved.payload["properties"]["delivery_tag"] = tag
        self.jobs[tag] = (reserved.reserver, reserved.job_id, reserved.priority)
        return reserved.payload

    def finish(self, delivery_tag: str, how: Finish) -> bool:
        """Delete, release or bury the job behind a delivery tag, on the connection holding it."""
        held = self.jobs.pop(delivery_tag, None)
        if held is None:
            return False
        reserver, job_id, priority = held
        reserver.finish(job_id, how, priority)
        return True

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver the messages reserved so far, waiting up to ``timeout`` seconds for one.

        Raises socket.timeout when none came, and ClientConnectionError when
        a reserving connection failed.
        """
        items = self.deliveries.take(timeout)
        if not items:
            raise socket.timeout()
        self._deliver_items(items)

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Have an event loop (Celery's) deliver messages as they are reserved."""
        fd = self.deliveries.fileno()
        loop.add_reader(fd, self.on_readable, fd)
        self._loop = loop

    def on_readable(self, fileno: int) -> None:
        """Deliver what the reservers handed over (the event loop calls this)."""
        items = self.deliveries.take(0)
        if items:
            self._deliver_items(items)

    def _deliver_items(self, items: list[_Item]) -> None:
        for index, item in enumerate(items):
            try:
                self._deliver_one(item)
            except BaseException:
                self.deliveries.put_back(items[index + 1:])
                raise

    def _deliver_one(self, delivery: _Item) -> None:
        channel, item = delivery
        if isinstance(item, BaseException):
            if channel.closed:
                return
            # Not the original: a ClientTimeoutError is a TimeoutError, which
            # kombu's callers would take for "no message yet".
            raise greenstalk.ClientConnectionError(
                f"the connection reserving jobs failed: {item}"
            ) from item
        item.reserver.delivered()
        if channel.closed:  # its reserver has released the job
            return
        callback = self._callbacks.get(item.queue)
        if callback is None:  # the consumer was cancelled after the job was reserved
            item.reserver.finish(item.job_id, Finish.RELEASE, item.priority)
            return
        payload = self.accept(item)
        if item.queue in self.no_ack:
            self.finish(payload["properties"]["delivery_tag"], Finish.DELETE)
        callback(payload)


# Every transport of this process, for the fork handler below.
_TRANSPORTS: weakref.WeakSet[Transport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for transport in list(_TRANSPORTS):
        transport._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)

for _scheme in ("beanstalk", "beanstalk+unix"):
    TRANSPORT_ALIASES[_scheme] = "greenstalk.kombu:Transport"
del _scheme

__all__ = ["DEFAULT_PORT", "MIN_TTR", "Channel", "Options", "QoS", "Transport", "server_address"]
