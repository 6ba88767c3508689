"""The server's job state: tubes, queues, reservations and timers, with no I/O.

Everything here is driven by method calls and an injected clock (a function
returning nanoseconds), so the timing rules of beanstalkd 1.12 (delays, TTR,
the one-second DEADLINE_SOON margin, pauses, reserve timeouts) can be tested
without sleeping. The network layer calls :meth:`ServerState.tick` when
:meth:`ServerState.next_wakeup` says a timer is due, and learns of replies
to waiting reserves through each session's ``wake`` callback.

Lazy deletion keeps the hot path cheap: a heap entry stays in its heap when
its job leaves, and is recognised as stale because the job no longer points
at it (``job.entry is not entry``). Heaps are rebuilt when stale entries
outnumber live ones, so memory stays proportional to the live jobs.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Callable, TypeVar, Union

from .._protocol.outgoing import DEADLINE_SOON, TIMED_OUT, reserved
from .job import Job, JobState

if TYPE_CHECKING:
    from .binlog import Binlog, Recovery

SECOND = 1_000_000_000
SAFETY_MARGIN = SECOND
URGENT_PRIORITY = 1024
DEFAULT_TUBE = b"default"

Clock = Callable[[], int]
Wake = Callable[[bytes], None]
HeapEntry = tuple[int, int, Job]

# Rebuild a lazily-deleted heap once it holds this many entries more than
# twice its live ones.
_HEAP_SLACK = 64


class Tube:
    """A named queue: ready jobs by (priority, id), delayed by deadline, buried in order."""

    __slots__ = (
        "buried",
        "cmd_delete",
        "cmd_pause_tube",
        "delayed",
        "delayed_count",
        "name",
        "pause",
        "ready",
        "ready_count",
        "reserved_count",
        "timer",
        "total_jobs",
        "unpause_at",
        "urgent_count",
        "using",
        "waiting",
        "watching",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.ready: list[HeapEntry] = []
        self.delayed: list[HeapEntry] = []
        self.buried: OrderedDict[int, Job] = OrderedDict()
        #: Sessions blocked in a reserve that watch this tube, oldest first.
        self.waiting: dict[Session, None] = {}
        self.ready_count = 0
        self.urgent_count = 0
        self.reserved_count = 0
        self.delayed_count = 0
        self.total_jobs = 0
        self.using = 0
        self.watching = 0
        self.cmd_delete = 0
        self.cmd_pause_tube = 0
        #: The pause in nanoseconds; 0 when the tube is not paused.
        self.pause = 0
        self.unpause_at = 0
        self.timer: TimerEntry | None = None

    @property
    def job_count(self) -> int:
        """Jobs in the tube in any state."""
        return self.ready_count + self.reserved_count + self.delayed_count + len(self.buried)

    def top_ready(self) -> Job | None:
        """The ready job with the lowest (priority, id), or None."""
        return _live_top(self.ready)

    def top_delayed(self) -> Job | None:
        """The delayed job with the earliest deadline (then lowest id), or None."""
        return _live_top(self.delayed)


def _live_top(heap: list[HeapEntry]) -> Job | None:
    """The job of the heap's first live entry, dropping the stale ones above it."""
    while heap:
        entry = heap[0]
        if entry[2].entry is entry:
            return entry[2]
        heapq.heappop(heap)
    return None


class Session:
    """One client connection's state: its tubes, reserved jobs and a pending reserve."""

    __slots__ = (
        "closed",
        "producer",
        "reserved",
        "soonest",
        "timer",
        "use",
        "wait_deadline",
        "waiting",
        "wake",
        "watched",
        "worker",
    )

    def __init__(self, use: Tube, wake: Wake) -> None:
        self.use = use
        self.watched: dict[Tube, None] = {use: None}
        self.reserved: dict[int, Job] = {}
        #: The reserved job with the earliest deadline, None when unknown or none.
        self.soonest: Job | None = None
        self.waiting = False
        #: When a waiting reserve times out; None to wait for ever.
        self.wait_deadline: int | None = None
        self.producer = False
        self.worker = False
        self.closed = False
        self.timer: TimerEntry | None = None
        #: Called with the reply when a waiting reserve ends.
        self.wake = wake

    def soonest_job(self) -> Job | None:
        """The reserved job whose TTR ends first."""
        if self.soonest is None and self.reserved:
            self.soonest = min(self.reserved.values(), key=_deadline)
        return self.soonest


def _deadline(job: Job) -> int:
    return job.deadline_at


TimerTarget = Union[Session, Tube]
TimerEntry = tuple[int, int, TimerTarget]


class ServerState:
    """Every job, tube and session of one server, and the rules that move jobs.

    ``clock`` returns the time in nanoseconds (wall clock in the real server,
    since a binlog keeps absolute deadlines across restarts). The command
    methods take arguments as :func:`~greenstalk._protocol.incoming.parse_command`
    gives them and return what the reply needs; the caller formats it.
    """

    def __init__(
        self,
        clock: Clock,
        max_job_size: int = 65535,
        binlog: Binlog | None = None,
    ) -> None:
        self.clock = clock
        self.max_job_size = max_job_size
        self.binlog = binlog
        self.started_at = clock()
        self.jobs: dict[int, Job] = {}
        self.tubes: dict[bytes, Tube] = {}
        self.default_tube = self.tube(DEFAULT_TUBE)
        self.next_id = 1
        self.draining = False
        self.ready_count = 0
        self.urgent_count = 0
        self.reserved_count = 0
        self.delayed_count = 0
        self.buried_count = 0
        self.job_timeouts = 0
        self.total_jobs = 0
        self.current_connections = 0
        self.total_connections = 0
        self.producers = 0
        self.workers = 0
        self.waiting_count = 0
        self._timers: list[TimerEntry] = []
        self._live_timers = 0
        self._timer_sequence = 0

    # Tubes

    def tube(self, name: bytes) -> Tube:
        """The tube called ``name``, created when missing."""
        tube = self.tubes.get(name)
        if tube is None:
            tube = self.tubes[name] = Tube(name)
        return tube

    def _drop_if_unused(self, tube: Tube) -> None:
        """Forget a tube nobody uses, watches or fills, as beanstalkd does (not ``default``)."""
        if (
            tube.using == 0
            and tube.watching == 0
            and tube.job_count == 0
            and tube is not self.default_tube
        ):
            _swap_remove(self.tubes, tube.name)
            if tube.timer is not None:
                tube.timer = None
                self._live_timers -= 1
            if tube.pause and self.binlog is not None:
                # The pause goes with the tube; a tube made again later starts unpaused.
                self.binlog.pause(tube.name, 0, 0)

    # Sessions

    def open_session(self, wake: Wake) -> Session:
        """A new connection: it uses and watches ``default``."""
        session = Session(self.default_tube, wake)
        self.default_tube.using += 1
        self.default_tube.watching += 1
        self.current_connections += 1
        self.total_connections += 1
        return session

    def close_session(self, session: Session) -> None:
        """A connection went away: its reserved jobs go back to ready, uncounted."""
        if session.closed:
            return
        session.closed = True
        if session.waiting:
            self._stop_waiting(session)
        self._set_timer(session, None)
        self.current_connections -= 1
        self.producers -= session.producer
        self.workers -= session.worker
        jobs = list(session.reserved.values())
        session.reserved.clear()
        session.soonest = None
        for job in jobs:
            self._unreserve(job)
            self._make_ready(job)
        session.use.using -= 1
        self._drop_if_unused(session.use)
        for tube in session.watched:
            tube.watching -= 1
            self._drop_if_unused(tube)
        session.watched.clear()

    def use(self, session: Session, name: bytes) -> None:
        """Make ``name`` the tube ``session`` puts into."""
        old = session.use
        tube = self.tube(name)
        if tube is old:
            return
        tube.using += 1
        old.using -= 1
        session.use = tube
        self._drop_if_unused(old)

    def watch(self, session: Session, name: bytes) -> int:
        """Add ``name`` to the session's watch list; returns how many it watches."""
        tube = self.tube(name)
        if tube not in session.watched:
            session.watched[tube] = None
            tube.watching += 1
        return len(session.watched)

    def ignore(self, session: Session, name: bytes) -> int | None:
        """Drop ``name`` from the watch list; None when it is the only tube watched."""
        tube = self.tubes.get(name)
        if tube is None or tube not in session.watched:
            return len(session.watched)
        if len(session.watched) == 1:
            return None
        session.watched = _swap_remove(session.watched, tube)
        tube.watching -= 1
        self._drop_if_unused(tube)
        return len(session.watched)

    # Putting jobs

    def take_id(self) -> int:
        """Use up the next job id: beanstalkd does so once a put line is accepted."""
        job_id = self.next_id
        self.next_id += 1
        return job_id

    def put(
        self, session: Session, job_id: int, priority: int, delay: int, ttr: int, body: bytes
    ) -> Job:
        """Store a new job in the session's used tube, ready or delayed."""
        now = self.clock()
        tube = session.use
        job = Job(job_id, tube, priority, delay, ttr or 1, body, now)
        self.jobs[job_id] = job
        tube.total_jobs += 1
        self.total_jobs += 1
        if delay:
            self._make_delayed(job, now + delay * SECOND)
        else:
            self._make_ready(job)
        if self.binlog is not None:
            self.binlog.put(job)
        return job

    # Moving jobs between states

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = JobState.READY
        job.deadline_at = 0
        entry = (job.priority, job.id, job)
        job.entry = entry
        heap = tube.ready
        heapq.heappush(heap, entry)
        tube.ready_count += 1
        self.ready_count += 1
        if job.priority < URGENT_PRIORITY:
            tube.urgent_count += 1
            self.urgent_count += 1
        if tube.waiting and not tube.pause:
            self._serve_waiters(tube)
        elif len(heap) > 2 * tube.ready_count + _HEAP_SLACK:
            tube.ready = _rebuilt(heap)

    def _remove_ready(self, job: Job) -> None:
        tube = job.tube
        job.entry = None
        tube.ready_count -= 1
        self.ready_count -= 1
        if job.priority < URGENT_PRIORITY:
            tube.urgent_count -= 1
            self.urgent_count -= 1

    def _make_delayed(self, job: Job, deadline: int) -> None:
        tube = job.tube
        job.state = JobState.DELAYED
        job.deadline_at = deadline
        entry = (deadline, job.id, job)
        job.entry = entry
        heapq.heappush(tube.delayed, entry)
        tube.delayed_count += 1
        self.delayed_count += 1
        if len(tube.delayed) > 2 * tube.delayed_count + _HEAP_SLACK:
            tube.delayed = _rebuilt(tube.delayed)
        self._set_timer_if_sooner(tube, deadline)

    def _remove_delayed(self, job: Job) -> None:
        job.entry = None
        job.tube.delayed_count -= 1
        self.delayed_count -= 1

    def _make_buried(self, job: Job) -> None:
        job.state = JobState.BURIED
        job.deadline_at = 0
        job.tube.buried[job.id] = job
        self.buried_count += 1

    def _remove_buried(self, job: Job) -> None:
        del job.tube.buried[job.id]
        self.buried_count -= 1

    def _reserve(self, session: Session, job: Job, now: int) -> None:
        job.state = JobState.RESERVED
        job.deadline_at = deadline = now + job.ttr * SECOND
        job.holder = session
        job.reserves += 1
        job.tube.reserved_count += 1
        self.reserved_count += 1
        session.reserved[job.id] = job
        soonest = session.soonest
        if soonest is None:
            if len(session.reserved) == 1:
                session.soonest = job
        elif deadline < soonest.deadline_at:
            session.soonest = job
        self._set_timer_if_sooner(session, deadline)

    def _unreserve(self, job: Job) -> None:
        """Take a reserved job from its holder (the caller clears ``reserved`` itself)."""
        session = job.holder
        job.holder = None
        job.tube.reserved_count -= 1
        self.reserved_count -= 1
        if session is not None and session.soonest is job:
            session.soonest = None

    def _detach(self, job: Job) -> None:
        """Take a job out of whatever queue holds it."""
        state = job.state
        if state is JobState.READY:
            self._remove_ready(job)
        elif state is JobState.DELAYED:
            self._remove_delayed(job)
        elif state is JobState.BURIED:
            self._remove_buried(job)
        else:
            session = job.holder
            assert session is not None  # a reserved job always has a holder
            del session.reserved[job.id]
            self._unreserve(job)

    # Reserving

    def reserve(self, session: Session, timeout: int | None) -> Job | bytes | None:
        """A ``reserve`` (``timeout`` None) or ``reserve-with-timeout``.

        Returns the job reserved, ``DEADLINE_SOON`` or ``TIMED_OUT`` to reply
        at once, or None when the session now waits; its ``wake`` callback
        gets the reply later. A negative timeout waits for ever, as 1.12's.
        """
        self._set_worker(session)
        now = self.clock()
        job = self._best_ready(session)
        if job is not None:
            heapq.heappop(job.tube.ready)  # the job is the top of its tube's heap
            self._remove_ready(job)
            self._reserve(session, job, now)
            return job
        if self._in_margin(session, now):
            return DEADLINE_SOON
        if timeout == 0:
            return TIMED_OUT
        session.waiting = True
        self.waiting_count += 1
        session.wait_deadline = now + timeout * SECOND if timeout and timeout > 0 else None
        for tube in session.watched:
            tube.waiting[session] = None
        when = self._session_tick_at(session)
        if when is not None:
            self._set_timer_if_sooner(session, when)
        return None

    def _best_ready(self, session: Session) -> Job | None:
        best: Job | None = None
        for tube in session.watched:
            if tube.ready_count and not tube.pause:
                job = tube.top_ready()
                if job is not None and (
                    best is None or (job.priority, job.id) < (best.priority, best.id)
                ):
                    best = job
        return best

    def _in_margin(self, session: Session, now: int) -> bool:
        job = session.soonest_job()
        return job is not None and now >= job.deadline_at - SAFETY_MARGIN

    def _stop_waiting(self, session: Session) -> None:
        session.waiting = False
        session.wait_deadline = None
        self.waiting_count -= 1
        for tube in session.watched:
            del tube.waiting[session]

    def _serve_waiters(self, tube: Tube) -> None:
        """Hand the tube's best ready jobs to the sessions waiting on it."""
        now = self.clock()
        while tube.waiting and tube.ready_count:
            job = tube.top_ready()
            assert job is not None  # ready_count counts live entries
            session = next(iter(tube.waiting))
            self._stop_waiting(session)
            heapq.heappop(tube.ready)
            self._remove_ready(job)
            self._reserve(session, job, now)
            session.wake(reserved(job.id, job.body))

    def end_wait(self, session: Session) -> None:
        """The peer half-closed while waiting: the reserve ends with TIMED_OUT."""
        if session.waiting:
            self._stop_waiting(session)
            session.wake(TIMED_OUT)

    def reserve_job(self, session: Session, job_id: int) -> Job | None:
        """``reserve-job``: take any job that is not reserved, ignoring tube and pause."""
        job = self.jobs.get(job_id)
        if job is None or job.state is JobState.RESERVED:
            return None
        self._set_worker(session)
        self._detach(job)
        self._reserve(session, job, self.clock())
        return job

    def _set_worker(self, session: Session) -> None:
        if not session.worker:
            session.worker = True
            self.workers += 1

    def set_producer(self, session: Session) -> None:
        """Count the session as a producer (a put got past its size checks)."""
        if not session.producer:
            session.producer = True
            self.producers += 1

    # Commands on one job

    def delete(self, session: Session, job_id: int) -> bool:
        """Delete a job that is not reserved by another session."""
        job = self.jobs.get(job_id)
        if job is None or (job.state is JobState.RESERVED and job.holder is not session):
            return False
        self._detach(job)
        del self.jobs[job_id]
        job.tube.cmd_delete += 1
        if self.binlog is not None:
            self.binlog.delete(job)
        self._drop_if_unused(job.tube)
        return True

    def release(self, session: Session, job_id: int, priority: int, delay: int) -> bool:
        """Give back a job the session holds, with a new priority, ready or delayed."""
        job = session.reserved.pop(job_id, None)
        if job is None:
            return False
        self._unreserve(job)
        job.priority = priority
        job.delay = delay
        job.releases += 1
        if delay:
            self._make_delayed(job, self.clock() + delay * SECOND)
        else:
            self._make_ready(job)
        if self.binlog is not None:
            self.binlog.update(job)
        return True

    def bury(self, session: Session, job_id: int, priority: int) -> bool:
        """Bury a job the session holds, with a new priority."""
        job = session.reserved.pop(job_id, None)
        if job is None:
            return False
        self._unreserve(job)
        job.priority = priority
        job.buries += 1
        self._make_buried(job)
        if self.binlog is not None:
            self.binlog.update(job)
        return True

    def touch(self, session: Session, job_id: int) -> bool:
        """Restart the TTR of a job the session holds."""
        job = session.reserved.get(job_id)
        if job is None:
            return False
        job.deadline_at = deadline = self.clock() + job.ttr * SECOND
        if session.soonest is job:
            session.soonest = None
        self._set_timer_if_sooner(session, deadline)
        return True

    def _kick(self, job: Job) -> None:
        if job.state is JobState.BURIED:
            self._remove_buried(job)
        else:
            self._remove_delayed(job)
        job.kicks += 1
        self._make_ready(job)
        if self.binlog is not None:
            self.binlog.update(job)

    def kick(self, session: Session, bound: int) -> int:
        """Kick up to ``bound`` buried jobs of the used tube, or delayed ones if none is buried."""
        tube = session.use
        count = 0
        if tube.buried:
            while count < bound and tube.buried:
                self._kick(next(iter(tube.buried.values())))
                count += 1
        else:
            while count < bound:
                job = tube.top_delayed()
                if job is None:
                    break
                heapq.heappop(tube.delayed)
                self._kick(job)
                count += 1
        return count

    def kick_job(self, job_id: int) -> bool:
        """Kick one buried or delayed job, in any tube."""
        job = self.jobs.get(job_id)
        if job is None or job.state not in (JobState.BURIED, JobState.DELAYED):
            return False
        self._kick(job)
        return True

    def peek_ready(self, session: Session) -> Job | None:
        """The used tube's next ready job (pause ignored)."""
        return session.use.top_ready()

    def peek_delayed(self, session: Session) -> Job | None:
        """The used tube's delayed job due first."""
        return session.use.top_delayed()

    def peek_buried(self, session: Session) -> Job | None:
        """The used tube's oldest buried job."""
        buried = session.use.buried
        return next(iter(buried.values())) if buried else None

    def pause_tube(self, name: bytes, delay: int) -> bool:
        """Pause an existing tube for ``delay`` seconds (0 ends a pause almost at once)."""
        tube = self.tubes.get(name)
        if tube is None:
            return False
        tube.pause = delay * SECOND or 1
        tube.unpause_at = self.clock() + tube.pause
        tube.cmd_pause_tube += 1
        self._set_timer_if_sooner(tube, tube.unpause_at)
        if self.binlog is not None:
            self.binlog.pause(name, delay, tube.unpause_at)
        return True

    def enter_drain_mode(self) -> None:
        """Refuse every put from now on (SIGUSR1)."""
        self.draining = True

    # Timers

    def _set_timer_if_sooner(self, target: TimerTarget, when: int) -> None:
        current = target.timer
        if current is None or when < current[0]:
            self._set_timer(target, when)

    def _set_timer(self, target: TimerTarget, when: int | None) -> None:
        if target.timer is not None:
            self._live_timers -= 1
        if when is None:
            target.timer = None
            return
        self._timer_sequence += 1
        entry = (when, self._timer_sequence, target)
        target.timer = entry
        self._live_timers += 1
        heapq.heappush(self._timers, entry)
        if len(self._timers) > 2 * self._live_timers + _HEAP_SLACK:
            live = [e for e in self._timers if e[2].timer is e]
            heapq.heapify(live)
            self._timers = live

    def next_wakeup(self) -> int | None:
        """When :meth:`tick` next has work (possibly none), or None if no timer is set."""
        timers = self._timers
        while timers and timers[0][2].timer is not timers[0]:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def tick(self) -> None:
        """Run every timer that is due: delayed jobs, TTRs, reserve timeouts, pauses."""
        now = self.clock()
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            target = entry[2]
            if target.timer is not entry:
                continue
            target.timer = None
            self._live_timers -= 1
            if isinstance(target, Session):
                self._session_due(target, now)
            else:
                self._tube_due(target, now)

    def _session_tick_at(self, session: Session) -> int | None:
        """When the session next needs attention: a TTR, DEADLINE_SOON, or a reserve timeout."""
        job = session.soonest_job()
        when = None
        if job is not None:
            when = job.deadline_at - SAFETY_MARGIN if session.waiting else job.deadline_at
        if session.waiting and session.wait_deadline is not None:
            when = session.wait_deadline if when is None else min(when, session.wait_deadline)
        return when

    def _session_due(self, session: Session, now: int) -> None:
        # Decide the waiting reserve's answer first: DEADLINE_SOON wins over
        # TIMED_OUT, and a job expiring below must not go to this session.
        reply = None
        if session.waiting:
            if self._in_margin(session, now):
                reply = DEADLINE_SOON
            elif session.wait_deadline is not None and now >= session.wait_deadline:
                reply = TIMED_OUT
            if reply is not None:
                self._stop_waiting(session)
        expired = [job for job in session.reserved.values() if job.deadline_at <= now]
        for job in expired:
            del session.reserved[job.id]
            self._unreserve(job)
            job.timeouts += 1
            self.job_timeouts += 1
            self._make_ready(job)
        if reply is not None:
            session.wake(reply)
        when = self._session_tick_at(session)
        if when is not None:
            self._set_timer_if_sooner(session, when)

    def _tube_due(self, tube: Tube, now: int) -> None:
        if tube.pause and tube.unpause_at <= now:
            tube.pause = 0
            tube.unpause_at = 0
        while True:
            job = tube.top_delayed()
            if job is None or job.deadline_at > now:
                break
            heapq.heappop(tube.delayed)
            self._remove_delayed(job)
            self._make_ready(job)
        if tube.waiting and tube.ready_count and not tube.pause:
            self._serve_waiters(tube)
        job = tube.top_delayed()
        when = job.deadline_at if job is not None else None
        if tube.pause:
            when = tube.unpause_at if when is None else min(when, tube.unpause_at)
        if when is not None:
            self._set_timer_if_sooner(tube, when)

    # Recovery

    def recover(self, recovery: Recovery) -> None:
        """Rebuild the jobs and pauses a binlog replayed, and log them afresh."""
        now = self.clock()
        for record in recovery.jobs:
            tube = self.tube(record.tube)
            job = Job(
                record.id,
                tube,
                record.priority,
                record.delay,
                record.ttr,
                record.body,
                record.created_at,
            )
            job.reserves = record.reserves
            job.timeouts = record.timeouts
            job.releases = record.releases
            job.buries = record.buries
            job.kicks = record.kicks
            self.jobs[job.id] = job
            if record.state is JobState.BURIED:
                self._make_buried(job)
            elif record.state is JobState.DELAYED and record.deadline_at > now:
                self._make_delayed(job, record.deadline_at)
            else:
                self._make_ready(job)
            if self.binlog is not None:
                self.binlog.put(job)
        for pause in recovery.pauses:
            paused = self.tubes.get(pause.tube)
            if paused is not None and pause.unpause_at > now:
                tube = paused
                tube.pause = pause.pause * SECOND or 1
                tube.unpause_at = pause.unpause_at
                self._set_timer_if_sooner(tube, tube.unpause_at)
                if self.binlog is not None:
                    self.binlog.pause(tube.name, pause.pause, pause.unpause_at)
        self.next_id = max(self.next_id, recovery.max_id + 1)
        for tube in list(self.tubes.values()):
            self._drop_if_unused(tube)

    # Inspection

    def job(self, job_id: int) -> Job | None:
        """The job with this id, in any state."""
        return self.jobs.get(job_id)

    def iter_tubes(self) -> Iterator[Tube]:
        """Every tube, in creation order."""
        return iter(self.tubes.values())


def _rebuilt(heap: list[HeapEntry]) -> list[HeapEntry]:
    live = [entry for entry in heap if entry[2].entry is entry]
    heapq.heapify(live)
    return live


K = TypeVar("K")
V = TypeVar("V")


def _swap_remove(items: dict[K, V], key: K) -> dict[K, V]:
    """Remove ``key`` the way beanstalkd removes from its arrays: the last item takes its place.

    This keeps ``list-tubes`` and ``list-tubes-watched`` in beanstalkd's
    order. Changes ``items`` in place, and returns it.
    """
    last = next(reversed(items))
    if last == key:
        del items[key]
        return items
    keys = list(items)
    keys[keys.index(key)] = keys.pop()
    values = {k: items[k] for k in keys}
    items.clear()
    items.update(values)
    return items
