"""greenstalkd against beanstalkd 1.12, byte for byte, at the socket level.

Every test here is differential: a *script* of raw bytes is played against a
fresh beanstalkd and a fresh greenstalkd at the same time, and what each
server sends back must be identical. Both servers number jobs from 1, so the
replies are comparable as they are; only values that depend on the clock or
on the process (pid, uptime, CPU time, a job's age, ...) are masked.

A script is a list of steps over one or more connections (opened on first
use). A step sends bytes and waits for a number of replies (a reply is a line,
plus its body for ``OK``/``FOUND``/``RESERVED``), or waits for the server to
close the connection. When the script ends, every connection still open is
half-closed (``shutdown(SHUT_WR)``) and read until the server closes it, so
whatever a server still had to say is compared too, without any fixed sleep.

These tests need the real beanstalkd, which the test set-up installs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import os
import random
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from greenstalk.testing import ServerAddress, ServerProcess, run_server

# How long to wait for a reply that a script expects (or for a close).
READ_TIMEOUT = 3.0
EOF = b"<EOF>"
TIMEOUT = b"<TIMEOUT>"
NOT_RUN = b"<NOT RUN: the server had stopped answering>"
WITH_BODY = (b"OK ", b"FOUND ", b"RESERVED ")

# ---------------------------------------------------------------------------
# Scripts


@dataclass(frozen=True)
class Send:
    """Send ``data`` on connection ``conn``, then read ``replies`` replies there."""

    data: bytes
    replies: int = 0
    conn: int = 0
    # (low, high): the replies must arrive between low and high seconds after the send.
    within: tuple[float, float] | None = None


@dataclass(frozen=True)
class Read:
    """Read ``replies`` more replies on ``conn`` without sending anything."""

    replies: int
    conn: int = 0
    within: tuple[float, float] | None = None


@dataclass(frozen=True)
class Closed:
    """Expect the server to close ``conn``: record everything until it does."""

    conn: int = 0


@dataclass(frozen=True)
class HalfClose:
    """``shutdown(SHUT_WR)`` on ``conn``, then record everything until the server closes it."""

    conn: int = 0


@dataclass(frozen=True)
class Close:
    """The client closes ``conn`` (the server finds out on its own time)."""

    conn: int = 0


@dataclass(frozen=True)
class Poll:
    """Send ``command`` on ``conn`` again and again until its reply contains ``until``.

    Only the last reply is recorded. It changes ``cmd-*`` counters a variable
    number of times, so scripts that compare ``stats`` should not poll.
    """

    command: bytes
    until: bytes
    conn: int = 0


@dataclass(frozen=True)
class Drain:
    """Put the server in drain mode (SIGUSR1 for beanstalkd)."""


Step = Union[Send, Read, Closed, HalfClose, Close, Poll, Drain]


@dataclass(frozen=True)
class Script:
    steps: Sequence[Step]
    args: Sequence[str] = ()
    # stats keys to mask on top of the volatile ones (see mask_unit).
    mask: frozenset[bytes] = frozenset()


def lines(*items: bytes, conn: int = 0, n: int | None = None) -> Send:
    """Send each item as a CRLF-ended line; expect one reply per line unless ``n`` says."""
    data = b"".join(item + b"\r\n" for item in items)
    return Send(data, len(items) if n is None else n, conn)


def put(body: bytes, pri: int = 0, delay: int = 0, ttr: int = 100, conn: int = 0) -> Send:
    """A well-formed put, expecting one reply."""
    return Send(b"put %d %d %d %d\r\n%s\r\n" % (pri, delay, ttr, len(body), body), 1, conn)


# ---------------------------------------------------------------------------
# Reading replies


def reply_end(data: bytes, start: int) -> int | None:
    """Where the reply that starts at ``start`` ends, or None if it has not all arrived."""
    eol = data.find(b"\r\n", start)
    if eol < 0:
        return None
    end = eol + 2
    head = data[start:eol]
    if head.startswith(WITH_BODY):
        size = head.rsplit(b" ", 1)[-1]
        if size.isdigit():
            end += int(size) + 2
            if end > len(data):
                return None
    return end


def replies_end(data: bytes, count: int) -> int | None:
    """Where the first ``count`` replies in ``data`` end, or None if they have not all arrived."""
    end = 0
    for _ in range(count):
        found = reply_end(data, end)
        if found is None:
            return None
        end = found
    return end


class Peer:
    """One client connection of a script."""

    def __init__(self, address: ServerAddress) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.connect(address)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.eof = False
        self.closed = False

    def send(self, data: bytes) -> None:
        """Send ``data``; if the server has closed the connection, the reads will tell."""
        self.sock.settimeout(READ_TIMEOUT)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def half_close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def _receive(self, deadline: float) -> bool:
        """Read once more; False if nothing came before ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buffer += chunk
        return True

    def _take_all(self, marker: bytes) -> bytes:
        data, self.buffer = self.buffer, b""
        return data + marker

    def take(self, count: int) -> bytes:
        """The next ``count`` replies, exactly; what came, then EOF or TIMEOUT if they did not."""
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            end = replies_end(self.buffer, count)
            if end is not None:
                data, self.buffer = self.buffer[:end], self.buffer[end:]
                return data
            if self.eof:
                return self._take_all(EOF)
            if not self._receive(deadline):
                return self._take_all(TIMEOUT)

    def until_closed(self) -> bytes:
        """Everything until the server closes the connection, then EOF (or TIMEOUT)."""
        deadline = time.monotonic() + READ_TIMEOUT
        while not self.eof:
            if not self._receive(deadline):
                return self._take_all(TIMEOUT)
        return self._take_all(EOF)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@dataclass
class Transcript:
    """What one server answered to a script: (label, bytes) per step, and how long each took."""

    entries: list[tuple[str, bytes]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    # The traceback that killed the server's thread, if it died.
    crash: str | None = None

    def stalled(self) -> bool:
        """Whether the server has failed to answer in time."""
        return any(data.endswith(TIMEOUT) for _, data in self.entries)

    def add(self, label: str, data: bytes, started: float) -> None:
        self.entries.append((label, data))
        self.times.append(time.monotonic() - started)


def _label(index: int, step: Step) -> str:
    text = repr(step)
    return f"#{index} {text[:90]}"


def play(server: ServerProcess, script: Script) -> Transcript:
    """Run ``script`` against ``server``; see the module docstring."""
    peers: dict[int, Peer] = {}
    transcript = Transcript()

    def peer(conn: int) -> Peer:
        if conn not in peers:
            peers[conn] = Peer(server.address)
        return peers[conn]

    try:
        for index, step in enumerate(script.steps):
            label = _label(index, step)
            started = time.monotonic()
            if transcript.stalled():
                # The server stopped answering: do not wait again for every step.
                transcript.add(label, NOT_RUN, started)
            elif isinstance(step, Send):
                p = peer(step.conn)
                p.send(step.data)
                data = p.take(step.replies) if step.replies else b""
                transcript.add(label, data, started)
            elif isinstance(step, Read):
                transcript.add(label, peer(step.conn).take(step.replies), started)
            elif isinstance(step, Closed):
                transcript.add(label, peer(step.conn).until_closed(), started)
            elif isinstance(step, HalfClose):
                p = peer(step.conn)
                p.half_close()
                transcript.add(label, p.until_closed(), started)
            elif isinstance(step, Close):
                peer(step.conn).close()
                transcript.add(label, b"", started)
            elif isinstance(step, Poll):
                p = peer(step.conn)
                deadline = time.monotonic() + READ_TIMEOUT
                while True:
                    p.send(step.command + b"\r\n")
                    data = p.take(1)
                    if step.until in data or data.endswith((EOF, TIMEOUT)):
                        break
                    if time.monotonic() > deadline:
                        data += TIMEOUT
                        break
                transcript.add(label, data, started)
            else:
                server.drain()
                transcript.add(label, b"", started)
        # Whatever is still to come: half-close what is open, read until closed.
        for conn, p in sorted(peers.items()):
            if transcript.stalled():
                transcript.add(f"end conn{conn}", NOT_RUN, time.monotonic())
            elif not p.closed and not p.eof:
                started = time.monotonic()
                p.half_close()
                transcript.add(f"end conn{conn}", p.until_closed(), started)
    finally:
        for p in peers.values():
            if not p.closed:
                p.close()
    return transcript


_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="wire")


@contextlib.contextmanager
def both_servers(
    args: Sequence[str] = (), unix: bool = False, in_process: bool = True
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """A fresh beanstalkd and a fresh greenstalkd."""
    with contextlib.ExitStack() as stack:
        theirs = stack.enter_context(run_server("beanstalkd", unix=unix, args=args))
        ours = stack.enter_context(
            run_server("greenstalkd", unix=unix, args=args, in_process=in_process)
        )
        yield theirs, ours


@contextlib.contextmanager
def server_thread_crashes() -> Iterator[list[str]]:
    """Collect, as text, the exceptions that kill an in-process greenstalkd's thread.

    Left to pytest, a crash would be reported at teardown, and the dead
    server's sockets, kept alive by the traceback, would be garbage-collected
    (with ResourceWarnings) during some later test.
    """
    crashes: list[str] = []
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.thread is None or args.thread.name != "greenstalkd":
            previous(args)
            return
        text = traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
        crashes.append("".join(text))
        if args.exc_traceback is not None:
            traceback.clear_frames(args.exc_traceback)

    threading.excepthook = hook
    try:
        yield crashes
    finally:
        threading.excepthook = previous


def _play_both(script: Script, unix: bool, in_process: bool) -> tuple[Transcript, Transcript]:
    with both_servers(script.args, unix, in_process) as (theirs, ours):
        theirs_future = _EXECUTOR.submit(play, theirs, script)
        ours_future = _EXECUTOR.submit(play, ours, script)
        return theirs_future.result(), ours_future.result()


def run_both(
    script: Script, unix: bool = False, in_process: bool = True
) -> tuple[Transcript, Transcript]:
    """Play ``script`` against beanstalkd and greenstalkd at once: (beanstalkd's, ours)."""
    with server_thread_crashes() as crashes:
        theirs, ours = _play_both(script, unix, in_process)
    if crashes:
        ours.crash = "\n".join(crashes)
        # The dead server's sockets were never closed: the crash is reported
        # by assert_same, not by their ResourceWarnings.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
    return theirs, ours


# ---------------------------------------------------------------------------
# Masking what depends on time or on the process

# Global stats: process-specific values. hostname, os and platform are the
# same machine's for both servers and are compared.
STATS_VOLATILE = frozenset({b"pid", b"uptime", b"rusage-utime", b"rusage-stime", b"id"})


def mask_unit(unit: bytes, extra: frozenset[bytes] = frozenset()) -> bytes:
    """``unit`` with the time- and process-dependent values of a stats reply replaced by ``*``."""
    head, _, rest = unit.partition(b"\r\n")
    if not head.startswith(b"OK ") or not rest.startswith(b"---\n") or not rest.endswith(b"\r\n"):
        return unit
    fields = [line.split(b": ", 1) for line in rest[4:-2].split(b"\n") if line]
    if not all(len(pair) == 2 for pair in fields):
        return unit  # a list, not a map
    values = {pair[0]: pair[1] for pair in fields}
    if b"pid" in values:  # stats
        volatile = STATS_VOLATILE
    elif b"age" in values:  # stats-job
        volatile = frozenset({b"age"})
        if values.get(b"state") in (b"reserved", b"delayed"):
            volatile |= {b"time-left"}
    elif values.get(b"pause", b"0") != b"0":  # stats-tube of a paused tube
        volatile = frozenset({b"pause-time-left"})
    else:
        volatile = frozenset()
    volatile |= extra
    body = b"".join(
        key + b": " + (b"*" if key in volatile else value) + b"\n" for key, value in fields
    )
    # The length was right (the reply was framed by it); masking changes it.
    return b"OK *\r\n---\n" + body + b"\r\n"


def mask(data: bytes, extra: frozenset[bytes] = frozenset()) -> bytes:
    """Every reply in ``data`` through :func:`mask_unit`; a trailing partial reply as it is."""
    out = []
    start = 0
    while (end := reply_end(data, start)) is not None:
        out.append(mask_unit(data[start:end], extra))
        start = end
    out.append(data[start:])
    return b"".join(out)


def masked(
    transcript: Transcript, extra: frozenset[bytes] = frozenset()
) -> list[tuple[str, bytes]]:
    return [(label, mask(data, extra)) for label, data in transcript.entries]


def assert_same(
    script: Script, unix: bool = False, in_process: bool = True
) -> tuple[Transcript, Transcript]:
    """Play ``script`` on both servers; greenstalkd's replies must be beanstalkd's."""
    theirs, ours = run_both(script, unix, in_process)
    # A timeout on beanstalkd's side means the script expects the wrong replies.
    for label, data in theirs.entries:
        assert not data.endswith(TIMEOUT), f"script error: beanstalkd timed out: {label} {data!r}"
    assert ours.crash is None, f"greenstalkd's server thread died:\n{ours.crash}"
    assert masked(ours, script.mask) == masked(theirs, script.mask)
    for index, step in enumerate(script.steps):
        if isinstance(step, (Send, Read)) and step.within is not None:
            low, high = step.within
            for name, transcript in (("beanstalkd", theirs), ("greenstalkd", ours)):
                took = transcript.times[index]
                assert low < took < high, f"{name}: step {index} took {took:.3f} s"
    return theirs, ours


# ---------------------------------------------------------------------------
# The scripts

NAME_200 = b"n" * 200
SCRIPTS: dict[str, Script] = {}


def script(name: str, *steps: Step, args: Sequence[str] = (), mask: Sequence[bytes] = ()) -> None:
    assert name not in SCRIPTS
    SCRIPTS[name] = Script(steps, args, frozenset(mask))


# --- every command's normal and NOT_FOUND replies

script(
    "put-peek-delete",
    put(b"hello", pri=1, ttr=10),
    put(b"", pri=4294967295),
    lines(b"peek 1", b"peek 2", b"peek 3", b"peek 0", b"peek 18446744073709551615"),
    lines(b"peek-ready", b"peek-delayed", b"peek-buried"),
    lines(b"stats-job 1", b"stats-job 2", b"stats-job 3", b"stats-job 0"),
    lines(b"delete 1", b"delete 1", b"peek 1", b"peek-ready", b"delete 2", b"peek-ready"),
    lines(b"stats-tube default", b"list-tubes", b"list-tubes-watched", b"list-tube-used"),
    lines(b"delete 0", b"delete 18446744073709551615", b"delete 18446744073709551616"),
)
script(
    "binary-bodies",
    put(b"a\r\n\x00\xff\r"),
    put(b"\r\n"),
    put(b"put 0 0 1 1\r\nx"),
    put(bytes(range(256))),
    lines(b"peek 1", b"peek 2", b"peek 3", b"peek 4"),
    lines(b"reserve", b"reserve", b"reserve", b"reserve"),
)
script(
    "reserve-release",
    put(b"a", pri=5),
    put(b"b", pri=5),
    put(b"c", pri=1),
    lines(b"reserve"),
    lines(b"reserve"),
    lines(b"release 3 10 0", b"release 1 0 0", b"release 1 0 0", b"release 99 0 0"),
    lines(b"reserve"),
    lines(b"stats-job 1", b"stats-job 3"),
    lines(b"reserve-with-timeout 0", b"reserve-with-timeout 0", b"reserve-with-timeout 0"),
    lines(b"stats"),
    lines(b"delete 1", b"delete 2", b"delete 3", b"delete 3", b"stats-tube default"),
)
script(
    "release-into-delayed",
    put(b"x", pri=3),
    lines(b"reserve", b"release 1 7 100", b"stats-job 1", b"peek-delayed", b"peek-ready"),
    lines(b"release 1 7 0", b"reserve-with-timeout 0", b"stats-tube default"),
    lines(b"kick 1", b"stats-job 1", b"reserve", b"release 1 8 0", b"stats-job 1"),
)
script(
    "bury-kick-order",
    put(b"1"),
    put(b"2"),
    put(b"3"),
    put(b"4", delay=100),
    put(b"5", delay=50),
    put(b"6", delay=200),
    lines(b"reserve", b"bury 1 5", b"reserve", b"bury 2 6", b"peek-buried"),
    lines(b"bury 3 0", b"bury 99 0", b"kick 0", b"kick 1", b"peek-buried", b"stats-job 1"),
    lines(b"kick 10", b"peek-buried", b"peek-delayed", b"stats-tube default"),
    lines(b"kick 2", b"peek-delayed", b"kick 10", b"kick 5", b"peek-delayed"),
    lines(b"stats-job 1", b"stats-job 2", b"stats-job 5", b"peek-ready"),
    lines(b"reserve", b"reserve", b"reserve", b"reserve", b"reserve", b"reserve"),
)
script(
    "kick-parsing",
    put(b"x"),
    lines(b"reserve", b"bury 1 0", b"kick +2"),
    lines(b"reserve", b"bury 1 0", b"kick -1"),
    lines(b"reserve", b"bury 1 0", b"kick 3abc"),
    lines(b"reserve", b"bury 1 0", b"kick  2"),
    lines(b"reserve", b"bury 1 0", b"kick 4294967296", b"kick 4294967297"),
    lines(b"kick 99999999999999999999", b"kick ", b"kick abc", b"kick", b"kick 1 2"),
    lines(b"stats-job 1", b"stats"),
)
script(
    "kick-used-tube-only",
    lines(b"use other"),
    put(b"o"),
    lines(b"reserve-job 1", b"bury 1 0", b"use default", b"kick 10", b"peek-buried"),
    lines(b"use other", b"peek-buried", b"kick 10", b"peek-ready"),
)
script(
    "kick-job",
    put(b"1"),
    put(b"2", delay=100),
    put(b"3"),
    lines(b"reserve", b"bury 1 0", b"reserve"),
    lines(b"kick-job 1", b"kick-job 2", b"kick-job 2", b"kick-job 3", b"kick-job 99"),
    lines(b"kick-job 0", b"kick-job 1 ", b"kick-job x", b"kick-job", b"kick-job  1"),
    lines(b"stats-job 1", b"stats-job 2", b"stats"),
)
script(
    "reserve-job",
    lines(b"use other"),
    put(b"ready"),
    put(b"delayed", delay=100),
    put(b"buried"),
    lines(b"use default"),
    lines(b"reserve-job 1", b"reserve-job 2", b"reserve-job 3", b"bury 3 0", b"reserve-job 3"),
    lines(b"reserve-job 1", b"reserve-job 99", b"reserve-job 0"),
    lines(b"reserve-job 1", conn=1),
    lines(b"reserve-job 1x", b"reserve-job", b"reserve-job  1", b"reserve-job 1 "),
    lines(b"stats-job 1", b"stats-job 2", b"stats-job 3"),
    lines(b"release 2 0 0", b"stats-job 2", b"peek-delayed", b"stats-tube other"),
    lines(b"pause-tube other 100", b"release 1 0 0", b"reserve-job 1", b"stats"),
)
script(
    "delete-states",
    put(b"1"),
    put(b"2", delay=100),
    put(b"3"),
    lines(b"reserve", b"bury 1 0", b"delete 1", b"delete 2"),
    lines(b"reserve", conn=1),
    lines(b"delete 3", b"stats-job 3"),
    lines(b"delete 3", conn=1),
    lines(b"stats-tube default", b"stats"),
)
script(
    "touch",
    put(b"x"),
    lines(b"touch 1", b"reserve", b"touch 1", b"touch 2", b"touch 0"),
    lines(b"touch 1", conn=1),
    lines(b"touch 1 ", b"touch", b"touch x", b"touch  1", b"stats-job 1", b"stats"),
)
script(
    "other-connections-job",
    put(b"x", conn=1),
    lines(b"reserve", conn=1),
    lines(b"delete 1", b"release 1 0 0", b"bury 1 0", b"touch 1", b"kick-job 1"),
    lines(b"peek 1", b"stats-job 1", b"peek-ready", b"reserve-with-timeout 0"),
    lines(b"release 1 9 0", conn=1),
    lines(b"reserve", b"stats-job 1"),
)
script(
    "use-watch-ignore",
    lines(b"list-tube-used", b"use a", b"list-tube-used", b"list-tubes"),
    lines(b"watch b", b"watch b", b"watch default", b"list-tubes-watched"),
    lines(b"ignore default", b"ignore b", b"ignore nosuch", b"ignore a", b"list-tubes"),
    lines(b"watch c", b"watch d", b"ignore b", b"list-tubes-watched", b"list-tubes"),
    lines(b"use default", b"list-tubes", b"stats-tube a", b"stats-tube b"),
    lines(b"list-tubes-watched", b"list-tube-used", conn=1),
)
script(
    "watch-order",
    lines(b"watch a", b"watch b", b"watch c", b"ignore default", b"list-tubes-watched"),
    lines(b"list-tubes", b"ignore a", b"list-tubes-watched", b"list-tubes"),
)
script(
    "tube-names",
    lines(b"use -foo", b"use foo ", b"use  foo", b"use ", b"use a*b", b"use a:b", b"use \xe9"),
    lines(b"use " + NAME_200 + b"a", b"use", b"use a b", b"use a\tb"),
    lines(b"use ABCxyz019-+/;.$_()", b"use (", b"use $", b"use .", b"use /", b"use +x"),
    lines(b"use _", b"use " + NAME_200, b"list-tubes", b"list-tube-used"),
    lines(b"watch -foo", b"watch foo ", b"watch", b"watch ", b"watch " + NAME_200 + b"a"),
    lines(b"ignore -foo", b"ignore  default", b"ignore", b"ignore "),
    lines(b"stats-tube -foo", b"stats-tube ", b"stats-tube a b", b"stats-tube " + NAME_200),
    lines(b"watch " + NAME_200, b"list-tubes-watched", b"stats"),
)
# The longest command line, 224 bytes with its CRLF.
script(
    "longest-command",
    lines(b"use " + NAME_200),
    lines(b"pause-tube " + NAME_200 + b" 0000000100", b"stats-tube " + NAME_200),
)
script(
    "largest-delays",
    Send(b"put 0 4294967295 4294967295 1\r\nx\r\n", 1),
    lines(b"stats-job 1", b"peek-delayed", b"list-tube-used"),
    Send(b"put 0 0 1 1\r\ny\r\n", 1),
    lines(b"reserve", b"release 2 0 4294967295", b"stats-job 2", b"kick 10"),
)
script(
    "largest-pause",
    lines(b"pause-tube default 4294967295", b"stats-tube default", b"list-tube-used"),
    lines(b"pause-tube default 0", b"stats-tube default"),
)
# Long timers. beanstalkd sleeps at most an hour at a time; Python's
# epoll.poll() takes at most 2**31 - 1 ms (about 24.8 days). Around that
# limit, as the server's next timer: a delay, a pause, a TTR, a reserve timeout.
script("delay-2147483", put(b"x", delay=2147483), lines(b"stats-job 1", b"list-tube-used"))
script("delay-2147484", put(b"x", delay=2147484), lines(b"stats-job 1", b"list-tube-used"))
script("pause-2147484", lines(b"pause-tube default 2147484"), lines(b"list-tube-used"))
script("ttr-2147484", put(b"x", ttr=2147484), lines(b"reserve"), lines(b"list-tube-used"))
script("ttr-2147483", put(b"x", ttr=2147483), lines(b"reserve"), lines(b"list-tube-used"))
script(
    "reserve-with-timeout-2147484",
    Send(b"reserve-with-timeout 2147484\r\n"),
    Poll(b"stats-tube default", b"current-waiting: 1", conn=1),
    put(b"x", conn=1),
    Read(1),
)
script(
    "stats-tube-pause-tube",
    lines(b"stats-tube default", b"stats-tube nosuch", b"pause-tube nosuch 1"),
    lines(b"pause-tube default 0", b"stats-tube default"),
    lines(b"pause-tube default 100", b"stats-tube default"),
    lines(b"pause-tube default", b"pause-tube default 1 ", b"pause-tube default -1"),
    lines(b"pause-tube -x 1", b"pause-tube  1", b"pause-tube", b"pause-tubex"),
    lines(b"pause-tube default 4294967296", b"pause-tube default\t1", b"pause-tube de*ault 1"),
    lines(b"pause-tubedefault 0", b"pause-tube  default  0", b"use good", b"pause-tubegood 0"),
    lines(b"pause-tube default 1000", b"stats-tube default", b"stats-tube good"),
    lines(b"pause-tube default 0", b"stats-tube default", b"stats"),
)
script(
    "tube-lifetime",
    lines(b"use foo", b"stats-tube foo", b"use default", b"stats-tube foo", b"list-tubes"),
    lines(b"watch bar", b"stats-tube bar", b"ignore bar", b"stats-tube bar", b"pause-tube bar 1"),
    lines(b"use j"),
    put(b"job"),
    lines(b"use default", b"stats-tube j", b"list-tubes", b"delete 1", b"stats-tube j"),
    lines(b"use p", b"pause-tube p 100", b"stats-tube p", b"use default", b"use p"),
    lines(b"stats-tube p", b"use default"),
    lines(b"watch x", conn=1),
    lines(b"stats-tube x", b"list-tubes"),
    Send(b"quit\r\n", 0, conn=1),
    Closed(conn=1),
    lines(b"stats-tube x", b"list-tubes", b"stats"),
)

# --- framing

LINE_224 = b"kick " + b"0" * 217  # + CRLF = 224 bytes
LINE_225 = b"kick " + b"0" * 218  # + CRLF = 225 bytes: the CR is byte 224, the LF byte 225
LINE_226 = b"kick " + b"0" * 219

script("line-224-bytes", lines(LINE_224, b"list-tube-used"))
script("line-225-bytes-eats-next-line", lines(LINE_225, b"list-tube-used", n=1), lines(b"stats"))
script("line-226-bytes", lines(LINE_226, b"list-tube-used"), lines(b"stats"))
script(
    "line-225-bytes-split-sends",
    Send(LINE_225 + b"\r"),
    Send(b"\n"),
    lines(b"use a", n=1),
    lines(b"list-tube-used"),
)
script(
    "stray-cr",
    Send(b"use a\rb\r\n"),
    Send(b"list-tube-used\r\n" * 14, 1),  # 9 + 224 bytes: the first 224 are dropped
    lines(b"list-tube-used", b"list-tubes"),
)
script(
    "stray-cr-alone",
    Send(b"use a\rb\r\n"),
    Send(b"use c\r\n" * 40, 10),
    lines(b"list-tube-used", b"stats"),
)
script(
    "overlong-then-command",
    Send(b"use " + b"a" * 300 + b"\r\nlist-tube-used\r\n", 2),
    Send(b"x" * 500 + b"\r\nuse b\r\nlist-tube-used\r\n", 3),
    lines(b"stats"),
)
script(
    "overlong-crlf-on-chunk-boundary",
    # CR is the last byte of the second 224-byte chunk, LF the first of the third.
    Send(b"x" * 447 + b"\r\nlist-tube-used\r\nuse b\r\n", 2),
    lines(b"list-tube-used"),
)
script(
    "overlong-in-pieces",
    Send(b"y" * 100),
    Send(b"y" * 100),
    Send(b"y" * 100),
    Send(b"y" * 100 + b"\r"),
    Send(b"\nlist-tube-used\r\n", 2),
)
script(
    "bare-lf",
    Send(b"list-tube-used\n"),
    Send(b"\r\n", 1),
    Send(b"\n\r\n", 1),
    Send(b"use a\nlist-tube-used\r\n", 1),
    lines(b"list-tube-used"),
)
script("empty-line", lines(b"", b"", b"list-tube-used"))
script(
    "nul-in-line",
    lines(b"stats\x00", b"list-tube-used\x00", b"use a\x00b", b"\x00", b"\x00stats"),
    lines(b"peek 1\x00", b"put 0 0 1 1\x00", b"x", b"list-tube-used"),
)
script(
    "case-and-leading-space",
    lines(b" stats", b"PUT 0 0 1 1", b"x", b"Stats", b"LIST-TUBES", b" list-tubes"),
    lines(b"\tstats", b"use\ta", b"quit "),
    Closed(),
)
script(
    "prefix-matching",
    lines(b"put", b"use", b"peek", b"delete", b"touch", b"kick", b"kick-job", b"watch"),
    lines(b"ignore", b"bury", b"release", b"kick-jobx 1", b"peeks", b"statz"),
    lines(b"reservex", b"reserve ", b"reserve-with-timeout", b"reserve-job", b"reserve-jobs"),
    lines(b"stats-job", b"stats-tube", b"statsx", b"stats ", b"stats-jobx 1", b"stats-tubes"),
    lines(b"list-tubesx", b"list-tubes x", b"list-tube-usedx", b"list-tubes-watchedx"),
    lines(b"list-tube", b"list", b"list-tubes-watch", b"peek-readyx", b"peek-ready "),
    lines(b"peek-delayedx", b"peek-buried ", b"peek-delayed x", b"peek x", b"peek-job 1"),
    lines(b"pause-tubedefault 0", b"pause-tube-x 1", b"use good", b"pause-tubegood 0"),
    lines(b"stats-job 1 2", b"release 1 2", b"release 1 2 3 4", b"bury 1", b"bury 1 2 3"),
    lines(b"delete x", b"delete 1 ", b"delete -1", b"delete +1", b"peek 1 ", b"peek 0x1"),
    lines(b"stats"),
)
script("quitxyz-closes", lines(b"list-tube-used"), Send(b"quitxyz\r\nlist-tubes\r\n"), Closed())
script(
    "extra-spaces",
    Send(b"put  0   0  1   1\r\nx\r\n", 1),
    Send(b"put 0 0 1 1 \r\nx\r\n", 2),
    Send(b"put 0\t0 1 1\r\nx\r\n", 2),
    lines(b"peek  1", b"stats-job   1", b"reserve-job  1", b"release  1  3  0", b"peek 1"),
    lines(b"reserve", b"bury 1  4", b"kick   1", b"reserve", b"touch  1", b"delete  1"),
    lines(b"reserve-with-timeout  0", b"reserve-with-timeout +0", b"peek\t1", b"peek 1\t"),
)

# --- put edge cases

script(
    "put-body-too-long",
    Send(b"put 0 0 1 1\r\nxy\r\nput 0 0 1 1\r\nz\r\n", 3),
    put(b"q"),
    lines(b"peek 1", b"peek 2", b"peek 3"),
)
script(
    "put-body-too-long-unterminated",
    Send(b"put 0 0 1 1\r\nxAB", 1),
    put(b"q"),
    lines(b"peek 2"),
)
script(
    "put-body-too-short",
    Send(b"put 0 0 1 5\r\nabc\r\n"),
    Send(b"peek-ready\r\n", 2),
    put(b"abcde"),
    lines(b"peek-ready"),
)
script(
    "put-body-in-pieces",
    Send(b"put 0 0 1 10\r\n"),
    Send(b"01234"),
    Send(b"56789\r"),
    Send(b"\n", 1),
    Send(b"put 0 0 1"),
    Send(b" 3\r"),
    Send(b"\nabc\r\npeek 2\r\n", 2),
)
script(
    "put-empty-body",
    Send(b"put 0 0 1 0\r\n\r\n", 1),
    Send(b"put 0 0 1 0\r\nX\r\n", 1),
    lines(b"peek 1", n=1),
    lines(b"peek 1", b"peek 2", b"reserve"),
)
script(
    "put-bad-format-leaves-body",
    Send(b"put -1 0 100 1\r\nx\r\n", 2),
    Send(b"put 4294967296 0 100 1\r\nx\r\n", 2),
    Send(b"put 0 0 0 4294967296\r\n", 1),
    Send(b"put 0 0 0 10b\r\n0123456789\r\n", 2),
    Send(b"put 0 0 1\r\n", 1),
    Send(b"put 0 0 1 1 x\r\nstats-tube default\r\n", 2),
    Send(b"put 0 0 1 2 \r\nlist-tube-used\r\n", 2),
    Send(b"put 0 0 1 18446744073709551616\r\n", 1),
    Send(b"put 0 0 4294967296 1\r\nx\r\n", 2),
    Send(b"put 0 0 4294967295 1\r\nx\r\n", 1),
    lines(b"stats-job 1", b"peek-ready"),
    put(b"y"),
    lines(b"stats"),
)
script(
    "put-ids-used-by-expected-crlf",
    Send(b"put 0 0 1 1\r\nxyz", 1),
    Send(b"put 0 0 1 1\r\nx\r\n", 1),
    Send(b"put 0 0 1 3\r\nxyz\n\r\n", 1),
    Send(b"put 0 0 1 2\r\nok\r\n", 2),  # the leftover LF is glued to this line
    put(b"ok"),
    lines(b"peek 1", b"peek 2", b"peek 3", b"stats"),
)
script(
    "put-ttr-zero",
    put(b"x", ttr=0),
    put(b"y", ttr=1),
    put(b"z", ttr=4294967295),
    lines(b"stats-job 1", b"stats-job 2", b"stats-job 3"),
)
script(
    "job-too-big",
    Send(b"put 0 0 1 11\r\ndelete 9999\r\n", 1),
    Send(b"put 0 0 1 10\r\n0123456789\r\n", 1),
    Send(b"put 0 0 1 11 junk\r\ndelete 9999\r\n", 1),
    Send(b"put 0 0 1 10 junk\r\n0123456789\r\n", 2),
    Send(b"put 0 0 1 12\r\n"),
    Send(b"01234567"),
    Send(b"89ab\r", 0),
    Send(b"\nlist-tube-used\r\n", 2),
    Send(b"put 0 0 1 11\r\n" + b"\r\n" * 6 + b"list-tube-used\r\n", 2),
    put(b"x"),
    lines(b"peek 1", b"peek 2", b"stats"),
    # Drains 4294967297 bytes: everything after it is swallowed.
    Send(b"put 0 0 1 4294967295\r\n"),
    Send(b"list-tube-used\r\n" + b"x" * 10000 + b"\r\nlist-tube-used\r\n"),
    args=("-z", "10"),
)
script(
    "job-size-default-limit",
    put(b"a" * 65535),
    Send(b"put 0 0 1 65536\r\n" + b"b" * 65536 + b"\r\n", 1),
    Send(b"put 0 0 1 70000 junk\r\n" + b"c" * 70002, 1),
    Send(b"put 0 0 1 4294967296\r\n", 1),
    lines(b"stats-job 1", b"stats"),
    put(b"d"),
)

# --- pipelining

script(
    "pipelining",
    Send(b"use a\r\nuse b\r\nput 0 0 1 1\r\nx\r\nlist-tube-used\r\n", 4),
    Send(b"put 0 0 1 16\r\nlist-tube-used\r\n\r\npeek 2\r\nwatch b\r\nreserve\r\nreserve\r\n", 5),
    Send(b"delete 1\r\ndelete 2\r\nlist-tubes\r\nlist-tubes-watched\r\n", 4),
)
script(
    "pipelining-many",
    Send(b"".join(b"put %d 0 100 2\r\n%02d\r\n" % (i % 3, i) for i in range(100)), 100),
    Send(b"reserve\r\n" * 60 + b"peek-ready\r\nstats-tube default\r\n", 62),
    Send(b"".join(b"release %d 0 0\r\n" % i for i in range(1, 101)), 100),
    Send(b"".join(b"reserve-with-timeout 0\r\nbury %d 7\r\n" % i for i in range(1, 31)), 60),
    lines(b"kick 1000", b"stats"),
)
script(
    "pipelining-byte-by-byte",
    *[
        Send(bytes([byte]))
        for byte in b"use a\r\nput 0 0 1 3\r\na\r\n\r\nlist-tube-used\r\npeek 1\r\n"
    ],
    Read(4),
)

# --- quit and closing

script(
    "quit-with-pipelined-data",
    lines(b"list-tube-used"),
    Send(b"quit\r\nlist-tubes\r\nput 0 0 1 1\r\nx\r\n"),
    Closed(),
    lines(b"peek 1", b"stats", conn=1),
)
script(
    "quit-after-commands",
    Send(b"use a\r\nquit\r\nlist-tube-used\r\n", 1),
    Closed(),
    lines(b"list-tubes", conn=1),
)
script(
    "quit-releases-reserved-job",
    put(b"x"),
    lines(b"reserve"),
    put(b"y"),
    lines(b"reserve-job 2"),
    lines(b"stats-job 1", b"stats", conn=1),
    Send(b"quit\r\n"),
    Closed(),
    lines(b"stats-job 1", b"stats-job 2", b"peek-ready", b"stats-tube default", b"stats", conn=1),
)
script(
    "close-releases-reserved-job",
    put(b"x"),
    lines(b"reserve"),
    Close(),
    Poll(b"stats-job 1", b"state: ready", conn=1),
    lines(b"stats-job 1", conn=1),
)
script(
    "close-releases-to-waiting-reserve",
    put(b"x"),
    lines(b"reserve"),
    lines(b"watch t", b"ignore default", b"reserve-with-timeout 0", conn=1),
    Close(),
    lines(b"reserve-with-timeout 2", conn=2),
    lines(b"stats-job 1", b"stats-tube default", conn=2),
)
script(
    "close-while-putting-and-draining-too-big",
    Send(b"put 0 0 1 5\r\nab"),
    Close(),
    Send(b"put 0 0 1 50\r\nab", conn=1),
    Close(conn=1),
    lines(b"use z", conn=3),
    Send(b"put 0 0 1 2\r\nok\r\n", 1, conn=3),
    lines(b"list-tubes", conn=2),
    args=("-z", "20"),
)

# --- stats counters


def _stats_counters_script(*extra: Step) -> tuple[Step, ...]:
    return (
        Send(b"put 0 0 1 1 x\r\nx\r\n", 2),
        Send(b"put 0 0 1 11\r\n0123456789a\r\n", 1),
        put(b"a"),
        put(b"b", delay=100),
        put(b"c", pri=2000),
        lines(b"pause-tube -x 1", b"pause-tube nosuch 1", b"pause-tube default 0"),
        lines(b"use -bad", b"use good", b"watch -bad", b"watch good", b"ignore -bad"),
        lines(b"ignore good", b"stats-tube -bad", b"stats-tube nosuch", b"stats-tube good"),
        lines(b"peek 1", b"peek 99", b"peek-ready", b"peek-delayed", b"peek-buried"),
        lines(b"peek x", b"stats-job x", b"delete x", b"release 1 1", b"bury 1", b"touch x"),
        lines(b"reserve-with-timeout 99999999999999999999", b"reservex", b"statsx"),
        lines(b"use default", b"reserve-with-timeout 0"),
        lines(b"bury 1 5", b"kick 1", b"kick-job 2", b"reserve-job 2", b"release 2 0 0"),
        lines(b"touch 1", b"touch 99", b"delete 99", b"delete 3", b"delete 3", b"release 9 0 0"),
        lines(b"stats-job 1", b"stats-job 99", b"list-tubes", b"list-tube-used"),
        lines(b"list-tubes-watched", b"bury 9 0", b"kick 0"),
        Send(b"put 0 0 1 1 x\r\nx\r\n", 2, conn=1),
        Send(b"put 0 0 1 11\r\n0123456789a\r\n", 1, conn=2),
        lines(b"watch empty", b"ignore default", conn=3),
        # The reply to the first proves the second, a blocking reserve, was read.
        Send(b"reserve-with-timeout 0\r\nreserve\r\n", 1, conn=3),
        lines(b"reserve-job 1", conn=4),
        lines(b"peek 1", conn=5),
        *extra,
        lines(b"stats"),
        lines(b"stats-tube default", b"stats-tube empty", b"stats-tube good"),
    )


script("stats-counters", *_stats_counters_script(), args=("-z", "10"))
script(
    "stats-counters-after-closes",
    *_stats_counters_script(
        Send(b"quit\r\n", conn=4),
        Closed(conn=4),
        Send(b"quit\r\n", conn=1),
        Closed(conn=1),
    ),
    args=("-z", "10"),
)
script(
    "stats-fresh",
    lines(b"stats"),
    lines(b"stats", conn=1),
    lines(b"stats-tube default", b"list-tubes", b"stats"),
)

# --- drain mode

script(
    "drain-mode",
    put(b"before"),
    Drain(),
    put(b"x"),
    Send(b"put 0 0 1 1\r\nxyz", 1),
    put(b"y", pri=1, delay=1),
    Send(b"put 0 0 1 1 x\r\nx\r\n", 2),
    lines(b"use a", b"watch a", b"reserve-with-timeout 0", b"release 1 0 0", b"peek-ready"),
    lines(b"list-tubes", b"stats-tube default", b"stats-job 1", b"peek 2", b"peek 3"),
    lines(b"stats", b"delete 1", b"stats"),
    # beanstalkd is put in drain mode through a client of its own
    mask=(b"cmd-stats", b"cmd-list-tube-used", b"current-connections", b"total-connections"),
)

# --- reserve-with-timeout parsing (1.12's strtol)

script(
    "reserve-with-timeout-parsing",
    lines(b"reserve-with-timeout abc", b"reserve-with-timeout ", b"reserve-with-timeout  0"),
    lines(b"reserve-with-timeout +0", b"reserve-with-timeout 0x", b"reserve-with-timeout 00"),
    lines(b"reserve-with-timeout 99999999999999999999", b"reserve-with-timeout"),
    lines(b"reserve-with-timeout -1", n=0),
    put(b"x", conn=1),
    Read(1),
    lines(b"reserve-with-timeout 4294967295", n=0),
    put(b"y", conn=1),
    Read(1),
    lines(b"stats"),
)

# --- time (kept short)

script("reserve-with-timeout-0", Send(b"reserve-with-timeout 0\r\n", 1, within=(0, 0.5)))
script("reserve-with-timeout-1", Send(b"reserve-with-timeout 1\r\n", 1, within=(0.9, 1.6)))
script(
    "deadline-soon-ttr-1",
    put(b"x", ttr=1),
    lines(b"reserve"),
    Send(b"reserve-with-timeout 1\r\n", 1, within=(0, 0.5)),
    Send(b"reserve\r\n", 1, within=(0, 0.5)),
    lines(b"stats-job 1"),
)
script(
    "delayed-becomes-ready",
    Send(b"put 0 1 1 1\r\nx\r\n", 1),
    lines(b"peek-ready", b"peek-delayed", b"stats-job 1", b"reserve-with-timeout 0"),
    Send(b"reserve-with-timeout 3\r\n", 1, within=(0.6, 1.6)),
    lines(b"stats-job 1", b"delete 1"),
)
script(
    "half-close-while-reserving",
    Send(b"reserve\r\n"),
    Poll(b"stats-tube default", b"current-waiting: 1", conn=1),
    HalfClose(),
    lines(b"stats-tube default", conn=1),
)
script(
    "half-close-while-reserving-with-timeout",
    Send(b"reserve-with-timeout 100\r\n"),
    Poll(b"stats-tube default", b"current-waiting: 1", conn=1),
    HalfClose(),
    lines(b"stats-tube default", conn=1),
)
script(
    "pause-tube",
    put(b"x"),
    lines(b"pause-tube default 1", b"peek-ready", b"reserve-with-timeout 0"),
    lines(b"pause-tube default 0"),
    Send(b"reserve-with-timeout 1\r\n", 1, within=(0, 0.5)),
    lines(b"release 1 0 0", b"pause-tube default 1"),
    Send(b"reserve-with-timeout 3\r\n", 1, within=(0.6, 1.6)),
    lines(b"stats-tube default"),
)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script(name: str) -> None:
    assert_same(SCRIPTS[name])


@pytest.mark.parametrize(
    "name", ["pipelining", "stray-cr", "put-body-too-long", "quit-releases-reserved-job"]
)
def test_script_unix_socket(name: str) -> None:
    assert_same(SCRIPTS[name], unix=True)


def test_greenstalkd_subprocess() -> None:
    """greenstalkd as a process of its own, as beanstalkd is: the same stats."""
    assert_same(SCRIPTS["stats-counters-after-closes"], in_process=False)


# ---------------------------------------------------------------------------
# Property tests

# Every example starts two servers, so shrinking a failure would take a minute
# or more; the transcripts in the assertion already show the first step that differs.
PROPERTY_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
    "phases": [Phase.explicit, Phase.reuse, Phase.generate],
}

# default and three more: with only two more, a removed tube is always the
# last but one, and the order of list-tubes could not tell swap-removal apart.
TUBES = (b"default", b"a", b"b", b"c")
job_ids = st.integers(0, 6)
priorities = st.sampled_from([0, 1, 1023, 1024, 4294967295])


def _put(pri: int, delay: int, body: bytes) -> bytes:
    return b"put %d %d 120 %d\r\n%s" % (pri, delay, len(body), body)


puts = st.builds(_put, priorities, st.sampled_from([0, 0, 100]), st.binary(max_size=8))
commands: st.SearchStrategy[bytes] = st.one_of(
    puts,
    puts,
    st.just(b"reserve-with-timeout 0"),
    st.builds(b"reserve-job %d".__mod__, job_ids),
    st.builds(b"delete %d".__mod__, job_ids),
    st.builds(lambda i, p, d: b"release %d %d %d" % (i, p, d), job_ids, priorities, st.just(0)),
    st.builds(lambda i, p: b"bury %d %d" % (i, p), job_ids, priorities),
    st.builds(b"kick %d".__mod__, st.integers(0, 4)),
    st.builds(b"kick-job %d".__mod__, job_ids),
    st.builds(b"touch %d".__mod__, job_ids),
    st.builds(b"peek %d".__mod__, job_ids),
    st.builds(b"stats-job %d".__mod__, job_ids),
    st.just(b"peek-ready"),
    st.just(b"peek-delayed"),
    st.just(b"peek-buried"),
    st.just(b"list-tubes"),
    st.just(b"list-tubes-watched"),
    st.just(b"list-tube-used"),
    st.builds(b"use %s".__mod__, st.sampled_from(TUBES)),
    st.builds(b"watch %s".__mod__, st.sampled_from(TUBES)),
    st.builds(b"watch %s".__mod__, st.sampled_from(TUBES)),
    st.builds(b"ignore %s".__mod__, st.sampled_from(TUBES)),
    st.builds(b"stats-tube %s".__mod__, st.sampled_from(TUBES)),
)


@settings(max_examples=50, **PROPERTY_SETTINGS)
@given(st.lists(commands, min_size=30, max_size=100))
def test_random_commands(sequence: list[bytes]) -> None:
    """Random well-formed commands, pipelined on one connection: the same replies, byte for byte."""
    assert_same(Script([Send(b"".join(c + b"\r\n" for c in sequence), len(sequence))]))


@settings(max_examples=50, **PROPERTY_SETTINGS)
@given(st.lists(st.tuples(st.integers(0, 1), commands), min_size=20, max_size=80))
def test_random_commands_two_connections(sequence: list[tuple[int, bytes]]) -> None:
    """The same, one command at a time, from two connections (jobs reserved by the other)."""
    assert_same(Script([Send(c + b"\r\n", 1, conn) for conn, c in sequence]))


GARBAGE_TOKENS = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\x00",
    b" ",
    b"  ",
    b"0",
    b"1",
    b"99999999999",
    b"-",
    b"put ",
    b"put 0 0 1 ",
    b"use ",
    b"watch ",
    b"ignore ",
    b"delete ",
    b"peek ",
    b"kick ",
    b"stats",
    b"stats-job ",
    b"list-tubes",
    b"peek-ready",
    b"bury ",
    b"release ",
]


def _garbage_script(garbage: bytes) -> Script:
    return Script(
        [
            Send(garbage),
            HalfClose(),  # every reply to the garbage, until the server closes
            lines(b"list-tubes", b"list-tube-used", b"put 0 0 1 2", b"ok", n=3, conn=1),
        ]
    )


@settings(max_examples=30, **PROPERTY_SETTINGS)
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(GARBAGE_TOKENS)), max_size=300))
def test_garbage(pieces: list[bytes]) -> None:
    """Malformed input: the same replies as beanstalkd, and greenstalkd keeps serving."""
    assert_same(_garbage_script(b"".join(pieces)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_flood(seed: int) -> None:
    """64 KiB of random bytes with line ends and NULs sprinkled in."""
    rng = random.Random(seed)
    pieces = []
    size = 0
    while size < 65536:
        piece = bytes(rng.getrandbits(8) for _ in range(rng.randrange(300)))
        piece += rng.choice([b"\r\n", b"\r", b"\n", b"\x00", b""])
        pieces.append(piece)
        size += len(piece)
    assert_same(_garbage_script(b"".join(pieces)))


def test_urandom_flood_keeps_greenstalkd_alive() -> None:
    """os.urandom, unseeded: greenstalkd answers as beanstalkd does and stays up."""
    garbage = os.urandom(16384).replace(b"q", b"\r\n")
    assert_same(_garbage_script(garbage))
