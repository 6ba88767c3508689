"""greenstalkd's replies and its log: nothing acknowledged before it is written (and synced).

Issue 9: with ``-f 0`` every reply waits for an fsync, and fsyncs are
shared between connections (group commit); a put whose record cannot be
written is never answered ``INSERTED``; a full disk is answered
``OUT_OF_MEMORY``, as beanstalkd does, and nothing acknowledged is lost.
"""

from __future__ import annotations

import errno
import gc
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import greenstalk
from greenstalk.server.cli import Options
from greenstalk.server.net import Server, bind_tcp
from greenstalk.testing import run_server

from .conftest import fill
from .test_server_net import address_of, greenstalkd


class SyncCounter:
    """Counts fdatasync calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._lock = threading.Lock()
        real = os.fdatasync

        def counting(fd: int) -> None:
            real(fd)
            with self._lock:
                self.calls += 1

        monkeypatch.setattr(os, "fdatasync", counting)


def test_a_reply_waits_for_the_fsync_that_covers_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = SyncCounter(monkeypatch)
    options = Options(binlog_dir=str(tmp_path), fsync_ms=0)
    with greenstalkd(options) as server, greenstalk.Client(address_of(server)) as client:
        binlog = server.binlog
        assert binlog is not None
        before = syncs.calls
        for body in (b"a", b"b", b"c"):
            client.put(body)
            # The reply came back: the record it followed is on disk.
            assert binlog.synced == binlog.written == binlog.position
        assert syncs.calls - before == 3
        client.stats()
        # A command that wrote nothing needs no fsync.
        assert syncs.calls - before == 3


def test_concurrent_puts_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Group commit: eight connections putting at once need far fewer fsyncs than puts."""
    syncs = SyncCounter(monkeypatch)
    options = Options(binlog_dir=str(tmp_path), fsync_ms=0)
    puts_each = 200
    with greenstalkd(options) as server:
        address = address_of(server)
        start = threading.Barrier(8, timeout=30)
        errors: list[BaseException] = []

        def producer() -> None:
            try:
                with greenstalk.Client(address, socket_timeout=30) as client:
                    start.wait()
                    for _ in range(puts_each):
                        client.put(b"x" * 100)
            except BaseException as error:  # handed to the test's thread
                errors.append(error)

        before = syncs.calls
        threads = [threading.Thread(target=producer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        with greenstalk.Client(address) as client:
            assert client.stats()["current-jobs-ready"] == 8 * puts_each
        # Every put was acknowledged only after an fsync, yet they shared them.
        assert syncs.calls - before < 0.75 * 8 * puts_each


def test_a_failed_fsync_stops_the_server_and_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failed fsync the data may be gone while a later fsync succeeds: stop."""
    options = Options(binlog_dir=str(tmp_path), fsync_ms=0)
    with greenstalkd(options) as server, greenstalk.Client(address_of(server)) as client:
        assert client.put(b"kept") == 1

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(greenstalk.ClientConnectionError):
            client.put(b"never acknowledged")
        assert server.failure is not None
        assert "cannot fsync" in str(server.failure)
        # The disk works again by the time the log is closed.
        monkeypatch.undo()


@pytest.mark.parametrize("fsync", [["-f", "0"], ["-f", "50"], ["-F"]])
def test_a_full_disk_refuses_puts_and_loses_no_acknowledged_job(
    small_disk: Path, fsync: list[str]
) -> None:
    """Issue 9: with a full disk, puts were answered INSERTED and lost on kill -9."""
    log = small_disk / "log"
    args = ["-b", str(log), "-s", "1000000", *fsync]
    inserted: list[int] = []
    with run_server("greenstalkd", args=args, in_process=False) as server:
        assert server.process is not None
        with greenstalk.Client(server.address, socket_timeout=10) as client:
            client.stats()  # started: its log file is made
            filler = fill(small_disk)
            refused = 0
            for index in range(3000):
                try:
                    inserted.append(client.put(b"%05d" % index + bytes(995)))
                except greenstalk.OutOfMemoryError:
                    refused += 1
                    if refused == 20:
                        break
            assert refused == 20
            # The connection is in order, and deletes still work (their room was kept).
            client.delete(inserted.pop(0))
            assert client.stats()["current-jobs-ready"] == len(inserted)
            # Space comes back: puts work again.
            filler.unlink()
            inserted.append(client.put(b"after"))
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    with (
        run_server("greenstalkd", args=args, in_process=False) as restarted,
        greenstalk.Client(restarted.address, socket_timeout=10) as client,
    ):
        assert client.stats()["current-jobs-ready"] == len(inserted)
        for job_id in inserted[:: max(1, len(inserted) // 50)] + inserted[-1:]:
            client.peek(job_id)


def test_a_server_managing_the_collector_freezes_what_survives(tmp_path: Path) -> None:
    options = Options()
    enabled = gc.isenabled()
    gc.unfreeze()
    try:
        with greenstalkd(options, manage_gc=True) as server:
            with greenstalk.Client(address_of(server)) as client:
                client.put(b"job")
                assert not gc.isenabled()
            assert gc.get_freeze_count() > 0
        assert gc.isenabled() == enabled
    finally:
        gc.unfreeze()


def test_greenstalkd_manages_the_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    """With millions of jobs, the collector's full passes would stall the loop."""
    made: list[dict[str, Any]] = []
    real = Server.__init__

    def recording(self: Server, *args: Any, **kwargs: Any) -> None:
        made.append(kwargs)
        real(self, *args, **kwargs)

    monkeypatch.setattr(Server, "__init__", recording)
    monkeypatch.setattr(Server, "run", lambda self: None)
    from greenstalk.server import cli

    with bind_tcp("127.0.0.1", 0) as sock:
        cli.serve(Options(), sock)
    assert made == [{"manage_gc": True, "spin_limit": 0.0002}]


def test_a_beanstalkd_log_directory_is_refused(tmp_path: Path) -> None:
    """A log directory that is not greenstalkd's keeps the server from starting (status 1)."""
    (tmp_path / "binlog.1").write_bytes(b"\x07\x00\x00\x00" + bytes(100))
    result = subprocess.run(
        [sys.executable, "-m", "greenstalk.server", "-l", f"unix:{tmp_path / 's'}",
         "-b", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "looks like a beanstalkd binlog" in result.stderr
