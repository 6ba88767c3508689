"""The binlog: replay, damage tolerance, room, rotation, compaction, fsync, locking.

No server is needed: :class:`Log` drives a :class:`Binlog` the way the
server does (room first, the job table shared with the log). Files are
built or damaged by hand from the format in the module docstring to check
how the reader copes.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenstalk.server.binlog import (
    BLOCK,
    Binlog,
    BinlogError,
    BinlogLockedError,
    RecoveredPause,
    Recovery,
    record_room,
)
from greenstalk.server.job import Job, JobState

from .conftest import fill

SECOND = 1_000_000_000
START = 1_700_000_000 * SECOND

# The format, as the module docstring gives it.
FRAGMENT = struct.Struct("<IHB")
HEAD = struct.Struct("<c8sIQ")
JOB = struct.Struct("<cQIIqqB24sH")
UPDATE = struct.Struct("<cQBIq24s")
ID = struct.Struct("<cQ")
PAUSE = struct.Struct("<cqI")


class FakeClock:
    """A clock that only moves when told."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(frozen=True)
class FakeTube:
    name: bytes


def packed(delay: int = 0, reserves: int = 0, timeouts: int = 0, releases: int = 0,
           buries: int = 0, kicks: int = 0) -> int:
    """Job.packed for these fields."""
    fields = (delay, reserves, timeouts, releases, buries, kicks)
    return sum(value << (32 * index) for index, value in enumerate(fields))


def make_job(
    job_id: int,
    body: bytes = b"body",
    tube: bytes = b"default",
    priority: int = 10,
    delay: int = 0,
    ttr: int = 60,
) -> Job:
    return Job(job_id, FakeTube(tube), priority, delay, ttr, body, START + job_id)


Snapshot = tuple[Any, ...]


def snapshot(job: Job, after_restart: bool = True) -> Snapshot:
    """A job's logged fields; a reserved job comes back ready."""
    tube = job.tube if isinstance(job.tube, bytes) else job.tube.name
    state, deadline_at = job.state, job.deadline_at
    if after_restart and state is JobState.RESERVED:
        state, deadline_at = JobState.READY, 0
    return (job.id, tube, job.priority, job.ttr, job.body, job.created_at, deadline_at, state,
            job.packed)


class Log:
    """A binlog driven the way the server drives it: room first, one job table."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        kwargs.setdefault("clock", FakeClock())
        kwargs.setdefault("fsync_ms", None)
        self.path = path
        self.kwargs = kwargs
        self.binlog = Binlog(str(path), **kwargs)
        self.recovery = self.binlog.open()
        self.jobs = self.recovery.jobs
        self.recovered = sorted(snapshot(job) for job in self.jobs.values())
        for job in self.jobs.values():
            job.tube = FakeTube(job.tube)

    @property
    def warnings(self) -> list[str]:
        return self.recovery.warnings

    def put(self, job: Job) -> None:
        assert self.binlog.reserve_put(len(job.tube.name), len(job.body))
        self.jobs[job.id] = job
        self.binlog.put(job)

    def update(self, job: Job) -> None:
        assert self.binlog.reserve_update()
        self.binlog.update(job)

    def delete(self, job: Job) -> None:
        del self.jobs[job.id]
        self.binlog.delete(job)

    def pause(self, tube: bytes, seconds: int, unpause_at: int) -> None:
        assert self.binlog.reserve_update()
        self.binlog.pause(tube, seconds, unpause_at)

    def flush(self) -> None:
        self.binlog.flush()

    def close(self) -> None:
        self.binlog.close()

    def reopen(self, **kwargs: Any) -> Log:
        self.close()
        return Log(self.path, **{**self.kwargs, **kwargs})


def files(path: Path) -> list[str]:
    return sorted(
        (p.name for p in path.iterdir() if p.name.startswith("binlog.")),
        key=lambda name: int(name.split(".")[1]),
    )


def disk_bytes(path: Path) -> int:
    return sum((path / name).stat().st_size for name in files(path))


def fragment(kind: int, data: bytes) -> bytes:
    return FRAGMENT.pack(zlib.crc32(data, zlib.crc32(bytes((kind,)))), len(data), kind) + data


def head(seq: int = 1) -> bytes:
    return fragment(1, HEAD.pack(b"F", b"GSBINLOG", 2, seq))


def job_record(job_id: int, tube: bytes = b"t", body: bytes = b"b", state: int = 1) -> bytes:
    return JOB.pack(b"J", job_id, 1, 60, START, 0, state, bytes(24), len(tube)) + tube + body


def recover_file(path: Path, content: bytes) -> Log:
    """Replay a directory holding just ``binlog.1`` = ``content``."""
    path.mkdir()
    (path / "binlog.1").write_bytes(content)
    log = Log(path)
    log.close()
    return log


# Round trips


def test_round_trip_of_every_record(tmp_path: Path) -> None:
    log = Log(tmp_path)
    assert (log.recovered, log.recovery.pauses, log.recovery.max_id, log.warnings) == (
        [], [], 0, []
    )
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
    buried.packed = packed(reserves=1, buries=1)
    log.update(buried)
    ready.state = JobState.DELAYED
    ready.packed = packed(delay=5, reserves=2, releases=1, timeouts=1)
    ready.deadline_at = START + 5 * SECOND
    log.update(ready)
    ready.state = JobState.READY
    ready.deadline_at = 0
    ready.packed = packed(delay=5, reserves=2 ** 32 - 1, releases=1, timeouts=1, kicks=7)
    log.update(ready)
    log.delete(gone)
    log.pause(b"a", 60, START + 60 * SECOND)
    log.flush()
    # The head, the G mark, and nine records.
    assert log.binlog.records_written == 11
    log = log.reopen()
    assert log.recovered == [snapshot(ready), snapshot(delayed), snapshot(buried)]
    assert log.recovery.pauses == [RecoveredPause(b"a", 60, START + 60 * SECOND)]
    assert log.recovery.max_id == 4
    assert log.warnings == []
    assert log.binlog.current_index == 2
    assert log.binlog.oldest_index == 1
    assert {job.file for job in log.jobs.values()} == {1}
    log.close()


def test_a_reserved_job_comes_back_ready(tmp_path: Path) -> None:
    log = Log(tmp_path)
    first, second = make_job(1), make_job(2)
    first.state = JobState.RESERVED
    first.deadline_at = START + 60 * SECOND
    log.put(first)
    log.put(second)
    second.state = JobState.RESERVED
    second.deadline_at = START + 60 * SECOND
    second.packed = packed(reserves=1)
    log.update(second)
    log = log.reopen()
    assert [(state, deadline) for *_, deadline, state, _ in log.recovered] == [
        (JobState.READY, 0),
        (JobState.READY, 0),
    ]
    log.close()


def test_ids_continue_after_every_job_is_deleted(tmp_path: Path) -> None:
    log = Log(tmp_path)
    jobs = [make_job(1), make_job(2)]
    for job in jobs:
        log.put(job)
    for job in jobs:
        log.delete(job)
    log = log.reopen()
    assert (log.recovered, log.recovery.max_id) == ([], 2)
    log = log.reopen()
    # The old files are gone, but each new file starts with the highest id.
    assert files(tmp_path) == ["binlog.3"]
    for _ in range(2):
        log = log.reopen()
        assert (log.recovered, log.recovery.max_id) == ([], 2)
    log.close()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\0",
        b"a\r\nb\0c\r\n",
        bytes(range(256)) * 3,
        bytes(BLOCK - 7 - JOB.size - 200),
        bytes(BLOCK * 2 - 14 - JOB.size - 200 + 1),
        os.urandom(3 * 1024 * 1024),
    ],
    ids=["empty", "crlf", "nul", "mixed", "all-bytes", "one-block", "two-blocks-and-one", "3MiB"],
)
def test_bodies_of_any_size_and_content(tmp_path: Path, body: bytes) -> None:
    log = Log(tmp_path, file_size=1024)
    job = make_job(1, body, tube=b"x" * 200)
    after = make_job(2, b"after")
    log.put(job)
    log.put(after)
    log = log.reopen()
    assert log.recovered == [snapshot(job), snapshot(after)]
    assert log.warnings == []
    log.close()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3 * BLOCK), min_size=1, max_size=6))
def test_records_across_block_boundaries(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = Log(Path(directory))
        jobs = [make_job(index + 1, os.urandom(size)) for index, size in enumerate(sizes)]
        for job in jobs:
            log.put(job)
            log.flush()
        log = log.reopen()
        assert log.recovered == [snapshot(job) for job in jobs]
        assert log.warnings == []
        log.close()


@pytest.mark.parametrize("left", [1, 6, 7, 8, 9, 100])
def test_a_record_starting_just_before_a_block_boundary(tmp_path: Path, left: int) -> None:
    log = Log(tmp_path)
    # The first job's record ends ``left`` bytes before the end of the first block.
    overhead = FRAGMENT.size + JOB.size + len(b"default")
    first = make_job(1, bytes(BLOCK - left - log.binlog.position - overhead))
    log.put(first)
    assert log.binlog.position == BLOCK - left
    second = make_job(2, os.urandom(2 * BLOCK))
    log.put(second)
    log = log.reopen()
    assert log.recovered == [snapshot(first), snapshot(second)]
    assert log.warnings == []
    log.close()


def test_record_room_bounds_what_a_record_takes(tmp_path: Path) -> None:
    log = Log(tmp_path)
    for size in (0, 1, 100, BLOCK - 30, BLOCK, 3 * BLOCK + 5):
        before = log.binlog.position
        job = make_job(size + 1, bytes(size))
        log.put(job)
        assert log.binlog.position - before <= record_room(JOB.size + len(b"default") + size)
    log.close()


# Damage


def test_a_body_holding_whole_records_is_just_a_body(tmp_path: Path) -> None:
    inner = fragment(1, job_record(99, body=b"phantom")) + fragment(1, ID.pack(b"D", 1))
    log = Log(tmp_path)
    job = make_job(1, inner)
    log.put(job)
    log = log.reopen()
    assert log.recovered == [snapshot(job)]
    assert log.recovery.max_id == 1
    log.close()


def test_after_damage_a_body_that_holds_records_is_never_replayed(tmp_path: Path) -> None:
    """The attack of issue 9: a body carrying a DELETE record, its own header damaged.

    A reader that searched forward for the next good header would find the
    planted record and delete a job nobody deleted.
    """
    source = tmp_path / "source"
    log = Log(source)
    victim = make_job(1, b"victim")
    log.put(victim)
    planted = fragment(1, ID.pack(b"D", 1)) + fragment(1, job_record(500, body=b"planted"))
    carrier = make_job(2, b"A" * 64 + planted * 20)
    log.put(carrier)
    later = make_job(3, b"x" * BLOCK)
    log.put(later)
    log.close()
    data = bytearray((source / "binlog.1").read_bytes())
    header = data.index(b"A" * 64) - len(b"default") - JOB.size - FRAGMENT.size
    data[header + 4] ^= 0xFF  # the carrier's length
    log = recover_file(tmp_path / "damaged", bytes(data))
    ids = [record[0] for record in log.recovered]
    assert 1 in ids
    assert 500 not in ids
    assert log.recovery.max_id < 500
    assert any("damaged data" in warning for warning in log.warnings)


@pytest.mark.parametrize("last", ["put", "update", "delete", "pause"])
def test_a_torn_tail_at_every_offset_keeps_the_earlier_records(
    tmp_path: Path, last: str
) -> None:
    source = tmp_path / "source"
    log = Log(source)
    jobs = [make_job(1, b"one"), make_job(2, b"two")]
    for job in jobs:
        log.put(job)
    log.flush()
    intact = log.binlog.position
    if last == "put":
        log.put(make_job(3, b"x" * 40))
    elif last == "update":
        jobs[0].state = JobState.BURIED
        log.update(jobs[0])
    elif last == "delete":
        log.delete(jobs[0])
    else:
        log.pause(b"default", 10, START + 10 * SECOND)
    log.flush()
    data = (source / "binlog.1").read_bytes()[: log.binlog.position]
    log.close()
    jobs[0].state = JobState.READY
    for cut in range(intact, len(data)):
        recovered = recover_file(tmp_path / str(cut), data[:cut])
        assert recovered.recovered == [snapshot(job) for job in jobs]
        assert (recovered.recovery.max_id, recovered.recovery.pauses) == (2, [])
        assert len(recovered.warnings) == (cut > intact), recovered.warnings
    assert "at the end" in recovered.warnings[0]


def test_a_file_cut_inside_its_head_is_ignored(tmp_path: Path) -> None:
    start = head()
    for cut in range(1, len(start)):
        log = recover_file(tmp_path / str(cut), start[:cut])
        assert log.recovered == []
        assert log.warnings == [f"binlog.1: incomplete file head ({cut} bytes), file ignored"]


def test_a_file_of_zeros_is_skipped_with_a_warning(tmp_path: Path) -> None:
    log = recover_file(tmp_path / "zeros", bytes(3 * BLOCK))
    assert log.warnings == [f"binlog.1: nothing but zeros ({3 * BLOCK} bytes), skipped"]


def filled_log(path: Path, count: int, size: int = 1000, **kwargs: Any) -> list[Job]:
    """A closed log of ``count`` jobs with ``size``-byte bodies, their ids in their bodies."""
    log = Log(path, **kwargs)
    jobs = [make_job(job_id, b"%08d" % job_id + bytes(size - 8)) for job_id in range(1, count + 1)]
    for job in jobs:
        log.put(job)
        log.flush()
    log.close()
    return jobs


def test_damage_costs_the_rest_of_its_block_and_nothing_more(tmp_path: Path) -> None:
    source = tmp_path / "source"
    jobs = filled_log(source, 100)
    data = bytearray((source / "binlog.1").read_bytes())
    at = {job.id: data.index(b"%08d" % job.id) for job in jobs}
    data[at[50]] ^= 0x01
    log = recover_file(tmp_path / "damaged", bytes(data))
    block_end = (at[50] // BLOCK + 1) * BLOCK
    # Job 50, and every job after it that starts in the same block, is lost.
    lost = {job_id for job_id, offset in at.items() if at[50] <= offset < block_end}
    recovered = {record[0] for record in log.recovered}
    assert recovered == {job.id for job in jobs} - lost
    assert 0 < len(lost) < BLOCK // 1000 + 2
    # One warning names where the damage starts and how much was skipped.
    assert len(log.warnings) == 1
    assert "damaged data" in log.warnings[0]


def test_a_zeroed_start_of_a_middle_file_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """Issue 9: zeroing the first 4 KiB of a middle file made the server refuse to start."""
    jobs = filled_log(tmp_path, 300, file_size=100_000)
    names = files(tmp_path)
    assert len(names) >= 3
    middle = tmp_path / names[1]
    with open(middle, "r+b") as file:
        file.write(bytes(4096))
    log = Log(tmp_path)
    recovered = {record[0] for record in log.recovered}
    in_first_block = {job.id for job in jobs if job.file == int(names[1].split(".")[1])}
    assert recovered >= {job.id for job in jobs} - in_first_block
    assert len({job.id for job in jobs} - recovered) < BLOCK // 1000 + 1
    # The gap: the zeros, the rest of their block, and the rest of a record cut there.
    (warning,) = log.warnings
    prefix = f"{names[1]}: offset 0: damaged data, "
    assert warning.startswith(prefix)
    assert BLOCK <= int(warning[len(prefix) :].split()[0]) < 2 * BLOCK
    log.close()


def test_zeros_between_records_are_reported(tmp_path: Path) -> None:
    content = head() + fragment(1, job_record(1))
    content += bytes(BLOCK - len(content)) + bytes(BLOCK) + fragment(1, job_record(2))
    log = recover_file(tmp_path / "gap", content)
    assert [record[0] for record in log.recovered] == [1, 2]
    assert len(log.warnings) == 1
    assert "damaged data" in log.warnings[0]


def test_garbage_or_zeros_at_the_end(tmp_path: Path) -> None:
    content = head() + fragment(1, job_record(1))
    log = recover_file(tmp_path / "zeros", content + bytes(1000))
    assert ([record[0] for record in log.recovered], log.warnings) == ([1], [])
    log = recover_file(tmp_path / "garbage", content + os.urandom(100))
    assert [record[0] for record in log.recovered] == [1]
    assert len(log.warnings) == 1
    assert "damaged data at the end" in log.warnings[0]


def test_fragments_out_of_order_are_dropped_with_a_warning(tmp_path: Path) -> None:
    record = job_record(2, body=b"two halves")
    orphan_end = fragment(4, b"the end of a lost record")
    first_only = fragment(2, record[:10])
    content = head() + orphan_end + first_only + fragment(1, job_record(1))
    content += fragment(2, record[:10]) + fragment(3, record[10:12]) + fragment(4, record[12:])
    log = recover_file(tmp_path / "odd", content)
    assert [record[0] for record in log.recovered] == [1, 2]
    assert len(log.warnings) == 2


def test_records_that_do_not_fit_their_kind_are_skipped(tmp_path: Path) -> None:
    bad = [
        b"?future",
        b"Jshort",
        JOB.pack(b"J", 5, 1, 60, START, 0, 1, bytes(24), 10) + b"tube",
        JOB.pack(b"J", 5, 1, 60, START, 0, 1, bytes(24), 0) + b"body",
        job_record(6, state=0),
        b"Ushort",
        UPDATE.pack(b"U", 1, 9, 1, 0, bytes(24)),
        b"Dshort",
        b"Pshort",
        b"Mshort",
        b"Gshort",
    ]
    good = [
        job_record(1),
        UPDATE.pack(b"U", 1, 3, 7, 0, packed(buries=1).to_bytes(24, "little")),
        # An update or delete of a job never put is ignored, but its id counts.
        UPDATE.pack(b"U", 40, 1, 7, 0, bytes(24)),
        ID.pack(b"D", 41),
        ID.pack(b"M", 30),
    ]
    content = head() + b"".join(fragment(1, record) for record in bad + good)
    log = recover_file(tmp_path / "odd", content)
    assert [(record[0], record[7], record[2]) for record in log.recovered] == [
        (1, JobState.BURIED, 7)
    ]
    assert log.recovery.max_id == 41
    assert len(log.warnings) == len(bad)
    assert all("malformed record" in warning for warning in log.warnings)


def test_files_that_are_not_ours_are_refused_not_deleted(tmp_path: Path) -> None:
    for name, content, message in [
        ("beanstalkd", struct.pack("=i", 7) + os.urandom(200), "beanstalkd binlog"),
        ("version", fragment(1, HEAD.pack(b"F", b"GSBINLOG", 3, 1)), "version 3"),
        ("magic", fragment(1, HEAD.pack(b"F", b"OTHERLOG", 2, 1)), "not a greenstalkd"),
        ("garbage", os.urandom(5000), "not a greenstalkd"),
        ("version 1", b"GSBINLOG" + struct.pack("<I", 1) + os.urandom(100), "not a greenstalkd"),
    ]:
        path = tmp_path / name
        path.mkdir()
        (path / "binlog.1").write_bytes(content)
        log = Binlog(str(path))
        with pytest.raises(BinlogError, match=message):
            log.open()
        assert files(path) == ["binlog.1"]
        # The failed open released the lock: the same error again, not BinlogLockedError.
        log.close()
        with pytest.raises(BinlogError, match=message):
            Binlog(str(path)).open()


def test_other_names_in_the_directory_are_left_alone(tmp_path: Path) -> None:
    for name in ("binlog.0", "binlog.01", "binlog.x", "binlog.3.tmp", "notes"):
        (tmp_path / name).write_bytes(b"not a log")
    log = Log(tmp_path)
    assert log.warnings == []
    assert log.binlog.current_index == 1
    log.close()


def test_a_missing_file_is_reported(tmp_path: Path) -> None:
    """Issue 9: a deleted middle file was accepted in silence."""
    jobs = filled_log(tmp_path, 30, file_size=5000)
    names = files(tmp_path)
    assert len(names) > 3
    (tmp_path / names[1]).unlink()
    log = Log(tmp_path)
    assert log.warnings == [f"{names[1]} is missing: the jobs only it recorded are lost"]
    missing = int(names[1].split(".")[1])
    assert {record[0] for record in log.recovered} == {
        job.id for job in jobs if job.file != missing
    }
    log.close()


def test_files_the_log_deleted_itself_are_not_reported(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=2000)
    jobs = [make_job(job_id, bytes(500)) for job_id in range(1, 30)]
    for job in jobs:
        log.put(job)
        log.flush()
    for job in jobs[:20]:
        log.delete(job)
    log.flush()
    log.flush()
    assert log.binlog.oldest_index > 1
    assert "binlog.1" not in files(tmp_path)
    log = log.reopen()
    assert log.warnings == []
    assert log.recovered == [snapshot(job) for job in jobs[20:]]
    # Removing the oldest file by hand is noticed all the same.
    (tmp_path / files(tmp_path)[0]).unlink()
    log = log.reopen()
    assert len(log.warnings) == 1
    assert "is missing" in log.warnings[0]
    log.close()


# Files: rotation, deletion, compaction, restarts


def test_rotation_at_file_size(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=1024)
    jobs = [make_job(i, b"x" * 100) for i in range(1, 51)]
    for job in jobs:
        log.put(job)
        log.flush()
    assert log.binlog.current_index > 4
    assert log.binlog.oldest_index == 1
    assert jobs[0].file == 1
    assert jobs[-1].file == log.binlog.current_index
    # Finished files are trimmed to what was written.
    assert all((tmp_path / name).stat().st_size < 1024 + 300 for name in files(tmp_path)[:-1])
    log = log.reopen()
    assert log.recovered == [snapshot(job) for job in jobs]
    assert log.warnings == []
    log.close()
    assert all((tmp_path / name).stat().st_size < 1024 + 300 for name in files(tmp_path))


def test_old_files_go_once_their_jobs_are_gone_oldest_first(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=512, fsync_ms=0)
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
    log.binlog.sync()
    assert log.binlog.oldest_index == first
    assert f"binlog.{second}" in files(tmp_path)
    for job in by_file[first]:
        log.delete(job)
    # Deleting takes a flush for the G record, a sync for it, then the files go.
    log.flush()
    log.binlog.sync()
    log.flush()
    log.binlog.sync()
    assert log.binlog.oldest_index == second + 1
    assert files(tmp_path)[0] == f"binlog.{second + 1}"
    live = [job for job in jobs if job.file > second]
    log = log.reopen()
    assert log.recovered == [snapshot(job) for job in live]
    assert log.recovery.max_id == 20
    assert log.warnings == []
    log.close()


def test_a_pinned_job_does_not_let_the_log_grow(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=4096)
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
            pinned.packed += packed(kicks=1)
            log.update(pinned)
        log.flush()
        most_files = max(most_files, len(files(tmp_path)))
        most_bytes = max(most_bytes, disk_bytes(tmp_path))
    assert log.binlog.current_index > 100
    assert log.binlog.records_migrated > 10
    assert most_files <= 3
    # Two full files and the current one's allocation.
    assert most_bytes <= 3 * 4096 + (1 << 20)
    log = log.reopen()
    assert log.recovered == [snapshot(pinned)]
    assert log.recovery.max_id == 20_001
    log.close()


def test_compaction_moves_many_live_jobs(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=200_000)
    keep = [make_job(i, b"k" * 1000) for i in range(1, 101)]
    for job in keep:
        log.put(job)
    log.flush()
    for job_id in range(101, 1101):
        job = make_job(job_id, b"g" * 1000)
        log.put(job)
        log.delete(job)
        log.flush()
    assert log.binlog.records_migrated >= 100
    assert {job.file for job in keep} != {1}
    log = log.reopen()
    assert disk_bytes(tmp_path) <= 3 * 200_000 + 2 * 100 * 1100 + (1 << 20)
    assert log.recovered == [snapshot(job) for job in keep]
    log.close()


def test_a_restart_rewrites_nothing(tmp_path: Path) -> None:
    """Issue 9: start-up rewrote every live job, so it needed their size in free disk."""
    filled_log(tmp_path, 200, size=10_000, file_size=1 << 30)
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}
    log = Log(tmp_path)
    assert len(log.recovered) == 200
    log.flush()
    log.close()
    after = files(tmp_path)
    assert after[: len(before)] == list(before)
    for name, content in before.items():
        assert (tmp_path / name).read_bytes() == content
    # The new file holds its head and marks only.
    assert (tmp_path / after[-1]).stat().st_size < 200


def test_recovered_jobs_are_compacted_like_any_other(tmp_path: Path) -> None:
    log = Log(tmp_path, file_size=2048)
    kept = make_job(1, b"kept")
    log.put(kept)
    log = log.reopen()
    assert log.recovered == [snapshot(kept)]
    for job_id in range(2, 200):
        job = make_job(job_id, b"x" * 50)
        log.put(job)
        log.delete(job)
        log.flush()
    assert "binlog.1" not in files(tmp_path)
    assert log.binlog.records_migrated >= 1
    log = log.reopen()
    assert log.recovered == [snapshot(kept)]
    log.close()


def test_pauses_survive_rotation_and_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    log = Log(tmp_path, file_size=512, clock=clock)
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
    assert log.binlog.oldest_index > 3
    log = log.reopen()
    assert log.recovery.pauses == [RecoveredPause(b"long", 1000, START + 1000 * SECOND)]
    clock.now += 1000 * SECOND
    log = log.reopen()
    assert log.recovery.pauses == []
    log.close()


# Syncing


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fds os.fdatasync and os.fsync are called with."""
    calls: list[int] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name)

        def counting(fd: int, real: Callable[[int], None] = real) -> None:
            calls.append(fd)
            real(fd)

        monkeypatch.setattr(os, name, counting)
    return calls


def test_sync_on_demand_for_every_reply(tmp_path: Path, fsyncs: list[int]) -> None:
    log = Log(tmp_path, fsync_ms=0)
    assert log.binlog.sync_every_reply
    assert len(fsyncs) == 2  # the new file and the directory
    fsyncs.clear()
    for job_id in range(1, 4):
        log.put(make_job(job_id))
        log.flush()
        assert log.binlog.written == log.binlog.position > log.binlog.synced
        log.binlog.sync()
        assert log.binlog.synced == log.binlog.written
    assert len(fsyncs) == 3
    log.binlog.sync()
    assert log.binlog.sync_due_at() is None
    log.close()
    assert len(fsyncs) == 3


def test_a_background_sync(tmp_path: Path) -> None:
    log = Log(tmp_path, fsync_ms=0)
    done = threading.Event()
    assert not log.binlog.start_background_sync(done.set)
    log.put(make_job(1))
    log.flush()
    target = log.binlog.written
    assert log.binlog.start_background_sync(done.set)
    assert not log.binlog.start_background_sync(done.set)
    assert done.wait(10)
    assert log.binlog.synced < target
    log.binlog.finish_background_sync()
    assert log.binlog.synced == target
    log.binlog.finish_background_sync()
    log.close()


def test_a_failing_background_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log(tmp_path, fsync_ms=0)
    log.put(make_job(1))
    log.flush()
    done = threading.Event()
    monkeypatch.setattr(os, "fdatasync", eio)
    assert log.binlog.start_background_sync(done.set)
    assert done.wait(10)
    with pytest.raises(BinlogError, match=r"cannot fsync .*binlog\.1"):
        log.binlog.finish_background_sync()
    assert log.binlog.synced < log.binlog.written
    monkeypatch.undo()
    log.close()


def test_no_fsync_at_all(tmp_path: Path, fsyncs: list[int]) -> None:
    log = Log(tmp_path, file_size=256, fsync_ms=None)
    for job_id in range(1, 10):
        job = make_job(job_id, b"x" * 100)
        log.put(job)
        log.flush()
        log.delete(job)
        assert log.binlog.synced == log.binlog.written
    assert log.binlog.sync_due_at() is None
    log.binlog.sync()
    log.close()
    assert fsyncs == []


def test_deferred_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = FakeClock()
    log = Log(tmp_path, fsync_ms=50, clock=clock)
    fsyncs.clear()
    assert log.binlog.sync_due_at() is None
    log.put(make_job(1))
    log.flush()
    assert fsyncs == []
    assert log.binlog.sync_due_at() == 0
    log.binlog.sync()
    assert len(fsyncs) == 1
    assert log.binlog.sync_due_at() is None
    log.put(make_job(2))
    log.flush()
    assert log.binlog.sync_due_at() == START + 50_000_000
    log.close()
    assert len(fsyncs) == 2


def test_a_rotation_syncs_the_full_file_first(tmp_path: Path, fsyncs: list[int]) -> None:
    log = Log(tmp_path, file_size=256, fsync_ms=50)
    fsyncs.clear()
    log.put(make_job(1, b"x" * 300))
    log.flush()
    # binlog.1, then binlog.2 and the directory as it is created.
    assert len(fsyncs) == 3
    assert log.binlog.current_index == 2
    log.close()


# Room: a real full disk


def test_a_full_disk_refuses_puts_then_recovers(small_disk: Path) -> None:
    log = Log(small_disk / "log", file_size=1 << 20)
    filler = fill(small_disk)
    accepted: list[Job] = []

    def put_until_refused() -> None:
        while True:
            job = make_job(len(accepted) + 1, os.urandom(1000))
            if not log.binlog.reserve_put(len(b"default"), len(job.body)):
                return
            log.jobs[job.id] = job
            log.binlog.put(job)
            log.flush()
            accepted.append(job)

    put_until_refused()
    assert accepted
    # Every accepted job can still be deleted: its delete had room kept for it.
    for job in accepted[::2]:
        log.delete(job)
        log.flush()
    filler.unlink()
    before = len(accepted)
    put_until_refused()
    assert len(accepted) > before + 1000
    log = log.reopen()
    assert log.recovered == [snapshot(job) for job in accepted[1:before:2] + accepted[before:]]
    # Still full: the new file has less room than the deletes of the live jobs need.
    assert log.warnings == ["the disk is full: puts are refused until there is space for the log"]
    log.close()


def test_a_restart_on_a_full_disk(small_disk: Path) -> None:
    """Issue 9: 2.4 MiB of live jobs on a 4 MiB disk could not restart."""
    path = small_disk / "log"
    log = Log(path, file_size=1 << 20)
    jobs = [make_job(job_id, os.urandom(10_000)) for job_id in range(1, 200)]
    for job in jobs:
        log.put(job)
        log.flush()
    log.close()
    filler = fill(small_disk)
    # What a new file needs: its head, and room for the deletes of the live jobs.
    os.truncate(filler, filler.stat().st_size - 16384)
    log = Log(path, file_size=1 << 20)
    assert log.recovered == [snapshot(job) for job in jobs]
    assert log.warnings == []
    assert not log.binlog.reserve_put(len(b"default"), 100_000)
    for job in jobs:
        log.delete(job)
    log.flush()
    filler.unlink()
    assert log.binlog.reserve_put(len(b"default"), 100_000)
    log = log.reopen()
    assert log.recovered == []
    log.close()


# Locking, opening and closing


def test_a_locked_directory_is_refused(tmp_path: Path) -> None:
    log = Log(tmp_path)
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
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=root, check=False, timeout=60
    )
    assert run.returncode == 10
    log.close()
    other.open()
    other.close()


def test_close_is_idempotent_and_open_again_works(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.put(make_job(1))
    log.close()
    log.close()
    recovery = log.binlog.open()
    assert list(recovery.jobs) == [1]
    with pytest.raises(BinlogError, match="already open"):
        log.binlog.open()
    log.close()
    with pytest.raises(BinlogError, match="not open"):
        log.flush()
    with pytest.raises(BinlogError, match="not open"):
        log.binlog.sync()


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


def eio(*args: Any, **kwargs: Any) -> Any:
    raise OSError(errno.EIO, "I/O error")


def test_os_errors_become_binlog_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, target, function in [
        ("flock", "fcntl", "flock"),
        ("listdir", "os", "listdir"),
        ("fallocate", "os", "posix_fallocate"),
    ]:
        with monkeypatch.context() as patch:
            patch.setattr(f"{target}.{function}", eio)
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
    log = Log(tmp_path / "file", fsync_ms=0)
    log.put(make_job(1))
    log.flush()
    with monkeypatch.context() as patch:
        failing_when(patch, "fdatasync", lambda fd: True)
        with pytest.raises(BinlogError, match=r"cannot fsync .*binlog\.1"):
            log.binlog.sync()
    assert log.binlog.synced < log.binlog.written
    log.close()
    failing_when(monkeypatch, "fsync", is_directory)
    with pytest.raises(BinlogError, match="cannot fsync"):
        Log(tmp_path / "directory", fsync_ms=0)


def test_a_failed_write_keeps_the_records_for_the_next_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log(tmp_path)
    jobs = [make_job(i, b"body %d" % i) for i in range(1, 4)]
    real_pwrite = os.pwrite
    written: list[int] = []

    def short_then_failing(fd: int, data: Any, offset: int) -> int:
        if written:
            raise OSError(errno.EIO, "I/O error")
        written.append(real_pwrite(fd, data[:10], offset))
        return written[-1]

    for job in jobs:
        log.put(job)
    position = log.binlog.position
    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", short_then_failing)
        with pytest.raises(BinlogError, match="I/O error"):
            log.flush()
    assert log.binlog.written < position == log.binlog.position
    log.flush()
    assert log.binlog.written == position
    log = log.reopen()
    assert log.recovered == [snapshot(job) for job in jobs]
    assert log.warnings == []
    log.close()


def test_partial_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = Log(tmp_path)
    real_pwrite = os.pwrite
    monkeypatch.setattr(
        os, "pwrite", lambda fd, data, offset: real_pwrite(fd, data[:7], offset)
    )
    job = make_job(1, b"a body longer than seven bytes")
    log.put(job)
    log = log.reopen()
    assert log.recovered == [snapshot(job)]
    log.close()


def test_file_creation_and_deletion_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log(tmp_path, file_size=100)
    (tmp_path / "binlog.2").write_bytes(b"")
    job = make_job(1, b"x" * 200)
    log.put(job)
    with pytest.raises(BinlogError, match=r"cannot create .*binlog\.2"):
        log.flush()
    # The job was written all the same, and the next flush rotates.
    assert log.binlog.current_index == 1
    (tmp_path / "binlog.2").unlink()
    log.flush()
    assert log.binlog.current_index == 2
    log.delete(job)
    with monkeypatch.context() as patch:
        failing_when(patch, "unlink", lambda path: True)
        log.flush()
        with pytest.raises(BinlogError, match=r"cannot delete .*binlog\.1"):
            log.flush()
    log.close()
    assert "binlog.1" not in files(tmp_path)


# The whole thing against a model

TUBES = [b"a", b"b", b"c"]

operation = st.one_of(
    st.tuples(
        st.just("put"), st.binary(max_size=120), st.sampled_from(TUBES), st.sampled_from(JobState)
    ),
    st.tuples(st.just("big"), st.integers(BLOCK - 300, 2 * BLOCK)),
    st.tuples(
        st.just("update"), st.integers(0, 50), st.sampled_from(JobState), st.integers(0, 2**32 - 1)
    ),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("pause"), st.sampled_from(TUBES), st.integers(0, 100)),
    st.tuples(st.just("flush")),
    st.tuples(st.just("advance"), st.integers(0, 100)),
    st.tuples(st.just("reopen")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=100), st.sampled_from([64, 300, 1 << 20]))
def test_replay_matches_a_model(operations: list[tuple[Any, ...]], file_size: int) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as directory:
        log = Log(Path(directory), file_size=file_size, clock=clock)
        live: dict[int, Snapshot] = {}
        pauses: dict[bytes, RecoveredPause] = {}
        next_id = 1

        def check(recovery: Recovery) -> None:
            assert log.recovered == [live[job_id] for job_id in sorted(live)]
            assert recovery.pauses == [
                pauses[tube] for tube in sorted(pauses) if pauses[tube].unpause_at > clock.now
            ]
            assert recovery.max_id == next_id - 1
            assert recovery.warnings == []

        for op in operations:
            kind = op[0]
            if kind in ("put", "big"):
                if kind == "put":
                    job = make_job(next_id, op[1], op[2])
                    job.state = op[3]
                else:
                    job = make_job(next_id, bytes(op[1]))
                job.deadline_at = clock.now + SECOND if job.state is not JobState.READY else 0
                log.put(job)
                live[next_id] = snapshot(job)
                next_id += 1
            elif kind == "update" and live:
                job = log.jobs[sorted(live)[op[1] % len(live)]]
                job.state = op[2]
                job.priority = op[3]
                job.deadline_at = clock.now + op[3]
                job.packed = packed(delay=op[3] % 1000, releases=job.releases + 1, kicks=2)
                log.update(job)
                live[job.id] = snapshot(job)
            elif kind == "delete" and live:
                job_id = sorted(live)[op[1] % len(live)]
                del live[job_id]
                log.delete(log.jobs[job_id])
            elif kind == "pause":
                pauses[op[1]] = RecoveredPause(op[1], op[2], clock.now + op[2] * SECOND)
                log.pause(op[1], op[2], clock.now + op[2] * SECOND)
            elif kind == "flush":
                log.flush()
            elif kind == "advance":
                clock.now += op[1] * SECOND
            elif kind == "reopen":
                log = log.reopen()
                check(log.recovery)
        log = log.reopen()
        check(log.recovery)
        log.close()
