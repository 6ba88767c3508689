"""TLS: the client behind a TLS terminator (as with stunnel in front of beanstalkd).

A self-signed certificate is made at test time with the ``openssl`` command
line tool; :class:`TLSProxy` (asyncio, in a thread) terminates TLS and
forwards the bytes to a real beanstalkd.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import greenstalk
from greenstalk import ClientConnectionError, ClientTimeoutError
from greenstalk.testing import BeanstalkdProcess, ServerAddress

from .conftest import StartServer
from .fakeserver import FakeServer, Send, Silent, Step

AnyClient = greenstalk.Client[Any]


class Certificate:
    def __init__(self, certfile: Path, keyfile: Path) -> None:
        self.certfile = certfile
        self.keyfile = keyfile

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def client_context(self, check_hostname: bool = True) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.certfile))
        context.check_hostname = check_hostname
        return context


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command line tool is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    arguments = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ]
    subprocess.run(
        [openssl, *arguments, "-keyout", str(keyfile), "-out", str(certfile)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return Certificate(certfile, keyfile)


class TLSProxy:
    """Accept TLS connections and forward their bytes to ``backend``, in a thread.

    Listens on loopback TCP port 0, or on ``unix_path``; the socket listens
    before the thread starts. Leaving the ``with`` block closes every
    connection, handshakes under way included.
    """

    def __init__(
        self, context: ssl.SSLContext, backend: ServerAddress, unix_path: str | None = None
    ) -> None:
        self.context = context
        self.backend = backend
        self.address: ServerAddress
        if unix_path is not None:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(unix_path)
            self.address = unix_path
        else:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            host, port = listener.getsockname()
            self.address = (host, port)
        listener.listen(16)
        listener.setblocking(False)
        self._listener = listener
        self.connections = 0
        """How many TLS handshakes succeeded."""
        self.loop_errors: list[dict[str, Any]] = []
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda _, context: self.loop_errors.append(context))
        self._stopping: asyncio.Future[None] = self._loop.create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._main, name="tlsproxy", daemon=True)

    def __enter__(self) -> TLSProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop already ended
            self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the TLS proxy did not stop"
        self._loop.close()
        self._listener.close()

    def _stop(self) -> None:
        if not self._stopping.done():
            self._stopping.set_result(None)

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        # A reader callback rather than sock_accept(): an accepted socket is
        # recorded at once, and cannot be lost to a cancellation.
        self._loop.add_reader(self._listener.fileno(), self._accept)
        try:
            await self._stopping
        finally:
            self._loop.remove_reader(self._listener.fileno())
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for raw in self._accepted:  # those whose task never started
                raw.close()
            await asyncio.sleep(0)  # let closed transports finish

    def _accept(self) -> None:
        try:
            raw, _ = self._listener.accept()
        except BlockingIOError:
            return
        raw.setblocking(False)
        self._accepted.append(raw)
        task = self._loop.create_task(self._handle(raw))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, raw: socket.socket) -> None:
        writers: list[asyncio.StreamWriter] = []
        try:
            reader = asyncio.StreamReader()
            protocol = asyncio.StreamReaderProtocol(reader)
            # The handshake happens here; a failed or cancelled one closes ``raw``.
            transport, _ = await self._loop.connect_accepted_socket(
                lambda: protocol, raw, ssl=self.context
            )
            writers.append(asyncio.StreamWriter(transport, protocol, reader, self._loop))
            self.connections += 1
            if isinstance(self.backend, str):
                backend_reader, backend_writer = await asyncio.open_unix_connection(self.backend)
            else:
                backend_reader, backend_writer = await asyncio.open_connection(*self.backend)
            writers.append(backend_writer)
            await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writers[0]))
        except OSError:
            pass
        except asyncio.CancelledError:
            for writer in writers:  # stopping: no TLS shutdown, no waiting
                writer.transport.abort()
            raise
        finally:
            for writer in writers:
                writer.close()
            raw.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file, then close the other side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest.fixture
def backend(start_server: StartServer) -> BeanstalkdProcess:
    """A real beanstalkd on loopback TCP."""
    return start_server()


@pytest.fixture
def proxy(certificate: Certificate, backend: BeanstalkdProcess) -> Iterator[TLSProxy]:
    with TLSProxy(certificate.server_context(), backend.address) as proxy:
        yield proxy


@contextlib.contextmanager
def no_socket_leak() -> Iterator[None]:
    """Fail if a socket made inside the block was left for the garbage collector."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks


def raises_exactly(error_type: type[BaseException], call: Callable[[], object]) -> None:
    with pytest.raises(error_type) as info:
        call()
    assert type(info.value) is error_type, repr(info.value)


def test_put_reserve_delete_through_tls(
    certificate: Certificate, proxy: TLSProxy, backend: BeanstalkdProcess
) -> None:
    context = certificate.client_context()
    with greenstalk.Client(proxy.address, ssl=context, socket_timeout=5, use="tls") as client:
        job_id = client.put(b"secret")
        client.watch("tls")
        job = client.reserve(timeout=0)
        assert (job.id, job.body) == (job_id, b"secret")
        client.delete(job)
        raises_exactly(greenstalk.NotFoundError, lambda: client.peek(job_id))
        # Pipelined puts through TLS; the jobs really reach the server.
        ids = client.put_many([b"%d" % i for i in range(3000)])
        assert ids == list(range(ids[0], ids[0] + 3000))
    assert proxy.connections == 1
    with greenstalk.Client(backend.address) as plain:
        assert plain.stats_tube("tls")["current-jobs-ready"] == 3000


def test_tls_by_host_name(certificate: Certificate, proxy: TLSProxy) -> None:
    assert isinstance(proxy.address, tuple)
    address = ("localhost", proxy.address[1])
    with greenstalk.Client(address, ssl=certificate.client_context(), socket_timeout=5) as client:
        assert client.put(b"x") >= 1


def test_tls_reserve_timeout_longer_than_socket_timeout(
    certificate: Certificate, proxy: TLSProxy
) -> None:
    context = certificate.client_context()
    with greenstalk.Client(proxy.address, ssl=context, socket_timeout=0.5) as client:
        raises_exactly(greenstalk.TimedOutError, lambda: client.reserve(timeout=1))
        assert not client.closed
        job_id = client.put(b"x", delay=1)
        assert client.reserve(timeout=2).id == job_id


def test_tls_server_goes_away(
    certificate: Certificate, proxy: TLSProxy, backend: BeanstalkdProcess
) -> None:
    context = certificate.client_context()
    with greenstalk.Client(proxy.address, ssl=context, socket_timeout=5) as client:
        client.put(b"x")
        backend.stop()
        raises_exactly(ClientConnectionError, lambda: client.put(b"x"))
        assert client.closed


def test_untrusted_certificate(proxy: TLSProxy) -> None:
    context = ssl.create_default_context()  # does not trust the test certificate
    with no_socket_leak():
        raises_exactly(
            ClientConnectionError,
            lambda: greenstalk.Client(proxy.address, ssl=context, socket_connect_timeout=5),
        )


def test_tls_to_a_server_that_answers_in_plain_text(certificate: Certificate) -> None:
    script: list[Step] = [Send(b"INSERTED 1\r\n"), Silent(timeout=3)]
    with FakeServer(script) as server, no_socket_leak():
        raises_exactly(
            ClientConnectionError,
            lambda: greenstalk.Client(
                server.address, ssl=certificate.client_context(), socket_connect_timeout=5
            ),
        )


def test_tls_handshake_bounded_by_connect_timeout(certificate: Certificate) -> None:
    with FakeServer([Silent(timeout=3)]) as server, no_socket_leak():
        start = time.monotonic()
        raises_exactly(
            ClientTimeoutError,
            lambda: greenstalk.Client(
                server.address, ssl=certificate.client_context(), socket_connect_timeout=0.3
            ),
        )
        assert time.monotonic() - start < 2


def test_tls_handshake_bounded_by_socket_timeout(certificate: Certificate) -> None:
    """socket_timeout bounds every wait on the socket, the TLS handshake's too."""
    with FakeServer([Silent(timeout=3)]) as server, no_socket_leak():
        start = time.monotonic()
        raises_exactly(
            ClientTimeoutError,
            lambda: greenstalk.Client(
                server.address, ssl=certificate.client_context(), socket_timeout=0.3
            ),
        )
        assert time.monotonic() - start < 2


def test_tls_over_a_unix_socket(
    certificate: Certificate, backend: BeanstalkdProcess, tmp_path: Path
) -> None:
    path = str(tmp_path / "tls.sock")
    with TLSProxy(certificate.server_context(), backend.address, unix_path=path):
        # No host name to check on a Unix socket; the certificate is still verified.
        context = certificate.client_context(check_hostname=False)
        with greenstalk.Client(path, ssl=context, socket_timeout=5) as client:
            job_id = client.put(b"over unix")
            assert client.reserve(timeout=0).id == job_id


def test_tls_unix_socket_with_hostname_check(
    certificate: Certificate, backend: BeanstalkdProcess, tmp_path: Path
) -> None:
    """A context that checks host names cannot work on a Unix socket: a ValueError,
    and no socket left open."""
    path = str(tmp_path / "tls.sock")
    with TLSProxy(certificate.server_context(), backend.address, unix_path=path):
        context = certificate.client_context(check_hostname=True)
        with no_socket_leak():
            raises_exactly(
                ValueError, lambda: greenstalk.Client(path, ssl=context, socket_timeout=5)
            )


def test_tls_over_a_connected_socket(certificate: Certificate, proxy: TLSProxy) -> None:
    """``ssl`` applies to a connected socket given as the address too, never plain text."""
    assert isinstance(proxy.address, tuple)
    context = certificate.client_context(check_hostname=False)
    sock = socket.create_connection(proxy.address, timeout=5)
    with sock, greenstalk.Client(sock, ssl=context, socket_timeout=5) as client:
        job_id = client.put(b"wrapped")
        assert client.reserve(timeout=0).id == job_id
