"""The ``greenstalkd`` command: beanstalkd's flags, the same behaviour.

Flags may be combined and values attached, as beanstalkd allows
(``-VF -p11300``, ``-l unix:/run/q.sock``); ``--help`` and ``--version``
work too. SIGUSR1 turns on drain mode; SIGTERM and SIGINT stop the server
after flushing and syncing the binlog (and removing its Unix socket file).
Exit codes: 0 after a clean stop, 5 for a usage error, 10 when the binlog
directory is locked by another process, 1 for other start-up failures.

Everything the server will ever import is imported before ``-u`` drops
privileges: the new user may not be able to read the interpreter's files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import pwd
import secrets
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import NoReturn, TextIO

from .. import __version__
from .._address import describe_address
from .binlog import Binlog, BinlogError, BinlogLockedError
from .connection import VERSION, ServerInfo
from .net import Server, bind_tcp, bind_unix, describe_socket
from .state import ServerState

DEFAULT_PORT = 11300
DEFAULT_FSYNC_MS = 50
DEFAULT_FILE_SIZE = 10 << 20
DEFAULT_MAX_JOB_SIZE = 65535
DEFAULT_SPIN_US = 200
MAX_JOB_SIZE_LIMIT = 1 << 30

EXIT_USAGE = 5
EXIT_LOCKED = 10
EXIT_FAILURE = 1

USAGE = """\
Use: greenstalkd [OPTIONS]

Options:
 -b DIR   write-ahead log directory
 -f MS    fsync at most once every MS milliseconds (default is 50ms);
          use -f0 for "always fsync" (replies wait for it; fsyncs are shared)
 -F       never fsync
 -l ADDR  listen on address (default is all interfaces); unix:PATH for a Unix socket
 -p PORT  listen on port (default is 11300)
 -u USER  become user and group
 -z BYTES set the maximum job size in bytes (default is 65535);
          max allowed is 1073741824 bytes
 -s BYTES set the size of each write-ahead log file (default is 10485760)
 -w US    poll for up to US microseconds before sleeping, adapted to how soon
          commands come (default is 200; -w0 never polls; not in beanstalkd)
 -v, --version  show version information
 -V       increase verbosity (as beanstalkd's -V; in the greenstalk command -V is --version)
 -h, --help     show this help
"""

_FLAGS_WITH_VALUE = frozenset("bflpuzsw")


@dataclasses.dataclass
class Options:
    """greenstalkd's settings, as the command line gives them."""

    binlog_dir: str | None = None
    fsync_ms: int | None = DEFAULT_FSYNC_MS
    listen: str | None = None
    port: int = DEFAULT_PORT
    user: str | None = None
    max_job_size: int = DEFAULT_MAX_JOB_SIZE
    file_size: int = DEFAULT_FILE_SIZE
    verbosity: int = 0
    spin_us: int = DEFAULT_SPIN_US


class UsageError(Exception):
    """A command line greenstalkd does not accept."""


def _number(flag: str, text: str) -> int:
    if not text.isdigit():
        raise UsageError(f"invalid value for -{flag}: {text!r}")
    return int(text)


def parse_args(argv: Sequence[str], warn: TextIO = sys.stderr) -> Options | str:
    """Read beanstalkd-style flags. Returns the options, or ``"help"``/``"version"``.

    Raises :class:`UsageError` for an unknown flag, a missing or bad value,
    or an argument that is not a flag.
    """
    options = Options()
    position = 0
    while position < len(argv):
        argument = argv[position]
        position += 1
        if argument == "--help":
            return "help"
        if argument == "--version":
            return "version"
        if not argument.startswith("-") or argument == "-" or argument.startswith("--"):
            raise UsageError(f"unknown argument: {argument}")
        index = 1
        while index < len(argument):
            flag = argument[index]
            index += 1
            if flag in _FLAGS_WITH_VALUE:
                if index < len(argument):
                    value = argument[index:]
                elif position < len(argv):
                    value = argv[position]
                    position += 1
                else:
                    raise UsageError(f"flag -{flag} requires an argument")
                _apply(options, flag, value, warn)
                break
            if flag == "F":
                options.fsync_ms = None
            elif flag == "V":
                options.verbosity += 1
            elif flag in "cn":
                print(f"greenstalkd: the -{flag} flag was removed; ignoring it", file=warn)
            elif flag == "h":
                return "help"
            elif flag == "v":
                return "version"
            else:
                raise UsageError(f"unknown flag: -{flag}")
    return options


def _apply(options: Options, flag: str, value: str, warn: TextIO) -> None:
    if flag == "b":
        options.binlog_dir = value
    elif flag == "f":
        options.fsync_ms = _number(flag, value)
    elif flag == "l":
        options.listen = value
    elif flag == "p":
        port = _number(flag, value)
        if port > 65535:
            raise UsageError(f"invalid port: {value}")
        options.port = port
    elif flag == "u":
        options.user = value
    elif flag == "z":
        size = _number(flag, value)
        if size > MAX_JOB_SIZE_LIMIT:
            print(f"greenstalkd: maximum job size was set to {MAX_JOB_SIZE_LIMIT}", file=warn)
            size = MAX_JOB_SIZE_LIMIT
        options.max_job_size = size
    elif flag == "w":
        options.spin_us = _number(flag, value)
    else:
        options.file_size = _number(flag, value)
        if not options.file_size:
            raise UsageError("the binlog file size (-s) must be positive")


def _activated_socket() -> socket.socket | None:
    """The listening socket systemd (or a test harness) passed as fd 3, if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return socket.socket(fileno=3)


def listening_socket(options: Options) -> socket.socket:
    """The socket to serve on: an activated one, else one bound as the options say."""
    activated = _activated_socket()
    if activated is not None:
        return activated
    if options.listen is not None and options.listen.startswith("unix:"):
        return bind_unix(options.listen[len("unix:") :])
    return bind_tcp(options.listen, options.port)


def _drop_privileges(user: str) -> None:
    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def make_state(
    options: Options, log: TextIO = sys.stderr
) -> tuple[ServerState, ServerInfo, Binlog | None]:
    """The server's state, with the binlog replayed when ``-b`` is given.

    Raises :class:`~greenstalk.server.binlog.BinlogError` when the binlog
    cannot be opened.
    """
    binlog = None
    if options.binlog_dir is not None:
        binlog = Binlog(
            options.binlog_dir, file_size=options.file_size, fsync_ms=options.fsync_ms
        )
    state = ServerState(time.time_ns, options.max_job_size, binlog)
    info = ServerInfo(secrets.token_hex(8), options.file_size)
    if binlog is not None:
        # The replay makes a million objects a second and none is garbage:
        # the cyclic collector would only slow it down (by half).
        collecting = gc.isenabled()
        gc.disable()
        try:
            recovery = binlog.open()
            for warning in recovery.warnings:
                print(f"greenstalkd: {warning}", file=log)
            state.recover(recovery)
        finally:
            if collecting:
                gc.enable()
    return state, info, binlog


def serve(options: Options, sock: socket.socket, log: TextIO = sys.stderr) -> None:
    """Run greenstalkd on ``sock`` until SIGTERM or SIGINT; SIGUSR1 turns on drain mode.

    Raises :class:`~greenstalk.server.binlog.BinlogError` when the binlog
    cannot be opened, or when the server stopped because an fsync failed.
    """
    state, info, binlog = make_state(options, log)
    server = Server(state, info, binlog, manage_gc=True, spin_limit=options.spin_us / 1_000_000)
    server.listen(sock)
    # The handlers run on this thread between two steps of the loop. A signal
    # that the kernel hands to another thread of this process must still end
    # the poll, hence the wake-up descriptor.
    signal.signal(signal.SIGUSR1, lambda signum, frame: state.enter_drain_mode())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: server.stop())
    previous_wakeup_fd = signal.set_wakeup_fd(server.wakeup_fd(), warn_on_full_buffer=False)
    if options.verbosity:
        print(f"greenstalkd: listening on {describe_socket(sock)}", file=log)
    try:
        server.run()
    finally:
        signal.set_wakeup_fd(previous_wakeup_fd)
        server.close()
        if binlog is not None:
            binlog.close()
    if server.failure is not None:
        raise server.failure


def _wanted_address(options: Options) -> str:
    """The address the options ask for, for messages about it."""
    if options.listen is not None and options.listen.startswith("unix:"):
        return options.listen
    host = "0.0.0.0" if options.listen is None else options.listen
    return describe_address((host, options.port))


def _fail(message: str, code: int) -> NoReturn:
    print(f"greenstalkd: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run greenstalkd with beanstalkd's command-line flags; returns the exit code."""
    try:
        parsed = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"greenstalkd: {error}", file=sys.stderr)
        print(USAGE, end="", file=sys.stderr)
        return EXIT_USAGE
    if parsed == "help":
        print(USAGE, end="")
        return 0
    if parsed == "version":
        print(f"greenstalkd {__version__} (beanstalkd {VERSION} protocol)")
        return 0
    assert isinstance(parsed, Options)
    activated = os.environ.get("LISTEN_PID") == str(os.getpid())
    try:
        sock = listening_socket(parsed)
    except OSError as error:
        reason = error.strerror or error
        _fail(f"cannot listen on {_wanted_address(parsed)}: {reason}", EXIT_FAILURE)
    # Our own socket file goes when we stop (not one handed to us by activation).
    unix_path = None
    if sock.family == socket.AF_UNIX and not activated:
        unix_path = describe_socket(sock)[len("unix:") :]
    try:
        with sock:
            if parsed.user is not None:
                try:
                    _drop_privileges(parsed.user)
                except (KeyError, OSError) as error:
                    _fail(f"cannot become user {parsed.user}: {error}", EXIT_FAILURE)
            try:
                serve(parsed, sock)
            except BinlogLockedError as error:
                _fail(str(error), EXIT_LOCKED)
            except BinlogError as error:
                _fail(str(error), EXIT_FAILURE)
    finally:
        if unix_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)
    return 0
