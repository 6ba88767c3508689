"""``Client.interrupt()``: waking a thread blocked in a command, from another thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import greenstalk
from greenstalk.testing import BeanstalkdProcess

from . import test_tls
from .test_tls import Certificate, TLSProxy
from .waiting import wait_until

AnyClient = greenstalk.Client[Any]

# test_tls's fixtures: a TLS terminator in front of a real server.
certificate = test_tls.certificate
backend = test_tls.backend
proxy = test_tls.proxy

INTERRUPTED_WAITING = (
    "interrupted by Client.interrupt() while the command was under way; connection closed"
)
# How long the interrupted thread may take to raise.
PROMPTLY = 2.0


class Blocked:
    """A thread in ``client.reserve()`` (no timeout), and what the call ended with."""

    def __init__(self, client: AnyClient, observer: AnyClient) -> None:
        self.job: greenstalk.Job[Any] | None = None
        self.error: BaseException | None = None
        self._client = client
        self._thread = threading.Thread(target=self._reserve, daemon=True)
        waiting = observer.stats()["current-waiting"]
        self._thread.start()
        wait_until(
            lambda: observer.stats()["current-waiting"] == waiting + 1,
            "the thread waits in reserve on the server",
        )

    def _reserve(self) -> None:
        try:
            self.job = self._client.reserve()
        except BaseException as error:
            self.error = error

    def ended(self, seconds: float) -> None:
        self._thread.join(seconds)
        assert not self._thread.is_alive(), f"the reserve still waits after {seconds} s"


def raised_exactly(blocked: Blocked, error_type: type[BaseException]) -> BaseException:
    assert blocked.job is None
    assert type(blocked.error) is error_type, repr(blocked.error)
    return blocked.error


@pytest.fixture
def observer(address: greenstalk.Address) -> Iterator[AnyClient]:
    """A second connection, to see what the server sees."""
    with greenstalk.Client(address) as client:
        yield client


def adopted(address: greenstalk.Address) -> socket.socket:
    """A connected socket with its own timeout: the client waits with poll()."""
    if isinstance(address, tuple):
        sock = socket.create_connection(address)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(address))
    sock.settimeout(60)
    return sock


@pytest.mark.parametrize("connection", ["plain", "socket_timeout", "adopted"])
def test_a_blocked_reserve_raises_promptly(
    address: greenstalk.Address, observer: AnyClient, connection: str
) -> None:
    if connection == "adopted":
        client: AnyClient = greenstalk.Client(adopted(address), watch="empty")
    elif connection == "socket_timeout":  # a bound the kernel keeps (SO_RCVTIMEO)
        client = greenstalk.Client(address, watch="empty", socket_timeout=30)
    else:
        client = greenstalk.Client(address, watch="empty")
    with client:
        blocked = Blocked(client, observer)
        assert not client.closed
        client.interrupt()
        blocked.ended(PROMPTLY)
        assert str(raised_exactly(blocked, greenstalk.ClientConnectionError)) == (
            INTERRUPTED_WAITING
        )
        assert client.closed
        # Without reconnect the client stays closed, saying why.
        with pytest.raises(greenstalk.CommandNotSentError) as info:
            client.stats()
        assert str(info.value) == f"the connection is closed: {INTERRUPTED_WAITING}"
        assert client.closed
        wait_until(
            lambda: observer.stats()["current-connections"] == 1,
            "the server sees the connection closed",
        )
        assert observer.stats()["current-waiting"] == 0


def test_with_reconnect_the_next_command_connects_again_with_the_same_tubes(
    address: greenstalk.Address, observer: AnyClient
) -> None:
    with greenstalk.Client(address, use="jobs", watch="jobs", reconnect=True) as client:
        blocked = Blocked(client, observer)
        client.interrupt()
        blocked.ended(PROMPTLY)
        raised_exactly(blocked, greenstalk.ClientConnectionError)
        assert client.closed
        assert client.reconnects == 0
        job_id = client.put(b"after the interrupt")
        assert client.reconnects == 1
        assert not client.closed
        job = client.reserve(timeout=10)
        assert (job.id, job.body) == (job_id, b"after the interrupt")
        assert client.watching() == ["jobs"]
        assert client.using() == "jobs"
        assert observer.stats_tube("jobs")["current-jobs-reserved"] == 1
        client.delete(job)
        # The new connection can be interrupted in turn.
        blocked = Blocked(client, observer)
        client.interrupt()
        blocked.ended(PROMPTLY)
        raised_exactly(blocked, greenstalk.ClientConnectionError)
        assert client.stats_tube("jobs")["current-watching"] == 1
        assert client.reconnects == 2


def test_jobs_the_connection_held_go_back_to_the_ready_queue(
    address: greenstalk.Address, observer: AnyClient
) -> None:
    with greenstalk.Client(address) as client:
        held = client.put(b"held")
        assert client.reserve(timeout=0).id == held
        blocked = Blocked(client, observer)
        client.interrupt()
        blocked.ended(PROMPTLY)
        raised_exactly(blocked, greenstalk.ClientConnectionError)
        wait_until(lambda: observer.stats_job(held)["state"] == "ready", "the held job is released")


@pytest.mark.parametrize("reconnect", [False, True])
def test_interrupt_with_no_command_waiting(
    address: greenstalk.Address, observer: AnyClient, reconnect: bool
) -> None:
    with greenstalk.Client(address, use="idle", reconnect=reconnect) as client:
        client.interrupt()
        assert client.closed
        client.interrupt()
        assert client.closed
        if reconnect:
            job_id = client.put(b"x")
            assert observer.peek(job_id).body == b"x"
            assert observer.stats_job(job_id)["tube"] == "idle"
            assert client.reconnects == 1
            assert not client.closed
        else:
            with pytest.raises(greenstalk.CommandNotSentError) as info:
                client.put(b"x")
            assert str(info.value) == (
                "the connection is closed: interrupted by Client.interrupt()"
            )
            assert observer.stats()["cmd-put"] == 0


@pytest.mark.parametrize("reconnect", [False, True])
def test_interrupt_after_close_does_nothing(address: greenstalk.Address, reconnect: bool) -> None:
    client = greenstalk.Client(address, reconnect=reconnect)
    client.close()
    client.interrupt()
    client.interrupt()
    assert client.closed
    with pytest.raises(greenstalk.CommandNotSentError) as info:
        client.stats()
    assert str(info.value) == "the connection is closed: closed by the client"


class InterruptedBeforeSending(greenstalk.Client[bytes]):
    """A client interrupted in the moment between its check of the connection and the send."""

    armed = True

    def _live_socket(self) -> socket.socket:
        sock = super()._live_socket()
        if self.armed:
            self.armed = False
            self.interrupt()
        return sock


def test_a_command_not_yet_sent_is_not_sent_again(
    address: greenstalk.Address, observer: AnyClient
) -> None:
    with InterruptedBeforeSending(address, reconnect=True) as client:
        with pytest.raises(greenstalk.CommandNotSentError) as info:
            client.put(b"never sent")
        assert type(info.value) is greenstalk.CommandNotSentError
        assert str(info.value) == "interrupted by Client.interrupt() before the command was sent"
        assert client.closed
        assert client.reconnects == 0
        assert observer.stats()["cmd-put"] == 0
        # The next command connects again, and is sent.
        job_id = client.put(b"sent")
        assert client.reconnects == 1
        assert observer.peek(job_id).body == b"sent"


# -- through TLS ---------------------------------------------------------------


def test_a_blocked_reserve_through_tls_raises_promptly(
    certificate: Certificate, proxy: TLSProxy, backend: BeanstalkdProcess
) -> None:
    context = certificate.client_context()
    client = greenstalk.Client(
        proxy.address, ssl=context, socket_timeout=30, watch="empty", reconnect=True
    )
    with client, greenstalk.Client(backend.address) as observer:
        blocked = Blocked(client, observer)
        client.interrupt()
        blocked.ended(PROMPTLY)
        assert str(raised_exactly(blocked, greenstalk.ClientConnectionError)) == (
            INTERRUPTED_WAITING
        )
        assert client.closed
        observer.use("empty")
        job_id = observer.put(b"through TLS")
        assert client.reserve(timeout=10).id == job_id
        assert client.reconnects == 1
        assert proxy.connections == 2
