"""The greenstalkd command line: beanstalkd's flags, exit codes and signals."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import greenstalk
from greenstalk.server import cli
from greenstalk.server.binlog import Binlog
from greenstalk.server.cli import Options, UsageError, main, parse_args
from greenstalk.server.net import bind_unix, describe_socket
from greenstalk.testing import ServerProcess


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], Options()),
        (["-p1234"], Options(port=1234)),
        (["-p", "1234", "-l", "localhost"], Options(port=1234, listen="localhost")),
        (["-VFV"], Options(fsync_ms=None, verbosity=2)),
        (["-VFp", "99"], Options(fsync_ms=None, verbosity=1, port=99)),
        (["-b", "/tmp/x", "-f0", "-s", "4096"], Options(binlog_dir="/tmp/x", fsync_ms=0,
                                                        file_size=4096)),
        (["-z", "10", "-u", "nobody"], Options(max_job_size=10, user="nobody")),
        (["-l", "unix:/run/q.sock"], Options(listen="unix:/run/q.sock")),
        (["-w0"], Options(spin_us=0)),
        (["-Vw", "50"], Options(verbosity=1, spin_us=50)),
    ],
)
def test_flags(argv: list[str], expected: Options) -> None:
    assert parse_args(argv) == expected


def test_help_and_version_flags() -> None:
    assert parse_args(["-h"]) == "help"
    assert parse_args(["-Vv"]) == "version"
    assert parse_args(["--help"]) == "help"
    assert parse_args(["-p", "1", "--version"]) == "version"
    with pytest.raises(UsageError, match="--verbose"):
        parse_args(["--verbose"])


def test_the_help_says_what_v_and_big_v_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "-v, --version" in usage
    assert "-V       increase verbosity" in usage
    assert "-h, --help" in usage


def test_a_too_large_job_size_is_clamped_with_a_warning() -> None:
    warnings = io.StringIO()
    options = parse_args(["-z", "2000000000"], warn=warnings)
    assert isinstance(options, Options)
    assert options.max_job_size == 1 << 30
    assert "1073741824" in warnings.getvalue()


def test_removed_flags_only_warn() -> None:
    warnings = io.StringIO()
    assert parse_args(["-c", "-n"], warn=warnings) == Options()
    assert warnings.getvalue().count("removed") == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["-q"], ["extra"], ["-"], ["-p"], ["-p", "http"], ["-p", "70000"], ["-z", "-1"],
        ["-f", "x"], ["-s", "0"], ["-w"], ["-w", "-5"], ["-w", "0.5"],
    ],
)
def test_bad_command_lines(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(argv)


def test_main_prints_usage_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    assert "-b DIR" in capsys.readouterr().out
    assert main(["-v"]) == 0
    assert "beanstalkd 1.12 protocol" in capsys.readouterr().out
    assert main(["-x"]) == cli.EXIT_USAGE
    error = capsys.readouterr().err
    assert "unknown flag: -x" in error
    assert "Use: greenstalkd" in error


def test_main_cannot_listen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_socket = tmp_path / "file"
    not_a_socket.write_text("")
    with pytest.raises(SystemExit) as caught:
        main(["-l", f"unix:{not_a_socket}"])
    assert caught.value.code == cli.EXIT_FAILURE
    assert f"cannot listen on unix:{not_a_socket}: " in capsys.readouterr().err


def test_an_address_in_use_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as caught:
            main(["-l", "127.0.0.1", "-p", str(port)])
    assert caught.value.code == cli.EXIT_FAILURE
    error = capsys.readouterr().err
    assert error == f"greenstalkd: cannot listen on 127.0.0.1:{port}: Address already in use\n"


def test_main_unknown_user(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["-l", f"unix:{tmp_path / 'socket'}", "-u", "no-such-user-here"])
    assert caught.value.code == cli.EXIT_FAILURE
    assert "no-such-user-here" in capsys.readouterr().err


def test_main_with_a_locked_binlog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    holder = Binlog(str(tmp_path / "log"))
    holder.open()
    try:
        with pytest.raises(SystemExit) as caught:
            main(["-l", f"unix:{tmp_path / 'socket'}", "-b", str(tmp_path / "log")])
    finally:
        holder.close()
    assert caught.value.code == cli.EXIT_LOCKED
    assert "lock" in capsys.readouterr().err


def _wait_for_socket(path: Path) -> greenstalk.Client[bytes]:
    """Connect as soon as a greenstalkd just launched listens at ``path``.

    This polls, on purpose: it measures how long the server takes to start.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            return greenstalk.Client(str(path), socket_timeout=5)
        except greenstalk.ClientConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_main_serves_until_sigterm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() on this thread; a second thread uses it, drains it with SIGUSR1, stops it."""
    path = tmp_path / "socket"
    # Bound before main() runs, so the client's connection waits in the
    # backlog until the server takes it: no polling for readiness.
    listener = bind_unix(str(path))
    monkeypatch.setattr(cli, "listening_socket", lambda options: listener)
    seen: dict[str, object] = {}
    stopped = threading.Event()

    def use_the_server() -> None:
        with greenstalk.Client(str(path), socket_timeout=10) as client:
            seen["id"] = client.put(b"hello")
            os.kill(os.getpid(), signal.SIGUSR1)
            while not client.stats()["draining"]:
                time.sleep(0.01)
            try:
                client.put(b"refused")
            except greenstalk.DrainingError:
                seen["draining"] = True
            # Handed to this thread, not to the one that polls, while the
            # server has nothing else to wake it: it must still stop.
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            if not stopped.wait(5):
                seen["stuck"] = True
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    thread = threading.Thread(target=use_the_server)
    thread.start()
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    try:
        # No -b: the log's sync timer would wake the loop and hide a lost signal.
        code = main(["-V", "-l", f"unix:{path}"])
        stopped.set()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        thread.join()
    assert code == 0
    assert seen == {"id": 1, "draining": True}
    # The socket file is ours: it goes with the server.
    assert not path.exists()


def test_the_listening_address_is_written_as_people_write_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        assert describe_socket(sock) == f"127.0.0.1:{sock.getsockname()[1]}"
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        assert describe_socket(sock) == f"[::1]:{sock.getsockname()[1]}"


def test_a_clean_stop_removes_the_socket_file(tmp_path: Path) -> None:
    path = tmp_path / "socket"
    process = subprocess.Popen(
        [sys.executable, "-m", "greenstalk.server", "-V", "-l", f"unix:{path}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == f"greenstalkd: listening on unix:{path}\n"
        assert path.exists()
    finally:
        ServerProcess(str(path), process, "greenstalkd").stop()
    assert process.returncode == 0
    assert not path.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="becoming another user needs root (CI runs as root)")
def test_u_imports_everything_before_it_drops_privileges(tmp_path: Path) -> None:
    """Issue 9: -u crashed when the new user could not read the interpreter's library.

    The package is copied where only root can read it; the server becomes
    nobody, then must still serve puts into its log.
    """
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(Path(greenstalk.__file__).parent, private / "greenstalk")
    # Where nobody may write: pytest's own directories are root's alone.
    shared = Path(tempfile.mkdtemp(prefix="greenstalkd-nobody-"))
    shared.chmod(0o777)
    socket_path = shared / "socket"
    process = subprocess.Popen(
        [sys.executable, "-m", "greenstalk.server", "-V", "-u", "nobody",
         "-b", str(shared / "log"), "-l", f"unix:{socket_path}"],
        cwd=private,
        env={**os.environ, "PYTHONPATH": str(private)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline().startswith("greenstalkd: listening on unix:")
        with greenstalk.Client(str(socket_path), socket_timeout=10) as client:
            job_id = client.put(b"as nobody")
            assert client.reserve(timeout=0).id == job_id
            assert client.stats()["pid"] == process.pid
        assert {p.stat().st_uid for p in (shared / "log").glob("binlog.*")} == {
            pwd.getpwnam("nobody").pw_uid
        }
    finally:
        ServerProcess(str(socket_path), process, "greenstalkd").stop()
        shutil.rmtree(shared)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""


def test_python_dash_m_runs_the_server() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "greenstalk.server", "-v"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.startswith("greenstalkd ")


def test_the_server_starts_quickly(tmp_path: Path) -> None:
    """Scripts written for beanstalkd connect about 100 ms after starting it."""
    path = tmp_path / "socket"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "greenstalk.server", "-l", f"unix:{path}"],
        stderr=subprocess.PIPE,
    )
    try:
        with _wait_for_socket(path) as client:
            assert client.using() == "default"
        elapsed = time.monotonic() - started
    finally:
        ServerProcess(str(path), process, "greenstalkd").stop()
    assert process.returncode == 0
    # Generous for a loaded CI machine; here it is about 60 ms.
    assert elapsed < 2
