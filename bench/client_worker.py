"""Benchmark worker: times one beanstalkd client library against a running server.

``bench/clients.py`` starts one worker per client library, each with the
Python of that library's virtual environment (greenstalk 2.1.1 shares our
import name, so it cannot live beside us), pinned to a CPU with ``taskset``.
This file therefore imports nothing from this repository: only the standard
library, and inside the matching branch, the client under test.

Protocol: the worker prints one JSON line describing the client, then reads
requests, one JSON object a line, from stdin and answers each with one JSON
line on stdout::

    {"op": "put", "size": 100, "n": 10000}
    -> {"op": "put", "size": 100, "n": 10000, "seconds": 0.74, "ops_per_s": 13513.5}

``op`` is ``put`` (one ``put`` per job), ``reserve-delete`` (``reserve``
with timeout 0 then ``delete``, per job) or ``put-many`` (one pipelined
``put_many`` of n jobs; only clients that have it). ``raw-put`` times
pipelined puts written by this file's own minimal connection, whatever the
client, batched like our ``put_many``: the reference for ``put-many``.
A failure is answered with ``{"error": "..."}``.

Before every measurement the tube is drained, and the jobs that
``reserve-delete`` consumes are inserted, by a separate raw connection
(pipelined, outside the timed section), so every client and round starts
from the same server state. After it, the same connection drains the tube
again and checks that the measured operation left exactly the jobs it
should have.

Run by hand::

    echo '{"op": "put", "size": 100, "n": 1000}' | \
        python bench/client_worker.py --client ours --host 127.0.0.1 --port 11300
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable

CLIENTS = ("ours", "greenstalk-2.1.1", "pystalk")
OPERATIONS = ("put", "reserve-delete", "put-many", "raw-put")

_RECEIVE_SIZE = 65536
# Reserves per pipelined drain batch. All of a batch goes out before any
# reply is read; the commands are small, so the send never blocks.
_BATCH = 256
# Puts per pipelined batch: up to 512 commands or the first to pass 1 MiB,
# the batch shape of our put_many, so that raw-put shows the wire's speed
# for that shape and put-many's distance from it is the library's cost.
_PUT_BATCH = 512
_PUT_BATCH_BYTES = 1 << 20


class Subject:
    """The client under test, reduced to the calls the benchmark times."""

    def __init__(
        self,
        name: str,
        version: str,
        module_file: str,
        put: Callable[[bytes], object],
        reserve: Callable[[], Any],
        delete: Callable[[Any], object],
        body_of: Callable[[Any], bytes],
        close: Callable[[], object],
        put_many: Callable[[list[bytes]], Sequence[int]] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.module_file = module_file
        self.put = put
        self.reserve = reserve
        self.delete = delete
        self.body_of = body_of
        self.close = close
        self.put_many = put_many


def open_ours(host: str, port: int) -> Subject:
    """Connect this repository's greenstalk (the venv running this worker must have it)."""
    import greenstalk

    if not hasattr(greenstalk.Client, "put_many"):
        raise RuntimeError(f"{greenstalk.__file__} is not this repository's greenstalk")
    client = greenstalk.Client((host, port))
    return _greenstalk_subject(
        "ours", greenstalk.__version__, str(greenstalk.__file__), client, client.put_many
    )


def open_greenstalk_2_1_1(host: str, port: int) -> Subject:
    """Connect greenstalk 2.1.1 from PyPI, with bytes bodies (``encoding=None``) like ours."""
    version = importlib.metadata.version("greenstalk")
    if version != "2.1.1":
        raise RuntimeError(f"expected greenstalk 2.1.1 in this environment, found {version}")
    module: Any = importlib.import_module("greenstalk")
    client = module.Client((host, port), encoding=None)
    return _greenstalk_subject("greenstalk-2.1.1", version, str(module.__file__), client)


def _greenstalk_subject(
    name: str,
    version: str,
    module_file: str,
    client: Any,
    put_many: Callable[[list[bytes]], Sequence[int]] | None = None,
) -> Subject:
    """A greenstalk ``Client`` (ours or 2.1.1) as a Subject: both share these calls."""
    return Subject(
        name=name,
        version=version,
        module_file=module_file,
        put=client.put,
        reserve=functools.partial(client.reserve, timeout=0),
        delete=client.delete,
        body_of=_job_body,
        close=client.close,
        put_many=put_many,
    )


def open_pystalk(host: str, port: int) -> Subject:
    """Connect pystalk from PyPI (bytes bodies: its default ``auto_decode=False``)."""
    module: Any = importlib.import_module("pystalk")
    client = module.BeanstalkClient(host, port)
    return Subject(
        name="pystalk",
        version=importlib.metadata.version("pystalk"),
        module_file=str(module.__file__),
        put=client.put_job,
        reserve=functools.partial(client.reserve_job, 0),
        delete=client.delete_job,
        body_of=_pystalk_job_body,
        close=client.close,
    )


def _job_body(job: Any) -> bytes:
    body: bytes = job.body
    return body


def _pystalk_job_body(job: Any) -> bytes:
    body: bytes = job.job_data
    return body


OPENERS: dict[str, Callable[[str, int], Subject]] = {
    "ours": open_ours,
    "greenstalk-2.1.1": open_greenstalk_2_1_1,
    "pystalk": open_pystalk,
}


class RawConnection:
    """A minimal beanstalkd connection for untimed setup: pipelined puts and draining.

    It is written here on purpose, so that setup is identical for every client
    under test and does not depend on any of them.
    """

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()

    def close(self) -> None:
        """Close the connection."""
        self._sock.close()

    def _fill(self) -> None:
        data = self._sock.recv(_RECEIVE_SIZE)
        if not data:
            raise ConnectionError("beanstalkd closed the setup connection")
        self._buffer += data

    def _line(self) -> bytes:
        while True:
            end = self._buffer.find(b"\r\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 2]
                return line
            self._fill()

    def _skip(self, size: int) -> None:
        while len(self._buffer) < size:
            self._fill()
        del self._buffer[:size]

    def _expect(self, line: bytes, status: bytes) -> list[bytes]:
        words = line.split(b" ")
        if words[0] != status:
            raise RuntimeError(f"setup connection: expected {status!r}, got {line!r}")
        return words[1:]

    def put_jobs(self, body: bytes, count: int) -> None:
        """Insert ``count`` jobs with ``body`` into the default tube, pipelined.

        One batch of replies stays unread while the next batch goes out, so
        the server always has work queued.
        """
        command = b"put 65536 0 60 %d\r\n%b\r\n" % (len(body), body)
        per_batch = min(_PUT_BATCH, -(-_PUT_BATCH_BYTES // len(command)))
        unread = 0
        left = count
        while left:
            batch = min(left, per_batch)
            self._sock.sendall(command * batch)
            left -= batch
            self._expect_inserted(unread)
            unread = batch
        self._expect_inserted(unread)

    def _expect_inserted(self, count: int) -> None:
        for _ in range(count):
            self._expect(self._line(), b"INSERTED")

    def drain(self) -> int:
        """Delete every ready job of the default tube; return how many there were."""
        deleted = 0
        while True:
            self._sock.sendall(b"reserve-with-timeout 0\r\n" * _BATCH)
            ids: list[bytes] = []
            for _ in range(_BATCH):
                line = self._line()
                if line == b"TIMED_OUT":
                    continue
                job_id, size = self._expect(line, b"RESERVED")
                ids.append(job_id)
                self._skip(int(size) + 2)
            if not ids:
                return deleted
            self._sock.sendall(b"".join(b"delete %b\r\n" % job_id for job_id in ids))
            for _ in ids:
                self._expect(self._line(), b"DELETED")
            deleted += len(ids)


def time_puts(put: Callable[[bytes], object], body: bytes, count: int) -> float:
    """Return the seconds that ``count`` calls of ``put(body)`` take."""
    start = time.perf_counter()
    for _ in range(count):
        put(body)
    return time.perf_counter() - start


def time_reserve_delete(
    reserve: Callable[[], Any], delete: Callable[[Any], object], count: int
) -> tuple[float, Any]:
    """Return the seconds that ``count`` reserve-then-delete pairs take, and the last job."""
    job: Any = None
    start = time.perf_counter()
    for _ in range(count):
        job = reserve()
        delete(job)
    return time.perf_counter() - start, job


def time_put_many(
    put_many: Callable[[list[bytes]], Sequence[int]], body: bytes, count: int
) -> float:
    """Return the seconds one ``put_many`` of ``count`` bodies takes."""
    bodies = [body] * count
    start = time.perf_counter()
    ids = put_many(bodies)
    seconds = time.perf_counter() - start
    if len(ids) != count:
        raise RuntimeError(f"put_many returned {len(ids)} ids for {count} bodies")
    return seconds


#: Times ``op`` for ``count`` jobs with ``body``: its seconds and the last reserved body, if any.
Timed = Callable[[str, bytes, int], "tuple[float, bytes | None]"]


def timed_subject(subject: Subject, raw: RawConnection) -> Timed:
    """How this worker times ``subject`` (and, for ``raw-put``, ``raw``): see the docstring."""

    def timed(op: str, body: bytes, count: int) -> tuple[float, bytes | None]:
        if op == "put":
            return time_puts(subject.put, body, count), None
        if op == "put-many":
            if subject.put_many is None:
                raise ValueError(f"{subject.name} has no put_many")
            return time_put_many(subject.put_many, body, count), None
        if op == "raw-put":
            start = time.perf_counter()
            raw.put_jobs(body, count)
            return time.perf_counter() - start, None
        if op == "reserve-delete":
            seconds, job = time_reserve_delete(subject.reserve, subject.delete, count)
            return seconds, subject.body_of(job)
        raise ValueError(f"unknown operation {op!r}; expected one of {OPERATIONS}")

    return timed


def measure(timed: Timed, raw: RawConnection, op: str, size: int, count: int) -> float:
    """Run one measurement from a drained tube and return its duration in seconds.

    ``raw`` drains the tube before and after, and for ``reserve-delete`` inserts
    the jobs to consume, outside ``timed``; afterwards it checks what is left.
    """
    if count < 1:
        raise ValueError("n must be at least 1")
    body = b"x" * size
    raw.drain()
    if op == "reserve-delete":
        raw.put_jobs(body, count)
    seconds, last_body = timed(op, body, count)
    if op == "reserve-delete" and last_body != body:
        raise RuntimeError("reserve returned a job with the wrong body")
    left = 0 if op == "reserve-delete" else count
    found = raw.drain()
    if found != left:
        raise RuntimeError(f"{op} should have left {left} jobs in the tube, found {found}")
    return seconds


def serve(info: dict[str, object], timed: Timed, raw: RawConnection) -> None:
    """Print ``info`` as the first line, then answer measurement requests until stdin closes."""
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            op, size, count = str(request["op"]), int(request["size"]), int(request["n"])
            seconds = measure(timed, raw, op, size, count)
            answer: dict[str, object] = {
                "op": op,
                "size": size,
                "n": count,
                "seconds": seconds,
                "ops_per_s": count / seconds,
            }
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Connect the chosen client and the setup connection, then serve requests."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11300)
    args = parser.parse_args(argv)
    subject = OPENERS[args.client](args.host, args.port)
    raw = RawConnection(args.host, args.port)
    try:
        info: dict[str, object] = {
            "client": subject.name,
            "version": subject.version,
            "module": subject.module_file,
            "python": sys.version.split()[0],
            "put_many": subject.put_many is not None,
        }
        serve(info, timed_subject(subject, raw), raw)
    finally:
        raw.close()
        subject.close()


if __name__ == "__main__":
    main()
