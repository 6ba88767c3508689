"""The server's job state: tubes, queues, reservations and timers, with no I/O.

Everything here is driven by method calls and an injected clock (a function
returning nanoseconds), so the timing rules of beanstalkd 1.12 (delays, TTR,
the one-second DEADLINE_SOON margin, pauses, reserve timeouts) can be tested
without sleeping. The network layer calls :meth:`ServerState.tick` when
:meth:`ServerState.next_wakeup` says a timer is due, and learns of replies
to waiting reserves through each session's ``wake`` callback.

Memory and the hot path: a tube's ready jobs are heaps of job *ids*, one
heap per priority (new ids are the largest, so a put pushes at the bottom
of its heap at no cost), and delayed jobs a heap of ``(deadline, id)``.
Entries are deleted lazily: an entry is live while the job with that id is
in that state with that priority or deadline, and a heap is rebuilt once
stale entries outnumber live ones. A stale entry that comes back to life
(a job deleted from the middle of the ready heap cannot come back, but one
taken by ``reserve-job`` can be released with the same priority) names the
same job at the same place, so it is harmless: serving the job makes every
other entry of it stale again.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Callable, Generic, TypeVar, Union

from .._protocol.outgoing import DEADLINE_SOON, TIMED_OUT, reserved
from .job import BURIES, KICKS, RELEASES, RESERVES, TIMEOUTS, Job, JobState, bumped, with_delay

if TYPE_CHECKING:
    from .binlog import Binlog, Recovery

SECOND = 1_000_000_000
SAFETY_MARGIN = SECOND
URGENT_PRIORITY = 1024
DEFAULT_TUBE = b"default"

Clock = Callable[[], int]
Wake = Callable[[bytes], None]
Jobs = dict[int, Job]

READY = JobState.READY
RESERVED = JobState.RESERVED
BURIED = JobState.BURIED
DELAYED = JobState.DELAYED

# Rebuild a lazily-deleted heap once it holds this many entries more than
# twice its live ones.
_HEAP_SLACK = 64
# Jobs put within this many nanoseconds share one creation time (and one int
# object: 36 bytes a job in a burst of puts); ``age`` counts whole seconds.
_CREATED_RESOLUTION = 1_000_000


class LogFullError(Exception):
    """The job log has no room for the record a command needs; nothing was changed."""


T = TypeVar("T", bound=Hashable)


class SwapSet(Generic[T]):
    """An ordered set that removes the way beanstalkd's arrays do, in O(1).

    The last item takes the removed one's place, so iteration order matches
    1.12's ``list-tubes`` and ``list-tubes-watched``.
    """

    __slots__ = ("_index", "items")

    def __init__(self, items: Iterable[T] = ()) -> None:
        #: The items in order; read it, never change it directly.
        self.items: list[T] = []
        self._index: dict[T, int] = {}
        for item in items:
            self.add(item)

    def add(self, item: T) -> bool:
        """Append ``item`` unless present; returns whether it was added."""
        if item in self._index:
            return False
        self._index[item] = len(self.items)
        self.items.append(item)
        return True

    def remove(self, item: T) -> None:
        """Remove ``item``; the last item moves into its place. Raises KeyError if absent."""
        index = self._index.pop(item)
        last = self.items.pop()
        if last is not item:
            self.items[index] = last
            self._index[last] = index

    def clear(self) -> None:
        """Remove every item."""
        self.items.clear()
        self._index.clear()

    def __contains__(self, item: object) -> bool:
        return item in self._index

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


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
        "priorities",
        "ready",
        "ready_count",
        "ready_entries",
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
        #: Heaps of ready job ids by priority; ``priorities`` is a heap of their keys.
        self.ready: dict[int, list[int]] = {}
        self.priorities: list[int] = []
        #: Entries in the ready heaps, stale ones included.
        self.ready_entries = 0
        self.delayed: list[tuple[int, int]] = []
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

    def __repr__(self) -> str:
        return f"<Tube {self.name.decode('ascii', 'replace')}>"

    @property
    def job_count(self) -> int:
        """Jobs in the tube in any state."""
        return self.ready_count + self.reserved_count + self.delayed_count + len(self.buried)

    def top_ready(self, jobs: Jobs) -> Job | None:
        """The ready job with the lowest (priority, id), or None; drops stale entries above it."""
        priorities = self.priorities
        while priorities:
            priority = priorities[0]
            ids = self.ready[priority]
            while ids:
                job = jobs.get(ids[0])
                if job is not None and job.state is READY and job.priority == priority:
                    return job
                heapq.heappop(ids)
                self.ready_entries -= 1
            del self.ready[priority]
            heapq.heappop(priorities)
        return None

    def push_ready(self, job: Job) -> None:
        """Add a ready job's entry to its priority's heap."""
        ids = self.ready.get(job.priority)
        if ids is None:
            self.ready[job.priority] = [job.id]
            heapq.heappush(self.priorities, job.priority)
        else:
            heapq.heappush(ids, job.id)
        self.ready_entries += 1

    def pop_ready(self, job: Job) -> None:
        """Remove the entry of ``job``, which :meth:`top_ready` just returned."""
        heapq.heappop(self.ready[job.priority])
        self.ready_entries -= 1

    def rebuild_ready_if_stale(self, jobs: Jobs) -> None:
        """Drop stale ready entries once they outnumber the live ones."""
        if self.ready_entries <= 2 * self.ready_count + _HEAP_SLACK:
            return
        live: dict[int, set[int]] = {}
        for ids in self.ready.values():
            for job_id in ids:
                job = jobs.get(job_id)
                if job is not None and job.state is READY:
                    live.setdefault(job.priority, set()).add(job_id)
        # A sorted list is a valid heap.
        by_priority = {priority: sorted(ids) for priority, ids in live.items()}
        self.ready = by_priority
        self.priorities = sorted(by_priority)
        self.ready_entries = sum(map(len, by_priority.values()))

    def top_delayed(self, jobs: Jobs) -> Job | None:
        """The delayed job with the earliest deadline (then lowest id), or None."""
        delayed = self.delayed
        while delayed:
            deadline, job_id = delayed[0]
            job = jobs.get(job_id)
            if job is not None and job.state is DELAYED and job.deadline_at == deadline:
                return job
            heapq.heappop(delayed)
        return None

    def rebuild_delayed_if_stale(self, jobs: Jobs) -> None:
        """Drop stale delayed entries once they outnumber the live ones."""
        if len(self.delayed) <= 2 * self.delayed_count + _HEAP_SLACK:
            return
        live = set()
        for deadline, job_id in self.delayed:
            job = jobs.get(job_id)
            if job is not None and job.state is DELAYED and job.deadline_at == deadline:
                live.add((deadline, job_id))
        self.delayed = sorted(live)


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
        self.watched: SwapSet[Tube] = SwapSet((use,))
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
    gives them and return what the reply needs; the caller formats it. With
    a ``binlog``, a command whose record the log has no room for raises
    :class:`LogFullError` before it changes anything.
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
        self._created_at = self.started_at
        self.jobs: Jobs = {}
        self.tubes: dict[bytes, Tube] = {}
        # The tubes in beanstalkd's order (see SwapSet).
        self._tube_order: SwapSet[Tube] = SwapSet()
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
            self._tube_order.add(tube)
        return tube

    def _drop_if_unused(self, tube: Tube) -> None:
        """Forget a tube nobody uses, watches or fills, as beanstalkd does (not ``default``)."""
        if (
            tube.using == 0
            and tube.watching == 0
            and tube.job_count == 0
            and tube is not self.default_tube
        ):
            del self.tubes[tube.name]
            self._tube_order.remove(tube)
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
            self._unreserve(session, job)
            self._make_ready(job)
        session.use.using -= 1
        self._drop_if_unused(session.use)
        for tube in session.watched.items:
            tube.watching -= 1
            self._drop_if_unused(tube)
        session.watched.clear()
        # The callback usually closes over the connection: let it go now.
        session.wake = _ignore_reply

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
        if session.watched.add(tube):
            tube.watching += 1
        return len(session.watched)

    def ignore(self, session: Session, name: bytes) -> int | None:
        """Drop ``name`` from the watch list; None when it is the only tube watched."""
        tube = self.tubes.get(name)
        if tube is None or tube not in session.watched:
            return len(session.watched)
        if len(session.watched) == 1:
            return None
        session.watched.remove(tube)
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
        """Store a new job in the session's used tube, ready or delayed.

        Raises LogFullError when the log has no room for it.
        """
        tube = session.use
        binlog = self.binlog
        if binlog is not None and not binlog.reserve_put(len(tube.name), len(body)):
            raise LogFullError
        now = self.clock()
        created = self._created_at
        if not 0 <= now - created < _CREATED_RESOLUTION:
            self._created_at = created = now
        job = Job(job_id, tube, priority, delay, ttr or 1, body, created)
        self.jobs[job_id] = job
        tube.total_jobs += 1
        self.total_jobs += 1
        if delay:
            self._make_delayed(job, now + delay * SECOND)
        else:
            self._make_ready(job)
        if binlog is not None:
            binlog.put(job)
        return job

    def _reserve_update(self) -> None:
        if self.binlog is not None and not self.binlog.reserve_update():
            raise LogFullError

    # Moving jobs between states

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = READY
        job.deadline_at = 0
        tube.push_ready(job)
        tube.ready_count += 1
        self.ready_count += 1
        if job.priority < URGENT_PRIORITY:
            tube.urgent_count += 1
            self.urgent_count += 1
        if tube.waiting and not tube.pause:
            self._serve_waiters(tube)

    def _remove_ready(self, job: Job) -> None:
        """Count a ready job out; its heap entry, if still there, is now stale."""
        tube = job.tube
        tube.ready_count -= 1
        self.ready_count -= 1
        if job.priority < URGENT_PRIORITY:
            tube.urgent_count -= 1
            self.urgent_count -= 1

    def _make_delayed(self, job: Job, deadline: int) -> None:
        tube = job.tube
        job.state = DELAYED
        job.deadline_at = deadline
        heapq.heappush(tube.delayed, (deadline, job.id))
        tube.delayed_count += 1
        self.delayed_count += 1
        tube.rebuild_delayed_if_stale(self.jobs)
        self._set_timer_if_sooner(tube, deadline)

    def _remove_delayed(self, job: Job) -> None:
        job.tube.delayed_count -= 1
        self.delayed_count -= 1

    def _make_buried(self, job: Job) -> None:
        job.state = BURIED
        job.deadline_at = 0
        job.tube.buried[job.id] = job
        self.buried_count += 1

    def _remove_buried(self, job: Job) -> None:
        del job.tube.buried[job.id]
        self.buried_count -= 1

    def _reserve(self, session: Session, job: Job, now: int) -> None:
        job.state = RESERVED
        job.deadline_at = deadline = now + job.ttr * SECOND
        job.packed = bumped(job.packed, RESERVES)
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

    def _unreserve(self, session: Session, job: Job) -> None:
        """Count a reserved job out (the caller takes it out of ``session.reserved``)."""
        job.tube.reserved_count -= 1
        self.reserved_count -= 1
        if session.soonest is job:
            session.soonest = None

    def _detach(self, job: Job) -> None:
        """Take a ready, delayed or buried job out of its queue."""
        state = job.state
        if state is READY:
            self._remove_ready(job)
            job.tube.rebuild_ready_if_stale(self.jobs)
        elif state is DELAYED:
            self._remove_delayed(job)
        else:
            self._remove_buried(job)

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
            job.tube.pop_ready(job)
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
        for tube in session.watched.items:
            tube.waiting[session] = None
        when = self._session_tick_at(session)
        if when is not None:
            self._set_timer_if_sooner(session, when)
        return None

    def _best_ready(self, session: Session) -> Job | None:
        best: Job | None = None
        jobs = self.jobs
        for tube in session.watched.items:
            if tube.ready_count and not tube.pause:
                job = tube.top_ready(jobs)
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
        for tube in session.watched.items:
            del tube.waiting[session]

    def _serve_waiters(self, tube: Tube) -> None:
        """Hand the tube's best ready jobs to the sessions waiting on it."""
        now = self.clock()
        jobs = self.jobs
        while tube.waiting and tube.ready_count:
            job = tube.top_ready(jobs)
            assert job is not None  # ready_count counts live entries
            session = next(iter(tube.waiting))
            self._stop_waiting(session)
            tube.pop_ready(job)
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
        if job is None or job.state is RESERVED:
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
        """Delete a job that is not reserved by another session.

        Never raises LogFullError: a put keeps room in the log for its delete.
        """
        job = self.jobs.get(job_id)
        if job is None:
            return False
        if job.state is RESERVED:
            if session.reserved.pop(job_id, None) is None:
                return False
            self._unreserve(session, job)
        else:
            self._detach(job)
        del self.jobs[job_id]
        job.tube.cmd_delete += 1
        if self.binlog is not None:
            self.binlog.delete(job)
        self._drop_if_unused(job.tube)
        return True

    def release(self, session: Session, job_id: int, priority: int, delay: int) -> bool:
        """Give back a job the session holds, with a new priority, ready or delayed.

        Raises LogFullError (the job stays reserved) when the log has no room.
        """
        job = session.reserved.get(job_id)
        if job is None:
            return False
        self._reserve_update()
        del session.reserved[job_id]
        self._unreserve(session, job)
        job.priority = priority
        job.packed = bumped(with_delay(job.packed, delay), RELEASES)
        if delay:
            self._make_delayed(job, self.clock() + delay * SECOND)
        else:
            self._make_ready(job)
        if self.binlog is not None:
            self.binlog.update(job)
        return True

    def bury(self, session: Session, job_id: int, priority: int) -> bool:
        """Bury a job the session holds, with a new priority.

        Raises LogFullError (the job stays reserved) when the log has no room.
        """
        job = session.reserved.get(job_id)
        if job is None:
            return False
        self._reserve_update()
        del session.reserved[job_id]
        self._unreserve(session, job)
        job.priority = priority
        job.packed = bumped(job.packed, BURIES)
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
        if job.state is BURIED:
            self._remove_buried(job)
        else:
            self._remove_delayed(job)
        job.packed = bumped(job.packed, KICKS)
        self._make_ready(job)
        if self.binlog is not None:
            self.binlog.update(job)

    def kick(self, session: Session, bound: int) -> int:
        """Kick up to ``bound`` buried jobs of the used tube, or delayed ones if none is buried.

        Stops early, as beanstalkd does, when the log has no room for another record.
        """
        tube = session.use
        count = 0
        binlog = self.binlog
        if tube.buried:
            while count < bound and tube.buried:
                if binlog is not None and not binlog.reserve_update():
                    break
                self._kick(next(iter(tube.buried.values())))
                count += 1
        else:
            while count < bound:
                job = tube.top_delayed(self.jobs)
                if job is None or (binlog is not None and not binlog.reserve_update()):
                    break
                heapq.heappop(tube.delayed)
                self._kick(job)
                count += 1
        return count

    def kick_job(self, job_id: int) -> bool:
        """Kick one buried or delayed job, in any tube.

        Raises LogFullError when the log has no room.
        """
        job = self.jobs.get(job_id)
        if job is None or job.state not in (BURIED, DELAYED):
            return False
        self._reserve_update()
        self._kick(job)
        return True

    def peek_ready(self, session: Session) -> Job | None:
        """The used tube's next ready job (pause ignored)."""
        return session.use.top_ready(self.jobs)

    def peek_delayed(self, session: Session) -> Job | None:
        """The used tube's delayed job due first."""
        return session.use.top_delayed(self.jobs)

    def peek_buried(self, session: Session) -> Job | None:
        """The used tube's oldest buried job."""
        buried = session.use.buried
        return next(iter(buried.values())) if buried else None

    def pause_tube(self, name: bytes, delay: int) -> bool:
        """Pause an existing tube for ``delay`` seconds (0 ends a pause almost at once).

        Raises LogFullError when the log has no room for the pause.
        """
        tube = self.tubes.get(name)
        if tube is None:
            return False
        self._reserve_update()
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
            self._unreserve(session, job)
            job.packed = bumped(job.packed, TIMEOUTS)
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
        jobs = self.jobs
        while True:
            job = tube.top_delayed(jobs)
            if job is None or job.deadline_at > now:
                break
            heapq.heappop(tube.delayed)
            self._remove_delayed(job)
            self._make_ready(job)
        if tube.waiting and tube.ready_count and not tube.pause:
            self._serve_waiters(tube)
        job = tube.top_delayed(jobs)
        when = job.deadline_at if job is not None else None
        if tube.pause:
            when = tube.unpause_at if when is None else min(when, tube.unpause_at)
        if when is not None:
            self._set_timer_if_sooner(tube, when)

    # Recovery

    def recover(self, recovery: Recovery) -> None:
        """Take in the jobs and pauses a binlog replayed (before any session opens).

        The recovered jobs dict becomes this state's ``jobs`` (the log keeps
        it too, to find the live jobs of its old files); their ``tube`` is a
        name until here. Nothing is logged again: the jobs stay in the files
        that hold them.
        """
        now = self.clock()
        if self.jobs:
            raise RuntimeError("recover() needs a state without jobs")
        self.jobs = jobs = recovery.jobs
        buried: list[Job] = []
        last: Tube | None = None
        for job in jobs.values():
            name = job.tube
            if last is None or last.name != name:
                last = self.tube(name)
            job.tube = last
            state = job.state
            if state is READY or (state is DELAYED and job.deadline_at <= now):
                self._count_ready(job, last)
            elif state is DELAYED:
                last.delayed.append((job.deadline_at, job.id))
                last.delayed_count += 1
                self.delayed_count += 1
            else:
                buried.append(job)
        buried.sort(key=_job_id)
        for job in buried:
            self._make_buried(job)
        for tube in self._tube_order.items:
            for ids in tube.ready.values():
                heapq.heapify(ids)
            heapq.heapify(tube.priorities)
            if tube.delayed:
                heapq.heapify(tube.delayed)
                self._set_timer_if_sooner(tube, tube.delayed[0][0])
        for pause in recovery.pauses:
            paused = self.tubes.get(pause.tube)
            if paused is not None and pause.unpause_at > now:
                paused.pause = pause.pause * SECOND or 1
                paused.unpause_at = pause.unpause_at
                self._set_timer_if_sooner(paused, paused.unpause_at)
        self.next_id = max(self.next_id, recovery.max_id + 1)
        for tube in list(self._tube_order.items):
            self._drop_if_unused(tube)

    def _count_ready(self, job: Job, tube: Tube) -> None:
        """Make a recovered job ready; its heap is put in order afterwards."""
        job.state = READY
        job.deadline_at = 0
        ids = tube.ready.get(job.priority)
        if ids is None:
            tube.ready[job.priority] = [job.id]
            tube.priorities.append(job.priority)
        else:
            ids.append(job.id)
        tube.ready_entries += 1
        tube.ready_count += 1
        self.ready_count += 1
        if job.priority < URGENT_PRIORITY:
            tube.urgent_count += 1
            self.urgent_count += 1

    # Inspection

    def job(self, job_id: int) -> Job | None:
        """The job with this id, in any state."""
        return self.jobs.get(job_id)

    def iter_tubes(self) -> Iterator[Tube]:
        """Every tube, in beanstalkd's order."""
        return iter(self._tube_order.items)


def _job_id(job: Job) -> int:
    return job.id


def _ignore_reply(reply: bytes) -> None:
    pass
