"""The binlog: replay, damage tolerance, rotation, compaction, fsync policy, locking.

No server is needed: jobs are :class:`Job` objects with a stand-in tube, and
"the server" at start-up is :func:`restore`, which puts every recovered job
again as greenstalkd does. Records are built by hand from the format in the
module docstring to check how damaged or odd files are read.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenstalk.server.binlog import (
    Binlog,
    BinlogError,
    BinlogLockedError,
    RecoveredJob,
    RecoveredPause,
    Recovery,
)
from greenstalk.server.job import Job, JobState

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND

FILE_START = b"GSBINLOG" + struct.pack("<I", 1)
FULL = struct.Struct("<QIIIqqBQQQQQH")
UPDATE = struct.Struct("<QBIIqQQQQQ")


class FakeClock:
    """A clock that only moves when told."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class FakeTube:
    name: bytes


def make_job(
    job_id: int,
    body: bytes = b"body",
    tube: bytes = b"default",
    priority: int = 10,
    delay: int = 0,
    ttr: int = 60,
) -> Job:
    return Job(job_id, FakeTube(tube), priority, delay, ttr, body, START + job_id)


def expected(job: Job) -> RecoveredJob:
    """What replay should give back for ``job`` as last logged."""
    state, deadline_at = job.state, job.deadline_at
    if state is JobState.RESERVED:
        state, deadline_at = JobState.READY, 0
    return RecoveredJob(
        job.id,
        job.tube.name,
        job.priority,
        job.delay,
        job.ttr,
        job.body,
        job.created_at,
        deadline_at,
        state,
        job.reserves,
        job.timeouts,
        job.releases,
        job.buries,
        job.kicks,
    )


def open_log(path: Path, **kwargs: Any) -> tuple[Binlog, Recovery]:
    kwargs.setdefault("clock", FakeClock())
    kwargs.setdefault("fsync_ms", None)
    log = Binlog(str(path), **kwargs)
    return log, log.open()


def restore(log: Binlog, recovery: Recovery) -> dict[int, Job]:
    """Do what the server does at start-up: put every job and pause again, then finish."""
    jobs = {}
    for record in recovery.jobs:
        job = Job(
            record.id,
            FakeTube(record.tube),
            record.priority,
            record.delay,
            record.ttr,
            record.body,
            record.created_at,
        )
        job.state = record.state
        job.deadline_at = record.deadline_at
        job.reserves = record.reserves
        job.timeouts = record.timeouts
        job.releases = record.releases
        job.buries = record.buries
        job.kicks = record.kicks
        log.put(job)
        jobs[job.id] = job
    for pause in recovery.pauses:
        log.pause(pause.tube, pause.pause, pause.unpause_at)
    log.finish_recovery()
    return jobs


def reopen(log: Binlog, path: Path, **kwargs: Any) -> tuple[Binlog, Recovery]:
    log.close()
    return open_log(path, **kwargs)


def files(path: Path) -> list[str]:
    return sorted(
        (p.name for p in path.iterdir() if p.name.startswith("binlog.")),
        key=lambda name: int(name.split(".")[1]),
    )


def disk_bytes(path: Path) -> int:
    return sum((path / name).stat().st_size for name in files(path))


def frame(rtype: int, payload: bytes) -> bytes:
    """One record, framed as the module docstring says."""
    size = len(payload)
    crc = zlib.crc32(payload, rtype)
    return struct.pack("<3sBIII", b"\xf5gs", rtype, size, size ^ 0xFFFFFFFF, crc) + payload


def full_payload(job_id: int, tube: bytes = b"t", body: bytes = b"b", state: int = 1) -> bytes:
    fixed = FULL.pack(job_id, 1, 0, 60, START, 0, state, 0, 0, 0, 0, 0, len(tube))
    return fixed + tube + body


def recover_file(path: Path, content: bytes) -> Recovery:
    """Replay a directory holding just ``binlog.1`` = ``content``."""
    path.mkdir()
    (path / "binlog.1").write_bytes(content)
    log, recovery = open_log(path)
    log.close()
    return recovery


# Round trips


def test_round_trip_of_every_record(tmp_path: Path) -> None:
    log, recovery = open_log(tmp_path)
    assert recovery == Recovery([], [], 0, [])
    ready = make_job(1, b"ready", b"a", priority=5)
    delayed = make_job(2, b"delayed", b"b", delay=30)
    delayed.state = JobState.DELAYED
    delayed.deadline_at = START + 30 * SECOND
    buried = make_job(3, b"buried", b"a")
    gone = make_job(4, b"gone")
    for job in (ready, delayed, buried, gone):
        log.put(job)
    assert (ready.file, gone.file) == (1, 1)
    buried.state = JobState.BURIED
    buried.priority = 77
    buried.reserves, buried.buries = 1, 1
    log.update(buried)
    ready.state = JobState.DELAYED
    ready.delay = 5
    ready.deadline_at = START + 5 * SECOND
    ready.reserves, ready.releases, ready.timeouts = 2, 1, 1
    log.update(ready)
    ready.state = JobState.READY
    ready.deadline_at = 0
    ready.kicks = 1
    log.update(ready)
    log.delete(gone)
    log.pause(b"a", 60, START + 60 * SECOND)
    log.flush()
    assert log.records_written == 9
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(ready), expected(delayed), expected(buried)]
    assert recovery.pauses == [RecoveredPause(b"a", 60, START + 60 * SECOND)]
    assert recovery.max_id == 4
    assert recovery.warnings == []
    assert log.current_index == 2
    assert log.oldest_index == 1
    log.close()


def test_a_reserved_job_comes_back_ready(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    first, second = make_job(1), make_job(2)
    for job in (first, second):
        job.state = JobState.RESERVED
        job.deadline_at = START + 60 * SECOND
        job.reserves = 1
    log.put(first)
    log.put(make_job(2))
    log.update(second)
    log, recovery = reopen(log, tmp_path)
    assert [(job.state, job.deadline_at, job.reserves) for job in recovery.jobs] == [
        (JobState.READY, 0, 1),
        (JobState.READY, 0, 1),
    ]
    log.close()


def test_ids_continue_after_every_job_is_deleted(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    jobs = [make_job(1), make_job(2)]
    for job in jobs:
        log.put(job)
    for job in jobs:
        log.delete(job)
    log, recovery = reopen(log, tmp_path)
    assert (recovery.jobs, recovery.max_id) == ([], 2)
    restore(log, recovery)
    assert files(tmp_path) == ["binlog.2"]
    # The old files are gone, but each new file starts with the highest id.
    for _ in range(2):
        log, recovery = reopen(log, tmp_path)
        assert (recovery.jobs, recovery.max_id) == ([], 2)
        restore(log, recovery)
    log.close()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\0",
        b"a\r\nb\0c\r\n",
        bytes(range(256)) * 3,
        b"\xf5gs" * 100,
        os.urandom(3 * 1024 * 1024),
    ],
    ids=["empty", "crlf", "nul", "mixed", "all-bytes", "markers", "3MiB"],
)
def test_bodies_of_any_size_and_content(tmp_path: Path, body: bytes) -> None:
    log, _ = open_log(tmp_path, file_size=1024)
    job = make_job(1, body, tube=b"x" * 200)
    log.put(job)
    log.put(make_job(2, b"after"))
    log, recovery = reopen(log, tmp_path, file_size=1024)
    assert recovery.jobs == [expected(job), expected(make_job(2, b"after"))]
    assert recovery.warnings == []
    log.close()


def test_a_body_holding_a_whole_record_is_just_a_body(tmp_path: Path) -> None:
    inner = frame(1, full_payload(99, body=b"phantom"))
    log, _ = open_log(tmp_path)
    job = make_job(1, inner)
    log.put(job)
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(job)]
    assert recovery.max_id == 1
    log.close()


# Damage


@pytest.mark.parametrize("last", ["put", "update", "delete", "pause"])
def test_a_torn_tail_at_every_offset_keeps_the_earlier_records(
    tmp_path: Path, last: str
) -> None:
    source = tmp_path / "source"
    log, _ = open_log(source)
    jobs = [make_job(1, b"one"), make_job(2, b"two")]
    for job in jobs:
        log.put(job)
    log.flush()
    intact = (source / "binlog.1").stat().st_size
    if last == "put":
        log.put(make_job(3, b"x" * 40))
    elif last == "update":
        jobs[0].state = JobState.BURIED
        log.update(jobs[0])
    elif last == "delete":
        log.delete(jobs[0])
    else:
        log.pause(b"default", 10, START + 10 * SECOND)
    log.close()
    data = (source / "binlog.1").read_bytes()
    assert len(data) > intact
    jobs[0].state = JobState.READY
    for cut in range(intact, len(data)):
        recovery = recover_file(tmp_path / str(cut), data[:cut])
        assert recovery.jobs == [expected(job) for job in jobs]
        assert (recovery.max_id, recovery.pauses) == (2, [])
        assert len(recovery.warnings) == (cut > intact)
    assert "torn record" in recovery.warnings[0]


def test_a_file_cut_inside_its_header_is_ignored(tmp_path: Path) -> None:
    for cut in range(len(FILE_START)):
        recovery = recover_file(tmp_path / str(cut), FILE_START[:cut])
        assert recovery.jobs == []
        assert recovery.warnings == [
            f"binlog.1: incomplete file header ({cut} bytes), file ignored"
        ]
    recovery = recover_file(tmp_path / "zeros", bytes(4096))
    assert len(recovery.warnings) == 1


def test_a_record_with_a_bad_crc_is_skipped_and_later_ones_survive(tmp_path: Path) -> None:
    source = tmp_path / "source"
    log, _ = open_log(source)
    jobs = [make_job(1, b"BODY-ONE"), make_job(2, b"BODY-TWO"), make_job(3, b"BODY-THREE")]
    for job in jobs:
        log.put(job)
    log.update(jobs[2])
    log.close()
    data = bytearray((source / "binlog.1").read_bytes())
    data[data.index(b"BODY-TWO") + 2] ^= 0x01
    recovery = recover_file(tmp_path / "damaged", bytes(data))
    assert recovery.jobs == [expected(jobs[0]), expected(jobs[2])]
    assert len(recovery.warnings) == 1
    assert "bad CRC" in recovery.warnings[0]


@pytest.mark.parametrize("where", ["marker", "length", "inverse"])
def test_a_damaged_record_header_is_skipped_and_later_ones_survive(
    tmp_path: Path, where: str
) -> None:
    source = tmp_path / "source"
    log, _ = open_log(source)
    # The marker in the body of the damaged record is a false start.
    jobs = [make_job(1, b"BODY-ONE"), make_job(2, b"BODY-TWO\xf5gs"), make_job(3, b"BODY-THREE")]
    for job in jobs:
        log.put(job)
    log.close()
    data = bytearray((source / "binlog.1").read_bytes())
    header = data.index(b"BODY-TWO") - len(b"default") - FULL.size - 16
    data[header + {"marker": 1, "length": 5, "inverse": 11}[where]] ^= 0x40
    recovery = recover_file(tmp_path / "damaged", bytes(data))
    assert recovery.jobs == [expected(jobs[0]), expected(jobs[2])]
    assert len(recovery.warnings) == 1
    assert "damaged data" in recovery.warnings[0]


def test_garbage_or_zeros_at_the_end_are_ignored(tmp_path: Path) -> None:
    body = FILE_START + frame(1, full_payload(1))
    for name, tail in [("zeros", bytes(1000)), ("garbage", b"\xf5gs" + os.urandom(100))]:
        recovery = recover_file(tmp_path / name, body + tail)
        assert [job.id for job in recovery.jobs] == [1]
        assert len(recovery.warnings) == 1
        assert "damaged data at the end" in recovery.warnings[0]


def test_records_that_do_not_fit_their_type_are_skipped(tmp_path: Path) -> None:
    bad = [
        frame(9, b"future"),
        frame(1, b"short"),
        frame(1, FULL.pack(5, 1, 0, 60, START, 0, 1, 0, 0, 0, 0, 0, 10) + b"tube"),
        frame(1, full_payload(6, state=0)),
        frame(2, b"short"),
        frame(2, UPDATE.pack(1, 9, 1, 0, 0, 0, 0, 0, 0, 0)),
        frame(3, b"short"),
        frame(4, b"short"),
        frame(5, b"short"),
    ]
    good = [
        frame(1, full_payload(1)),
        frame(2, UPDATE.pack(1, 3, 7, 0, 0, 1, 0, 0, 1, 0)),
        # An update or delete of a job never put is ignored, but its id counts.
        frame(2, UPDATE.pack(40, 1, 7, 0, 0, 0, 0, 0, 0, 0)),
        frame(3, struct.pack("<Q", 41)),
        frame(5, struct.pack("<Q", 30)),
    ]
    recovery = recover_file(tmp_path / "odd", FILE_START + b"".join(bad + good))
    assert [(job.id, job.state, job.priority) for job in recovery.jobs] == [
        (1, JobState.BURIED, 7)
    ]
    assert recovery.max_id == 41
    assert len(recovery.warnings) == len(bad)
    assert all("malformed record" in warning for warning in recovery.warnings)


def test_files_that_are_not_ours_are_refused_not_deleted(tmp_path: Path) -> None:
    for name, content in [
        ("beanstalkd", struct.pack("<i", 7) + bytes(100)),
        ("version", b"GSBINLOG" + struct.pack("<I", 2)),
    ]:
        path = tmp_path / name
        path.mkdir()
        (path / "binlog.1").write_bytes(content)
        log = Binlog(str(path))
        with pytest.raises(BinlogError, match=r"binlog\.1"):
            log.open()
        assert files(path) == ["binlog.1"]
        # The failed open released the lock: the same error again, not BinlogLockedError.
        log.close()
        with pytest.raises(BinlogError, match=r"binlog\.1"):
            Binlog(str(path)).open()


def test_other_names_in_the_directory_are_left_alone(tmp_path: Path) -> None:
    for name in ("binlog.0", "binlog.01", "binlog.x", "binlog.3.tmp", "notes"):
        (tmp_path / name).write_bytes(b"not a log")
    log, recovery = open_log(tmp_path)
    assert recovery.warnings == []
    assert log.current_index == 1
    log.close()


# Files: rotation, deletion, compaction


def test_rotation_at_file_size(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=1024)
    jobs = [make_job(i, b"x" * 100) for i in range(1, 51)]
    for job in jobs:
        log.put(job)
        log.flush()
    assert log.current_index > 4
    assert log.oldest_index == 1
    assert jobs[0].file == 1
    assert jobs[-1].file == log.current_index
    assert all((tmp_path / name).stat().st_size < 1024 + 300 for name in files(tmp_path))
    log, recovery = reopen(log, tmp_path, file_size=1024)
    assert recovery.jobs == [expected(job) for job in jobs]
    assert recovery.warnings == []
    log.close()


def test_old_files_go_once_their_jobs_are_gone_oldest_first(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=512, fsync_ms=0)
    jobs = [make_job(i, b"x" * 100) for i in range(1, 21)]
    for job in jobs:
        log.put(job)
        log.flush()
    by_file: dict[int, list[Job]] = {}
    for job in jobs:
        by_file.setdefault(job.file, []).append(job)
    assert len(by_file) > 3
    first, second, *_ = sorted(by_file)
    # A newer file without live jobs waits for the older ones.
    for job in by_file[second]:
        log.delete(job)
    log.flush()
    assert log.oldest_index == first
    assert f"binlog.{second}" in files(tmp_path)
    for job in by_file[first]:
        log.delete(job)
    log.flush()
    assert log.oldest_index == second + 1
    assert files(tmp_path)[0] == f"binlog.{second + 1}"
    live = [job for job in jobs if job.file > second]
    log, recovery = reopen(log, tmp_path, file_size=512)
    assert recovery.jobs == [expected(job) for job in live]
    assert recovery.max_id == 20
    log.close()


def test_a_pinned_job_does_not_let_the_log_grow(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=4096)
    pinned = make_job(1, b"pinned")
    log.put(pinned)
    log.flush()
    most_files = most_bytes = 0
    for job_id in range(2, 20_002):
        job = make_job(job_id, b"short-lived")
        log.put(job)
        log.flush()
        log.delete(job)
        if job_id % 1000 == 0:
            pinned.kicks += 1
            log.update(pinned)
        log.flush()
        most_files = max(most_files, len(files(tmp_path)))
        most_bytes = max(most_bytes, disk_bytes(tmp_path))
    assert log.current_index > 100
    assert log.records_migrated > 10
    assert most_files <= 3
    assert most_bytes <= 3 * 4096
    log, recovery = reopen(log, tmp_path, file_size=4096)
    assert recovery.jobs == [expected(pinned)]
    assert recovery.max_id == 20_001
    log.close()


def test_compaction_moves_many_live_jobs(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=200_000)
    keep = [make_job(i, b"k" * 1000) for i in range(1, 101)]
    for job in keep:
        log.put(job)
    log.flush()
    for job_id in range(101, 1101):
        job = make_job(job_id, b"g" * 1000)
        log.put(job)
        log.delete(job)
        log.flush()
    assert log.records_migrated >= 100
    assert {job.file for job in keep} != {1}
    assert disk_bytes(tmp_path) <= 3 * 200_000 + 2 * 100 * 1100
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(job) for job in keep]
    log.close()


def test_a_job_put_again_moves_to_the_current_file(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=100)
    job = make_job(1, b"x" * 100)
    log.put(job)
    log.flush()
    assert (job.file, log.current_index) == (1, 2)
    job.priority = 3
    log.put(job)
    log.flush()
    assert job.file == 2
    assert files(tmp_path) == ["binlog.2", "binlog.3"]
    log.delete(job)
    # A second delete changes nothing but the log.
    log.delete(job)
    log.flush()
    log, recovery = reopen(log, tmp_path)
    assert (recovery.jobs, recovery.max_id) == ([], 1)
    log.close()


# Recovery hand-over


def test_finish_recovery_deletes_the_old_files(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=512, fsync_ms=0)
    jobs = [make_job(i, b"x" * 100, tube=b"t%d" % (i % 3)) for i in range(1, 21)]
    for job in jobs:
        log.put(job)
        log.flush()
    for job in jobs[::2]:
        log.delete(job)
    log.pause(b"t1", 100, START + 100 * SECOND)
    log, recovery = reopen(log, tmp_path, file_size=512, fsync_ms=0)
    assert len(files(tmp_path)) > 3
    first_new = log.current_index
    restore(log, recovery)
    # Only the files written since the restart are left (the jobs filled more than one).
    assert files(tmp_path) == [f"binlog.{i}" for i in range(first_new, log.current_index + 1)]
    assert log.oldest_index == first_new < log.current_index
    for _ in range(2):
        log, again = reopen(log, tmp_path, file_size=512, fsync_ms=0)
        assert again.jobs == recovery.jobs == [expected(job) for job in jobs[1::2]]
        assert again.pauses == recovery.pauses == [RecoveredPause(b"t1", 100, START + 100 * SECOND)]
        assert again.max_id == 20
        restore(log, again)
    log.close()


def test_a_recovered_job_not_put_again_is_kept(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path, file_size=1024)
    kept, dropped = make_job(1, b"kept"), make_job(2, b"not put again")
    log.put(kept)
    log.put(dropped)
    log, recovery = reopen(log, tmp_path, file_size=1024)
    recovery.jobs.remove(expected(dropped))
    restore(log, recovery)
    assert files(tmp_path) == ["binlog.1", "binlog.2"]
    # Compaction carries it along, so its old file can still go.
    for job_id in range(3, 200):
        job = make_job(job_id, b"x" * 50)
        log.put(job)
        log.delete(job)
        log.flush()
    assert "binlog.1" not in files(tmp_path)
    assert log.records_migrated >= 1
    log, recovery = reopen(log, tmp_path, file_size=1024)
    assert recovery.jobs == [expected(kept), expected(dropped)]
    # Put again now, it is the server's like any other.
    jobs = restore(log, recovery)
    log.delete(jobs[2])
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(kept)]
    log.close()


def test_pauses_survive_rotation_and_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    log, _ = open_log(tmp_path, file_size=512, clock=clock)
    log.pause(b"long", 1000, START + 1000 * SECOND)
    log.pause(b"short", 5, START + 5 * SECOND)
    log.pause(b"replaced", 1000, START + 1000 * SECOND)
    log.pause(b"replaced", 0, START + 1)
    log.flush()
    clock.now += 10 * SECOND
    for job_id in range(1, 40):
        job = make_job(job_id, b"x" * 100)
        log.put(job)
        log.delete(job)
        log.flush()
    assert log.oldest_index > 3
    log, recovery = reopen(log, tmp_path, clock=clock)
    assert recovery.pauses == [RecoveredPause(b"long", 1000, START + 1000 * SECOND)]
    restore(log, recovery)
    clock.now += 1000 * SECOND
    log, recovery = reopen(log, tmp_path, clock=clock)
    assert recovery.pauses == []
    log.close()


# fsync policy


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds os.fsync is called with."""
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_fsync_in_every_flush_that_wrote(tmp_path: Path, fsyncs: list[int]) -> None:
    log, _ = open_log(tmp_path, fsync_ms=0)
    assert len(fsyncs) == 2  # the new file and the directory
    fsyncs.clear()
    for job_id in range(1, 4):
        log.put(make_job(job_id))
        log.flush()
    log.flush()
    assert log.sync_due_at() is None
    log.close()
    assert len(fsyncs) == 3


def test_no_fsync_at_all(tmp_path: Path, fsyncs: list[int]) -> None:
    log, _ = open_log(tmp_path, file_size=256, fsync_ms=None)
    for job_id in range(1, 10):
        job = make_job(job_id, b"x" * 100)
        log.put(job)
        log.flush()
        log.delete(job)
    assert log.sync_due_at() is None
    log.sync()
    log.close()
    assert fsyncs == []


def test_deferred_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock()
    log, _ = open_log(tmp_path, fsync_ms=50, clock=clock)
    fsyncs.clear()
    assert log.sync_due_at() is None
    log.put(make_job(1))
    log.flush()
    assert fsyncs == []
    assert log.sync_due_at() == START + 50_000_000
    log.sync()
    assert len(fsyncs) == 1
    assert log.sync_due_at() is None
    log.sync()
    log.put(make_job(2))
    log.flush()
    assert len(fsyncs) == 1
    clock.now += 50_000_000
    log.put(make_job(3))
    log.flush()
    assert len(fsyncs) == 2
    assert log.sync_due_at() is None
    log.put(make_job(4))
    log.flush()
    assert log.sync_due_at() == clock.now + 50_000_000
    log.close()
    assert len(fsyncs) == 3


def test_a_rotation_syncs_the_full_file_first(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock()
    log, _ = open_log(tmp_path, file_size=256, fsync_ms=50, clock=clock)
    fsyncs.clear()
    log.put(make_job(1, b"x" * 300))
    log.flush()
    # binlog.1, then binlog.2 and the directory as it is created.
    assert len(fsyncs) == 3
    assert log.current_index == 2
    assert log.sync_due_at() is None
    log.close()


# Locking, opening and closing


def test_a_locked_directory_is_refused(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    other = Binlog(str(tmp_path))
    with pytest.raises(BinlogLockedError):
        other.open()
    script = (
        "import sys\n"
        "from greenstalk.server.binlog import Binlog, BinlogLockedError\n"
        "try:\n"
        "    Binlog(sys.argv[1]).open()\n"
        "except BinlogLockedError:\n"
        "    sys.exit(10)\n"
    )
    root = Path(__file__).resolve().parent.parent
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=root, check=False)
    assert run.returncode == 10
    log.close()
    other.open()
    other.close()


def test_close_is_idempotent_and_open_again_works(tmp_path: Path) -> None:
    log, _ = open_log(tmp_path)
    log.put(make_job(1))
    log.close()
    log.close()
    recovery = log.open()
    assert [job.id for job in recovery.jobs] == [1]
    with pytest.raises(BinlogError, match="already open"):
        log.open()
    log.close()
    with pytest.raises(BinlogError, match="not open"):
        log.flush()
    with pytest.raises(BinlogError, match="not open"):
        log.sync()
    with pytest.raises(BinlogError, match="not open"):
        log.finish_recovery()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="file_size"):
        Binlog("x", file_size=0)
    with pytest.raises(ValueError, match="fsync_ms"):
        Binlog("x", fsync_ms=-1)


def test_unusable_directories(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(BinlogError, match="cannot create"):
        Binlog(str(tmp_path / "file" / "log")).open()
    (tmp_path / "lockdir" / "lock").mkdir(parents=True)
    with pytest.raises(BinlogError, match="cannot open"):
        Binlog(str(tmp_path / "lockdir")).open()
    (tmp_path / "readdir" / "binlog.1").mkdir(parents=True)
    with pytest.raises(BinlogError, match="cannot read"):
        Binlog(str(tmp_path / "readdir")).open()


def test_os_errors_become_binlog_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EIO, "I/O error")

    for name, target, function in [
        ("flock", "fcntl", "flock"),
        ("listdir", "os", "listdir"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(f"{target}.{function}", failing)
            with pytest.raises(BinlogError, match="I/O error") as info:
                Binlog(str(tmp_path / name)).open()
            assert not isinstance(info.value, BinlogLockedError)


def failing_when(
    monkeypatch: pytest.MonkeyPatch, name: str, test: Callable[..., bool]
) -> None:
    """Make ``os.<name>`` raise EIO whenever ``test`` says so about its arguments."""
    real = getattr(os, name)

    def patched(*args: Any) -> Any:
        if test(*args):
            raise OSError(errno.EIO, "I/O error")
        return real(*args)

    monkeypatch.setattr(os, name, patched)


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def test_fsync_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = open_log(tmp_path / "file", fsync_ms=0)
    log.put(make_job(1))
    with monkeypatch.context() as patch:
        failing_when(patch, "fsync", lambda fd: True)
        with pytest.raises(BinlogError, match=r"cannot fsync .*binlog\.1"):
            log.flush()
    log.close()
    failing_when(monkeypatch, "fsync", is_directory)
    with pytest.raises(BinlogError, match="cannot fsync"):
        open_log(tmp_path / "directory", fsync_ms=0)


def test_a_failed_write_keeps_the_records_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = open_log(tmp_path)
    jobs = [make_job(i, b"body %d" % i) for i in range(1, 4)]
    real_write = os.write
    written: list[int] = []

    def short_then_full(fd: int, data: Any) -> int:
        # One partial write, then a full disk.
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(real_write(fd, data[:10]))
        return written[-1]

    for job in jobs:
        log.put(job)
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", short_then_full)
        with pytest.raises(BinlogError, match="No space left"):
            log.flush()
    log.flush()
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(job) for job in jobs]
    assert recovery.warnings == []
    log.close()


def test_a_write_failing_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = open_log(tmp_path)
    job = make_job(1)
    log.put(job)
    with monkeypatch.context() as patch:
        failing_when(patch, "write", lambda fd, data: True)
        with pytest.raises(BinlogError, match="cannot write"):
            log.flush()
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(job)]
    log.close()


def test_partial_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, _ = open_log(tmp_path)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    job = make_job(1, b"a body longer than seven bytes")
    log.put(job)
    log, recovery = reopen(log, tmp_path)
    assert recovery.jobs == [expected(job)]
    log.close()


def test_file_creation_and_deletion_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, _ = open_log(tmp_path, file_size=100)
    (tmp_path / "binlog.2").write_bytes(b"")
    job = make_job(1, b"x" * 200)
    log.put(job)
    with pytest.raises(BinlogError, match=r"cannot create .*binlog\.2"):
        log.flush()
    # The job was written all the same, and the next flush rotates.
    assert log.current_index == 1
    (tmp_path / "binlog.2").unlink()
    log.flush()
    assert log.current_index == 2
    log.close()

    # Each flush below fills a file: the job goes into binlog.N, then N+1 starts.
    log, recovery = open_log(tmp_path, file_size=100)
    (job,) = restore(log, recovery).values()
    assert files(tmp_path) == ["binlog.3", "binlog.4"]
    for job_id in (2, 3):
        log.delete(job)
        job = make_job(job_id, b"x" * 200)
        log.put(job)
        if job_id == 2:
            log.flush()
            assert files(tmp_path) == ["binlog.4", "binlog.5"]
            # Someone else removed it: fine.
            (tmp_path / "binlog.4").unlink()
    log.flush()
    assert files(tmp_path) == ["binlog.5", "binlog.6"]
    # Any other failure is reported, and the file tried again later.
    log.delete(job)
    with monkeypatch.context() as patch:
        failing_when(patch, "unlink", lambda path: True)
        with pytest.raises(BinlogError, match=r"cannot delete .*binlog\.5"):
            log.flush()
    log.close()
    assert files(tmp_path) == ["binlog.6"]


# The whole thing against a model

TUBES = [b"a", b"b", b"c"]

operation = st.one_of(
    st.tuples(
        st.just("put"), st.binary(max_size=120), st.sampled_from(TUBES), st.sampled_from(JobState)
    ),
    st.tuples(
        st.just("update"), st.integers(0, 50), st.sampled_from(JobState), st.integers(0, 2**32 - 1)
    ),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("pause"), st.sampled_from(TUBES), st.integers(0, 100)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("advance"), st.integers(0, 100)),
    st.tuples(st.just("reopen"), st.booleans()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=100), st.sampled_from([64, 300, 1 << 20]))
def test_replay_matches_a_model(operations: list[tuple[Any, ...]], file_size: int) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory)
        log, _ = open_log(path, file_size=file_size, clock=clock)
        live: dict[int, Job] = {}
        # Recovered jobs the "server" did not put again: the log keeps them as they were.
        orphans: dict[int, RecoveredJob] = {}
        pauses: dict[bytes, RecoveredPause] = {}
        next_id = 1

        def check(recovery: Recovery) -> None:
            jobs = {job_id: expected(job) for job_id, job in live.items()} | orphans
            assert recovery.jobs == [jobs[job_id] for job_id in sorted(jobs)]
            assert recovery.pauses == [
                pauses[tube] for tube in sorted(pauses) if pauses[tube].unpause_at > clock.now
            ]
            assert recovery.max_id == next_id - 1
            assert recovery.warnings == []

        for op in operations:
            kind = op[0]
            if kind == "put":
                job = make_job(next_id, op[1], op[2])
                job.state = op[3]
                job.deadline_at = clock.now + SECOND if op[3] is not JobState.READY else 0
                log.put(job)
                live[next_id] = job
                next_id += 1
            elif kind == "update" and live:
                job = live[sorted(live)[op[1] % len(live)]]
                job.state = op[2]
                job.priority = op[3]
                job.delay = op[3] % 1000
                job.deadline_at = clock.now + op[3]
                job.releases += 1
                job.kicks += 2
                log.update(job)
            elif kind == "delete" and live:
                log.delete(live.pop(sorted(live)[op[1] % len(live)]))
            elif kind == "pause":
                pauses[op[1]] = RecoveredPause(op[1], op[2], clock.now + op[2] * SECOND)
                log.pause(op[1], op[2], clock.now + op[2] * SECOND)
            elif kind == "flush":
                log.flush()
            elif kind == "advance":
                clock.now += op[1] * SECOND
            elif kind == "reopen":
                log, recovery = reopen(log, path, file_size=file_size, clock=clock)
                check(recovery)
                orphans = {}
                if not op[1] and recovery.jobs:
                    orphan = recovery.jobs.pop(0)
                    orphans[orphan.id] = orphan
                live = restore(log, recovery)
                pauses = {pause.tube: pause for pause in recovery.pauses}
        log, recovery = reopen(log, path, file_size=file_size, clock=clock)
        check(recovery)
        log.close()
