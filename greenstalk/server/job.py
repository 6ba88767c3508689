"""A job as the server keeps it, and its states.

A server may hold millions of jobs, so a :class:`Job` is kept small: ten
slots (112 bytes in CPython) and no per-job heap entries elsewhere. The
fields only ``stats-job`` and the log read (the delay and the five
counters, each a uint32 in beanstalkd) share one int, :attr:`Job.packed`.
"""

from __future__ import annotations

import enum
from typing import Any


class JobState(enum.IntEnum):
    """Where a job is. The values are the ones beanstalkd's binlog uses."""

    READY = 1
    RESERVED = 2
    BURIED = 3
    DELAYED = 4


STATE_NAMES = {
    JobState.READY: "ready",
    JobState.RESERVED: "reserved",
    JobState.BURIED: "buried",
    JobState.DELAYED: "delayed",
}

UINT32 = 0xFFFFFFFF
# Where each uint32 field sits in Job.packed, in bits.
DELAY = 0
RESERVES = 32
TIMEOUTS = 64
RELEASES = 96
BURIES = 128
KICKS = 160
PACKED_BYTES = 24


def bumped(packed: int, field: int) -> int:
    """``packed`` with the counter at bit ``field`` one higher, wrapping at 2**32 as C's uint32."""
    if (packed >> field) & UINT32 == UINT32:
        return packed - (UINT32 << field)
    return packed + (1 << field)


def with_delay(packed: int, delay: int) -> int:
    """``packed`` with its delay field set to ``delay`` seconds."""
    return (packed & ~UINT32) | delay


class Job:
    """One job: its fixed fields, where it is, and the counters ``stats-job`` shows.

    Times (``created_at``, ``deadline_at``) are nanoseconds of the server's
    clock; ``ttr`` is whole seconds, as the protocol gives it.
    ``deadline_at`` is the end of the TTR while reserved and the moment a
    delayed job becomes ready; otherwise it is 0. ``file`` is the binlog
    file holding the job's full record (0 without a binlog). ``tube`` is
    the :class:`~greenstalk.server.state.Tube` (during a log replay, its
    name until the server swaps the tube in).
    """

    __slots__ = (
        "body",
        "created_at",
        "deadline_at",
        "file",
        "id",
        "packed",
        "priority",
        "state",
        "ttr",
        "tube",
    )

    def __init__(
        self,
        job_id: int,
        tube: Any,
        priority: int,
        delay: int,
        ttr: int,
        body: bytes,
        created_at: int,
    ) -> None:
        self.id = job_id
        self.tube = tube
        self.priority = priority
        self.ttr = ttr
        self.body = body
        self.created_at = created_at
        self.deadline_at = 0
        self.state = JobState.READY
        self.file = 0
        #: The delay and the counters, 32 bits each: see the module docstring.
        self.packed = delay

    def __repr__(self) -> str:
        return f"<Job {self.id} {STATE_NAMES[self.state]} in {self.tube!r}>"

    @property
    def delay(self) -> int:
        """The delay in seconds of the last put or release."""
        return self.packed & UINT32

    @property
    def reserves(self) -> int:
        """How many times the job was reserved."""
        return (self.packed >> RESERVES) & UINT32

    @property
    def timeouts(self) -> int:
        """How many times its TTR ran out."""
        return (self.packed >> TIMEOUTS) & UINT32

    @property
    def releases(self) -> int:
        """How many times it was released."""
        return (self.packed >> RELEASES) & UINT32

    @property
    def buries(self) -> int:
        """How many times it was buried."""
        return (self.packed >> BURIES) & UINT32

    @property
    def kicks(self) -> int:
        """How many times it was kicked."""
        return (self.packed >> KICKS) & UINT32
