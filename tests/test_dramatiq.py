"""greenstalk.dramatiq.BeanstalkBroker against real servers (issue 13).

The scenarios of Dramatiq's own Redis broker tests (tests/test_redis.py in
Dramatiq's repository), ported to this broker: messages are sent and
consumed, delayed, retried, dead-lettered (buried) and requeued on
shutdown; join and flush; priorities. Then what beanstalkd adds: a 24-hour
delay, acknowledgements that do not wait for a reserve to time out, held
jobs kept alive past their TTR, and a real ``dramatiq`` worker process
killed with SIGKILL in the middle of 1,000 messages, losing none. Each test
runs against beanstalkd and greenstalkd.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, QueueJoinTimeout, Worker
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed, QueueNotFound

import greenstalk
from greenstalk.dramatiq import BeanstalkBroker, address_from_url
from greenstalk.testing import ServerProcess, run_server

from .conftest import StartServer
from .waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent

Actor = Callable[..., Any]


@contextlib.contextmanager
def running(broker: BeanstalkBroker, **options: Any) -> Iterator[Worker]:
    """A Dramatiq worker over ``broker`` for the ``with`` block (threads of this process)."""
    prefetch = options.pop("queue_prefetch", None)
    worker = Worker(broker, **{"worker_timeout": 100, "worker_threads": 4, **options})
    if prefetch is not None:
        worker.queue_prefetch = prefetch
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """This test's server (beanstalkd, then greenstalkd), over TCP."""
    return start_server()


@pytest.fixture
def broker(server: ServerProcess) -> Iterator[BeanstalkBroker]:
    """A broker of this test's server, Dramatiq's global broker for the test."""
    previous = dramatiq.broker.global_broker
    broker = BeanstalkBroker(address=server.address)
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    yield broker
    broker.close()
    dramatiq.broker.global_broker = previous


@pytest.fixture
def client(server: ServerProcess) -> Iterator[greenstalk.Client[bytes]]:
    """A plain client of this test's server, to look at the tubes."""
    with greenstalk.Client(server.address, socket_timeout=10) as client:
        yield client


def tube_stats(client: greenstalk.Client[bytes], queue_name: str = "default") -> dict[str, int]:
    """Ready, reserved, delayed and buried counts of a queue's tube (zeros if it is gone)."""
    try:
        stats = client.stats_tube("dramatiq." + queue_name)
    except greenstalk.NotFoundError:
        return {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    return {
        state: int(stats[f"current-jobs-{state}"])  # type: ignore[literal-required]
        for state in ("ready", "reserved", "delayed", "buried")
    }


# -- Dramatiq's Redis scenarios ---------------------------------------------------


def test_actors_can_be_sent_messages(broker: BeanstalkBroker) -> None:
    database: dict[str, int] = {}

    @dramatiq.actor
    def put(key: str, value: int) -> None:
        database[key] = value

    for i in range(100):
        assert put.send(f"key-{i}", i)
    with running(broker) as worker:
        broker.join(put.queue_name, timeout=30000)
        worker.join()
    assert len(database) == 100


def test_actors_retry_with_backoff_on_failure(broker: BeanstalkBroker) -> None:
    failure_time = success_time = 0

    @dramatiq.actor(min_backoff=1000, max_backoff=5000, max_retries=1)
    def do_work() -> None:
        nonlocal failure_time, success_time
        if not failure_time:
            failure_time = current_millis()
            raise RuntimeError("First failure.")
        success_time = current_millis()

    do_work.send()
    with running(broker) as worker:
        broker.join(do_work.queue_name, timeout=30000)
        worker.join()
    # The first backoff is 1 to 2 s; the server delays by whole seconds, rounded up.
    assert 1000 <= success_time - failure_time <= 3000


def test_actors_can_retry_multiple_times(broker: BeanstalkBroker) -> None:
    attempts = []

    @dramatiq.actor(min_backoff=100, max_backoff=100)
    def do_work() -> None:
        attempts.append(1)
        if len(attempts) < 4:
            raise RuntimeError(f"Failure #{len(attempts)}")

    do_work.send()
    with running(broker) as worker:
        broker.join(do_work.queue_name, timeout=30000)
        worker.join()
    assert len(attempts) == 4


def test_actors_can_have_their_messages_delayed(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    start_time, run_time = current_millis(), 0

    @dramatiq.actor
    def record() -> None:
        nonlocal run_time
        run_time = current_millis()

    record.send_with_options(delay=1000)
    # A job delay on the server, not a delay queue.
    assert tube_stats(client)["delayed"] == 1
    assert broker.get_declared_delay_queues() == set()
    with running(broker) as worker:
        broker.join(record.queue_name, timeout=30000)
        worker.join()
    assert run_time - start_time >= 1000


def test_delays_are_independent_of_each_other(broker: BeanstalkBroker) -> None:
    results = []

    @dramatiq.actor
    def append(x: int) -> None:
        results.append(x)

    append.send_with_options(args=(1,), delay=2000)
    append.send_with_options(args=(2,), delay=1000)
    with running(broker, worker_threads=1) as worker:
        broker.join(append.queue_name, timeout=30000)
        worker.join()
    assert results == [2, 1]


def test_a_24_hour_delay_is_accepted_and_visible_as_a_delayed_job(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    @dramatiq.actor
    def later() -> None:
        raise AssertionError("it runs tomorrow")

    message = later.send_with_options(delay=24 * 3600 * 1000)
    client.use("dramatiq.default")
    job = client.peek_delayed()
    assert Message.decode(job.body).message_id == message.message_id
    stats = client.stats_job(job)
    assert (stats["state"], stats["delay"]) == ("delayed", 86400)
    assert 86390 < stats["time-left"] <= 86400
    with pytest.raises(QueueJoinTimeout):
        broker.join(later.queue_name, timeout=100)


def test_messages_can_be_dead_lettered_buried_and_kicked(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    runs = []

    @dramatiq.actor(max_retries=0)
    def do_work() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("failed")

    message = do_work.send()
    with running(broker) as worker:
        broker.join(do_work.queue_name, timeout=30000)
        worker.join()
        # The dead letter is a buried job: there to inspect...
        assert tube_stats(client)["buried"] == 1
        client.use("dramatiq.default")
        buried = client.peek_buried()
        assert Message.decode(buried.body).message_id == message.message_id
        assert client.stats_job(buried)["pri"] == 2**16
        # ... and to kick back into the queue.
        assert client.kick(10) == 1
        wait_until(lambda: len(runs) == 2, "the kicked message to run again")
        broker.join(do_work.queue_name, timeout=30000)
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_messages_belonging_to_missing_actors_are_rejected(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    broker.declare_queue("some-queue")
    message = broker.enqueue(Message(queue_name="some-queue", actor_name="some-actor",
                                     args=(), kwargs={}, options={}))
    with running(broker) as worker:
        broker.join("some-queue", timeout=30000)
        worker.join()
    client.use("dramatiq.some-queue")
    assert Message.decode(client.peek_buried().body).message_id == message.message_id


def test_unhandled_messages_are_requeued_on_shutdown(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    started = threading.Event()
    ran = []

    @dramatiq.actor
    def do_work(n: int) -> None:
        ran.append(n)
        started.set()
        time.sleep(1)

    first = do_work.send(1)
    second = do_work.send(2)
    with running(broker, worker_threads=1):
        assert started.wait(30)
        # Both are reserved: one running, one prefetched.
        wait_until(lambda: tube_stats(client)["reserved"] == 2, "the second to be prefetched")
    # The running one finished; the prefetched one went back, ready at once.
    assert ran == [1]
    assert tube_stats(client) == {"ready": 1, "reserved": 0, "delayed": 0, "buried": 0}
    client.use("dramatiq.default")
    waiting = client.peek_ready()
    assert Message.decode(waiting.body).message_id == second.message_id != first.message_id
    assert client.stats_job(waiting)["releases"] == 1


def test_delayed_messages_stay_delayed_over_a_shutdown(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    @dramatiq.actor
    def do_work() -> None:
        pass

    do_work.send_with_options(delay=10000)
    with running(broker, worker_threads=1):
        pass
    assert tube_stats(client)["delayed"] == 1


def test_join_times_out(broker: BeanstalkBroker) -> None:
    @dramatiq.actor
    def do_work() -> None:
        time.sleep(1)

    do_work.send()
    with running(broker), pytest.raises(QueueJoinTimeout):
        broker.join(do_work.queue_name, timeout=500)


def test_flush_empties_queues(broker: BeanstalkBroker, client: greenstalk.Client[bytes]) -> None:
    @dramatiq.actor
    def do_work() -> None:
        pass

    do_work.send()
    do_work.send_with_options(delay=60000)
    client.use("dramatiq.default")
    garbage = client.put(b"not a message")
    client.bury(client.reserve_job(garbage))
    assert tube_stats(client) == {"ready": 1, "reserved": 0, "delayed": 1, "buried": 1}
    broker.flush_all()
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    started = time.monotonic()
    broker.join(do_work.queue_name, timeout=200)
    assert time.monotonic() - started < 0.2


def test_priorities_order_the_queue(broker: BeanstalkBroker) -> None:
    order = []

    @dramatiq.actor(queue_name="prioritized")
    def do_work(priority: int) -> None:
        order.append(priority)

    # beanstalkd's order: 0 is the most urgent.
    for priority in (5, 3, 9, 0, 7, 1, 8, 2, 6, 4):
        do_work.send_with_options(args=(priority,), beanstalk_priority=priority)
    with running(broker, worker_threads=1, queue_prefetch=1) as worker:
        broker.join("prioritized", timeout=30000)
        worker.join()
    assert order == list(range(10))


def test_actor_priorities_become_job_priorities(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    @dramatiq.actor(priority=10)
    def low() -> None:
        pass

    @dramatiq.actor(priority=-5)
    def high() -> None:
        pass

    @dramatiq.actor(beanstalk_priority=7)
    def urgent() -> None:
        pass

    ids = []
    for actor in (low, high, urgent):
        message = actor.send()
        ids.append(message.options["beanstalk_priority"])
    assert ids == [2**16 + 10, 2**16 - 5, 7]
    client.use("dramatiq.default")
    assert client.stats_job(client.peek_ready())["pri"] == 7
    with pytest.raises(ValueError, match="beanstalk_priority must be from 0 to 2"):
        low.send_with_options(beanstalk_priority=2**32)
    with pytest.raises(ValueError, match="beanstalk_priority must be an int"):
        low.send_with_options(beanstalk_priority="1")


# -- what beanstalkd adds ---------------------------------------------------------


def test_acks_go_out_at_once_while_the_consumer_waits(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    """The consumer waits 4 s per reserve; the ack must not wait for that reserve."""
    finished: list[float] = []

    @dramatiq.actor
    def quick() -> None:
        finished.append(time.monotonic())

    with running(broker, worker_timeout=4000):
        quick.send()
        wait_until(lambda: bool(finished), "the message to run")
        wait_until(lambda: tube_stats(client)["reserved"] == 0, "the ack", seconds=10)
        acked = time.monotonic()
        assert acked - finished[0] < 1.5
        assert client.stats()["cmd-delete"] == 1


def test_held_jobs_are_touched_past_their_ttr(
    server: ServerProcess, client: greenstalk.Client[bytes]
) -> None:
    """A prefetched message waits 3.5 s for the only worker thread; its TTR is 3 s."""
    broker = BeanstalkBroker(address=server.address, ttr=3)
    runs: list[int] = []

    @dramatiq.actor(broker=broker)
    def slow(n: int) -> None:
        runs.append(n)
        time.sleep(3.5)

    try:
        slow.send(1)
        slow.send(2)
        with running(broker, worker_threads=1, queue_prefetch=2) as worker:
            broker.join(slow.queue_name, timeout=30000)
            worker.join()
    finally:
        broker.close()
    assert runs == [1, 2]
    stats = client.stats()
    assert stats["job-timeouts"] == 0
    assert stats["cmd-touch"] >= 2


def test_a_body_that_is_not_a_message_is_buried(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    ran = []

    @dramatiq.actor
    def work() -> None:
        ran.append(1)

    client.use("dramatiq.default")
    job_id = client.put(b"{not json", priority=42)
    work.send()
    with running(broker) as worker:
        broker.join(work.queue_name, timeout=30000)
        worker.join()
    assert ran == [1]
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"]) == ("buried", 42)
    assert f"job {job_id} in 'dramatiq.default' is not a Dramatiq message" in caplog.text


def test_a_lost_connection_puts_the_job_back(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """An ack after the reserving connection died: logged, and the job runs again later."""

    @dramatiq.actor
    def work() -> None:
        pass

    work.send()
    consumer = broker.consume("default", prefetch=4, timeout=1000)
    message = next(consumer)
    assert message is not None
    assert tube_stats(client)["reserved"] == 1
    message._holder.client.close()
    wait_until(lambda: tube_stats(client)["ready"] == 1, "the server to put the job back")
    with caplog.at_level(logging.WARNING, "greenstalk.dramatiq"):
        consumer.ack(message)
    assert "connection lost" in caplog.text
    again = next(consumer)
    assert again is not None
    assert again.message_id == message.message_id
    consumer.ack(again)
    consumer.ack(again)  # twice: the second is a no-op
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
    consumer.close()


def test_requeue_and_nack_keep_priorities(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    @dramatiq.actor
    def work() -> None:
        pass

    work.send_with_options(beanstalk_priority=5)
    work.send_with_options(beanstalk_priority=6)
    consumer = broker.consume("default", prefetch=2, timeout=100)
    first, second = next(consumer), next(consumer)
    assert first is not None
    assert second is not None
    # prefetch 2: a third waits for a slot and gives up after the timeout.
    work.send()
    assert next(consumer) is None
    # The nack's thread reserves the third for the consumer, in the freed slot.
    consumer.nack(second)
    assert tube_stats(client) == {"ready": 0, "reserved": 2, "delayed": 0, "buried": 1}
    consumer.requeue([first])
    client.use("dramatiq.default")
    ready, buried = client.peek_ready(), client.peek_buried()
    assert (client.stats_job(ready)["pri"], client.stats_job(buried)["pri"]) == (5, 6)
    with pytest.raises(TypeError, match="not a message of a BeanstalkBroker"):
        consumer.ack(dramatiq.MessageProxy(Message.decode(ready.body)))
    # Closing gives back the job reserved for a message not handed out yet.
    consumer.close()
    assert tube_stats(client) == {"ready": 2, "reserved": 0, "delayed": 0, "buried": 1}
    assert client.stats_job(client.peek_ready())["pri"] == 5


def test_jobs_that_left_the_consumers_hold_are_logged_not_raised(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """A held job the server gave to someone else (its TTR ran out): touch and ack say so."""

    @dramatiq.actor
    def work() -> None:
        pass

    work.send()
    consumer = broker.consume("default", prefetch=1, timeout=100)
    message = next(consumer)
    assert message is not None
    holder = message._holder
    # What an expired TTR does: the job leaves this connection's hold, and
    # another consumer takes it.
    holder.client.release(message._job_id)
    client.reserve_job(message._job_id)
    with caplog.at_level(logging.WARNING, "greenstalk.dramatiq"):
        holder.touch_older(time.monotonic())
        holder.touch_older(time.monotonic())  # not again
        consumer.ack(message)
    assert caplog.text.count(f"job {message._job_id}: no longer reserved") == 1
    assert "no longer has it reserved (did its TTR run out?); not deleted" in caplog.text
    assert tube_stats(client)["reserved"] == 1
    # A free slot: the consumer reserves again.
    work.send()
    assert next(consumer) is not None
    consumer.close()


def test_held_jobs_when_the_server_goes(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server()
    broker = BeanstalkBroker(address=server.address)
    message: Message[Any] = Message(queue_name="default", actor_name="a", args=(), kwargs={},
                                    options={})
    for _ in range(3):
        broker.enqueue(message)
    broker.declare_queue("default")
    consumer = broker.consume("default", prefetch=2, timeout=100)
    done, held = next(consumer), next(consumer)
    assert done is not None
    assert held is not None
    consumer.ack(done)  # and the third is reserved for the next __next__
    server.stop()
    with caplog.at_level(logging.WARNING, "greenstalk.dramatiq"):
        held._holder.touch_older(time.monotonic())
        held._holder.touch_older(time.monotonic())  # once failed, silent
        consumer.requeue([held])
    assert caplog.text.count("touching held jobs failed") == 1
    assert "connection lost" in caplog.text
    consumer.close()
    broker.close()


def test_closing_the_broker_gives_held_jobs_back(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    @dramatiq.actor
    def work() -> None:
        pass

    work.send()
    consumer = broker.consume("default", prefetch=1, timeout=100)
    assert next(consumer) is not None
    assert tube_stats(client)["reserved"] == 1
    broker.close()
    wait_until(lambda: tube_stats(client)["ready"] == 1, "the job to go back")


def test_foreign_queue_names_and_bad_priorities_in_a_tube(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    """Messages put straight into the tube, naming another queue or a bad priority, still run."""
    ran = []

    @dramatiq.actor
    def work(n: int) -> None:
        ran.append(n)

    client.use("dramatiq.default")
    for n, options in [(1, {}), (2, {"beanstalk_priority": "urgent"})]:
        message: Message[Any] = Message(queue_name="elsewhere", actor_name="work", args=(n,),
                                        kwargs={}, options=options)
        client.put(message.encode())
    with running(broker) as worker:
        broker.join("default", timeout=30000)
        worker.join()
    assert sorted(ran) == [1, 2]


def test_a_job_reserved_for_a_consumer_closed_meanwhile_goes_back(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    """A worker thread's reserve that lands after the consumer closed: the job is released."""

    @dramatiq.actor
    def work() -> None:
        pass

    work.send_with_options(beanstalk_priority=9)
    consumer = broker.consume("default", prefetch=2, timeout=100)
    message = next(consumer)
    assert message is not None
    work.send_with_options(beanstalk_priority=8)
    consumer.close()
    holder = message._holder
    with holder.lock:
        assert not holder.consumer._refill(holder)
    assert tube_stats(client) == {"ready": 1, "reserved": 1, "delayed": 0, "buried": 0}
    client.use("dramatiq.default")
    assert client.stats_job(client.peek_ready())["pri"] == 8
    consumer.ack(message)


def test_the_consumer_never_reserves_on_a_connection_a_worker_thread_is_using(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    """A connection whose last job was just settled may still be refilled by that thread.

    The consumer thread used to take it for its waiting reserve as soon as it
    held no job, and two commands went out on one connection at once (seen as
    a reply to no command, then a lost connection).
    """

    @dramatiq.actor
    def work() -> None:
        pass

    work.send()
    consumer = broker.consume("default", prefetch=2, timeout=100)
    first = next(consumer)
    assert first is not None
    busy = first._holder
    # What a worker thread settling the job holds, between its delete and its refill:
    with busy.lock:
        busy.client.delete(first._job_id)
        del busy.held[first._job_id]
        work.send()
        second = next(consumer)
        assert second is not None
        assert second._holder is not busy
        busy.consumer._freed()
    consumer.ack(second)
    consumer.close()
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_a_consumer_closed_while_messages_run_keeps_their_connection(
    broker: BeanstalkBroker, client: greenstalk.Client[bytes]
) -> None:
    """Dramatiq restarts a failed consumer while worker threads still hold its messages."""

    @dramatiq.actor
    def work() -> None:
        pass

    work.send()
    consumer = broker.consume("default", prefetch=1, timeout=100)
    message = next(consumer)
    assert message is not None
    consumer.close()
    assert next(consumer) is None
    assert tube_stats(client)["reserved"] == 1
    consumer.ack(message)
    assert tube_stats(client)["reserved"] == 0
    assert message._holder.client.closed


def test_the_consumer_raises_connection_closed_when_the_server_goes(
    start_server: StartServer,
) -> None:
    server = start_server()
    broker = BeanstalkBroker(address=server.address)
    broker.declare_queue("default")
    consumer = broker.consume("default", timeout=100)
    assert next(consumer) is None
    server.stop()
    with pytest.raises(ConnectionClosed):
        next(consumer)
    with pytest.raises(ConnectionClosed):
        broker.enqueue(Message(queue_name="default", actor_name="a", args=(), kwargs={},
                               options={}))
    consumer.close()
    broker.close()


def test_a_put_after_a_server_restart_reconnects(server_kind: str) -> None:
    with run_server(server_kind) as first:
        broker = BeanstalkBroker(address=first.address)
        message: Message[Any] = Message(queue_name="default", actor_name="a", args=(),
                                        kwargs={}, options={})
        broker.enqueue(message)
        address = first.address
    # The same address, a new server: the pooled connection is dead.
    with run_server(server_kind, address=address) as second, \
            greenstalk.Client(second.address) as client:
        broker.enqueue(message)
        assert tube_stats(client)["ready"] == 1
        broker.close()


# -- set-up ---------------------------------------------------------------------


def test_urls_and_addresses() -> None:
    assert address_from_url("beanstalk://10.0.0.5:11301") == ("10.0.0.5", 11301)
    assert address_from_url("beanstalk://queue.example") == ("queue.example", 11300)
    assert address_from_url("beanstalk:///run/beanstalkd.sock") == "/run/beanstalkd.sock"
    for bad, problem in [
        ("redis://127.0.0.1", "not a beanstalk:// URL"),
        ("beanstalk://", "names no server"),
        ("beanstalk://a:1,b:2", "names several servers"),
        ("beanstalk://host:0", "port must be a number"),
    ]:
        with pytest.raises(ValueError, match=problem):
            BeanstalkBroker(url=bad)
    with pytest.raises(TypeError, match="url must be a str"):
        address_from_url(["beanstalk://a:1"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not both"):
        BeanstalkBroker("beanstalk://a", address=("a", 1))
    with pytest.raises(ValueError, match="ttr must be"):
        BeanstalkBroker(ttr=0)
    with pytest.raises(ValueError, match="socket_timeout must be"):
        BeanstalkBroker(socket_timeout=0)
    with pytest.raises(TypeError, match="tube_prefix must be a str"):
        BeanstalkBroker(tube_prefix=None)  # type: ignore[arg-type]


def test_the_address_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "10.1.2.3:4567")
    assert BeanstalkBroker().address == ("10.1.2.3", 4567)
    assert repr(BeanstalkBroker()) == "<BeanstalkBroker ('10.1.2.3', 4567)>"


def test_a_unix_socket_url(start_server: StartServer) -> None:
    server = start_server(unix=True)
    assert isinstance(server.address, str)
    broker = BeanstalkBroker(url=f"beanstalk://{server.address}".replace("//", "///", 1))
    seen = []

    @dramatiq.actor(broker=broker)
    def hello(name: str) -> None:
        seen.append(name)

    try:
        hello.send("unix")
        with running(broker) as worker:
            broker.join(hello.queue_name, timeout=30000)
            worker.join()
    finally:
        broker.close()
    assert seen == ["unix"]


def test_declaring_queues(broker: BeanstalkBroker) -> None:
    declared = []

    class Watch(dramatiq.Middleware):
        def after_declare_queue(self, broker: dramatiq.Broker, queue_name: str) -> None:
            declared.append(queue_name)

    broker.add_middleware(Watch())
    broker.declare_queue("emails")
    broker.declare_queue("emails")
    assert declared == ["emails"]
    assert broker.get_declared_queues() == {"emails"}
    assert broker.get_declared_delay_queues() == set()
    with pytest.raises(ValueError, match=r"makes tube 'dramatiq\.bad name'"):
        broker.declare_queue("bad name")
    with pytest.raises(QueueNotFound):
        broker.consume("undeclared")
    with pytest.raises(ValueError, match="delay must be >= 0"):
        broker.enqueue(Message(queue_name="emails", actor_name="a", args=(), kwargs={},
                               options={}), delay=-1)
    # A tube nobody has used yet joins at once.
    broker.join("emails", timeout=100)


def test_import_greenstalk_imports_neither_dramatiq_nor_django() -> None:
    code = (
        "import sys, greenstalk, greenstalk.aio\n"
        "greenstalk.Client, greenstalk.Worker\n"
        "loaded = {'dramatiq', 'django'} & {name.split('.')[0] for name in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- a real dramatiq worker process ------------------------------------------------


def dramatiq_process(url: str, out: Path, log: Path) -> subprocess.Popen[bytes]:
    """``dramatiq tests.dramatiq_app.tasks`` in a session of its own (to kill it whole)."""
    env = {**os.environ, "GREENSTALK_DRAMATIQ_URL": url, "GREENSTALK_DRAMATIQ_OUT": str(out)}
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "tests.dramatiq_app.tasks",
             "--processes", "1", "--threads", "4"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            start_new_session=True,
        )


def test_a_worker_process_killed_mid_way_loses_no_message(
    server: ServerProcess, client: greenstalk.Client[bytes], tmp_path: Path
) -> None:
    assert isinstance(server.address, tuple)
    host, port = server.address
    url = f"beanstalk://{host}:{port}"
    broker = BeanstalkBroker(url=url)
    for index in range(1000):
        broker.enqueue(Message(queue_name="default", actor_name="record", args=(index,),
                               kwargs={}, options={}))
    broker.close()
    out, log = tmp_path / "out", tmp_path / "log"
    out.touch()

    def done() -> list[int]:
        return [int(line) for line in out.read_text().split()]

    first = dramatiq_process(url, out, log)
    try:
        wait_until(lambda: len(done()) >= 300, "300 messages to run", seconds=60)
        in_hand = tube_stats(client)["reserved"]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    before = len(set(done()))
    assert 300 <= before < 1000
    assert in_hand > 0, "the kill landed while the worker held jobs"
    second = dramatiq_process(url, out, log)
    try:
        wait_until(lambda: len(set(done())) == 1000, "every message to run", seconds=120)
        broker = BeanstalkBroker(url=url)
        broker.join("default", timeout=60000)
        broker.close()
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        try:
            second.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            second.wait()
    assert sorted(set(done())) == list(range(1000))
    assert tube_stats(client) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
