"""A crash-safe, append-only job log: greenstalkd's ``-b DIR``.

The server records every job change here, flushes once per batch of
commands (before it replies) and replays the log at start-up. The format
is our own, not beanstalkd's. A directory holds ``lock`` (flock'ed while a
server uses it) and ``binlog.<seq>`` files, seq = 1, 2, ... Each file is
``b"GSBINLOG"``, a uint32 format version (1), then records. All integers
are little-endian. A record is a 16-byte header and a payload::

    3s marker b"\xf5gs" | B type | I length | I length ^ 0xFFFFFFFF | I crc32(payload, type)

    1 full    Q id, I priority, I delay s, I ttr s, q created_at ns, q deadline_at ns,
              B state, Q reserves, Q timeouts, Q releases, Q buries, Q kicks,
              H tube length, the tube, then the body (the rest: no size limit)
    2 update  Q id, B state, I priority, I delay s, q deadline_at ns,
              Q reserves, Q timeouts, Q releases, Q buries, Q kicks
    3 delete  Q id
    4 pause   q unpause_at ns, I pause s, then the tube
    5 id mark Q the highest job id ever logged; starts every file, so ids
              never go back when the files that held them are deleted
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable, Union

from .job import Job, JobState

__all__ = [
    "Binlog",
    "BinlogError",
    "BinlogLockedError",
    "RecoveredJob",
    "RecoveredPause",
    "Recovery",
]

_MAGIC = b"GSBINLOG"
_VERSION = 1
_FILE_HEAD = struct.Struct("<8sI")
_FILE_START = _FILE_HEAD.pack(_MAGIC, _VERSION)
# 0xF5 never occurs in UTF-8, so text bodies cannot contain the marker.
_MARK = b"\xf5gs"
_HEAD = struct.Struct("<3sBIII")
_MASK = 0xFFFFFFFF

_FULL_T = 1
_UPDATE_T = 2
_DELETE_T = 3
_PAUSE_T = 4
_IDS_T = 5

# The fixed parts of the payloads, field by field as in the module docstring.
_FULL = struct.Struct("<QIIIqqBQQQQQH")
_UPDATE = struct.Struct("<QBIIqQQQQQ")
_ID = struct.Struct("<Q")
_PAUSE = struct.Struct("<qI")

_FULL_OVERHEAD = _HEAD.size + _FULL.size
_STATES = {int(state): state for state in JobState}
_NAME = re.compile(r"binlog\.([1-9][0-9]*)")

# Compaction moves at least this many bytes of live jobs per flush, and at
# least as many as the flush writes anyway, so it outpaces new garbage.
_MIGRATE_BYTES = 64 * 1024


class BinlogError(Exception):
    """The binlog directory or a file in it cannot be used."""


class BinlogLockedError(BinlogError):
    """Another binlog (in this or another process) holds the directory's lock."""


@dataclass
class RecoveredJob:
    """A live job's last logged state. ``tube`` is the tube's name."""

    id: int
    tube: bytes
    priority: int
    delay: int
    ttr: int
    body: bytes
    created_at: int
    deadline_at: int
    state: JobState
    reserves: int
    timeouts: int
    releases: int
    buries: int
    kicks: int


@dataclass
class RecoveredPause:
    """A tube pause still running: ``pause`` seconds, ending at ``unpause_at`` (ns)."""

    tube: bytes
    pause: int
    unpause_at: int


@dataclass
class Recovery:
    """What :meth:`Binlog.open` read back."""

    jobs: list[RecoveredJob]
    pauses: list[RecoveredPause]
    max_id: int
    warnings: list[str]


# A live job as the bookkeeping holds it: the server's Job, or a recovered
# job the server has not put again (it is kept, never silently dropped).
_Entry = Union[Job, RecoveredJob]


def _record_size(tube: bytes, body: bytes) -> int:
    return _FULL_OVERHEAD + len(tube) + len(body)


class Binlog:
    """The job log in one directory; see the module docstring for the format.

    ``put``/``update``/``delete``/``pause`` only buffer a record; ``flush``
    writes the buffer, fsyncs as ``fsync_ms`` says, rotates, compacts and
    deletes files no longer needed. ``fsync_ms`` is 0 for an fsync in
    every flush that wrote, None for none at all, or N for at most one
    every N ms (:meth:`sync_due_at` tells when a deferred one is due).
    ``clock`` gives nanoseconds.
    """

    def __init__(
        self,
        directory: str,
        *,
        file_size: int = 10 * 1024 * 1024,
        fsync_ms: int | None = 50,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if file_size < 1:
            raise ValueError("file_size must be positive")
        if fsync_ms is not None and fsync_ms < 0:
            raise ValueError("fsync_ms must be None or >= 0")
        # Absolute, so a later chdir does not move the log.
        self.directory = os.path.abspath(directory)
        #: The size at which a file is closed and the next one started.
        self.file_size = file_size
        self._sync_interval = None if fsync_ms is None else fsync_ms * 1_000_000
        self._clock = clock
        #: Records appended since this object was made (migrated ones included).
        self.records_written = 0
        #: Jobs rewritten into the current file to let an old file go.
        self.records_migrated = 0
        self._lock_fd = -1
        self._reset()

    def _reset(self) -> None:
        self._fd = -1
        self._seq = 0
        self._offset = 0
        # Where the current file's own records start (after header and carried-over marks).
        self._start = 0
        self._buf = bytearray()
        self._unsynced = False
        self._next_sync_at = 0
        # Live jobs by file (every existing file, oldest first) and id.
        self._live: dict[int, dict[int, _Entry]] = {}
        self._current: dict[int, _Entry] = {}
        # Sizes of the files before the current one.
        self._sizes: dict[int, int] = {}
        self._old_bytes = 0
        self._live_bytes = 0
        # Recovered jobs not put again yet: id -> file holding them.
        self._orphans: dict[int, int] = {}
        self._pauses: dict[bytes, tuple[int, int]] = {}
        self._max_id = 0

    # Stats

    @property
    def oldest_index(self) -> int:
        """Sequence number of the oldest file kept (0 when not open)."""
        return next(iter(self._live), 0)

    @property
    def current_index(self) -> int:
        """Sequence number of the file being written (0 when not open)."""
        return self._seq

    # Opening and closing

    def open(self) -> Recovery:
        """Lock the directory (creating it if needed), replay it and start a new file.

        Raises BinlogLockedError if another binlog holds the lock, and
        BinlogError if the directory or a file cannot be used, if a file
        is not a greenstalkd binlog, or if this binlog is already open.
        """
        if self._lock_fd >= 0:
            raise BinlogError("binlog is already open")
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise BinlogError(f"cannot create {self.directory}: {exc.strerror}") from exc
        self._lock()
        try:
            self._reset()
            seqs = self._list_files()
            recovery = self._replay(seqs)
            seq = seqs[-1] + 1 if seqs else 1
            self._start_file(self._create(seq), seq)
        except BaseException:
            self._release()
            raise
        return recovery

    def finish_recovery(self) -> None:
        """Make the re-logged recovered state durable, then delete the files it supersedes.

        Call it once the server has put every recovered job (and pause)
        again. A recovered job that was not put again keeps its file.
        Raises BinlogError on an I/O error or if the binlog is not open.
        """
        self._settle()

    def close(self) -> None:
        """Flush and fsync (unless ``fsync_ms`` is None), then release the lock.

        Doing nothing when not open. The lock is released even if the last
        write fails; that failure is raised as BinlogError.
        """
        if self._lock_fd < 0:
            return
        try:
            self._settle()
        finally:
            self._release()

    def _settle(self) -> None:
        self.flush()
        if self._unsynced:
            self._fsync()
        self._collect()

    def _lock(self) -> None:
        path = os.path.join(self.directory, "lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise BinlogError(f"cannot open {path}: {exc.strerror}") from exc
        try:
            # flock, not lockf: its lock belongs to the open file description,
            # so a second Binlog in the same process is refused too.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if isinstance(exc, BlockingIOError):
                raise BinlogLockedError(f"{path} is locked by another server") from exc
            raise BinlogError(f"cannot lock {path}: {exc.strerror}") from exc
        self._lock_fd = fd

    def _release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        os.close(self._lock_fd)
        self._lock_fd = -1
        self._buf = bytearray()

    def _path(self, seq: int) -> str:
        return os.path.join(self.directory, f"binlog.{seq}")

    def _list_files(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            raise BinlogError(f"cannot list {self.directory}: {exc.strerror}") from exc
        return sorted(int(m.group(1)) for m in map(_NAME.fullmatch, names) if m)

    # Replay

    def _replay(self, seqs: list[int]) -> Recovery:
        replay = _Replay()
        warnings: list[str] = []
        for seq in seqs:
            path = self._path(seq)
            try:
                with open(path, "rb") as file:
                    data = file.read()
            except OSError as exc:
                raise BinlogError(f"cannot read {path}: {exc.strerror}") from exc
            self._live[seq] = {}
            self._sizes[seq] = len(data)
            self._old_bytes += len(data)
            name = f"binlog.{seq}"
            if not _check_file_head(path, name, data, warnings):
                continue
            for offset, rtype, start, stop in _records(name, data, warnings):
                if not replay.apply(seq, rtype, data, start, stop):
                    warnings.append(
                        f"{name}: offset {offset}: malformed record of type {rtype}, skipped"
                    )
        jobs = [replay.jobs[job_id] for job_id in sorted(replay.jobs)]
        for job in jobs:
            seq = replay.where[job.id]
            self._live[seq][job.id] = job
            self._orphans[job.id] = seq
            self._live_bytes += _record_size(job.tube, job.body)
        self._max_id = replay.max_id
        now = self._clock()
        pauses = [replay.pauses[tube] for tube in sorted(replay.pauses)]
        pauses = [pause for pause in pauses if pause.unpause_at > now]
        return Recovery(jobs, pauses, replay.max_id, warnings)

    # Recording (the server's hot path: pack and append, nothing else)

    def _append(self, rtype: int, payload: bytes) -> None:
        size = len(payload)
        self._buf += _HEAD.pack(_MARK, rtype, size, size ^ _MASK, zlib.crc32(payload, rtype))
        self._buf += payload
        self.records_written += 1

    def _append_full(self, job: _Entry, tube: bytes) -> int:
        body = job.body
        fixed = _FULL.pack(
            job.id,
            job.priority,
            job.delay,
            job.ttr,
            job.created_at,
            job.deadline_at,
            job.state,
            job.reserves,
            job.timeouts,
            job.releases,
            job.buries,
            job.kicks,
            len(tube),
        )
        size = _FULL.size + len(tube) + len(body)
        crc = zlib.crc32(body, zlib.crc32(tube, zlib.crc32(fixed, _FULL_T)))
        buf = self._buf
        buf += _HEAD.pack(_MARK, _FULL_T, size, size ^ _MASK, crc)
        buf += fixed
        buf += tube
        buf += body
        self.records_written += 1
        return _HEAD.size + size

    def put(self, job: Job) -> None:
        """Record the job's whole current state; ``job.file`` becomes the current file."""
        size = self._append_full(job, job.tube.name)
        job_id = job.id
        if job_id > self._max_id:
            self._max_id = job_id
        old = self._live.get(job.file)
        if old is None or old.pop(job_id, None) is None:
            seq = self._orphans.pop(job_id, None) if self._orphans else None
            if seq is None:
                self._live_bytes += size
            else:
                del self._live[seq][job_id]
        job.file = self._seq
        self._current[job_id] = job

    def update(self, job: Job) -> None:
        """Record the job's state, priority, delay, deadline and counters."""
        self._append(
            _UPDATE_T,
            _UPDATE.pack(
                job.id,
                job.state,
                job.priority,
                job.delay,
                job.deadline_at,
                job.reserves,
                job.timeouts,
                job.releases,
                job.buries,
                job.kicks,
            ),
        )

    def delete(self, job: Job) -> None:
        """Record that the job is gone."""
        self._append(_DELETE_T, _ID.pack(job.id))
        live = self._live.get(job.file)
        if live is not None and live.pop(job.id, None) is not None:
            self._live_bytes -= _record_size(job.tube.name, job.body)

    def pause(self, tube: bytes, pause: int, unpause_at: int) -> None:
        """Record that ``tube`` is paused for ``pause`` seconds, until ``unpause_at`` (ns)."""
        self._append(_PAUSE_T, _PAUSE.pack(unpause_at, pause) + tube)
        self._pauses[tube] = (pause, unpause_at)

    # Writing

    def flush(self) -> None:
        """Write the buffered records, then fsync, rotate, compact and delete old files as due.

        Once it returns, the records survive a crash of this process. On an
        I/O error the unwritten records stay buffered for the next flush.
        Raises BinlogError on an I/O error or if the binlog is not open.
        """
        if self._fd < 0:
            raise BinlogError("binlog is not open")
        # Compact when garbage outweighs live data by more than one file.
        if self._sizes and (
            self._old_bytes + self._offset + len(self._buf) >= 2 * self._live_bytes + self.file_size
        ):
            self._compact()
        if self._buf:
            self._write_buffer()
        if self._offset >= self.file_size and self._offset > self._start:
            self._rotate()
        if self._unsynced and (
            self._sync_interval == 0 or self._clock() >= self._next_sync_at
        ):
            self._fsync()
        self._collect()

    def sync_due_at(self) -> int | None:
        """When (clock ns) a deferred fsync is due, or None if none is pending."""
        return self._next_sync_at if self._unsynced and self._sync_interval else None

    def sync(self) -> None:
        """Fsync the current file now if written data is not synced yet.

        Raises BinlogError on an I/O error or if the binlog is not open.
        """
        if self._fd < 0:
            raise BinlogError("binlog is not open")
        if self._unsynced:
            self._fsync()
            self._collect()

    def _write_buffer(self) -> None:
        data = self._buf
        self._buf = bytearray()
        done = 0
        with memoryview(data) as view:
            while done < len(data):
                try:
                    written = os.write(self._fd, view[done:])
                except OSError as exc:
                    self._buf = data[done:]
                    path = self._path(self._seq)
                    raise BinlogError(f"cannot write {path}: {exc.strerror}") from exc
                done += written
                self._offset += written
                self._unsynced = self._sync_interval is not None

    def _fsync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise BinlogError(f"cannot fsync {self._path(self._seq)}: {exc.strerror}") from exc
        self._unsynced = False
        if self._sync_interval:
            self._next_sync_at = self._clock() + self._sync_interval

    def _sync_directory(self) -> None:
        # Makes file creations and deletions durable.
        try:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise BinlogError(f"cannot fsync {self.directory}: {exc.strerror}") from exc

    def _create(self, seq: int) -> int:
        path = self._path(seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600)
        except OSError as exc:
            raise BinlogError(f"cannot create {path}: {exc.strerror}") from exc

    def _start_file(self, fd: int, seq: int) -> None:
        """Make the new file ``fd`` current and write its header, id mark and pauses."""
        self._fd = fd
        self._seq = seq
        self._offset = 0
        self._current = self._live[seq] = {}
        self._buf += _FILE_START
        if self._max_id:
            self._append(_IDS_T, _ID.pack(self._max_id))
        # Carry the running pauses over, so deleting old files never loses one.
        now = self._clock()
        self._pauses = {tube: p for tube, p in self._pauses.items() if p[1] > now}
        for tube, (pause, unpause_at) in self._pauses.items():
            self._append(_PAUSE_T, _PAUSE.pack(unpause_at, pause) + tube)
        self._start = len(self._buf)
        self._write_buffer()
        # A new file is made durable at once, its name included.
        if self._sync_interval is not None:
            self._fsync()
            self._sync_directory()

    def _rotate(self) -> None:
        # The deferred fsync would only reach the new file.
        if self._unsynced:
            self._fsync()
        # If the new file cannot be made, the current one simply grows on.
        fd = self._create(self._seq + 1)
        os.close(self._fd)
        self._sizes[self._seq] = self._offset
        self._old_bytes += self._offset
        self._start_file(fd, self._seq + 1)

    def _compact(self) -> None:
        """Rewrite live jobs of the oldest file into the current one, so it can go."""
        live = self._live[next(iter(self._sizes))]
        budget = max(_MIGRATE_BYTES, len(self._buf))
        seq = self._seq
        moved = 0
        while live and moved < budget:
            job_id, entry = live.popitem()
            if isinstance(entry, RecoveredJob):
                moved += self._append_full(entry, entry.tube)
                self._orphans[job_id] = seq
            else:
                moved += self._append_full(entry, entry.tube.name)
                entry.file = seq
            self._current[job_id] = entry
            self.records_migrated += 1

    def _collect(self) -> None:
        """Delete the oldest files while they hold no live job.

        Only from the oldest end: deleting a newer file first could drop
        the delete record of a job whose full record is in an older one.
        And only once every record written so far is durable, since those
        records (moved jobs, id marks, pauses) replace the old files.
        """
        if self._buf or self._unsynced:
            return
        removed = False
        while self._sizes:
            seq = next(iter(self._sizes))
            if self._live[seq]:
                break
            try:
                os.unlink(self._path(seq))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise BinlogError(f"cannot delete {self._path(seq)}: {exc.strerror}") from exc
            self._old_bytes -= self._sizes.pop(seq)
            del self._live[seq]
            removed = True
        if removed and self._sync_interval is not None:
            self._sync_directory()


class _Replay:
    """The state rebuilt from records: last record wins."""

    def __init__(self) -> None:
        self.jobs: dict[int, RecoveredJob] = {}
        # The file holding each live job's full record.
        self.where: dict[int, int] = {}
        self.pauses: dict[bytes, RecoveredPause] = {}
        self.max_id = 0

    def apply(self, seq: int, rtype: int, data: bytes, start: int, stop: int) -> bool:
        """Apply one record whose CRC matched; False if its payload does not fit its type."""
        length = stop - start
        if rtype == _FULL_T:
            if length < _FULL.size:
                return False
            (
                job_id, priority, delay, ttr, created_at, deadline_at, state_value,
                reserves, timeouts, releases, buries, kicks, tube_length,
            ) = _FULL.unpack_from(data, start)
            tube_end = start + _FULL.size + tube_length
            state = _STATES.get(state_value)
            if tube_end > stop or state is None:
                return False
            self.max_id = max(self.max_id, job_id)
            if state is JobState.RESERVED:
                state, deadline_at = JobState.READY, 0
            self.jobs[job_id] = RecoveredJob(
                job_id,
                data[start + _FULL.size : tube_end],
                priority,
                delay,
                ttr,
                data[tube_end:stop],
                created_at,
                deadline_at,
                state,
                reserves,
                timeouts,
                releases,
                buries,
                kicks,
            )
            self.where[job_id] = seq
        elif rtype == _UPDATE_T:
            if length != _UPDATE.size:
                return False
            (
                job_id, state_value, priority, delay, deadline_at,
                reserves, timeouts, releases, buries, kicks,
            ) = _UPDATE.unpack_from(data, start)
            state = _STATES.get(state_value)
            if state is None:
                return False
            self.max_id = max(self.max_id, job_id)
            job = self.jobs.get(job_id)
            if job is not None:
                if state is JobState.RESERVED:
                    state, deadline_at = JobState.READY, 0
                job.state = state
                job.priority = priority
                job.delay = delay
                job.deadline_at = deadline_at
                job.reserves = reserves
                job.timeouts = timeouts
                job.releases = releases
                job.buries = buries
                job.kicks = kicks
        elif rtype == _DELETE_T:
            if length != _ID.size:
                return False
            (job_id,) = _ID.unpack_from(data, start)
            self.max_id = max(self.max_id, job_id)
            self.jobs.pop(job_id, None)
            self.where.pop(job_id, None)
        elif rtype == _PAUSE_T:
            if length < _PAUSE.size:
                return False
            unpause_at, pause = _PAUSE.unpack_from(data, start)
            tube = data[start + _PAUSE.size : stop]
            self.pauses[tube] = RecoveredPause(tube, pause, unpause_at)
        elif rtype == _IDS_T:
            if length != _ID.size:
                return False
            self.max_id = max(self.max_id, _ID.unpack_from(data, start)[0])
        else:
            return False
        return True


def _check_file_head(path: str, name: str, data: bytes, warnings: list[str]) -> bool:
    """Whether records follow the file header.

    A file cut short inside its header, or all zeros, was being created
    during a crash: it has no records, and a warning says so. Raises
    BinlogError for a file that is not a greenstalkd binlog or has another
    format version, rather than deleting it later as if it were empty.
    """
    if data.startswith(_FILE_START):
        return True
    if _FILE_START.startswith(data) or data.count(0) == len(data):
        warnings.append(f"{name}: incomplete file header ({len(data)} bytes), file ignored")
        return False
    if data.startswith(_MAGIC) and len(data) >= _FILE_HEAD.size:
        version = _FILE_HEAD.unpack_from(data)[1]
        raise BinlogError(f"{path} has binlog format version {version}, not {_VERSION}")
    raise BinlogError(f"{path} is not a greenstalkd binlog file")


def _records(name: str, data: bytes, warnings: list[str]) -> Iterator[tuple[int, int, int, int]]:
    """The records of a file whose header was checked: (offset, type, start, stop) each.

    A length past the end of the file is a torn tail: reading stops there.
    A record with a bad CRC is skipped (its length was checked, so the next
    record is found). A damaged header is skipped by searching for the
    next record that checks out.
    """
    end = len(data)
    view = memoryview(data)
    pos = _FILE_HEAD.size
    while pos < end:
        if end - pos < _HEAD.size:
            warnings.append(f"{name}: offset {pos}: torn record at the end, {end - pos} bytes lost")
            return
        mark, rtype, length, check, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        stop = start + length
        if mark != _MARK or length ^ check != _MASK:
            resume = _next_record(data, view, pos + 1)
            if resume < 0:
                warnings.append(
                    f"{name}: offset {pos}: damaged data at the end, {end - pos} bytes ignored"
                )
                return
            warnings.append(f"{name}: offset {pos}: damaged data, {resume - pos} bytes skipped")
            pos = resume
        elif stop > end:
            warnings.append(f"{name}: offset {pos}: torn record at the end, {end - pos} bytes lost")
            return
        elif zlib.crc32(view[start:stop], rtype) != crc:
            warnings.append(f"{name}: offset {pos}: bad CRC, record of {stop - pos} bytes skipped")
            pos = stop
        else:
            yield pos, rtype, start, stop
            pos = stop


def _next_record(data: bytes, view: memoryview, pos: int) -> int:
    """Offset of the next whole record with a good CRC at or after ``pos``; -1 if none."""
    end = len(data)
    while True:
        pos = data.find(_MARK, pos)
        if pos < 0 or end - pos < _HEAD.size:
            return -1
        _, rtype, length, check, crc = _HEAD.unpack_from(data, pos)
        start = pos + _HEAD.size
        if (
            length ^ check == _MASK
            and start + length <= end
            and zlib.crc32(view[start : start + length], rtype) == crc
        ):
            return pos
        pos += 1
