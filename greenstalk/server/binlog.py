"""greenstalkd's job log (``-b DIR``): crash-safe, damage-tolerant, never full unnoticed.

The server records every job change here and writes the records before it
replies; it replays the log at start-up. The format is our own, not
beanstalkd's. A directory holds ``lock`` (flock'ed while a server uses it)
and ``binlog.<seq>`` files, seq = 1, 2, ...

**Blocks and fragments** (the layout of LevelDB's log): a file is a run of
32 KiB blocks. A record is cut into fragments that never cross a block
boundary, each behind a 7-byte header::

    I crc32 of the type byte and the data | H data length
    | B type (1 whole, 2 first, 3 middle, 4 last)

Seven bytes or fewer left at the end of a block are zeros. A reader that
meets damage drops the rest of that block and goes on at the next one:
a fragment header only ever starts where the writer put one, so bytes
inside a job body are never taken for a record, whatever they hold. Files
are allocated ahead of the writer (the allocation fails, not a later
write, when the disk is full); a zero header marks where writing stopped.

**Records** (all integers little-endian; the first byte is the kind)::

    F file head  8s b"GSBINLOG", I format version (2), Q seq
    J job        Q id, I priority, I ttr s, q created_at ns, q deadline_at ns, B state,
                 24s delay and counters (Job.packed), H tube length, the tube, the body
    U update     Q id, B state, I priority, q deadline_at ns, 24s delay and counters
    D delete     Q id
    P pause      q unpause_at ns, I pause s, the tube
    M id mark    Q the highest job id ever logged (starts every file: ids never go back)
    G gone       Q the oldest file still needed: older ones were deleted on purpose,
                 so a newer one that is missing is reported as lost

**Room.** Every record is counted against room the files already have: a
put reserves its own record and its future delete (so a delete never
fails), an update reserves its record. When the disk is full, the
reservation fails and the server refuses the command (``OUT_OF_MEMORY``,
as beanstalkd does) before anything changes; it works again as soon as
space comes back.

**Positions.** :attr:`Binlog.position` counts every byte appended since
the log was opened, :attr:`Binlog.written` those written to a file and
:attr:`Binlog.synced` those an fsync covers. A reply may go out once the
records before it are written (and, with ``-f 0``, synced): the server
compares positions.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import io
import os
import re
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Callable

from .job import PACKED_BYTES, UINT32, Job, JobState

__all__ = [
    "Binlog",
    "BinlogError",
    "BinlogLockedError",
    "RecoveredPause",
    "Recovery",
]

BLOCK = 32768
_HEADER = struct.Struct("<IHB")
HEADER_SIZE = _HEADER.size
_WHOLE, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
_SEEDS = {kind: zlib.crc32(bytes((kind,))) for kind in (_WHOLE, _FIRST, _MIDDLE, _LAST)}
_WHOLE_SEED = _SEEDS[_WHOLE]

MAGIC = b"GSBINLOG"
VERSION = 2

_HEAD = struct.Struct("<c8sIQ")
_JOB = struct.Struct(f"<cQIIqqB{PACKED_BYTES}sH")
_UPDATE = struct.Struct(f"<cQBIq{PACKED_BYTES}s")
_ID = struct.Struct("<cQ")
_PAUSE = struct.Struct("<cqI")

# Record kinds, as the payload's first byte.
K_HEAD, K_JOB, K_UPDATE, K_DELETE, K_PAUSE, K_IDS, K_GONE = b"FJUDPMG"
_HEAD_KIND, _JOB_KIND, _UPDATE_KIND, _DELETE_KIND, _PAUSE_KIND, _IDS_KIND, _GONE_KIND = (
    bytes((kind,)) for kind in b"FJUDPMG"
)

# JobState by value, None where no state has that value.
_STATE_BY_VALUE: tuple[JobState | None, ...] = (None, *JobState)
_NAME = re.compile(r"binlog\.([1-9][0-9]*)")
_ZERO_HEADER = bytes(HEADER_SIZE)
# beanstalkd's binlog files start with its format version, 7, as a native int.
_BEANSTALKD_START = struct.pack("=i", 7)

# Compaction moves at least this many bytes of live jobs per flush, and at
# least as many as the flush writes anyway, so it outpaces new garbage.
_MIGRATE_BYTES = 64 * 1024
# Files grow by this much at a time (or by what a record needs).
_ALLOCATION = 1 << 20
_READ_SIZE = 32 * BLOCK


def record_room(payload_size: int) -> int:
    """The most bytes a record with ``payload_size`` bytes can take in a file.

    Padding before it (at most a header's size), and a header for each
    block it touches.
    """
    fragments = payload_size // (BLOCK - HEADER_SIZE) + 2
    return payload_size + HEADER_SIZE + HEADER_SIZE * fragments


_DELETE_ROOM = record_room(_ID.size)
# An update, or a pause of a tube with the longest name.
_CHANGE_ROOM = record_room(max(_UPDATE.size, _PAUSE.size + 200))
# The head, marks and a few pauses a new file starts with.
_START_ROOM = 4096


class BinlogError(Exception):
    """The binlog directory or a file in it cannot be used."""


class BinlogLockedError(BinlogError):
    """Another binlog (in this or another process) holds the directory's lock."""


@dataclass
class RecoveredPause:
    """A tube pause still running: ``pause`` seconds, ending at ``unpause_at`` (ns)."""

    tube: bytes
    pause: int
    unpause_at: int


@dataclass
class Recovery:
    """What :meth:`Binlog.open` read back.

    ``jobs`` maps ids to the live jobs, each with its last logged state (a
    job reserved at the crash is ready), ``file`` set, and the *name* of
    its tube in ``tube``. The log keeps this dict as its job table: the
    server must make it its own (see ``ServerState.recover``).
    """

    jobs: dict[int, Job]
    pauses: list[RecoveredPause]
    max_id: int
    warnings: list[str]


def _job_room(job: Job, tube: bytes) -> int:
    return record_room(_JOB.size + len(tube) + len(job.body))


class Binlog:
    """The job log in one directory; see the module docstring for the format.

    ``put``/``update``/``delete``/``pause`` only buffer a record (after
    ``reserve_put``/``reserve_update`` said there is room for it); ``flush``
    writes the buffer, rotates, compacts and deletes files no longer
    needed. Syncing is the server's to schedule: ``fsync_ms`` is 0 for an
    fsync before every reply that follows a record, None for none at
    all, or N for at most one every N ms (:meth:`sync_due_at`). ``clock``
    gives nanoseconds.
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
        #: Whether every reply waits for an fsync of the records before it.
        self.sync_every_reply = fsync_ms == 0
        self._sync_interval = None if fsync_ms is None else fsync_ms * 1_000_000
        self._clock = clock
        #: Records appended since this object was made (migrated ones included).
        self.records_written = 0
        #: Jobs rewritten into the current file to let an old file go.
        self.records_migrated = 0
        #: Bytes written to files since open, and bytes an fsync covers.
        self.written = 0
        self.synced = 0
        self._lock_fd = -1
        self._syncer: _Syncer | None = None
        self._reset()

    def _reset(self) -> None:
        self._fd = -1
        self._seq = 0
        self._offset = 0
        # The end of the current file's allocated space.
        self._end = 0
        # Where the current file's own records start (after head, marks and pauses).
        self._start = 0
        self._buf = bytearray()
        self._next_sync_at = 0
        self._jobs: dict[int, Job] = {}
        # For every file, oldest first: how many live jobs it holds, and the
        # ids of the jobs it has full records of (some since gone).
        self._counts: dict[int, int] = {}
        self._ids: dict[int, array.array[int]] = {}
        # Compaction's place in the oldest file's ids.
        self._cursor = 0
        # Sizes of the files before the current one.
        self._sizes: dict[int, int] = {}
        self._old_bytes = 0
        self._live_bytes = 0
        self._pauses: dict[bytes, tuple[int, int]] = {}
        self._max_id = 0
        # Files below this one are gone on purpose (see the G record).
        self._gone = 1

    # Stats and positions

    @property
    def oldest_index(self) -> int:
        """Sequence number of the oldest file kept (0 when not open)."""
        return next(iter(self._counts), 0)

    @property
    def current_index(self) -> int:
        """Sequence number of the file being written (0 when not open)."""
        return self._seq

    @property
    def position(self) -> int:
        """Bytes appended since open: a reply after a record waits until they are written."""
        return self.written + len(self._buf)

    @property
    def durable(self) -> int:
        """How far a reply may rely on the log: what is written, and with ``-f 0`` synced."""
        return self.synced if self.sync_every_reply else self.written

    @property
    def syncing(self) -> bool:
        """True from :meth:`start_background_sync` until its result is taken."""
        return self._syncer is not None and self._syncer.busy

    # Opening and closing

    def open(self) -> Recovery:
        """Lock the directory (creating it if needed), replay it and start a new file.

        The replay reads the files a block at a time; nothing already
        written is rewritten. Damage is skipped with a warning naming the
        file, offset and size of every gap; a missing file is reported.
        Raises BinlogLockedError if another binlog holds the lock, and
        BinlogError if the directory or a file cannot be used, if a file is
        not a greenstalkd binlog or has another format version, or if this
        binlog is already open.
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
            # Old files without live jobs can go once the new file says so.
            needed = next((old for old in seqs if self._counts[old]), seq)
            self._gone = max(self._gone, needed)
            fd = self._create(seq)
            try:
                self._start_file(fd, seq, self._allocate_new(fd))
            except BaseException:
                # Leave no empty file behind: a disk too full to start leaves the log as it was.
                os.close(fd)
                self._fd = -1
                with contextlib.suppress(OSError):
                    os.unlink(self._path(seq))
                raise
            self._collect()
        except BaseException:
            self._release()
            raise
        if self._end - self._offset < len(self._jobs) * _DELETE_ROOM:
            recovery.warnings.append(
                "the disk is full: puts are refused until there is space for the log"
            )
        return recovery

    def close(self) -> None:
        """Flush and fsync (unless ``fsync_ms`` is None), trim the file, release the lock.

        Doing nothing when not open. The lock is released even if the last
        write fails; that failure is raised as BinlogError.
        """
        if self._lock_fd < 0:
            return
        try:
            # Twice: deleting old files takes a record (G) written first.
            for _ in range(2):
                self.flush()
                if self.written > self.synced:
                    self.sync()
            self._trim()
        finally:
            self._release()

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
        if self._syncer is not None:
            self._syncer.stop()
            self._syncer = None
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
        replay = _Replay(self._jobs, self._counts, self._ids)
        for seq in seqs:
            self._counts[seq] = 0
            self._ids[seq] = array.array("Q")
            size = replay.read_file(seq, self._path(seq))
            self._sizes[seq] = size
            self._old_bytes += size
        present = set(seqs)
        if seqs:
            for seq in range(replay.gone, seqs[-1]):
                if seq not in present:
                    replay.warnings.append(
                        f"binlog.{seq} is missing: the jobs only it recorded are lost"
                    )
        self._live_bytes = replay.live_bytes
        self._max_id = replay.max_id
        self._gone = replay.gone
        now = self._clock()
        self._pauses = {
            tube: pause for tube, pause in sorted(replay.pauses.items()) if pause[1] > now
        }
        pauses = [RecoveredPause(tube, p, at) for tube, (p, at) in self._pauses.items()]
        return Recovery(self._jobs, pauses, replay.max_id, replay.warnings)

    # Room

    def _room(self) -> int:
        """Allocated bytes not yet used nor promised to the deletes of live jobs."""
        return self._end - self._offset - len(self._buf) - len(self._jobs) * _DELETE_ROOM

    def _make_room(self, needed: int) -> bool:
        """Whether ``needed`` more bytes fit, allocating more of the file if they do not."""
        short = needed - self._room()
        if short <= 0:
            return True
        return self._allocate(max(short, _ALLOCATION)) or self._allocate(short)

    def _allocate(self, size: int) -> bool:
        """Extend the current file's allocation by ``size`` bytes; False when the disk is full."""
        try:
            _allocate(self._fd, self._end, size)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise BinlogError(f"cannot allocate {self._path(self._seq)}: {exc}") from exc
            # Give back whatever part of it was allocated.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._end)
            return False
        self._end += size
        return True

    def reserve_put(self, tube_length: int, body_length: int) -> bool:
        """Whether the log has room for a put's record and its later delete.

        Call it before the put changes anything; False means refuse the put.
        Raises BinlogError when the file cannot be extended for another
        reason than a full disk.
        """
        return self._make_room(record_room(_JOB.size + tube_length + body_length) + _DELETE_ROOM)

    def reserve_update(self) -> bool:
        """Whether the log has room for an update or pause record (see :meth:`reserve_put`)."""
        return self._make_room(_CHANGE_ROOM)

    # Recording (the server's hot path: pack and append, nothing else)

    def _append(self, payload: bytes) -> None:
        """Append one record, cut into fragments at block boundaries."""
        buf = self._buf
        left = BLOCK - (self._offset + len(buf)) % BLOCK
        size = len(payload)
        if size + HEADER_SIZE <= left:
            buf += _HEADER.pack(zlib.crc32(payload, _WHOLE_SEED), size, _WHOLE)
            buf += payload
        else:
            self._append_fragments(payload, left)
        self.records_written += 1

    def _append_fragments(self, payload: bytes, left: int) -> None:
        buf = self._buf
        size = len(payload)
        with memoryview(payload) as view:
            start = 0
            while True:
                if left <= HEADER_SIZE:
                    # No room for a byte of data: pad the block, go on in the next.
                    buf += bytes(left)
                    left = BLOCK
                stop = min(size, start + left - HEADER_SIZE)
                if start == 0:
                    kind = _WHOLE if stop == size else _FIRST
                else:
                    kind = _LAST if stop == size else _MIDDLE
                data = view[start:stop]
                buf += _HEADER.pack(zlib.crc32(data, _SEEDS[kind]), stop - start, kind)
                buf += data
                left -= HEADER_SIZE + stop - start
                start = stop
                if start == size:
                    return

    def _job_record(self, job: Job, tube: bytes) -> bytes:
        return (
            _JOB.pack(
                _JOB_KIND,
                job.id,
                job.priority,
                job.ttr,
                job.created_at,
                job.deadline_at,
                job.state,
                job.packed.to_bytes(PACKED_BYTES, "little"),
                len(tube),
            )
            + tube
            + job.body
        )

    def put(self, job: Job) -> None:
        """Record a new job's whole state; ``job.file`` becomes the current file.

        ``job`` must be in the job table already (the server's ``jobs``).
        """
        tube = job.tube.name
        self._append(self._job_record(job, tube))
        job_id = job.id
        if job_id > self._max_id:
            self._max_id = job_id
        job.file = seq = self._seq
        self._counts[seq] += 1
        self._ids[seq].append(job_id)
        self._live_bytes += _job_room(job, tube)

    def update(self, job: Job) -> None:
        """Record the job's state, priority, delay, deadline and counters."""
        self._append(
            _UPDATE.pack(
                _UPDATE_KIND,
                job.id,
                job.state,
                job.priority,
                job.deadline_at,
                job.packed.to_bytes(PACKED_BYTES, "little"),
            )
        )

    def delete(self, job: Job) -> None:
        """Record that the job is gone (it has left the job table already)."""
        self._append(_ID.pack(_DELETE_KIND, job.id))
        counts = self._counts
        if job.file in counts:
            counts[job.file] -= 1
            self._live_bytes -= _job_room(job, job.tube.name)

    def pause(self, tube: bytes, pause: int, unpause_at: int) -> None:
        """Record that ``tube`` is paused for ``pause`` seconds, until ``unpause_at`` (ns)."""
        self._append(_PAUSE.pack(_PAUSE_KIND, unpause_at, pause) + tube)
        self._pauses[tube] = (pause, unpause_at)

    # Writing

    def flush(self) -> None:
        """Write the buffered records, then rotate, compact and delete old files as due.

        Once it returns, the records survive a crash of this process (not
        of the machine: see :meth:`sync`). On an I/O error the unwritten
        records stay buffered for the next flush, and :attr:`written` does
        not move. Raises BinlogError on an I/O error or if the binlog is
        not open.
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
        self._collect()

    def sync_due_at(self) -> int | None:
        """When (clock ns) a deferred fsync is due, or None if none is pending."""
        if self._sync_interval and self.written > self.synced:
            return self._next_sync_at
        return None

    def sync(self) -> None:
        """Fsync what is written, here and now (waiting for a background one first).

        Raises BinlogError on an I/O error or if the binlog is not open.
        """
        if self._fd < 0:
            raise BinlogError("binlog is not open")
        if self._syncer is not None:
            self._syncer.wait()
            self.finish_background_sync()
        if self.written > self.synced:
            target = self.written
            _fsync(self._fd, self._path(self._seq))
            self._synced_to(target)

    def start_background_sync(self, done: Callable[[], None]) -> bool:
        """Fsync what is written on a thread of its own; ``done`` is called from it after.

        Returns False when there is nothing to sync or a background fsync
        is already running. Call :meth:`finish_background_sync` once
        ``done`` was called.
        """
        if self.written <= self.synced:
            return False
        if self._syncer is None:
            self._syncer = _Syncer()
        return self._syncer.start(self._fd, self.written, done)

    def finish_background_sync(self) -> None:
        """Take the result of a background fsync that has ended (if none has, do nothing).

        Raises BinlogError if it failed.
        """
        syncer = self._syncer
        if syncer is None:
            return
        outcome = syncer.take()
        if isinstance(outcome, OSError):
            raise BinlogError(f"cannot fsync {self._path(self._seq)}: {outcome.strerror}")
        if outcome is not None:
            self._synced_to(outcome)

    def _synced_to(self, target: int) -> None:
        if target > self.synced:
            self.synced = target
        if self._sync_interval:
            self._next_sync_at = self._clock() + self._sync_interval
        self._collect()

    def _write_buffer(self) -> None:
        data = self._buf
        self._buf = bytearray()
        done = 0
        with memoryview(data) as view:
            while done < len(data):
                try:
                    written = os.pwrite(self._fd, view[done:], self._offset)
                except OSError as exc:
                    self._buf = data[done:]
                    path = self._path(self._seq)
                    raise BinlogError(f"cannot write {path}: {exc.strerror}") from exc
                done += written
                self._offset += written
                self.written += written
        if self._sync_interval is None:
            self.synced = self.written
        if self._offset > self._end:
            self._end = self._offset

    def _create(self, seq: int) -> int:
        path = self._path(seq)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(path, flags, 0o600)
        except OSError as exc:
            raise BinlogError(f"cannot create {path}: {exc.strerror}") from exc

    def _allocate_new(self, fd: int) -> int:
        """Allocate a new file: room for every live job's delete and then some, if the disk has it.

        Returns the size allocated: perhaps 0 when the disk is full.
        """
        promised = len(self._jobs) * _DELETE_ROOM + _START_ROOM
        for size in (promised + min(self.file_size, _ALLOCATION), promised):
            try:
                _allocate(fd, 0, size)
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    raise BinlogError(f"cannot allocate a binlog file: {exc}") from exc
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            else:
                return size
        return 0

    def _start_file(self, fd: int, seq: int, allocated: int) -> None:
        """Make the new file ``fd`` current and write its head, marks and pauses."""
        self._fd = fd
        self._seq = seq
        self._offset = 0
        self._end = allocated
        self._counts[seq] = 0
        self._ids[seq] = array.array("Q")
        self._append(_HEAD.pack(_HEAD_KIND, MAGIC, VERSION, seq))
        if self._max_id:
            self._append(_ID.pack(_IDS_KIND, self._max_id))
        self._append(_ID.pack(_GONE_KIND, self._gone))
        # Carry the running pauses over, so deleting old files never loses one.
        now = self._clock()
        self._pauses = {tube: p for tube, p in self._pauses.items() if p[1] > now}
        for tube, (pause, unpause_at) in self._pauses.items():
            self._append(_PAUSE.pack(_PAUSE_KIND, unpause_at, pause) + tube)
        self._start = len(self._buf)
        self._write_buffer()
        # A new file is made durable at once, its name included.
        if self._sync_interval is not None:
            _fsync(fd, self._path(seq))
            self._sync_directory()
            self.synced = self.written

    def _rotate(self) -> None:
        seq = self._seq + 1
        fd = self._create(seq)
        allocated = self._allocate_new(fd)
        if allocated == 0:
            # The disk is full: the current file grows on into the room it has.
            os.close(fd)
            os.unlink(self._path(seq))
            return
        # The old file is complete: make it durable, then give back what it did not use.
        self.sync()
        self._trim()
        os.close(self._fd)
        self._sizes[self._seq] = self._offset
        self._old_bytes += self._offset
        self._start_file(fd, seq, allocated)

    def _trim(self) -> None:
        """Give back the current file's allocated space past what was written."""
        if self._end > self._offset:
            try:
                os.ftruncate(self._fd, self._offset)
            except OSError as exc:
                raise BinlogError(f"cannot truncate {self._path(self._seq)}: {exc}") from exc
            self._end = self._offset

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

    def _compact(self) -> None:
        """Rewrite live jobs of the oldest file into the current one, so it can go.

        Only as far as the current file has room: on a full disk the old
        files simply stay.
        """
        seq = next(iter(self._sizes))
        ids = self._ids[seq]
        jobs = self._jobs
        current = self._seq
        budget = max(_MIGRATE_BYTES, len(self._buf))
        moved = 0
        cursor = self._cursor
        while cursor < len(ids) and moved < budget:
            job = jobs.get(ids[cursor])
            if job is not None and job.file == seq:
                tube = job.tube.name
                room = _job_room(job, tube)
                if not self._make_room(room):
                    break
                self._append(self._job_record(job, tube))
                job.file = current
                self._counts[seq] -= 1
                self._counts[current] += 1
                self._ids[current].append(job.id)
                self.records_migrated += 1
                moved += room
            cursor += 1
        self._cursor = cursor

    def _collect(self) -> None:
        """Delete the oldest files while they hold no live job.

        Only from the oldest end: deleting a newer file first could drop
        the delete record of a job whose full record is in an older one.
        The G record naming the new oldest file is made durable first, so a
        replay can tell a file deleted here from one lost.
        """
        if self._buf or (self._sync_interval is not None and self.written > self.synced):
            return
        oldest = None
        for seq in self._sizes:
            if self._counts[seq]:
                break
            oldest = seq + 1
        if oldest is None:
            return
        if self._gone < oldest:
            self._gone = oldest
            self._append(_ID.pack(_GONE_KIND, oldest))
            return
        removed = False
        while self._sizes:
            seq = next(iter(self._sizes))
            if seq >= self._gone:
                break
            try:
                os.unlink(self._path(seq))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise BinlogError(f"cannot delete {self._path(seq)}: {exc.strerror}") from exc
            self._old_bytes -= self._sizes.pop(seq)
            del self._counts[seq]
            del self._ids[seq]
            self._cursor = 0
            removed = True
        if removed and self._sync_interval is not None:
            self._sync_directory()


def _fsync(fd: int, path: str) -> None:
    try:
        os.fdatasync(fd)
    except OSError as exc:
        raise BinlogError(f"cannot fsync {path}: {exc.strerror}") from exc


def _allocate(fd: int, offset: int, size: int) -> None:
    """Reserve disk space for ``size`` bytes at ``offset``: fallocate, or zeros without it."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        try:
            fallocate(fd, offset, size)
            return
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    zeros = bytes(min(size, _ALLOCATION))
    done = 0
    while done < size:
        done += os.pwrite(fd, zeros[: size - done], offset + done)


class _Syncer:
    """One thread that runs fsyncs for the event loop, one at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._job: tuple[int, int, Callable[[], None]] | None = None
        self._running = False
        self._outcome: int | OSError | None = None
        self._stopping = False
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="greenstalkd-fsync", daemon=True)
        self._thread.start()

    def start(self, fd: int, target: int, done: Callable[[], None]) -> bool:
        with self._lock:
            if self._running or self._outcome is not None:
                return False
            self._running = True
            self._idle.clear()
            self._job = (fd, target, done)
            self._wake.notify()
        return True

    def wait(self) -> None:
        """Block until no fsync is running."""
        self._idle.wait()

    @property
    def busy(self) -> bool:
        """True while an fsync runs or its outcome waits to be taken."""
        return self._running or self._outcome is not None

    def take(self) -> int | OSError | None:
        """The position the last fsync covers (or its error), once; None if none ended."""
        with self._lock:
            outcome, self._outcome = self._outcome, None
        return outcome

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._job is None and not self._stopping:
                    self._wake.wait()
                if self._job is None:
                    return
                fd, target, done = self._job
                self._job = None
            outcome: int | OSError
            try:
                os.fdatasync(fd)
                outcome = target
            except OSError as exc:
                outcome = exc
            with self._lock:
                self._outcome = outcome
                self._running = False
            self._idle.set()
            done()


class _Replay:
    """Reads the files a block at a time into the job table: the last record wins."""

    def __init__(
        self, jobs: dict[int, Job], counts: dict[int, int], ids: dict[int, array.array[int]]
    ) -> None:
        self.jobs = jobs
        self.counts = counts
        self.ids = ids
        self.pauses: dict[bytes, tuple[int, int]] = {}
        self.max_id = 0
        self.gone = 1
        self.live_bytes = 0
        self.warnings: list[str] = []
        # One object for each tube name, priority, TTR and creation time that
        # many jobs share: after a restart they would otherwise cost one each.
        self._names: dict[bytes, bytes] = {}
        self._numbers: dict[int, int] = {}

    def read_file(self, seq: int, path: str) -> int:
        """Apply every record of one file; returns the file's size.

        Raises BinlogError if the file cannot be read, is not a greenstalkd
        binlog, or has another format version.
        """
        name = f"binlog.{seq}"
        try:
            file = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise BinlogError(f"cannot read {path}: {exc.strerror}") from exc
        scan = _Scan(name)
        with file:
            try:
                self._scan(seq, path, file, scan)
            except OSError as exc:
                raise BinlogError(f"cannot read {path}: {exc.strerror}") from exc
        if scan.records or not scan.size:
            self.warnings += scan.warnings
        elif scan.size < HEADER_SIZE + _HEAD.size:
            # A crash while the file was being started.
            self.warnings.append(f"{name}: incomplete file head ({scan.size} bytes), file ignored")
        elif scan.all_zero:
            self.warnings.append(f"{name}: nothing but zeros ({scan.size} bytes), skipped")
        elif scan.start.startswith(_BEANSTALKD_START):
            raise BinlogError(
                f"{path} looks like a beanstalkd binlog; greenstalkd has a format of its own"
            )
        else:
            raise BinlogError(f"{path} is not a greenstalkd binlog file")
        return scan.size

    def _scan(self, seq: int, path: str, file: io.RawIOBase, scan: _Scan) -> None:
        """Read ``file``: job records inline (most of any log), the rest through :meth:`_apply`.

        Fragments are checked here; anything unusual (damage, zeros, records
        in pieces) goes to ``scan``. This loop is what a restart costs, a
        few microseconds a job: it avoids every call and object it can
        (the tube name, priority, TTR and creation time are shared with the
        job before when equal).
        """
        chunk = bytearray(_READ_SIZE)
        view = memoryview(chunk)
        readinto = file.readinto
        unpack_header = _HEADER.unpack_from
        unpack_job = _JOB.unpack_from
        crc32 = zlib.crc32
        whole_seed = _WHOLE_SEED
        job_size = _JOB.size
        largest = BLOCK - HEADER_SIZE
        no_counters = bytes(PACKED_BYTES)
        states = _STATE_BY_VALUE
        ready = JobState.READY
        reserved = JobState.RESERVED
        new_job = Job.__new__
        jobs = self.jobs
        counts = self.counts
        ids = self.ids[seq]
        tube = b""
        priority = ttr = created = -1
        count = 0
        live = 0
        max_id = self.max_id
        base = 0
        records = 0
        while True:
            length = readinto(chunk)
            if not length:
                break
            scan.took(chunk, length)
            for block in range(0, length, BLOCK):
                end = min(block + BLOCK, length)
                pos = block
                # A fragment carries at least one byte: a header's worth or less is padding.
                while end - pos > HEADER_SIZE:
                    crc, size, kind = unpack_header(chunk, pos)
                    data = pos + HEADER_SIZE
                    stop = data + size
                    if (
                        kind != _WHOLE
                        or stop > end
                        or scan.dirty
                        or crc32(view[data:stop], whole_seed) != crc
                    ):
                        whole = scan.fragment(view, base, pos, end, crc, size, kind)
                        if whole is None:
                            if scan.block_done:
                                break
                            pos = stop
                            continue
                        records += 1
                        self.max_id = max_id
                        self._apply_whole(seq, path, scan, base + pos, whole)
                        max_id = self.max_id
                        pos = stop
                        continue
                    records += 1
                    if chunk[data] != K_JOB or size < job_size:
                        self.max_id = max_id
                        self._apply_whole(seq, path, scan, base + pos, bytes(view[data:stop]))
                        max_id = self.max_id
                        pos = stop
                        continue
                    (_, job_id, job_priority, job_ttr, created_at, deadline_at, state_value,
                     packed, tube_length) = unpack_job(chunk, data)
                    tube_start = data + job_size
                    tube_end = tube_start + tube_length
                    state = states[state_value] if state_value < 5 else None
                    if tube_end > stop or state is None or not tube_length:
                        scan.malformed(base + pos, K_JOB)
                        pos = stop
                        continue
                    if tube_length != len(tube) or not chunk.startswith(tube, tube_start):
                        tube = self._names.setdefault(
                            view[tube_start:tube_end].tobytes(), view[tube_start:tube_end].tobytes()
                        )
                    if job_priority != priority:
                        priority = job_priority
                    if job_ttr != ttr:
                        ttr = job_ttr
                    if created_at != created:
                        created = created_at
                    job = new_job(Job)
                    job.id = job_id
                    job.tube = tube
                    job.priority = priority
                    job.ttr = ttr
                    job.body = view[tube_end:stop].tobytes()
                    job.created_at = created
                    job.packed = 0 if packed == no_counters else int.from_bytes(packed, "little")
                    if state is reserved:
                        job.state = ready
                        job.deadline_at = 0
                    else:
                        job.state = state
                        job.deadline_at = deadline_at
                    job.file = seq
                    old = jobs.get(job_id)
                    if old is not None:
                        counts[old.file] -= 1
                        live -= record_room(job_size + len(old.tube) + len(old.body))
                    jobs[job_id] = job
                    count += 1
                    ids.append(job_id)
                    live += size + 21 if size < largest else record_room(size)
                    if job_id > max_id:
                        max_id = job_id
                    pos = stop
                if pos < end and end - pos <= HEADER_SIZE and chunk.count(0, pos, end) != end - pos:
                    # A fragment header cut short: only the end of a file can hold one.
                    scan.damage(base + pos)
            base += length
        counts[seq] += count
        self.live_bytes += live
        self.max_id = max_id
        scan.records = records
        scan.finish()

    def _apply_whole(self, seq: int, path: str, scan: _Scan, offset: int, payload: bytes) -> None:
        kind = payload[0]
        if kind == K_HEAD:
            _check_head(path, payload)
        elif not self._apply(seq, kind, payload):
            scan.malformed(offset, kind)

    def _apply(self, seq: int, kind: int, payload: bytes) -> bool:
        """Apply one record whose CRCs matched; False if it does not fit its kind."""
        length = len(payload)
        jobs = self.jobs
        if kind == K_JOB:
            if length < _JOB.size:
                return False
            (_, job_id, priority, ttr, created_at, deadline_at, state_value, packed_bytes,
             tube_length) = _JOB.unpack_from(payload)
            tube_end = _JOB.size + tube_length
            state = _STATE_BY_VALUE[state_value] if state_value < 5 else None
            if tube_end > length or state is None or not tube_length:
                return False
            tube = payload[_JOB.size : tube_end]
            packed = int.from_bytes(packed_bytes, "little")
            tube = self._names.setdefault(tube, tube)
            job = Job(job_id, tube, priority, packed & UINT32, ttr, payload[tube_end:], created_at)
            job.packed = packed
            if state is JobState.RESERVED:
                state, deadline_at = JobState.READY, 0
            job.state = state
            job.deadline_at = deadline_at
            job.file = seq
            old = jobs.get(job_id)
            if old is not None:
                self.counts[old.file] -= 1
                self.live_bytes -= _job_room(old, old.tube)
            jobs[job_id] = job
            self.counts[seq] += 1
            self.ids[seq].append(job_id)
            self.live_bytes += _job_room(job, tube)
            if job_id > self.max_id:
                self.max_id = job_id
        elif kind == K_UPDATE:
            if length != _UPDATE.size:
                return False
            _, job_id, state_value, priority, deadline_at, packed_bytes = _UPDATE.unpack(payload)
            state = _STATE_BY_VALUE[state_value] if state_value < 5 else None
            if state is None:
                return False
            if job_id > self.max_id:
                self.max_id = job_id
            changed = jobs.get(job_id)
            if changed is not None:
                if state is JobState.RESERVED:
                    state, deadline_at = JobState.READY, 0
                changed.state = state
                changed.priority = priority
                changed.deadline_at = deadline_at
                changed.packed = int.from_bytes(packed_bytes, "little")
        elif kind == K_DELETE:
            if length != _ID.size:
                return False
            job_id = _ID.unpack(payload)[1]
            if job_id > self.max_id:
                self.max_id = job_id
            gone = jobs.pop(job_id, None)
            if gone is not None:
                self.counts[gone.file] -= 1
                self.live_bytes -= _job_room(gone, gone.tube)
        elif kind == K_PAUSE:
            if length < _PAUSE.size:
                return False
            _, unpause_at, pause = _PAUSE.unpack_from(payload)
            self.pauses[payload[_PAUSE.size :]] = (pause, unpause_at)
        elif kind == K_IDS:
            if length != _ID.size:
                return False
            self.max_id = max(self.max_id, _ID.unpack(payload)[1])
        elif kind == K_GONE:
            if length != _ID.size:
                return False
            self.gone = max(self.gone, _ID.unpack(payload)[1])
        else:
            return False
        return True


def _check_head(path: str, payload: bytes) -> None:
    if len(payload) != _HEAD.size:
        raise BinlogError(f"{path} is not a greenstalkd binlog file")
    _, magic, version, _ = _HEAD.unpack(payload)
    if magic != MAGIC:
        raise BinlogError(f"{path} is not a greenstalkd binlog file")
    if version != VERSION:
        raise BinlogError(f"{path} has binlog format version {version}, not {VERSION}")


class _Scan:
    """What reading one file found besides whole, good records: gaps, pieces, zeros.

    ``dirty`` is set while something needs looking at before the next
    fragment (a gap or zeros that a good fragment would end, a record in
    pieces), so the reader's fast path checks one attribute.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.warnings: list[str] = []
        self.size = 0
        self.records = 0
        self.all_zero = True
        #: The file's first bytes.
        self.start = b""
        self.dirty = False
        #: Set by :meth:`fragment` when the rest of the block is to be skipped.
        self.block_done = False
        # Where damage or an unexplained run of zeros began, if it has not ended.
        self._bad_from: int | None = None
        self._zero_from: int | None = None
        self._parts: list[bytes] = []
        self._record_at = 0

    def took(self, chunk: bytearray, length: int) -> None:
        """Note a chunk read from the file."""
        if not self.size:
            self.start = bytes(chunk[:8])
        self.size += length
        if self.all_zero and chunk.count(0, 0, length) != length:
            self.all_zero = False

    def fragment(
        self, view: memoryview, base: int, pos: int, end: int, crc: int, size: int, kind: int
    ) -> bytes | None:
        """Deal with a fragment the fast path did not take; returns a record it completes.

        Sets :attr:`block_done` when the rest of the block must be skipped.
        """
        self.block_done = False
        data = pos + HEADER_SIZE
        stop = data + size
        offset = base + pos
        if kind == 0 and size == 0 and crc == 0:
            # Where writing stopped: the rest of the block must be zeros too.
            if bytes(view[pos:end]).count(0) != end - pos:
                self.damage(offset)
            elif self._zero_from is None:
                self._zero_from = offset
                self.dirty = True
            self.block_done = True
            return None
        if stop > end or not 1 <= kind <= 4 or zlib.crc32(view[data:stop], _SEEDS[kind]) != crc:
            self.damage(offset)
            self._drop_parts(offset)
            self.block_done = True
            return None
        if kind <= _FIRST or self._parts:
            self._good(offset)
        if kind == _WHOLE:
            self._drop_parts(offset)
            self._settle()
            return bytes(view[data:stop])
        if kind == _FIRST:
            self._drop_parts(offset)
            self._record_at = offset
            self._parts.append(bytes(view[data:stop]))
        elif self._parts:
            self._parts.append(bytes(view[data:stop]))
            if kind == _LAST:
                record = b"".join(self._parts)
                self._parts.clear()
                self._settle()
                return record
        else:
            # The rest of a record whose start was lost: part of the gap.
            self.damage(offset)
        self._settle()
        return None

    def damage(self, offset: int) -> None:
        """Bad bytes at ``offset``: they join any gap or zeros before them."""
        if self._bad_from is None:
            self._bad_from = self._zero_from if self._zero_from is not None else offset
        self._zero_from = None
        self.dirty = True

    def malformed(self, offset: int, kind: int) -> None:
        """A record with good CRCs that does not fit its kind."""
        self.warnings.append(
            f"{self.name}: offset {offset}: malformed record of kind {chr(kind)!r}, skipped"
        )

    def finish(self) -> None:
        """The end of the file: report a record cut short or damage that ran to the end."""
        if self._parts:
            self.warnings.append(
                f"{self.name}: offset {self._record_at}: torn record at the end "
                f"({self.size - self._record_at} bytes lost)"
            )
        if self._bad_from is not None:
            self.warnings.append(
                f"{self.name}: offset {self._bad_from}: damaged data at the end, "
                f"{self.size - self._bad_from} bytes skipped"
            )

    def _good(self, offset: int) -> None:
        """A good fragment at ``offset``: any damage or zeros before it were a gap."""
        start = self._bad_from if self._bad_from is not None else self._zero_from
        if start is not None:
            self.warnings.append(
                f"{self.name}: offset {start}: damaged data, {offset - start} bytes skipped"
            )
        self._bad_from = None
        self._zero_from = None

    def _drop_parts(self, offset: int) -> None:
        if self._parts:
            self.warnings.append(
                f"{self.name}: offset {self._record_at}: a record cut short at offset "
                f"{offset} is lost"
            )
            self._parts.clear()

    def _settle(self) -> None:
        self.dirty = bool(self._parts) or self._bad_from is not None or self._zero_from is not None
