"""A job as the server keeps it, and its states."""

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


class Job:
    """One job: its fixed fields, where it is, and the counters ``stats-job`` shows.

    Times (``created_at``, ``deadline_at``) are nanoseconds of the server's
    clock; ``delay`` and ``ttr`` are whole seconds, as the protocol gives
    them. ``deadline_at`` is the end of the TTR while reserved and the
    moment a delayed job becomes ready; otherwise it is 0. ``file`` is the
    binlog file holding the job's full record (0 without a binlog).
    """

    __slots__ = (
        "body",
        "buries",
        "created_at",
        "deadline_at",
        "delay",
        "entry",
        "file",
        "holder",
        "id",
        "kicks",
        "priority",
        "releases",
        "reserves",
        "state",
        "timeouts",
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
        #: The :class:`~greenstalk.server.state.Tube` the job belongs to, for life.
        self.tube = tube
        self.priority = priority
        self.delay = delay
        self.ttr = ttr
        self.body = body
        self.created_at = created_at
        self.deadline_at = 0
        self.state = JobState.READY
        self.reserves = 0
        self.timeouts = 0
        self.releases = 0
        self.buries = 0
        self.kicks = 0
        self.file = 0
        #: The session holding the job while it is reserved.
        self.holder: Any | None = None
        #: The job's entry in its tube's ready or delayed heap, while it has one.
        self.entry: tuple[int, int, Job] | None = None
