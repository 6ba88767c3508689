"""greenstalk.Pool and greenstalk.aio.Pool against three real servers, beanstalkd and greenstalkd.

Servers are killed, frozen with SIGSTOP and restarted at the same address.
Every test runs with the blocking pool and with the asyncio one (driven from
this thread through an event loop in another).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import resource
import signal
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable, cast

import pytest

import greenstalk
import greenstalk.aio
from greenstalk.testing import ServerProcess, run_server

from .blocking_aio import LoopThread

MakePool = Callable[..., "greenstalk.Pool[Any]"]
# Short timeouts and retries, so failovers and come-backs happen within a test.
FAST = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "retry_base": 0.05, "retry_cap": 0.2}


class Cluster:
    """Three servers: beanstalkd over TCP, greenstalkd over TCP and over a Unix socket."""

    KINDS = (("beanstalkd", False), ("greenstalkd", False), ("greenstalkd", True))

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self.servers: list[ServerProcess] = []
        # Each keeps a job log, so a killed server comes back with its jobs.
        self._logs = [
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pool-")) for _ in self.KINDS
        ]
        for index, (kind, unix) in enumerate(self.KINDS):
            self.servers.append(self._start(index, kind, unix=unix))

    def _start(
        self, index: int, kind: str, unix: bool = False, address: Any = None
    ) -> ServerProcess:
        return self._stack.enter_context(
            run_server(
                kind, unix=unix, address=address, in_process=False, args=["-b", self._logs[index]]
            )
        )

    @property
    def addresses(self) -> list[Any]:
        return [server.address for server in self.servers]

    def client(self, index: int) -> greenstalk.Client[bytes]:
        return self._stack.enter_context(
            greenstalk.Client(self.servers[index].address, socket_timeout=10)
        )

    def stat(self, index: int, name: str) -> Any:
        """A server-wide statistic of server ``index``."""
        with greenstalk.Client(self.servers[index].address, socket_timeout=10) as client:
            return client.stats()[name]  # type: ignore[literal-required]

    def ready(self, index: int, tube: str = "default") -> int:
        """How many ready jobs ``tube`` has on server ``index``."""
        with greenstalk.Client(self.servers[index].address, socket_timeout=10) as client:
            try:
                return client.stats_tube(tube)["current-jobs-ready"]
            except greenstalk.NotFoundError:
                return 0

    def kill(self, index: int) -> None:
        process = self.servers[index].process
        assert process is not None
        process.kill()
        process.wait()

    def signal(self, index: int, number: int) -> None:
        process = self.servers[index].process
        assert process is not None
        process.send_signal(number)

    def restart(self, index: int) -> None:
        """Start the same kind of server again at the address of server ``index``."""
        old = self.servers[index]
        address = old.address
        if isinstance(address, str):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
        self.servers[index] = self._start(index, old.kind, address=address)


class BlockingAioPool:
    """A greenstalk.aio.Pool whose coroutine methods block until done."""

    def __init__(self, runner: LoopThread, *args: Any, **kwargs: Any) -> None:
        self._runner = runner
        self.aio_pool: greenstalk.aio.Pool[Any] = greenstalk.aio.Pool(*args, **kwargs)
        runner.run(self.aio_pool.open())

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.aio_pool, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attribute(*args, **kwargs))

        return call


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with contextlib.ExitStack() as stack:
        yield Cluster(stack)


@pytest.fixture(params=["sync", "aio"])
def make_pool(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[MakePool]:
    """Make pools of the cluster (blocking, then asyncio ones); all closed at the end."""
    pools: list[Any] = []
    runner = LoopThread() if request.param == "aio" else None

    def make(*args: Any, **kwargs: Any) -> greenstalk.Pool[Any]:
        addresses = kwargs.pop("addresses", cluster.addresses)
        if runner is None:
            pool: Any = greenstalk.Pool(addresses, *args, **kwargs)
        else:
            pool = BlockingAioPool(runner, addresses, *args, **kwargs)
        pools.append(pool)
        return cast("greenstalk.Pool[Any]", pool)

    try:
        yield make
    finally:
        for pool in pools:
            pool.close()
        if runner is not None:
            runner.stop()


def test_round_robin_spreads_puts_evenly(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    jobs = [pool.put(b"x") for _ in range(10_000)]
    counts = [cluster.ready(index) for index in range(3)]
    assert sum(counts) == 10_000
    assert all(abs(count / 10_000 - 1 / 3) <= 0.05 for count in counts), counts
    # Each job says where it is: its id is valid there.
    assert {job.address for job in jobs} == set(pool.addresses)
    sample = jobs[-1]
    assert pool.stats_job(sample)["state"] == "ready"


def test_a_key_lands_on_one_server(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    jobs = [pool.put(b"x", key="customer-7") for _ in range(300)]
    assert len({job.address for job in jobs}) == 1
    counts = [cluster.ready(index) for index in range(3)]
    assert sorted(counts) == [0, 0, 300]


def test_put_many_spreads_and_keeps_order(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    bodies = [str(n).encode() for n in range(3_000)]
    jobs = pool.put_many(bodies)
    assert [job.body for job in jobs] == bodies
    counts = [cluster.ready(index) for index in range(3)]
    assert counts == [1_000, 1_000, 1_000]
    for job in jobs[:30]:
        assert pool.peek(job).body == job.body
    keyed = pool.put_many([b"k"] * 50, key=b"tenant")
    assert len({job.address for job in keyed}) == 1


def test_jobs_of_different_servers_with_one_id_are_different(make_pool: MakePool) -> None:
    pool = make_pool()
    first = [pool.put(b"same") for _ in range(3)]
    assert len({job.id for job in first}) == 1  # every server's first job is id 1
    assert len(set(first)) == 3
    with pytest.raises(TypeError, match="the job's server"):
        pool.delete(first[0].id)


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_server_lost_mid_stream_loses_no_put(
    cluster: Cluster, make_pool: MakePool, fault: str
) -> None:
    pool = make_pool(**FAST)
    slowest = 0.0
    for n in range(10_000):
        if n == 3_000:
            if fault == "kill":
                cluster.kill(1)
            else:
                cluster.signal(1, signal.SIGSTOP)
        started = time.monotonic()
        pool.put(b"%d" % n)
        slowest = max(slowest, time.monotonic() - started)
    # Bounded by the timeouts: one socket timeout (the put in flight), plus a connect.
    assert slowest < FAST["socket_timeout"] + FAST["socket_connect_timeout"] + 1.5
    if fault == "stop":
        cluster.signal(1, signal.SIGCONT)
    else:
        cluster.restart(1)
    stored = sum(cluster.ready(index) for index in range(3))
    # Nothing lost (the killed server's log kept its jobs); a duplicate only
    # where the pool counted a put as unknown, a handful at most.
    assert 10_000 <= stored <= 10_000 + pool.unknown_puts
    assert pool.unknown_puts <= 5
    # Once back, the server gets work again.
    deadline = time.monotonic() + 10
    while cluster.addresses[1] not in pool.servers_up():
        assert time.monotonic() < deadline, "the server was never probed back up"
        time.sleep(0.02)
    before = cluster.ready(1)
    for _ in range(30):
        pool.put(b"after")
    assert cluster.ready(1) - before == 10


def test_at_most_once_raises_for_a_put_whose_fate_is_unknown(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(at_most_once=True, **FAST)
    cluster.signal(1, signal.SIGSTOP)
    try:
        with pytest.raises(greenstalk.UnknownPutError) as raised:  # noqa: PT012
            for _ in range(6):
                pool.put(b"x")
        assert raised.value.address == cluster.addresses[1]
        assert pool.unknown_puts == 1
        # The others still take puts.
        for _ in range(6):
            assert pool.put(b"y").address != cluster.addresses[1]
    finally:
        cluster.signal(1, signal.SIGCONT)


def test_a_refused_connection_is_placed_elsewhere_uncounted(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**FAST)
    cluster.kill(2)
    for _ in range(300):
        assert pool.put(b"x").address != cluster.addresses[2]
    assert pool.unknown_puts <= 1  # only a put already sent when it died
    assert cluster.ready(0) + cluster.ready(1) == 300


def test_no_server_at_all() -> None:
    with run_server("greenstalkd") as server:
        address = server.address
    with pytest.raises(greenstalk.NoServerError, match="cannot connect to any server"):
        greenstalk.Pool([address], socket_connect_timeout=1)


def test_acks_reach_the_job_s_own_server(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    for index in range(3):
        cluster.client(index).put_many([b"a", b"b", b"c", b"d"])
    jobs = [pool.reserve(timeout=5) for _ in range(12)]
    by_server: dict[Any, list[greenstalk.Job[bytes]]] = {}
    for job in jobs:
        by_server.setdefault(job.address, []).append(job)
    assert {len(group) for group in by_server.values()} == {4}
    released = []
    for group in by_server.values():
        delete, release, bury, touch = group
        pool.delete(delete)
        pool.release(release, priority=7)
        released.append(release)
        pool.bury(bury)
        pool.touch(touch)
        pool.delete(touch)
    pool.close()  # so that no reserve of the pool is still waiting on a server
    for job in released:
        index = cluster.addresses.index(job.address)
        assert cluster.stat(index, "cmd-delete") == 2
        assert cluster.stat(index, "cmd-bury") == 1
        assert cluster.stat(index, "cmd-touch") == 1
        assert cluster.stat(index, "current-jobs-buried") == 1
        with cluster.client(index) as client:
            stats = client.stats_job(job.id)
            assert (stats["state"], stats["pri"]) == ("ready", 7)


def test_an_idle_consumer_gets_a_job_from_any_server_at_once(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    producers = [cluster.client(index) for index in range(3)]
    latencies: list[float] = []
    for n in range(200):
        sent = threading.Event()
        put_at: list[float] = []

        def put_later(
            n: int = n, sent: threading.Event = sent, put_at: list[float] = put_at
        ) -> None:
            sent.wait()
            put_at.append(time.monotonic())
            producers[n % 3].put(b"%d" % n)

        thread = threading.Thread(target=put_later)
        thread.start()
        sent.set()
        job = pool.reserve(timeout=10)
        latencies.append(time.monotonic() - put_at[0])
        thread.join()
        pool.delete(job)
    p99 = statistics.quantiles(latencies, n=100)[98]
    assert p99 < 0.050, f"p99 {p99 * 1000:.1f} ms"


def test_an_idle_consumer_costs_no_cpu(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    done = threading.Event()
    result: list[Any] = []

    def consume() -> None:
        try:
            result.append(pool.reserve(timeout=3))
        except greenstalk.TimedOutError as error:
            result.append(error)
        done.set()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.3)  # let every server's reserve start; measured from here
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    done.wait(10)
    thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    assert isinstance(result[0], greenstalk.TimedOutError)
    assert used / (time.monotonic() - started) < 0.02


def test_each_server_gets_an_even_share_of_consumption(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    for index in range(3):
        cluster.client(index).put_many([b"x"] * 400)
    taken: dict[Any, int] = {}
    for _ in range(300):
        job = pool.reserve(timeout=5)
        taken[job.address] = taken.get(job.address, 0) + 1
        pool.delete(job)
    assert all(abs(count - 100) <= 10 for count in taken.values()), taken


def test_a_reserve_timeout_is_honoured(make_pool: MakePool) -> None:
    pool = make_pool()
    started = time.monotonic()
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=1)
    assert 0.9 <= time.monotonic() - started < 2.5
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=0)


def test_jobs_reserved_ahead_of_demand_go_back_with_their_priority(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    for index in range(3):
        cluster.client(index).put(b"x", priority=100 + index, ttr=4)
    job = pool.reserve(timeout=5)
    # The other two were reserved too, and nobody asks for them: within half
    # their TTR they are back in their tubes, their priority unchanged.
    deadline = time.monotonic() + 6
    while sum(cluster.stat(i, "current-jobs-reserved") for i in range(3)) > 1:
        assert time.monotonic() < deadline, "jobs stayed reserved ahead of demand"
        time.sleep(0.05)
    for index in range(3):
        with greenstalk.Client(cluster.addresses[index]) as client:
            if cluster.addresses[index] != job.address:
                assert client.stats_job(client.peek_ready())["pri"] == 100 + index
    pool.delete(job)
    # Asked for now, they are handed out.
    others = [pool.reserve(timeout=5) for _ in range(2)]
    assert {o.address for o in others} | {job.address} == set(cluster.addresses)


def test_aggregates_equal_the_sums_of_the_servers(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool(use="work")
    pool.put_many([b"x"] * 30)
    for index in range(3):
        cluster.client(index).put(b"own")  # into default
    total = pool.stats()
    each = [cluster.client(index).stats() for index in range(3)]
    for name in ("current-jobs-ready", "total-jobs", "cmd-put", "current-tubes"):
        assert total[name] == sum(s[name] for s in each)
    assert total["uptime"] == max(s["uptime"] for s in each)
    tube = pool.stats_tube("work")
    assert tube["current-jobs-ready"] == 30
    assert tube["total-jobs"] == 30
    assert set(pool.tubes()) == {"default", "work"}
    by_server = pool.stats_by_server()
    assert set(by_server) == set(cluster.addresses)
    with pytest.raises(greenstalk.NotFoundError):
        pool.stats_tube("nowhere")


def test_peeks_kicks_and_pauses_over_servers(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    cluster.client(0).put(b"later", priority=5)
    cluster.client(2).put(b"first", priority=1)
    peeked = pool.peek_ready()
    assert peeked.body == b"first"
    assert peeked.address == cluster.addresses[2]
    cluster.client(1).put(b"soon", delay=100)
    cluster.client(0).put(b"sooner", delay=50)
    assert pool.peek_delayed().body == b"sooner"
    assert pool.kick(10) == 2  # no buried jobs anywhere: the delayed ones
    with pytest.raises(greenstalk.NotFoundError):
        pool.peek_buried()
    for _ in range(4):
        pool.bury(pool.reserve(timeout=5))
    assert pool.peek_buried().body in {b"later", b"first", b"soon", b"sooner"}
    assert pool.kick(3) == 3
    buried = pool.peek_buried()
    pool.kick_job(buried)
    pool.pause_tube("default", 30)
    for address in cluster.addresses:
        with greenstalk.Client(address) as client:
            assert client.stats_tube("default")["pause"] == 30
    with pytest.raises(greenstalk.NotFoundError):
        pool.pause_tube("nowhere", 1)


def test_watch_and_ignore_change_every_server(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    assert pool.watch("emails") == 2
    assert pool.ignore("default") == 1
    with pytest.raises(greenstalk.NotIgnoredError):
        pool.ignore("emails")
    cluster.client(1).put(b"not watched")
    with greenstalk.Client(cluster.addresses[2], use="emails") as client:
        client.put(b"watched")
    job = pool.reserve(timeout=5)
    assert job.body == b"watched"
    assert job.address == cluster.addresses[2]
    pool.delete(job)
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=1)


def test_reserve_job_and_lost_connections(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool(**FAST)
    job = pool.put(b"specific")
    reserved = pool.reserve_job(job)
    assert reserved == job
    pool.release(reserved)
    held = pool.reserve(timeout=5)
    index = cluster.addresses.index(held.address)
    cluster.kill(index)
    # The connection that reserved it is gone, and the job with it: never
    # acknowledged blindly, not even on a new connection. (The asyncio pool
    # already knows the connection is gone; the blocking one learns it now.)
    with pytest.raises((greenstalk.ClientConnectionError, greenstalk.NotFoundError)):
        pool.delete(held)
    with pytest.raises(greenstalk.NotFoundError):
        pool.release(held)


def test_bad_arguments_are_refused_before_anything_is_sent(make_pool: MakePool) -> None:
    with pytest.raises(ValueError, match="strategy"):
        make_pool(strategy="fastest")
    with pytest.raises(ValueError, match="watch must name"):
        make_pool(watch=[])
    with pytest.raises(ValueError, match="invalid tube name"):
        make_pool(use="bad name")
    pool = make_pool()
    with pytest.raises(ValueError, match="priority"):
        pool.put(b"x", priority=-1)
    with pytest.raises(ValueError, match="timeout"):
        pool.reserve(timeout=-1)
    with pytest.raises(TypeError, match="str or bytes"):
        pool.put(b"x", key=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid tube name"):
        pool.watch("bad name")
    assert pool.stats()["cmd-put"] == 0


def test_a_draining_server_gets_no_puts_until_it_stops_draining(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**FAST)
    cluster.servers[0].drain()
    jobs = [pool.put(b"x") for _ in range(60)]
    assert cluster.addresses[0] not in {job.address for job in jobs}
    assert pool.unknown_puts == 0
    assert cluster.addresses[0] not in pool.servers_up()
    many = pool.put_many([b"y"] * 600)
    assert cluster.addresses[0] not in {job.address for job in many}
    assert cluster.ready(1) + cluster.ready(2) == 660


def test_put_many_reports_refused_bodies_by_their_place(make_pool: MakePool) -> None:
    pool = make_pool()
    bodies = [b"ok"] * 400
    bodies[5] = bodies[399] = b"x" * 70_000  # over the servers' 65,535-byte default
    with pytest.raises(greenstalk.PutManyError) as raised:
        pool.put_many(bodies)
    error = raised.value
    assert sorted(error.errors) == [5, 399]
    assert all(isinstance(e, greenstalk.JobTooBigError) for e in error.errors.values())
    stored = [job for job in error.ids if job is not None]
    assert len(stored) == 398
    assert all(isinstance(job, greenstalk.Job) and job.address for job in stored)
    with pytest.raises(greenstalk.JobTooBigError):
        pool.put(b"x" * 70_000)
