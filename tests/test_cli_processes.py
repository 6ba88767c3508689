"""The greenstalk command line run as a process: pipes that stay open, signals, terminals."""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import greenstalk
from greenstalk.testing import run_server

from .conftest import StartServer
from .test_cli import text

GREENSTALK = [sys.executable, "-m", "greenstalk"]
# Generous bounds for what a loaded machine may take (starting Python, say);
# what must be prompt has its own, tighter one.
SLOW = 30.0


class Output:
    """What a process writes to a pipe or a terminal, read as it comes, with deadlines."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = b""

    def wait_for(self, found: Callable[[bytes], bool], seconds: float = SLOW) -> None:
        """Read until ``found(everything read)``; fails after ``seconds`` or at the end."""
        deadline = time.monotonic() + seconds
        while not found(self.data):
            left = deadline - time.monotonic()
            assert left > 0, f"not seen within {seconds} s; the output: {self.data[-2000:]!r}"
            readable, _, _ = select.select([self.fd], [], [], left)
            if readable:
                self.data += self.read()

    def read(self) -> bytes:
        """What can be read now; fails at the end of the output."""
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: every process holding the terminal's other side has exited
            chunk = b""
        assert chunk, f"the output ended; it was: {self.data[-2000:]!r}"
        return chunk

    def wait_for_exit(self, process: subprocess.Popen[bytes], seconds: float = SLOW) -> int:
        """Read (so that the process never blocks on a full pipe) until it exits; its status."""
        deadline = time.monotonic() + seconds
        while process.poll() is None:
            left = deadline - time.monotonic()
            assert left > 0, f"still running after {seconds} s; the output: {self.data[-2000:]!r}"
            readable, _, _ = select.select([self.fd], [], [], min(left, 0.1))
            if readable:
                with contextlib.suppress(AssertionError):
                    self.data += self.read()
        return process.returncode


@contextlib.contextmanager
def started(command: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command``; a process still running at the end is killed."""
    process = subprocess.Popen(command, **options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(SLOW)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def reserve(address: greenstalk.Address, tube: str, seconds: int) -> bytes:
    """The body of the next job of ``tube``, waiting at most ``seconds`` (then TimedOutError)."""
    with greenstalk.Client(address, watch=tube, socket_timeout=SLOW) as client:
        job = client.reserve(timeout=seconds)
        client.delete(job)
        return job.body


def wait_until_read(pipe: int, seconds: float = SLOW) -> None:
    """Wait until the process at the other end of ``pipe`` has read all that was written."""
    deadline = time.monotonic() + seconds
    unread = array.array("i", [0])
    while fcntl.ioctl(pipe, termios.FIONREAD, unread) == 0 and unread[0]:
        assert time.monotonic() < deadline, f"{unread[0]} bytes still unread after {seconds} s"
        os.sched_yield()


# -- put --lines ---------------------------------------------------------------


def test_put_lines_sends_each_line_when_the_input_pauses(start_server: StartServer) -> None:
    server = start_server(unix=True)
    command = [*GREENSTALK, "-a", text(server.address), "put", "--lines", "-t", "stream"]
    with started(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as process:
        assert process.stdin is not None
        process.stdin.write(b"first\n")
        process.stdin.flush()
        # The first line also waits for Python to start; the next ones must be prompt.
        assert reserve(server.address, "stream", int(SLOW)) == b"first"
        for line in (b"second", b"third"):
            process.stdin.write(line + b"\n")
            process.stdin.flush()
            assert reserve(server.address, "stream", 1) == line
        out, err = process.communicate(b"last\n", timeout=SLOW)
    assert (process.returncode, out, err) == (
        0, b"put 4 jobs into tube stream (ids 1 to 4)\n", b"",
    )
    assert reserve(server.address, "stream", 0) == b"last"


def test_put_lines_interrupted(start_server: StartServer) -> None:
    server = start_server(unix=True)
    command = [*GREENSTALK, "-a", text(server.address), "--json", "put", "--lines"]
    with started(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE) as process:
        assert process.stdin is not None
        process.stdin.write(b"one\ntwo\n")
        process.stdin.flush()
        assert reserve(server.address, "default", int(SLOW)) == b"one"
        assert reserve(server.address, "default", 1) == b"two"
        # Once it reads again, it has the server's replies: the Ctrl-C comes between batches.
        process.stdin.write(b"a line not yet ended")
        process.stdin.flush()
        wait_until_read(process.stdin.fileno())
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=SLOW)
    assert process.returncode == 130
    assert err == b"greenstalk: interrupted: put 2 jobs into tube default\n"
    assert json.loads(out)["ids"] == [1, 2]


# -- worker --------------------------------------------------------------------

TASKS = """
import asyncio
import threading

import greenstalk
import greenstalk.aio


def tell(body):
    # What the test waits on: the worker has this job in hand.
    with greenstalk.Client(greenstalk.address_from_environment(), use="started") as client:
        client.put(body)


def handle(job):
    tell(job.body)
    if job.body == b"block":
        threading.Event().wait()


async def handle_async(job):
    tell(job.body)
    if job.body == b"block":
        await asyncio.Event().wait()


worker = greenstalk.Worker(handlers={"jobs": handle})
aio_worker = greenstalk.aio.Worker(handlers={"jobs": handle_async})
"""


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    """A directory with tasks.py: ``worker`` and ``aio_worker``, on tube ``jobs``."""
    (tmp_path / "tasks.py").write_text(TASKS)
    return tmp_path


@pytest.mark.parametrize("target", ["./tasks.py:worker", "tasks:aio_worker"])
def test_a_burst_without_a_server_exits_3(tasks: Path, target: str) -> None:
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        done = subprocess.run(
            [*GREENSTALK, "-a", f"127.0.0.1:{port}", "worker", target, "--burst"],
            cwd=tasks, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 3
    assert done.stderr.splitlines()[-1] == (
        f"greenstalk: cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    )
    assert "Traceback" not in done.stderr
    assert "('127.0.0.1'" not in done.stderr


@pytest.mark.parametrize("target", ["./tasks.py:worker", "tasks:aio_worker"])
@pytest.mark.parametrize(
    ("body", "signals", "status"),
    [(b"quick", [signal.SIGTERM], 0), (b"block", [signal.SIGINT, signal.SIGINT], 130)],
)
def test_workers_stop_on_signals(
    start_server: StartServer,
    tasks: Path,
    target: str,
    body: bytes,
    signals: list[signal.Signals],
    status: int,
) -> None:
    """One signal: a warm stop, status 0. Two while a job runs: at once, 128 + the signal."""
    server = start_server(unix=True)
    environment = {**os.environ, "BEANSTALKD_ADDRESS": text(server.address)}
    with greenstalk.Client(server.address, use="jobs") as client:
        job_id = client.put(body)
        with started([*GREENSTALK, "worker", target], cwd=tasks, env=environment,
                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE) as process:
            assert reserve(server.address, "started", int(SLOW)) == body
            assert process.stderr is not None
            log = Output(process.stderr.fileno())
            process.send_signal(signals[0])
            for signum in signals[1:]:
                # Signals sent together may arrive as one: the next waits for the first's effect.
                log.wait_for(lambda data: b"stop again" in data)
                process.send_signal(signum)
            assert log.wait_for_exit(process) == status, log.data
        assert b"Traceback" not in log.data
        if status:  # the job in hand went back to the queue
            assert client.stats_job(job_id)["state"] == "ready"
        else:
            assert client.stats_tube("jobs")["current-jobs-ready"] == 0


# -- top -----------------------------------------------------------------------


def test_top_quits_on_q(start_server: StartServer) -> None:
    server = start_server(unix=True)
    terminal, process_side = os.openpty()
    environment = {**os.environ, "TERM": "xterm", "COLUMNS": "100", "LINES": "30"}
    for variable in ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR", "FORCE_COLOR"):
        environment.pop(variable, None)
    try:
        with started([*GREENSTALK, "-a", text(server.address), "top", "-n", "0.05"],
                     stdin=process_side, stdout=process_side, stderr=process_side,
                     env=environment) as process:
            os.close(process_side)
            screen = Output(terminal)
            screen.wait_for(lambda data: b"reserved" in data)
            os.write(terminal, b"q")
            assert screen.wait_for_exit(process) == 0
    finally:
        os.close(terminal)
    assert b"Traceback" not in screen.data


def frames(output: Output) -> list[dict[str, Any]]:
    """The JSON frames ``top --json`` has printed so far."""
    return [json.loads(line) for line in output.data.splitlines()]


def test_top_reconnects_when_the_server_is_back(server_kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    command = [*GREENSTALK, "-a", path, "--json", "top", "-n", "0.05", "-i", "100000"]
    with contextlib.ExitStack() as first_server:
        first_server.enter_context(run_server(server_kind, address=path, in_process=False))
        with started(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE) as process:
            assert process.stdout is not None
            output = Output(process.stdout.fileno())
            output.wait_for(lambda data: data.count(b"\n") >= 1)
            assert frames(output)[-1]["connected"] is True
            first_server.close()
            output.wait_for(lambda data: b'"connected": false' in data)
            lost = frames(output)[-1]
            assert (lost["address"], lost["connected"]) == (f"unix:{path}", False)
            assert set(lost) == {"address", "time", "connected", "error"}
            seen = len(frames(output))
            with run_server(server_kind, address=path, in_process=False) as second:
                with greenstalk.Client(second.address, use="back") as client:
                    client.put(b"x")
                # Connected again: the tube made on the new server is in a frame.
                output.wait_for(lambda data: any(
                    frame["connected"] and "back" in [tube["name"] for tube in frame["tubes"]]
                    for frame in frames(output)[seen:]
                ))
                process.terminate()
                process.wait(SLOW)
            assert process.stderr is not None
            assert b"Traceback" not in process.stderr.read()
