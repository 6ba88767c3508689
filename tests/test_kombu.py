"""greenstalk.kombu against greenstalkd and beanstalkd: kombu's own integration tests, and ours.

kombu's test classes (``t/integration/common.py`` in kombu's repository) are
not installed with kombu: they are read from the sdist of the installed
kombu version, fetched once with pip and kept in ``~/.cache/greenstalk``
(``$GREENSTALK_KOMBU_COMMON`` may name a copy of the file instead).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kombu
import pytest

import greenstalk
import greenstalk.kombu
from greenstalk.kombu import Options, Transport, server_address
from greenstalk.kombu import _tubes as tubes
from greenstalk.kombu._reserver import Reserved, decode, touch_interval

from .conftest import StartServer
from .waiting import wait_until


def _kombu_common() -> ModuleType:
    """kombu's ``t/integration/common.py`` for the installed kombu, fetched from its sdist."""
    named = os.environ.get("GREENSTALK_KOMBU_COMMON")
    version = kombu.__version__
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = Path(named) if named else cache / "greenstalk" / f"kombu-{version}" / "common.py"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                 "--no-binary", ":all:", f"kombu=={version}", "--dest", download],
                check=True, timeout=300, capture_output=True,
            )
            with tarfile.open(Path(download) / f"kombu-{version}.tar.gz") as sdist:
                member = sdist.extractfile(f"kombu-{version}/t/integration/common.py")
                assert member is not None
                text = member.read()
        partial = path.with_suffix(".partial")
        partial.write_bytes(text)
        partial.replace(path)
    spec = importlib.util.spec_from_file_location("kombu_integration_common", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common: Any = _kombu_common()

# Every kombu connection of a test gets this: a stuck command fails the test in time.
OPTIONS = {"socket_timeout": 10}


def url_of(address: greenstalk.Address) -> str:
    if isinstance(address, tuple):
        return f"beanstalk://{address[0]}:{address[1]}"
    return f"beanstalk+unix://{address}"


@pytest.fixture
def broker_url(address: greenstalk.Address) -> str:
    return url_of(address)


@pytest.fixture
def connection(broker_url: str) -> Iterator[kombu.Connection]:
    """A kombu connection to this test's server (TCP, then a Unix socket)."""
    with kombu.Connection(broker_url, transport_options=dict(OPTIONS)) as conn:
        yield conn


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A TCP address that refuses connections: bound, not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"beanstalk://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def invalid_connection(refused_url: str) -> Iterator[kombu.Connection]:
    with kombu.Connection(refused_url, transport_options=dict(OPTIONS)) as conn:
        yield conn


@pytest.fixture
def failover_connection(
    refused_url: str, start_server: StartServer
) -> Iterator[kombu.Connection]:
    """The first URL refuses; kombu fails over to the second, a server over TCP.

    (kombu's failover tests compare ports; test_failover_between_unix_sockets
    is the same over Unix sockets.)
    """
    live = url_of(start_server().address)
    with kombu.Connection(f"{refused_url};{live}", transport_options=dict(OPTIONS)) as conn:
        yield conn


# -- kombu's own integration tests -----------------------------------------------------


class TestBasicFunctionality(common.BasicFunctionality):  # type: ignore[misc]
    pass


class TestExchangeTypes(common.BaseExchangeTypes):  # type: ignore[misc]
    pass


class TestMessage(common.BaseMessage):  # type: ignore[misc]
    pass


class TestFailover(common.BaseFailover):  # type: ignore[misc]
    pass


# kombu 5.7 added these (the kombu for Python 3.9 is older).
if hasattr(common, "BaseEventLoop"):

    class TestEventLoop(common.BaseEventLoop):  # type: ignore[misc]
        pass


def drain(conn: kombu.Connection, until: list[Any], count: int, timeout: float = 5) -> None:
    """Deliver messages until ``until`` holds ``count`` of them."""
    deadline = time.monotonic() + timeout
    while len(until) < count:
        conn.drain_events(timeout=max(deadline - time.monotonic(), 0.01))


def acknowledge(bodies: list[Any]) -> Callable[[Any, Any], None]:
    """A consumer callback that keeps each message's body and acknowledges it."""

    def callback(body: Any, message: Any) -> None:
        bodies.append(body)
        message.ack()

    return callback


class TestPriority(common.BasePriority):  # type: ignore[misc]
    """Lower numbers first, as beanstalkd (and kombu's Redis transport) order them.

    kombu's two consumer tests expect one ``drain_events`` to deliver three
    messages; a virtual transport delivers what it holds, and reads one
    message ahead without a prefetch count. These two deliver until all came.
    """

    PRIORITY_ORDER = "desc"

    def test_publish_consume(self, connection: kombu.Connection) -> None:
        queue = kombu.Queue("priority_test", routing_key="priority_test")
        received: list[Any] = []
        with connection as conn, conn.channel() as channel:
            producer = kombu.Producer(channel)
            for body, priority in (("first", 6), ("second", 3), ("third", 6)):
                producer.publish({"msg": body}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue],
                                 priority=priority)
            consumer = kombu.Consumer(conn, [queue], callbacks=[acknowledge(received)])
            with consumer:
                drain(conn, received, 3)
        assert [body["msg"] for body in received] == ["second", "first", "third"]

    def test_publish_requeue_consume(self, connection: kombu.Connection) -> None:
        queue = kombu.Queue("priority_requeue_test", routing_key="priority_requeue_test")
        held: list[kombu.Message] = []
        received: list[Any] = []
        with connection as conn, conn.channel() as channel:
            producer = kombu.Producer(channel)

            def publish(body: str, priority: int) -> None:
                producer.publish({"msg": body}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue],
                                 priority=priority)

            for body, priority in (("first", 6), ("second", 3), ("third", 6)):
                publish(body, priority)
            consumer = kombu.Consumer(conn, [queue])
            consumer.register_callback(lambda body, message: held.append(message))
            with consumer:
                drain(conn, held, 3)
            for message in held:
                message.requeue()
            publish("fourth", 0)
            consumer = kombu.Consumer(conn, [queue], callbacks=[acknowledge(received)])
            with consumer:
                drain(conn, received, 4)
        # A released job keeps its priority and its place (its id) among equals.
        assert [body["msg"] for body in received] == ["fourth", "second", "first", "third"]


# -- names, URLs and options -----------------------------------------------------------


def test_import_greenstalk_imports_neither_kombu_nor_celery() -> None:
    code = (
        "import sys, greenstalk, greenstalk.aio\n"
        "greenstalk.Client, greenstalk.Worker\n"
        "loaded = {'kombu', 'celery'} & {name.split('.')[0] for name in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_importing_the_transport_registers_its_schemes() -> None:
    from kombu.transport import TRANSPORT_ALIASES, get_transport_cls

    assert TRANSPORT_ALIASES["beanstalk"] == "greenstalk.kombu:Transport"
    assert TRANSPORT_ALIASES["beanstalk+unix"] == "greenstalk.kombu:Transport"
    assert get_transport_cls("beanstalk") is Transport
    assert get_transport_cls("greenstalk.kombu:Transport") is Transport
    transport = kombu.Connection("beanstalk://").transport
    assert transport.driver_type == "beanstalk"
    assert transport.driver_name == "greenstalk"
    assert transport.driver_version() == greenstalk.__version__
    assert transport.default_port == 11300
    assert {"direct", "topic", "fanout"} <= transport.implements.exchange_type
    assert greenstalk.ClientConnectionError in transport.connection_errors
    assert greenstalk.BeanstalkdError in transport.channel_errors


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("beanstalk://", ("localhost", 11300)),
        ("beanstalk://10.0.0.5", ("10.0.0.5", 11300)),
        ("beanstalk://10.0.0.5:11301/", ("10.0.0.5", 11301)),
        ("beanstalk+unix:///run/beanstalkd.sock", "/run/beanstalkd.sock"),
        ("beanstalk+unix://%2Frun%2Fbeanstalkd.sock", "/run/beanstalkd.sock"),
    ],
)
def test_broker_urls(url: str, address: greenstalk.Address) -> None:
    assert server_address(kombu.Connection(url)) == address


def test_a_socket_path_as_the_host() -> None:
    conn = kombu.Connection(hostname="/run/beanstalkd.sock", transport="beanstalk")
    assert server_address(conn) == "/run/beanstalkd.sock"


def test_a_unix_socket_url_after_a_failover_switch() -> None:
    """kombu parses an alternate URL differently from the first: same socket either way."""
    conn = kombu.Connection("beanstalk://127.0.0.1:1;beanstalk+unix:///run/beanstalkd.sock")
    conn.switch(conn.alt[1])
    assert conn.transport_cls == "beanstalk+unix"
    assert server_address(conn) == "/run/beanstalkd.sock"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("beanstalk://user:secret@localhost", "no authentication"),
        ("beanstalk://localhost/app", "no virtual hosts"),
        ("beanstalk+unix://", "needs the socket's path"),
    ],
)
def test_broker_urls_refused(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        kombu.Connection(url).transport  # noqa: B018


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"ttr": 1}, "ttr must be an int from 2"),
        ({"ttr": "60"}, "ttr must be an int"),
        ({"ttr": True}, "ttr must be an int"),
        ({"default_priority": -1}, "default_priority must be from 0"),
        ({"default_priority": 2**32}, "default_priority must be from 0"),
        ({"socket_timeout": 0}, "socket_timeout must be None or a number > 0"),
        ({"binding_refresh": -1}, "binding_refresh must be a number >= 0"),
        ({"tube_prefix": "-app"}, "not the start of a beanstalkd tube name"),
        ({"tube_prefix": "my app"}, "not the start of a beanstalkd tube name"),
        ({"tube_prefix": "a" * 161}, "too long"),
    ],
)
def test_options_out_of_range(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Options(options)


def test_options() -> None:
    default = Options({})
    assert (default.tube_prefix, default.ttr, default.default_priority) == ("", 60, 0)
    assert (default.socket_timeout, default.binding_refresh) == (30.0, 1.0)
    chosen = Options({"tube_prefix": "app.", "ttr": 120, "default_priority": 2**16,
                      "socket_timeout": None, "binding_refresh": 0})
    assert (chosen.tube_prefix, chosen.ttr, chosen.default_priority) == ("app.", 120, 2**16)
    assert (chosen.socket_timeout, chosen.binding_refresh) == (None, 0.0)
    with pytest.raises(TypeError, match="tube_prefix must be a str"):
        Options({"tube_prefix": 5})
    with pytest.raises(TypeError, match="default_priority must be an int"):
        Options({"default_priority": "high"})


@pytest.mark.parametrize(
    "name",
    ["celery", "celery@host.celery.pidbox", "a;b$c d", "été", "-lead", "x" * 60, "日本"],
)
def test_names_escape_and_back(name: str) -> None:
    escaped = tubes.escape(name)
    assert ";" not in escaped
    assert tubes.unescape(escaped) == name
    tube = tubes.queue_tube("", name)
    assert not tube.startswith("-")
    assert tubes.unescape(tube) == name
    binding = tubes.binding_tube("p.", "topic", name, "#." + name, name)
    assert tubes.parse_binding("p.", binding) == ("topic", name, "#." + name, name)


def test_tube_names() -> None:
    assert tubes.queue_tube("", "celery") == "celery"
    assert tubes.queue_tube("app.", "celery@h") == "app.celery$40h"
    assert tubes.binding_tube("", "fanout", "celery.pidbox", "", "w@h.celery.pidbox") == (
        ";b;f;celery.pidbox;;w$40h.celery.pidbox"
    )
    assert tubes.wake_tube("app.", "ab12") == "app.;w;ab12"
    assert tubes.is_wake_tube("app.", "app.;w;ab12")
    assert not tubes.is_wake_tube("", "celery")
    with pytest.raises(ValueError, match="needs a name"):
        tubes.queue_tube("", "")
    assert tubes.queue_tube("app.", "") == "app."
    with pytest.raises(ValueError, match="beanstalkd allows 200"):
        tubes.queue_tube("", "q" * 201)
    with pytest.raises(ValueError, match="beanstalkd allows 200"):
        tubes.queue_tube("", "@" * 67)
    with pytest.raises(ValueError, match="exchange type 'headers' is not supported"):
        tubes.binding_tube("", "headers", "e", "k", "q")
    with pytest.raises(ValueError, match="the binding of queue"):
        tubes.binding_tube("", "direct", "e" * 100, "k" * 100, "q")


@pytest.mark.parametrize(
    "tube",
    ["celery", ";b;d;e;k", ";b;x;e;k;q", ";b;d;e;k;q;r", ";b;d;$FF;k;q", "app.;b;d;e;k;q"],
)
def test_tubes_that_are_no_binding(tube: str) -> None:
    assert tubes.parse_binding("", tube) is None


def test_priorities() -> None:
    assert tubes.check_priority(0) == 0
    assert tubes.check_priority(2**32 - 1) == 2**32 - 1
    for wrong in (True, 1.5, "1", None):
        with pytest.raises(TypeError, match="priority must be an int"):
            tubes.check_priority(wrong)
    for out in (-1, 2**32):
        with pytest.raises(ValueError, match=r"priority must be from 0 \(most urgent\)"):
            tubes.check_priority(out)


def test_delays_from_eta() -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert tubes.delay_until((now + timedelta(seconds=600.9)).isoformat(), now) == 600
    assert tubes.delay_until((now + timedelta(hours=1)).astimezone(
        timezone(timedelta(hours=5))).isoformat(), now) == 3600
    assert tubes.delay_until("2030-01-01T12:00:10Z", now) == 10
    assert tubes.delay_until((now - timedelta(seconds=5)).isoformat(), now) == 0
    assert tubes.delay_until("9999-01-01T00:00:00+00:00", now) == 2**32 - 1
    # No time zone, not a date, or no header: the worker holds the message itself.
    assert tubes.delay_until("2030-01-01T12:10:00", now) == 0
    assert tubes.delay_until("tomorrow", now) == 0
    assert tubes.delay_until(None, now) == 0
    assert tubes.delay_until((datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()) in (
        3598, 3599)


def test_touch_interval() -> None:
    assert touch_interval(60) == 30
    assert touch_interval(2) == 1
    assert touch_interval(0) == 0.5


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe",
        b"not json",
        b"[1, 2]",
        b'{"properties": {}}',
        b'{"properties": {}, "greenstalk": {"queue": 1, "priority": 0, "ttr": 60}}',
        b'{"properties": [], "greenstalk": {"queue": "q", "priority": 0, "ttr": 60}}',
        b'{"properties": {}, "greenstalk": {"queue": "q", "priority": "0", "ttr": 60}}',
    ],
)
def test_bodies_that_hold_no_message(body: bytes) -> None:
    assert decode(greenstalk.Job(1, body)) is None


# -- against the servers ---------------------------------------------------------------


@pytest.fixture
def server_client(address: greenstalk.Address) -> Iterator[greenstalk.Client[bytes]]:
    """A plain greenstalk client of this test's server, to look at what kombu did."""
    with greenstalk.Client(address, socket_timeout=10) as client:
        yield client


@pytest.fixture
def tcp_url(start_server: StartServer) -> str:
    """A server of its own over TCP, for the slower tests that need not run twice."""
    return url_of(start_server().address)


def new_connection(url: str, **options: Any) -> kombu.Connection:
    return kombu.Connection(url, transport_options={**OPTIONS, **options})


def publish(conn: kombu.Connection, queue: kombu.Queue | str, body: Any = "hello",
            **options: Any) -> None:
    with conn.channel() as channel:
        target = kombu.Queue(queue, routing_key=queue) if isinstance(queue, str) else queue
        kombu.Producer(channel).publish(body, exchange=target.exchange,
                                        routing_key=target.routing_key, declare=[target],
                                        **options)


def waiting(client: greenstalk.Client[bytes], tube: str) -> int:
    """How many connections wait in a reserve on ``tube``."""
    try:
        return client.stats_tube(tube)["current-waiting"]
    except greenstalk.NotFoundError:
        return 0


def job_states(client: greenstalk.Client[bytes], tube: str) -> dict[str, int]:
    try:
        stats = client.stats_tube(tube)
    except greenstalk.NotFoundError:
        return {}
    return {state: stats[f"current-jobs-{state}"]  # type: ignore[literal-required]
            for state in ("ready", "reserved", "delayed", "buried")
            if stats[f"current-jobs-{state}"]}  # type: ignore[literal-required]


def test_ack_deletes_requeue_releases_reject_buries(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    with connection as conn, contextlib.closing(conn.SimpleQueue("verbs")) as queue:
        for body in ("acked", "requeued", "rejected"):
            queue.put(body)
        first = queue.get_nowait()
        assert job_states(server_client, "verbs") == {"ready": 2, "reserved": 1}
        first.ack()
        wait_until(lambda: job_states(server_client, "verbs") == {"ready": 2}, "the delete")
        second = queue.get_nowait()
        job_id = int(second.delivery_tag.split(".")[0])
        second.requeue()
        wait_until(lambda: server_client.stats_job(job_id)["state"] == "ready", "the release")
        assert server_client.stats_job(job_id)["releases"] == 1
        again = queue.get_nowait()
        assert again.payload == "requeued"
        assert int(again.delivery_tag.split(".")[0]) == job_id
        again.reject()
        wait_until(lambda: server_client.stats_job(job_id)["state"] == "buried", "the bury")
        assert queue.get_nowait().payload == "rejected"
    # The channel closed with the last message unacknowledged: it went back, as the same job.
    assert job_states(server_client, "verbs") == {"ready": 1, "buried": 1}
    server_client.use("verbs")
    assert server_client.peek_buried().id == job_id


def test_priority_delay_and_ttr_of_the_jobs(
    broker_url: str, server_client: greenstalk.Client[bytes]
) -> None:
    from datetime import datetime, timedelta, timezone

    eta = (datetime.now(timezone.utc) + timedelta(seconds=600)).isoformat()
    with new_connection(broker_url, ttr=90, default_priority=2**16) as conn:
        publish(conn, "jobs", "explicit", priority=0)
        publish(conn, "jobs", "default", priority=None)
        publish(conn, "jobs", "later", headers={"eta": eta})
        with pytest.raises(ValueError, match="message priority must be from 0"):
            publish(conn, "jobs", "wrong", priority=-1)
    server_client.use("jobs")
    explicit = server_client.peek_ready()
    assert server_client.stats_job(explicit)["pri"] == 0
    server_client.delete(explicit)
    default = server_client.stats_job(server_client.peek_ready())
    assert (default["pri"], default["ttr"], default["delay"]) == (2**16, 90, 0)
    later = server_client.stats_job(server_client.peek_delayed())
    assert 598 <= later["delay"] <= 600
    assert job_states(server_client, "jobs") == {"ready": 1, "delayed": 1}


def test_size_purge_and_delete(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    with connection as conn, conn.channel() as channel:
        queue = kombu.Queue("sized", routing_key="sized")(channel)
        queue.declare()
        assert queue.queue_declare(passive=True).message_count == 0
        producer = kombu.Producer(channel)
        for index in range(3):
            producer.publish(index, routing_key="sized")
        producer.publish("later", routing_key="sized", headers={"eta": "2999-01-01T00:00:00Z"})
        assert queue.queue_declare(passive=True).message_count == 4
        message = queue.get()
        message.reject()
        wait_until(lambda: job_states(server_client, "sized") == {"ready": 2, "delayed": 1,
                                                                  "buried": 1}, "the bury")
        assert queue.purge() == 3
        assert job_states(server_client, "sized") == {"buried": 1}
        # A queue another process declared exists while its tube does.
        with pytest.raises(conn.channel_errors):
            kombu.Queue("nobody")(conn.channel()).queue_declare(passive=True)
        server_client.use("theirs")
        assert kombu.Queue("theirs")(channel).queue_declare(passive=True).message_count == 0
        # Deleting a queue deletes its buried messages too; not when it is in use or not empty.
        producer.publish("kept", routing_key="sized")
        queue.delete(if_empty=True)
        assert job_states(server_client, "sized") == {"ready": 1, "buried": 1}
        server_client.watch("sized")
        queue.delete(if_unused=True)
        assert job_states(server_client, "sized") == {"ready": 1, "buried": 1}
        server_client.ignore("sized")
        queue.delete(if_unused=True)
        assert job_states(server_client, "sized") == {}
        queue.delete()


def test_acks_from_other_threads_wake_the_reserving_connection(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    """The reserver waits in a reserve (the queue is empty): an ack from a thread ends it."""
    received: list[Any] = []
    with connection as conn:
        publish(conn, "woken")
        consumer = kombu.Consumer(conn, [kombu.Queue("woken")],
                                  callbacks=[lambda body, message: received.append(message)])
        with consumer:
            conn.drain_events(timeout=5)
            wait_until(lambda: waiting(server_client, "woken") == 1,
                       "the reserver to wait")
            puts = server_client.stats()["cmd-put"]
            acker = threading.Thread(target=received[0].ack)
            acker.start()
            acker.join()
            wait_until(lambda: job_states(server_client, "woken") == {}, "the delete")
            assert server_client.stats()["cmd-put"] == puts + 1  # one wake-up
    # The wake tube is gone with its connection: nothing left behind.
    assert [tube for tube in server_client.tubes() if ";w;" in tube] == []


def test_a_held_message_is_touched_past_its_ttr(
    tcp_url: str, start_server: StartServer
) -> None:
    """TTR 4: a message held for 5 s is still this consumer's, and never timed out.

    (Touched every 2 s: the reserving connection's reserve ends then, before
    the server's DEADLINE_SOON.)
    """
    held: list[Any] = []
    with new_connection(tcp_url, ttr=4) as conn:
        publish(conn, "long")
        client = greenstalk.Client(server_address(conn), socket_timeout=10)
        consumer = kombu.Consumer(conn, [kombu.Queue("long")],
                                  callbacks=[lambda body, message: held.append(message)])
        with client, consumer:
            conn.drain_events(timeout=5)
            job_id = int(held[0].delivery_tag.split(".")[0])
            time.sleep(5)
            stats = client.stats_job(job_id)
            assert (stats["state"], stats["timeouts"], stats["reserves"]) == ("reserved", 0, 1)
            assert client.stats()["cmd-touch"] >= 2
            held[0].ack()
            wait_until(lambda: job_states(client, "long") == {}, "the delete")


def put_raw(url: str, tube: str, body: bytes, ttr: int, meta_ttr: int) -> int:
    """Put a job as greenstalk.kombu would, but claiming a TTR other than its own."""
    from kombu.utils.json import dumps

    message = {
        "body": body.decode(), "content-encoding": "utf-8", "content-type": "text/plain",
        "headers": {}, "properties": {"delivery_info": {"exchange": "", "routing_key": tube},
                                      "priority": 0},
        "greenstalk": {"queue": tube, "priority": 0, "ttr": meta_ttr},
    }
    with greenstalk.Client(server_address(kombu.Connection(url)), use=tube) as client:
        return client.put(dumps(message).encode(), ttr=ttr)


def test_deadline_soon_makes_the_reserver_touch(tcp_url: str, caplog: Any) -> None:
    """A job whose real TTR (2) is shorter than its message claims (20): DEADLINE_SOON saves it."""
    job_id = put_raw(tcp_url, "claims", b"x", ttr=2, meta_ttr=20)
    held: list[Any] = []
    with new_connection(tcp_url) as conn:
        client = greenstalk.Client(server_address(conn), socket_timeout=10)
        consumer = kombu.Consumer(conn, [kombu.Queue("claims")],
                                  callbacks=[lambda body, message: held.append(message)])
        with client, consumer:
            conn.drain_events(timeout=5)
            time.sleep(3)
            assert client.stats_job(job_id)["timeouts"] == 0
            assert client.stats()["cmd-touch"] >= 1
            held[0].ack()


def test_a_job_lost_before_its_touch_is_reported(tcp_url: str, caplog: Any) -> None:
    """A held job that stopped being ours (its TTR ran out): the touch finds it gone, and says so.

    The job's TTR running out is played by releasing it on the reserving
    connection while its thread waits (beanstalkd 1.12 times out the jobs
    of a connection that says nothing only when it next speaks).
    """
    job_id = put_raw(tcp_url, "lost", b"x", ttr=60, meta_ttr=2)
    held: list[Any] = []
    with new_connection(tcp_url) as conn:
        client = greenstalk.Client(server_address(conn), watch="lost", socket_timeout=10)
        consumer = kombu.Consumer(conn, [kombu.Queue("lost")],
                                  callbacks=[lambda body, message: held.append(message)])
        with client, consumer, caplog.at_level(logging.WARNING, "greenstalk.kombu"):
            wait_until(lambda: client.stats_job(job_id)["state"] == "reserved", "the reserve")
            consumer.channel._reserver._client.release(job_id)
            wait_until(lambda: "was taken back by the server" in caplog.text, "the warning")
            # Another worker has it now: acknowledging it here changes nothing, and says so.
            assert client.reserve(5).id == job_id
            conn.drain_events(timeout=5)
            held[0].ack()
            wait_until(lambda: f"job {job_id} is no longer reserved by this worker"
                       in caplog.text, "the other warning")
            assert client.stats_job(job_id)["state"] == "reserved"


def test_no_ack_consumers_delete_on_delivery(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    received: list[Any] = []
    with connection as conn:
        publish(conn, "fire", "one")
        publish(conn, "fire", "two")
        channel = conn.channel()
        message = kombu.Queue("fire")(channel).get(no_ack=True)
        assert message.payload == "one"
        consumer = kombu.Consumer(conn, [kombu.Queue("fire")], no_ack=True,
                                  callbacks=[lambda body, message: received.append(body)])
        with consumer:
            conn.drain_events(timeout=5)
        assert received == ["two"]
        wait_until(lambda: job_states(server_client, "fire") == {}, "the deletes")


def test_fanout_reaches_the_queues_of_every_process(
    broker_url: str, server_client: greenstalk.Client[bytes]
) -> None:
    """Each kombu connection stands for a process: it knows only its own bindings."""
    exchange = kombu.Exchange("news", type="fanout")
    with new_connection(broker_url) as first, new_connection(broker_url) as second, \
            new_connection(broker_url) as publisher:
        kombu.Queue("reader-1", exchange)(first.channel()).declare()
        kombu.Queue("reader-2", exchange)(second.channel()).declare()
        with publisher.channel() as channel:
            kombu.Producer(channel, exchange=exchange).publish("first", declare=[exchange])
        assert job_states(server_client, "reader-1") == {"ready": 1}
        assert job_states(server_client, "reader-2") == {"ready": 1}
        second.release()
        with publisher.channel() as channel:
            kombu.Producer(channel, exchange=exchange).publish("second", declare=[exchange])
        assert job_states(server_client, "reader-1") == {"ready": 2}
        assert job_states(server_client, "reader-2") == {"ready": 1}


def test_direct_and_topic_bindings_of_other_processes(
    broker_url: str, server_client: greenstalk.Client[bytes]
) -> None:
    """Celery's replies: the publisher declares the exchange, not the queue bound to it."""
    replies = kombu.Exchange("reply.pidbox", type="direct")
    events = kombu.Exchange("events", type="topic")
    with new_connection(broker_url, binding_refresh=60) as consumer, \
            new_connection(broker_url, binding_refresh=60) as other, \
            new_connection(broker_url, binding_refresh=60) as publisher:
        channel = consumer.channel()
        kombu.Queue("ticket-1.reply", replies, routing_key="ticket-1")(channel).declare()
        kombu.Queue("all-events", events, routing_key="task.#")(channel).declare()
        with publisher.channel() as pub:
            producer = kombu.Producer(pub)
            producer.publish("reply", exchange=replies, routing_key="ticket-1",
                             declare=[replies])
            producer.publish("nobody's", exchange=replies, routing_key="ticket-2")
            kombu.Queue("mine", events, routing_key="task.succeeded")(pub).declare()
            producer.publish("event", exchange=events, routing_key="task.succeeded")
            # A binding made after the publisher read the list, while the publisher
            # has a queue of its own for the key: seen once the list is read again.
            kombu.Queue("late", events, routing_key="task.*")(other.channel()).declare()
            producer.publish("event", exchange=events, routing_key="task.succeeded")
            publisher.transport.forget_bindings()
            producer.publish("event", exchange=events, routing_key="task.succeeded")
        assert job_states(server_client, "ticket-1.reply") == {"ready": 1}
        assert job_states(server_client, "all-events") == {"ready": 3}
        assert job_states(server_client, "mine") == {"ready": 3}
        assert job_states(server_client, "late") == {"ready": 1}
        # Unbinding is seen by others too.
        kombu.Queue("ticket-1.reply", replies, routing_key="ticket-1")(channel).unbind_from(
            replies, routing_key="ticket-1")
        with publisher.channel() as pub:
            kombu.Producer(pub).publish("late reply", exchange=replies, routing_key="ticket-1")
        assert job_states(server_client, "ticket-1.reply") == {"ready": 1}


def test_unroutable_messages_go_to_the_dead_letter_queue(
    broker_url: str, server_client: greenstalk.Client[bytes], caplog: Any
) -> None:
    exchange = kombu.Exchange("routed", type="direct")
    with new_connection(broker_url, deadletter_queue="lost") as conn, conn.channel() as channel:
        kombu.Producer(channel).publish("astray", exchange=exchange, routing_key="nowhere",
                                        declare=[exchange])
    assert job_states(server_client, "lost") == {"ready": 1}
    assert "dead letter queue 'lost'" in caplog.text


def test_a_job_that_holds_no_message_is_buried(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes], caplog: Any
) -> None:
    server_client.use("mixed")
    foreign = server_client.put(b"put by something else", priority=0)
    received: list[Any] = []
    with connection as conn:
        publish(conn, "mixed", "kombu's")
        consumer = kombu.Consumer(conn, [kombu.Queue("mixed")],
                                  callbacks=[acknowledge(received)])
        with consumer:
            drain(conn, received, 1)
        assert received == ["kombu's"]
        server_client.put(b"another", priority=0)
        publish(conn, "mixed", "got")
        assert kombu.Queue("mixed")(conn.channel()).get(no_ack=True).payload == "got"
    assert server_client.stats_job(foreign)["state"] == "buried"
    assert job_states(server_client, "mixed") == {"buried": 2}
    assert f"job {foreign} holds no kombu message" in caplog.text


def test_a_cancelled_consumer_hands_back_what_was_reserved_for_it(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    received: list[Any] = []
    with connection as conn:
        for body in ("first", "second"):
            publish(conn, "ahead", body)
        consumer = kombu.Consumer(conn, [kombu.Queue("ahead")],
                                  callbacks=[acknowledge(received)])
        with consumer:
            conn.drain_events(timeout=5)
            # One read ahead: the second is reserved before anyone asks for it.
            wait_until(lambda: job_states(server_client, "ahead") == {"reserved": 1},
                       "the read-ahead")
        conn.drain_events(timeout=5)
        assert received == ["first"]
        wait_until(lambda: job_states(server_client, "ahead") == {"ready": 1}, "the release")


def test_a_get_takes_what_the_consumer_reserved_ahead(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    with connection as conn, contextlib.closing(conn.SimpleQueue("mixed-use")) as queue:
        queue.put("first")
        assert queue.get(timeout=5).payload == "first"
        # The queue's consumer goes on reading one ahead: a get takes that message.
        queue.put("second")
        wait_until(lambda: job_states(server_client, "mixed-use") == {"reserved": 2},
                   "the read-ahead")
        message = queue.get_nowait()
        assert message.payload == "second"
        message.ack()
        with pytest.raises(queue.Empty):
            queue.get_nowait()


def test_anonymous_and_undeclared_exchanges(broker_url: str) -> None:
    """The default exchange routes by queue name; an exchange nobody here declared,
    by the bindings other processes advertise."""
    with new_connection(broker_url) as binder, new_connection(broker_url) as publisher:
        kombu.Queue("bound", kombu.Exchange("elsewhere"), routing_key="key")(
            binder.channel()).declare()
        channel = publisher.channel()
        assert channel._lookup("", "by-name") == ["by-name"]
        assert channel._lookup("elsewhere", "key") == ["bound"]
        assert channel._lookup("elsewhere", "other") == []
        # Unbinding what was never bound changes nothing.
        channel.queue_unbind("bound", "elsewhere", "other")
        assert channel._lookup("elsewhere", "key") == ["bound"]


def test_a_failing_callback_keeps_the_other_deliveries(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    received: list[Any] = []

    def callback(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()
        if body == "first":
            raise RuntimeError("the callback fails")

    with connection as conn:
        for body in ("first", "second"):
            publish(conn, "failing", body)
        consumer = kombu.Consumer(conn, [kombu.Queue("failing")], callbacks=[callback],
                                  prefetch_count=2)
        with consumer:
            wait_until(lambda: job_states(server_client, "failing") == {"reserved": 2},
                       "both to be reserved")
            with pytest.raises(RuntimeError, match="the callback fails"):
                conn.drain_events(timeout=5)
            conn.drain_events(timeout=5)
    assert received == ["first", "second"]


def test_drain_events_without_a_timeout(connection: kombu.Connection) -> None:
    received: list[Any] = []
    with connection as conn:
        consumer = kombu.Consumer(conn, [kombu.Queue("waited")],
                                  callbacks=[acknowledge(received)])

        def send() -> None:
            with conn.clone() as other:
                publish(other, "waited")

        with consumer:
            sender = threading.Timer(0.2, send)
            sender.start()
            conn.drain_events()
            sender.join()
    assert received == ["hello"]


def test_wake_ups_left_by_a_killed_process_are_collected(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    with greenstalk.Client(server_client.address, use=";w;dead") as dead:
        dead.put(b"wake dead")
    server_client.use(";w;alive")
    server_client.watch(";w;alive")
    server_client.put(b"wake alive")
    with connection as conn:
        consumer = kombu.Consumer(conn, [kombu.Queue("any")], callbacks=[])
        with consumer:
            assert ";w;dead" not in server_client.tubes()
            assert job_states(server_client, ";w;alive") == {"ready": 1}


def test_a_closed_channel_leaves_no_wake_up_behind(
    connection: kombu.Connection, server_client: greenstalk.Client[bytes]
) -> None:
    """Closing wakes the reserver from its reserve; it deletes its wake-up before it goes."""
    with connection as conn:
        channel = conn.channel()
        kombu.Consumer(channel, [kombu.Queue("idle")], callbacks=[]).consume()
        wait_until(lambda: waiting(server_client, "idle") == 1,
                   "the reserver to wait")
        wake_tubes = [tube for tube in server_client.tubes() if ";w;" in tube]
        channel.close()
        for tube in wake_tubes:
            assert job_states(server_client, tube) == {}


def test_a_lost_server_is_a_connection_error(
    start_server: StartServer, caplog: Any
) -> None:
    """Not a socket.timeout (which means "no message yet"), and acks after it are reported."""
    server = start_server()
    received: list[Any] = []
    with new_connection(url_of(server.address)) as conn:
        publish(conn, "doomed")
        consumer = kombu.Consumer(conn, [kombu.Queue("doomed")],
                                  callbacks=[lambda body, message: received.append(message)])
        with consumer:
            conn.drain_events(timeout=5)
            server.stop()
            with pytest.raises(conn.connection_errors) as failure:
                conn.drain_events(timeout=10)
            assert not isinstance(failure.value, socket.timeout)
            assert "the connection reserving jobs failed" in str(failure.value)
            received[0].ack()
            assert "cannot be deleted: its connection is closed" in caplog.text
            with pytest.raises(greenstalk.ClientConnectionError):
                kombu.Queue("doomed")(consumer.channel).get()
            with pytest.raises(greenstalk.ClientConnectionError):
                consumer.channel.basic_consume("doomed", False, print, "other")


def test_failover_between_unix_sockets(start_server: StartServer, tmp_path: Path) -> None:
    live = start_server(unix=True)
    urls = f"beanstalk+unix://{tmp_path / 'missing.sock'};{url_of(live.address)}"
    with new_connection(urls) as conn, contextlib.closing(conn.SimpleQueue("over")) as queue:
        conn.ensure_connection(max_retries=2, interval_start=0)
        queue.put("there")
        assert queue.get(timeout=5).payload == "there"
    assert server_address(conn) == live.address


def test_reserved_tuple() -> None:
    """What a reserver hands over names the reserver, the job, its queue and priority."""
    fields = Reserved._fields
    assert fields == ("reserver", "job_id", "queue", "payload", "priority")


FORKING_CONSUMER = """
import os, sys, time, kombu
import greenstalk.kombu
url, out = sys.argv[1], sys.argv[2]
conn = kombu.Connection(url)
held = []
consumer = kombu.Consumer(conn, [kombu.Queue("forked")],
                          callbacks=[lambda body, message: held.append(message)])
consumer.consume()
conn.drain_events(timeout=10)
if os.fork() == 0:
    with open(out, "w") as child:
        child.write(str(os.getpid()))
    time.sleep(60)
    os._exit(0)
time.sleep(60)
"""


def test_a_forked_child_does_not_keep_the_parents_jobs(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Celery's prefork pool forks children from a connected worker: when the worker dies,
    its jobs go back at once though the child lives (the child closed its copy of the socket)."""
    import signal

    server = start_server()
    url = url_of(server.address)
    with new_connection(url) as conn:
        publish(conn, "forked")
    child_pid = tmp_path / "child"
    parent = subprocess.Popen([sys.executable, "-c", FORKING_CONSUMER, url, str(child_pid)])
    with greenstalk.Client(server.address, socket_timeout=10) as client:
        try:
            wait_until(lambda: child_pid.exists() and child_pid.read_text() != "", "the fork")
            assert job_states(client, "forked") == {"reserved": 1}
            parent.kill()
            parent.wait(10)
            wait_until(lambda: job_states(client, "forked") == {"ready": 1}, "the release")
        finally:
            parent.kill()
            parent.wait(10)
            if child_pid.exists() and child_pid.read_text():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(child_pid.read_text()), signal.SIGKILL)


def test_a_lost_server_stops_an_event_loop_with_a_connection_error(
    start_server: StartServer,
) -> None:
    """Celery's event loop propagates the transport's connection errors, and reconnects."""
    from kombu.asynchronous import Hub

    server = start_server()
    hub = Hub()
    with new_connection(url_of(server.address)) as conn:
        consumer = kombu.Consumer(conn, [kombu.Queue("looped")], callbacks=[])
        with consumer:
            conn.register_with_event_loop(hub)
            hub.propagate_errors = conn.connection_errors

            def run_loop() -> None:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    hub.run_once()

            try:
                server.stop()
                with pytest.raises(greenstalk.ClientConnectionError, match="reserving jobs"):
                    run_loop()
            finally:
                hub.close()
