"""greenstalkd's job state core, driven by a fake clock: no sockets, no sleeping."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greenstalk._protocol.outgoing import DEADLINE_SOON, TIMED_OUT, reserved
from greenstalk.server.job import Job, JobState
from greenstalk.server.state import SECOND, ServerState, Session


def state_of(job: Job) -> JobState:
    """The job's state, read afresh (mypy would narrow a repeated ``job.state``)."""
    return job.state


class FakeClock:
    """Nanoseconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * SECOND)


class World:
    """A server state, its clock, and what each session was woken with."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.state = ServerState(self.clock)
        self.woken: dict[Session, list[bytes]] = {}

    def session(self) -> Session:
        replies: list[bytes] = []
        session = self.state.open_session(replies.append)
        self.woken[session] = replies
        return session

    def put(self, session: Session, body: bytes = b"x", priority: int = 100, delay: int = 0,
            ttr: int = 60) -> Job:
        return self.state.put(session, self.state.take_id(), priority, delay, ttr, body)

    def advance(self, seconds: float) -> None:
        """Move the clock and run the timers as the event loop would, at each wake-up."""
        target = self.clock.now + int(seconds * SECOND)
        while True:
            wakeup = self.state.next_wakeup()
            if wakeup is None or wakeup > target:
                break
            self.clock.now = max(self.clock.now, wakeup)
            self.state.tick()
        self.clock.now = target
        self.state.tick()


@pytest.fixture
def world() -> World:
    return World()


def test_ready_jobs_go_by_priority_then_id(world: World) -> None:
    session = world.session()
    jobs = [world.put(session, priority=p) for p in (5, 1, 5, 0)]
    order = [world.state.reserve(session, None) for _ in jobs]
    assert order == [jobs[3], jobs[1], jobs[0], jobs[2]]


def test_a_session_watching_several_tubes_gets_the_best_job_across_them(world: World) -> None:
    producer, consumer = world.session(), world.session()
    world.state.use(producer, b"a")
    low = world.put(producer, priority=10)
    world.state.use(producer, b"b")
    high = world.put(producer, priority=1)
    world.state.watch(consumer, b"a")
    world.state.watch(consumer, b"b")
    assert world.state.reserve(consumer, None) is high
    assert world.state.reserve(consumer, None) is low


def test_delayed_job_becomes_ready_at_its_deadline(world: World) -> None:
    session = world.session()
    job = world.put(session, delay=5)
    assert state_of(job) is JobState.DELAYED
    assert world.state.reserve(session, 0) == TIMED_OUT
    world.advance(4.999)
    assert state_of(job) is JobState.DELAYED
    world.advance(0.001)
    assert state_of(job) is JobState.READY
    assert world.state.reserve(session, 0) is job


def test_a_waiting_reserve_gets_a_delayed_job_when_it_is_due(world: World) -> None:
    producer, consumer = world.session(), world.session()
    job = world.put(producer, delay=2)
    assert world.state.reserve(consumer, None) is None
    assert world.state.waiting_count == 1
    world.advance(2)
    assert world.woken[consumer] == [reserved(job.id, job.body)]
    assert consumer.reserved == {job.id: job}
    assert world.state.waiting_count == 0


def test_ttr_expiry_returns_the_job_to_ready(world: World) -> None:
    session = world.session()
    job = world.put(session, ttr=3)
    assert world.state.reserve(session, None) is job
    world.advance(2.999)
    assert state_of(job) is JobState.RESERVED
    world.advance(0.001)
    assert state_of(job) is JobState.READY
    assert (job.timeouts, world.state.job_timeouts) == (1, 1)
    assert not world.state.release(session, job.id, 0, 0)
    assert world.state.delete(session, job.id)


def test_touch_restarts_the_ttr(world: World) -> None:
    session = world.session()
    job = world.put(session, ttr=3)
    world.state.reserve(session, None)
    world.advance(2)
    assert world.state.touch(session, job.id)
    world.advance(2.5)
    assert state_of(job) is JobState.RESERVED
    world.advance(0.5)
    assert state_of(job) is JobState.READY


def test_deadline_soon_one_second_before_the_ttr_ends(world: World) -> None:
    session = world.session()
    world.put(session, ttr=3)
    world.state.reserve(session, None)
    assert world.state.reserve(session, None) is None  # waits
    world.advance(1.999)
    assert world.woken[session] == []
    world.advance(0.001)
    assert world.woken[session] == [DEADLINE_SOON]
    assert not session.waiting


def test_deadline_soon_at_once_inside_the_margin(world: World) -> None:
    session = world.session()
    world.put(session, ttr=1)
    world.state.reserve(session, None)
    assert world.state.reserve(session, 1) == DEADLINE_SOON
    assert world.state.reserve(session, None) == DEADLINE_SOON


def test_a_ready_job_is_handed_out_even_inside_the_margin(world: World) -> None:
    session = world.session()
    first = world.put(session, ttr=1)
    second = world.put(session)
    assert world.state.reserve(session, None) is first
    assert world.state.reserve(session, None) is second
    assert len(session.reserved) == 2


def test_deadline_soon_wins_over_timed_out(world: World) -> None:
    session = world.session()
    world.put(session, ttr=5)
    world.state.reserve(session, None)
    assert world.state.reserve(session, 1) is None
    world.advance(1)
    assert world.woken[session] == [TIMED_OUT]
    assert world.state.reserve(session, 10) is None
    world.advance(2.999)
    assert world.woken[session] == [TIMED_OUT]
    world.advance(0.001)
    assert world.woken[session] == [TIMED_OUT, DEADLINE_SOON]


def test_reserve_timeouts(world: World) -> None:
    session = world.session()
    assert world.state.reserve(session, 0) == TIMED_OUT
    assert world.state.reserve(session, 2) is None
    world.advance(1.999)
    assert world.woken[session] == []
    world.advance(0.001)
    assert world.woken[session] == [TIMED_OUT]
    assert world.state.reserve(session, -1) is None  # 1.12 waits for ever
    world.advance(10**6)
    assert world.woken[session] == [TIMED_OUT]
    assert session.waiting


def test_paused_tube_holds_its_jobs_until_the_pause_ends(world: World) -> None:
    producer, consumer = world.session(), world.session()
    job = world.put(producer)
    assert world.state.pause_tube(b"default", 3)
    assert world.state.reserve(consumer, 0) == TIMED_OUT
    assert world.state.reserve(consumer, None) is None
    world.advance(2.999)
    assert world.woken[consumer] == []
    world.advance(0.001)
    assert world.woken[consumer] == [reserved(job.id, job.body)]
    assert world.state.default_tube.pause == 0


def test_pause_zero_ends_a_pause_almost_at_once(world: World) -> None:
    session = world.session()
    job = world.put(session)
    world.state.pause_tube(b"default", 100)
    world.state.pause_tube(b"default", 0)
    assert world.state.default_tube.pause == 1
    world.advance(0.000000001)
    assert world.state.reserve(session, 0) is job


def test_pause_of_a_missing_tube(world: World) -> None:
    assert not world.state.pause_tube(b"nosuch", 1)


def test_closing_a_session_releases_its_jobs_to_waiters(world: World) -> None:
    holder, waiter = world.session(), world.session()
    job = world.put(holder)
    world.state.reserve(holder, None)
    assert world.state.reserve(waiter, None) is None
    world.state.close_session(holder)
    assert waiter.reserved == {job.id: job}
    assert job.timeouts == 0
    assert job.reserves == 2
    assert world.state.current_connections == 1


def test_release_bury_and_kick(world: World) -> None:
    session = world.session()
    jobs = [world.put(session) for _ in range(3)]
    for job in jobs:
        world.state.reserve(session, None)
        assert world.state.bury(session, job.id, 7)
    assert world.state.peek_buried(session) is jobs[0]
    assert world.state.kick(session, 2) == 2
    assert [j.state for j in jobs] == [JobState.READY, JobState.READY, JobState.BURIED]
    assert jobs[0].priority == 7
    assert jobs[0].kicks == 1
    assert world.state.kick_job(jobs[2].id)
    assert not world.state.kick_job(jobs[2].id)
    taken = world.state.reserve(session, None)
    assert isinstance(taken, Job)
    job = taken
    assert world.state.release(session, job.id, 1, 5)
    assert state_of(job) is JobState.DELAYED
    assert job.delay == 5
    assert world.state.peek_delayed(session) is job
    assert world.state.kick(session, 10) == 1
    assert state_of(job) is JobState.READY


def test_kick_takes_delayed_jobs_by_deadline(world: World) -> None:
    session = world.session()
    late = world.put(session, delay=9)
    early = world.put(session, delay=2)
    assert world.state.kick(session, 1) == 1
    assert state_of(early) is JobState.READY
    assert state_of(late) is JobState.DELAYED


def test_reserve_job_takes_any_unreserved_job(world: World) -> None:
    session, other = world.session(), world.session()
    world.state.use(session, b"elsewhere")
    delayed = world.put(session, delay=100)
    world.state.pause_tube(b"elsewhere", 100)
    assert world.state.reserve_job(other, delayed.id) is delayed
    assert world.state.reserve_job(session, delayed.id) is None
    assert world.state.reserve_job(session, 999) is None
    world.advance(100)
    assert state_of(delayed) is JobState.READY  # a timed-out job goes to ready, not delayed


def test_delete_rules(world: World) -> None:
    holder, other = world.session(), world.session()
    job = world.put(holder)
    world.state.reserve(holder, None)
    assert not world.state.delete(other, job.id)
    assert world.state.delete(holder, job.id)
    assert not world.state.delete(holder, job.id)
    assert world.state.default_tube.cmd_delete == 1


def test_tubes_vanish_when_nothing_refers_to_them(world: World) -> None:
    session = world.session()
    world.state.use(session, b"a")
    job = world.put(session)
    world.state.use(session, b"default")
    assert b"a" in world.state.tubes
    world.state.delete(session, job.id)
    assert b"a" not in world.state.tubes
    assert world.state.watch(session, b"w") == 2
    assert world.state.ignore(session, b"w") == 1
    assert b"w" not in world.state.tubes
    assert world.state.ignore(session, b"default") is None
    assert world.state.ignore(session, b"nosuch") == 1


def test_drain_mode(world: World) -> None:
    world.state.enter_drain_mode()
    assert world.state.draining


def test_half_close_ends_a_waiting_reserve(world: World) -> None:
    session = world.session()
    world.state.reserve(session, None)
    world.state.end_wait(session)
    assert world.woken[session] == [TIMED_OUT]
    world.state.end_wait(session)
    assert world.woken[session] == [TIMED_OUT]


def test_heaps_stay_proportional_to_live_jobs(world: World) -> None:
    session = world.session()
    keep = world.put(session, priority=0)
    for _ in range(5000):
        job = world.put(session, priority=5)
        world.state.delete(session, job.id)
        delayed = world.put(session, delay=50)
        world.state.delete(session, delayed.id)
    tube = world.state.default_tube
    assert len(tube.ready) < 200
    assert len(tube.delayed) < 200
    assert world.state.peek_ready(session) is keep


def test_timers_stay_proportional_to_sessions(world: World) -> None:
    sessions = [world.session() for _ in range(3)]
    for round_number in range(3000):
        session = sessions[round_number % 3]
        job = world.put(session, ttr=1 + round_number % 50)
        world.state.reserve(session, None)
        world.state.touch(session, job.id)
        world.state.delete(session, job.id)
        world.clock.advance(0.001)
    assert len(world.state._timers) < 200


# Property test: whatever the operations, every job is in exactly one place.

OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["put", "reserve", "reserve0", "delete", "release", "bury", "kick", "kick_job",
             "touch", "use", "watch", "ignore", "close", "advance", "pause", "reserve_job"]
        ),
        st.integers(0, 3),
        st.integers(0, 12),
    ),
    max_size=80,
)


def check_invariants(world: World, sessions: list[Session]) -> None:
    state = world.state
    places: dict[int, list[str]] = {job_id: [] for job_id in state.jobs}
    counts = {"ready": 0, "delayed": 0, "buried": 0, "reserved": 0, "urgent": 0}
    for tube in state.tubes.values():
        assert state.tubes[tube.name] is tube
        # Every ready or delayed job has an entry where the heaps will find it.
        live_ready = [
            job
            for job in state.jobs.values()
            if job.tube is tube and job.state is JobState.READY
        ]
        for job in live_ready:
            assert job.id in tube.ready[job.priority]
            assert job.priority in tube.priorities
        live_delayed = [
            job
            for job in state.jobs.values()
            if job.tube is tube and job.state is JobState.DELAYED
        ]
        for job in live_delayed:
            assert (job.deadline_at, job.id) in tube.delayed
        assert len(live_ready) == tube.ready_count
        assert len(live_delayed) == tube.delayed_count
        assert tube.ready_entries == sum(map(len, tube.ready.values()))
        for job in live_ready:
            assert state_of(job) is JobState.READY
            assert job.tube is tube
            places[job.id].append("ready")
        for job in live_delayed:
            assert state_of(job) is JobState.DELAYED
            assert job.tube is tube
            places[job.id].append("delayed")
        for job in tube.buried.values():
            assert state_of(job) is JobState.BURIED
            assert job.tube is tube
            places[job.id].append("buried")
        counts["ready"] += tube.ready_count
        counts["delayed"] += tube.delayed_count
        counts["buried"] += len(tube.buried)
        counts["urgent"] += tube.urgent_count
    holders: dict[int, Session] = {}
    for session in sessions:
        if session.closed:
            assert not session.reserved
            continue
        for job_id, job in session.reserved.items():
            assert state_of(job) is JobState.RESERVED
            assert job_id not in holders, "a job reserved by two sessions"
            holders[job_id] = session
            places[job_id].append("reserved")
        if session.waiting:
            assert all(session in tube.waiting for tube in session.watched)
        soonest = session.soonest
        if soonest is not None:
            assert soonest.id in session.reserved
            assert soonest.deadline_at == min(j.deadline_at for j in session.reserved.values())
    counts["reserved"] = len(holders)
    assert all(len(where) == 1 for where in places.values()), places
    assert counts == {
        "ready": state.ready_count,
        "delayed": state.delayed_count,
        "buried": state.buried_count,
        "reserved": state.reserved_count,
        "urgent": state.urgent_count,
    }
    assert state.waiting_count == sum(1 for s in sessions if s.waiting and not s.closed)


NAMES = [b"default", b"a", b"b"]


def apply(world: World, session: Session, name: str, number: int) -> None:
    """Run one operation of the property test."""
    state = world.state
    tube = NAMES[number % 3]
    if name == "put":
        world.put(session, priority=number * 300, delay=number % 3, ttr=1 + number % 4)
    elif name == "reserve":
        state.reserve(session, None)
    elif name == "reserve0":
        state.reserve(session, number % 3)
    elif name == "delete":
        state.delete(session, number)
    elif name == "release":
        state.release(session, number, number * 100, number % 2)
    elif name == "bury":
        state.bury(session, number, 5)
    elif name == "kick":
        state.kick(session, number % 4)
    elif name == "kick_job":
        state.kick_job(number)
    elif name == "touch":
        state.touch(session, number)
    elif name == "use":
        state.use(session, tube)
    elif name == "watch":
        state.watch(session, tube)
    elif name == "ignore":
        state.ignore(session, tube)
    elif name == "close":
        state.close_session(session)
    elif name == "advance":
        world.advance(number / 4)
    elif name == "pause":
        state.pause_tube(tube, number % 3)
    else:
        state.reserve_job(session, number)


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_every_job_is_in_exactly_one_state(operations: list[tuple[str, int, int]]) -> None:
    world = World()
    sessions = [world.session() for _ in range(4)]
    for name, which, number in operations:
        session = sessions[which]
        if session.closed:
            session = sessions[which] = world.session()
        if session.waiting and name not in ("close", "advance"):
            continue  # the server reads nothing from a waiting session
        apply(world, session, name, number)
        check_invariants(world, sessions)


# Costs that grow with the number of tubes or jobs


def test_closing_a_session_that_watches_many_tubes_is_linear(world: World) -> None:
    """Issue 9: each removal rebuilt the tube table, so closing 20,000 watches took 13 s."""
    sessions = [world.session() for _ in range(3)]
    for index in range(60_000):
        world.state.watch(sessions[index % 3], b"t%d" % index)
    started = time.perf_counter()
    for session in sessions:
        world.state.close_session(session)
    elapsed = time.perf_counter() - started
    assert list(world.state.tubes) == [b"default"]
    # About 0.05 s here; the quadratic removal took minutes for this many.
    assert elapsed < 5


def test_tube_order_after_removals_is_beanstalkds(world: World) -> None:
    """1.12 removes from its tube array by moving the last tube into the hole."""
    session = world.session()
    for name in (b"a", b"b", b"c", b"d"):
        world.state.watch(session, name)
    world.state.ignore(session, b"b")
    assert [tube.name for tube in world.state.iter_tubes()] == [b"default", b"a", b"d", b"c"]
    assert [tube.name for tube in session.watched] == [b"default", b"a", b"d", b"c"]
    world.state.ignore(session, b"c")
    world.state.ignore(session, b"default")
    assert [tube.name for tube in session.watched] == [b"d", b"a"]


def test_a_job_costs_little_memory_beyond_its_body(world: World) -> None:
    """A million jobs must fit in 1.25 times beanstalkd's memory (issue 9)."""
    session = world.session()
    bodies = [b"%100d" % index for index in range(50_000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for body in bodies:
            world.state.put(session, world.state.take_id(), 0, 0, 60, body)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The job (112 bytes), its id, its place in the job table and the ready
    # heap: about 200 bytes. It was 360 before jobs lost their heap entries.
    assert used / len(bodies) < 230
