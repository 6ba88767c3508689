"""The failure paths of greenstalk.Pool and greenstalk.aio.Pool, against three real servers.

Servers are killed, frozen with SIGSTOP, drained and restarted (the cluster
of tests/test_pool.py: beanstalkd over TCP, greenstalkd over TCP and over a
Unix socket). Every test that is about shared behaviour runs with the
blocking pool and with the asyncio one; the asyncio pool's own ways in
(``async with``, ``open()``, tasks sharing the pool) have tests of their own.
Waits are on conditions with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest

import greenstalk
import greenstalk.aio

from .blocking_aio import LoopThread
from .test_pool import Cluster, MakePool

# Fixtures, used by name:
from .test_pool import cluster as cluster
from .test_pool import make_pool as make_pool
from .waiting import wait_until

# Quick retries, so that servers come back within a test; the pool's usual
# socket timeouts, so that a loaded machine is not taken for a dead server.
RETRY = {"retry_base": 0.05, "retry_cap": 0.2}
# For frozen servers, whose puts end only when the socket timeout does.
FROZEN = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **RETRY}


def waiting_on(cluster: Cluster, indexes: Sequence[int]) -> Callable[[], bool]:
    """A condition: each server in ``indexes`` has a reserve waiting on it."""
    return lambda: all(cluster.stat(index, "current-waiting") >= 1 for index in indexes)


@contextlib.contextmanager
def frozen(cluster: Cluster, index: int) -> Iterator[None]:
    """Server ``index`` stopped with SIGSTOP for the block, continued after it."""
    cluster.signal(index, signal.SIGSTOP)
    try:
        yield
    finally:
        cluster.signal(index, signal.SIGCONT)


class InThread:
    """Run ``function`` in a thread; :meth:`result` returns its value or raises its error."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(function,), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, function()))
        except BaseException as error:  # handed to the test's thread
            self._outcome.append((False, error))

    def result(self, timeout: float = 15.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call never returned"
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


# -- producers ----------------------------------------------------------------


def test_every_server_down_raises_no_server_error_then_one_comes_back(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    pool.put(b"first")
    for index in range(3):
        cluster.kill(index)
    # Each server is tried (the put's own, then the others), none takes it.
    with pytest.raises(greenstalk.NoServerError, match="no server of the pool took the put"):
        pool.put(b"x")
    assert pool.servers_up() == []
    with pytest.raises(greenstalk.NoServerError, match="took the puts"):
        pool.put_many([b"y"] * 10)
    with pytest.raises(greenstalk.NoServerError, match="no server of the pool answered"):
        pool.stats()
    with pytest.raises(greenstalk.NoServerError):
        pool.put(b"z", key="tenant")
    # Refused connections: nothing was sent, so nothing is counted as unknown.
    assert pool.unknown_puts == 0
    cluster.restart(0)
    wait_until(lambda: pool.servers_up() == [cluster.addresses[0]], "the server probed back up")
    job = pool.put(b"back")
    assert job.address == cluster.addresses[0]
    assert [j.address for j in pool.put_many([b"a", b"b"])] == [cluster.addresses[0]] * 2


def test_put_many_with_a_killed_server_places_its_share_elsewhere_at_most_once(
    cluster: Cluster, make_pool: MakePool
) -> None:
    # A killed server's share was surely not sent: placed on the others, with
    # no UnknownPutError even at most once, and nothing counted.
    pool = make_pool(at_most_once=True, **RETRY)
    pool.put_many([b"warm"] * 3)
    cluster.kill(1)
    bodies = [b"%d" % n for n in range(600)]
    jobs = pool.put_many(bodies)
    assert [job.body for job in jobs] == bodies
    assert cluster.addresses[1] not in {job.address for job in jobs}
    assert pool.unknown_puts == 0
    assert cluster.addresses[1] not in pool.servers_up()
    again = pool.put_many(bodies)  # a second large put_many, the server still down
    assert cluster.addresses[1] not in {job.address for job in again}
    assert cluster.ready(0) + cluster.ready(2) == 2 * 600 + 2


def test_put_many_to_a_frozen_server(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool(**FROZEN)
    strict = make_pool(at_most_once=True, **FROZEN)
    bodies = [b"%d" % n for n in range(300)]
    with frozen(cluster, 1):
        # At least once: the frozen server's share (every third body) is
        # placed elsewhere too, and counted.
        jobs = pool.put_many(bodies)
        assert [job.body for job in jobs] == bodies
        assert cluster.addresses[1] not in {job.address for job in jobs}
        assert pool.unknown_puts == 100
        assert pool.unknown_puts_by_server()[cluster.addresses[1]] == 100
        # At most once: UnknownPutError names the server; its share is not
        # sent anywhere else.
        with pytest.raises(greenstalk.UnknownPutError) as raised:
            strict.put_many(bodies)
        assert raised.value.address == cluster.addresses[1]
        assert strict.unknown_puts == 100
        assert cluster.ready(0) + cluster.ready(2) == 300 + 200
    # Once continued, the server may have stored what it was sent: at most
    # the puts counted as unknown are extra.
    stored = sum(cluster.ready(index) for index in range(3))
    assert 600 <= stored <= 600 + pool.unknown_puts + strict.unknown_puts


def test_put_many_to_a_draining_server_goes_elsewhere(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    cluster.servers[0].drain()  # the pool still counts it up: its share is refused
    bodies = [b"%d" % n for n in range(30)]
    jobs = pool.put_many(bodies)
    assert [job.body for job in jobs] == bodies
    assert cluster.addresses[0] not in {job.address for job in jobs}
    assert cluster.addresses[0] not in pool.servers_up()
    assert pool.unknown_puts == 0
    assert cluster.ready(1) + cluster.ready(2) == 30


def test_put_many_checks_every_body_before_sending_any(
    cluster: Cluster, make_pool: MakePool
) -> None:
    # As Client.put_many: a bad body refuses the whole call, so the shares
    # of the other servers are not stored behind the caller's back.
    pool = make_pool()
    for bad in (3, "text without an encoding"):
        with pytest.raises(TypeError, match="body"):
            pool.put_many([b"a", b"b", b"c", b"d", bad, b"f"])
    with pytest.raises(ValueError, match="priority"):
        pool.put_many([b"a"] * 6, priority=-1)
    assert sum(cluster.ready(index) for index in range(3)) == 0


# -- commands on one job --------------------------------------------------------


def test_commands_on_a_job_whose_server_is_down_go_nowhere_else(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    jobs = [pool.put(b"%d" % n) for n in range(3)]
    lost = next(job for job in jobs if job.address == cluster.addresses[1])
    cluster.kill(1)
    for command in (pool.delete, pool.peek, pool.stats_job, pool.kick_job, pool.reserve_job):
        with pytest.raises(greenstalk.ClientConnectionError):
            command(lost)
    assert cluster.addresses[1] not in pool.servers_up()
    # Not reserved by the pool: refused without asking any server.
    for command in (pool.release, pool.bury, pool.touch):
        with pytest.raises(greenstalk.NotFoundError, match="not reserved by this pool"):
            command(lost)
    # Nothing went to the other servers (whose job 1 is another job).
    for index in (0, 2):
        for name in ("cmd-delete", "cmd-peek", "cmd-stats-job", "cmd-kick", "cmd-reserve"):
            assert cluster.stat(index, name) == 0, name
        assert cluster.ready(index) == 1
    # The job waited on the server's disk: once back, the commands reach it.
    cluster.restart(1)
    wait_until(lambda: cluster.addresses[1] in pool.servers_up(), "the server probed back up")
    assert pool.peek(lost) == lost
    assert pool.stats_job(lost)["state"] == "ready"
    pool.delete(lost)
    with pytest.raises(greenstalk.NotFoundError):
        pool.peek(lost)
    # A job on a live server, not reserved by the pool, is deleted there.
    other = next(job for job in jobs if job.address == cluster.addresses[0])
    pool.delete(other)
    assert cluster.ready(0) == 0


def test_reserve_job_reuses_a_free_connection_and_frees_it_on_refusal(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    first = pool.put(b"first", key="k")
    held = pool.reserve(timeout=5)
    assert held == first
    pool.delete(held)  # its consumer connection is free again
    second = pool.put(b"second", key="k")
    assert second.address == first.address
    index = cluster.addresses.index(first.address)
    connections = cluster.stat(index, "total-connections")
    assert pool.reserve_job(second) == second
    assert cluster.stat(index, "total-connections") == connections + 1  # only the check's own
    # A job reserved by someone else: NotFoundError, and the connection
    # that asked is free for the next one.
    other = cluster.client(index)
    other.put(b"theirs")
    theirs = other.reserve(timeout=5)
    with pytest.raises(greenstalk.NotFoundError):
        pool.reserve_job(greenstalk.Job(theirs.id, theirs.body, first.address))
    pool.release(second)
    assert pool.reserve_job(second) == second
    pool.delete(second)


# -- aggregates -------------------------------------------------------------


def test_aggregates_with_one_server_down(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool(use="work", **RETRY)
    for index in range(3):
        with greenstalk.Client(cluster.addresses[index], use="work") as client:
            client.put(b"ready %d" % index, priority=10 + index)
            client.put(b"delayed %d" % index, delay=100 + index)
            client.bury(client.reserve_job(client.put(b"buried %d" % index)))
    cluster.kill(0)  # the pool does not know yet
    stats = pool.stats()
    assert stats["current-jobs-ready"] == 2
    assert stats["current-jobs-buried"] == 2
    assert cluster.addresses[0] not in pool.servers_up()
    assert set(pool.stats_by_server()) == set(cluster.addresses[1:])
    assert pool.stats_tube("work")["current-jobs-delayed"] == 2
    assert "work" in pool.tubes()
    assert pool.peek_ready().body == b"ready 1"
    assert pool.peek_delayed().body == b"delayed 1"
    assert pool.peek_buried().body in {b"buried 1", b"buried 2"}
    pool.pause_tube("work", 0)
    assert pool.kick(10) == 2  # the live servers' buried jobs
    assert pool.kick(10) == 2  # then their delayed ones
    assert sum(cluster.ready(index, "work") for index in (1, 2)) == 6
    with pytest.raises(ValueError, match="invalid tube name"):
        pool.stats_tube("bad name")


# -- tubes ----------------------------------------------------------------------


def test_use_watch_and_ignore_while_a_server_is_down_apply_when_it_returns(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    pool.put_many([b"warm"] * 3)  # every server has its command connection
    cluster.kill(1)
    pool.use("emails")
    assert pool.using() == "emails"
    assert pool.watch("emails") == 2
    assert pool.watch("emails") == 2
    assert pool.ignore("nothing") == 2
    assert pool.ignore("default") == 1
    assert pool.watching() == ["emails"]
    assert cluster.addresses[1] not in pool.servers_up()
    cluster.restart(1)
    wait_until(lambda: cluster.addresses[1] in pool.servers_up(), "the server probed back up")
    jobs = [pool.put(b"mail %d" % n) for n in range(3)]
    assert {job.address for job in jobs} == set(cluster.addresses)
    for index in range(3):
        assert cluster.ready(index, "emails") == 1, f"server {index} put it elsewhere"
    reserved = {pool.reserve(timeout=5) for _ in range(3)}
    assert reserved == set(jobs)


def test_use_reaches_a_server_that_was_down_when_the_pool_was_made(
    cluster: Cluster, make_pool: MakePool
) -> None:
    cluster.kill(1)
    pool = make_pool(**RETRY)
    pool.use("emails")
    cluster.restart(1)
    wait_until(lambda: cluster.addresses[1] in pool.servers_up(), "the server probed back up")
    jobs = [pool.put(b"mail %d" % n) for n in range(3)]
    assert {job.address for job in jobs} == set(cluster.addresses)
    assert [cluster.ready(index, "emails") for index in range(3)] == [1, 1, 1]


def test_a_watch_change_reaches_idle_consumer_connections(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=0)  # each server now has a consumer connection
    # Their reserve rounds end: the connections are idle, watching default.
    wait_until(lambda: not any(cluster.stat(i, "current-waiting") for i in range(3)), "idle")
    pool.watch("emails")
    pool.ignore("default")
    for index in range(3):
        cluster.client(index).put(b"old")
    with greenstalk.Client(cluster.addresses[1], use="emails") as client:
        client.put(b"new")
    job = pool.reserve(timeout=5)
    assert (job.body, job.address) == (b"new", cluster.addresses[1])
    pool.delete(job)
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=1)
    assert [cluster.ready(index) for index in range(3)] == [1, 1, 1]


def test_a_watch_change_gives_back_jobs_reserved_ahead(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(watch=["default", "other"])
    for index in range(3):
        cluster.client(index).put(b"x", priority=100 + index)
    job = pool.reserve(timeout=5)
    # The other servers' consumers reserve theirs ahead of demand (given a
    # moment, without waiting for it: the outcome is the same either way).
    # A watch change stops them and gives back what they brought.
    def reserved() -> int:
        return sum(cluster.stat(i, "current-jobs-reserved") for i in range(3))

    deadline = time.monotonic() + 0.2
    while reserved() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    pool.ignore("default")
    wait_until(lambda: reserved() == 1, "the jobs reserved ahead to go back")
    assert pool.held_jobs() == [job]
    for index in range(3):
        if cluster.addresses[index] != job.address:
            with greenstalk.Client(cluster.addresses[index]) as client:
                assert client.stats_job(client.peek_ready())["pri"] == 100 + index
    with pytest.raises(greenstalk.TimedOutError):
        pool.reserve(timeout=1)
    pool.delete(job)


def test_a_watch_change_while_a_consumer_connects_to_a_slow_server(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(watch="a", socket_timeout=10, socket_connect_timeout=10)
    with frozen(cluster, 1):
        with pytest.raises(greenstalk.TimedOutError):
            pool.reserve(timeout=0)  # server 1's consumer is stuck connecting
        pool.watch("b")
        pool.ignore("a")
    # The connection it opened watched the old list: it is dropped, and the
    # server is not taken for down.
    with greenstalk.Client(cluster.addresses[1], use="a") as client:
        client.put(b"old list")
    with greenstalk.Client(cluster.addresses[1], use="b") as client:
        client.put(b"new list")
    job = pool.reserve(timeout=10)
    assert (job.body, job.address) == (b"new list", cluster.addresses[1])
    assert cluster.addresses[1] in pool.servers_up()
    assert cluster.ready(1, "a") == 1


# -- consumers ------------------------------------------------------------------


def test_consumers_whose_servers_die_mark_them_down_and_come_back(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    cluster.kill(2)  # the pool does not know: its consumer fails to connect
    waiter = InThread(lambda: pool.reserve(timeout=30))
    wait_until(waiting_on(cluster, [0, 1]), "reserves on the live servers")
    wait_until(lambda: cluster.addresses[2] not in pool.servers_up(), "server 2 marked down")
    cluster.kill(1)  # with a reserve waiting on it
    wait_until(lambda: cluster.addresses[1] not in pool.servers_up(), "server 1 marked down")
    cluster.client(0).put(b"from 0")
    job = waiter.result()
    assert (job.body, job.address) == (b"from 0", cluster.addresses[0])
    pool.delete(job)
    cluster.restart(1)
    wait_until(lambda: cluster.addresses[1] in pool.servers_up(), "server 1 probed back up")
    cluster.client(1).put(b"from 1")
    job = pool.reserve(timeout=10)
    assert (job.body, job.address) == (b"from 1", cluster.addresses[1])
    pool.delete(job)


def test_a_job_reserved_ahead_whose_server_dies_is_not_lost(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool(**RETRY)
    cluster.client(0).put(b"a")
    cluster.client(1).put(b"b")
    job = pool.reserve(timeout=5)
    other = 1 - cluster.addresses.index(job.address)
    # The other job is reserved ahead of demand (given a moment, without
    # waiting for it: it may also be on its way), and its server dies.
    deadline = time.monotonic() + 0.2
    while not cluster.stat(other, "current-jobs-reserved") and time.monotonic() < deadline:
        time.sleep(0.01)
    cluster.kill(other)
    pool.delete(job)
    cluster.restart(other)
    wait_until(lambda: cluster.addresses[other] in pool.servers_up(), "the server back up")
    # Its job waited on the server's disk, and is handed out again. The copy
    # reserved ahead on the dead connection may be handed out first (if its
    # grace had not run out): its delete raises, never acknowledging it.
    body = b"a" if other == 0 else b"b"
    for _ in range(3):
        again = pool.reserve(timeout=10)
        assert (again.body, again.address) == (body, cluster.addresses[other])
        try:
            pool.delete(again)
        except (greenstalk.ClientConnectionError, greenstalk.NotFoundError):
            continue
        break
    else:
        pytest.fail("the job was never deleted")
    assert cluster.ready(other) == cluster.stat(other, "current-jobs-reserved") == 0


@pytest.mark.parametrize("command", ["delete", "touch", "release", "bury"])
def test_a_job_whose_connection_dies_under_a_command_leaves_the_pools_hold(
    cluster: Cluster, make_pool: MakePool, command: str
) -> None:
    """The server gives the job back when the connection goes: the pool no longer holds it.

    The command raises ClientConnectionError when the connection dies under
    it, NotFoundError when the pool saw it had died before sending.
    """
    pool = make_pool(**RETRY)
    cluster.client(1).put(b"b")
    job = pool.reserve(timeout=5)
    assert job.address == cluster.addresses[1]
    cluster.kill(1)
    with pytest.raises((greenstalk.ClientConnectionError, greenstalk.NotFoundError)):
        getattr(pool, command)(job)
    assert pool.held_jobs() == []
    with pytest.raises(greenstalk.NotFoundError, match="not reserved by this pool"):
        pool.touch(job)


def test_close_while_a_reserve_waits(cluster: Cluster, make_pool: MakePool) -> None:
    pool = make_pool()
    waiter = InThread(lambda: pool.reserve())
    wait_until(waiting_on(cluster, range(3)), "reserves on every server")
    pool.close()
    with pytest.raises(greenstalk.ClientConnectionError, match="closed"):
        waiter.result()
    # Every connection is closed: the servers see no reserve waiting.
    wait_until(lambda: not any(cluster.stat(i, "current-waiting") for i in range(3)), "none")
    with pytest.raises(greenstalk.ClientConnectionError, match="closed"):
        pool.reserve(timeout=1)


def test_a_closed_pool_refuses_commands_and_opens_no_connection(
    cluster: Cluster, make_pool: MakePool
) -> None:
    pool = make_pool()
    job = pool.put(b"x")
    pool.close()
    connections = [cluster.stat(index, "total-connections") for index in range(3)]
    for call in (
        lambda: pool.put(b"y"),
        lambda: pool.put_many([b"y"] * 3),
        lambda: pool.stats(),
        lambda: pool.peek(job),
        lambda: pool.reserve_job(job),
        lambda: pool.reserve(timeout=0),
    ):
        with pytest.raises(greenstalk.ClientConnectionError, match="closed"):
            call()
    # The only new connections are the checks' own (one per stat).
    after = [cluster.stat(index, "total-connections") for index in range(3)]
    assert after == [count + 1 for count in connections]
    assert sum(cluster.ready(index) for index in range(3)) == 1


def test_an_argument_a_connection_refuses_raises_and_leaves_nothing_open(
    cluster: Cluster, make_pool: MakePool
) -> None:
    # TLS cannot go over a Unix socket: the connection refuses the argument.
    with pytest.raises(ValueError, match="server_hostname"):
        make_pool(addresses=[cluster.addresses[2]], ssl=ssl.create_default_context())
    assert cluster.stat(2, "current-connections") == 1  # the check's own


# -- the asyncio pool's own ways in ----------------------------------------------


def test_aio_open_close_and_concurrent_first_connections(cluster: Cluster) -> None:
    runner = LoopThread()
    try:

        async def scenario() -> None:
            addresses = cluster.addresses
            # Not open yet: every command says so; closing it is harmless.
            never = greenstalk.aio.Pool(addresses)
            with pytest.raises(greenstalk.ClientConnectionError, match="not open"):
                await never.put(b"x")
            await never.close()
            cluster.kill(1)
            async with greenstalk.aio.Pool(addresses, retry_base=0.05, retry_cap=0.2) as pool:
                with pytest.raises(greenstalk.ClientConnectionError, match="already open"):
                    await pool.open()
                assert pool.servers_up() == [addresses[0], addresses[2]]
                cluster.restart(1)
                deadline = time.monotonic() + 10
                while addresses[1] not in pool.servers_up():
                    assert time.monotonic() < deadline, "server 1 never probed back up"
                    await asyncio.sleep(0.01)
                # Tasks that put at once to the server with no connection yet
                # open one each; one is kept.
                jobs = await asyncio.gather(*(pool.put(b"%d" % n) for n in range(9)))
                assert sum(job.address == addresses[1] for job in jobs) == 3
            with pytest.raises(greenstalk.ClientConnectionError, match="closed"):
                await pool.put(b"x")
            for index in (0, 2):
                cluster.kill(index)
            cluster.kill(1)
            with pytest.raises(greenstalk.NoServerError, match="cannot connect"):
                await greenstalk.aio.Pool(addresses, retry_base=0.05, retry_cap=0.2).open()

        runner.run(scenario())
    finally:
        runner.stop()
