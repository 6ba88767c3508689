"""The sync client against a real beanstalkd, over TCP and over a Unix socket."""

from __future__ import annotations

import enum
import json
import signal
import socket
import threading
import time
from typing import Any

import pytest

import greenstalk
from greenstalk._protocol import commands
from greenstalk.testing import BeanstalkdProcess

from .conftest import MakeClient, StartServer

Client = greenstalk.Client


def repr_at(name: str, address: greenstalk.Address) -> str:
    """The repr of a client of ``address``, as greenstalk 2.1.1 writes it."""
    if isinstance(address, tuple):
        return f"{name}(host={address[0]!r}, port={address[1]!r})"
    return f"{name}(socket={str(address)!r})"


def state(client: Client[Any], job_id: int) -> str:
    return client.stats_job(job_id)["state"]


def command_count(client: Client[Any], name: str) -> int:
    return int(client.stats()[name])  # type: ignore[literal-required]


# -- the overview, verbatim -------------------------------------------------


def test_overview_put_reserve_delete(address: greenstalk.Address) -> None:
    client = greenstalk.Client(address)
    assert client.put(b"hello") == 1
    job = client.reserve()
    assert job.id == 1
    assert job.body == b"hello"
    client.delete(job)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(1)
    client.close()


def test_overview_json_producer_and_consumer(make_client: MakeClient) -> None:
    producer = make_client()
    consumer = make_client()
    payload = {"user_id": 42}
    producer.put(json.dumps(payload).encode("utf-8"))
    job = consumer.reserve()
    assert json.loads(job.body.decode("utf-8")) == {"user_id": 42}
    consumer.delete(job)


def test_constants_match_the_overview() -> None:
    assert greenstalk.DEFAULT_TUBE == "default"
    assert greenstalk.DEFAULT_PRIORITY == 2**16
    assert greenstalk.DEFAULT_DELAY == 0
    assert greenstalk.DEFAULT_TTR == 60


def test_put_uses_the_documented_defaults(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    stats = client.stats_job(job_id)
    assert (stats["pri"], stats["delay"], stats["ttr"], stats["tube"]) == (2**16, 0, 60, "default")


# -- tubes ---------------------------------------------------------------------


def test_use_changes_the_tube_put_inserts_into(client: Client[bytes]) -> None:
    client.use("emails")
    assert client.using() == "emails"
    job_id = client.put(b"x")
    assert client.stats_job(job_id)["tube"] == "emails"
    assert sorted(client.tubes()) == ["default", "emails"]


def test_use_and_watch_constructor_arguments(make_client: MakeClient) -> None:
    producer = make_client(use="emails")
    assert producer.using() == "emails"
    assert producer.watching() == ["default"]
    consumer = make_client(watch="emails")
    assert consumer.watching() == ["emails"]
    job_id = producer.put(b"x")
    assert consumer.reserve(timeout=0).id == job_id


@pytest.mark.parametrize(
    "make_watch",
    [
        lambda: ["a", "b"],
        lambda: ("a", "b"),
        lambda: (tube for tube in ["a", "b"]),
        lambda: iter(["a", "b"]),
        lambda: {"a": 1, "b": 2}.keys(),
    ],
    ids=["list", "tuple", "generator", "iterator", "keys"],
)
def test_watch_accepts_any_iterable(make_client: MakeClient, make_watch: Any) -> None:
    client = make_client(watch=make_watch())
    assert sorted(client.watching()) == ["a", "b"]


def test_watch_list_that_keeps_default(make_client: MakeClient) -> None:
    client = make_client(watch=["other", "default"])
    assert sorted(client.watching()) == ["default", "other"]


def test_empty_watch_list_is_refused_before_connecting(address: greenstalk.Address) -> None:
    with pytest.raises(ValueError, match="at least one tube"):
        greenstalk.Client(address, watch=[])


@pytest.mark.parametrize(("use", "watch"), [("bad name", "default"), ("default", ["ok", "-x"])])
def test_bad_constructor_tubes_are_refused_before_connecting(
    address: greenstalk.Address, use: str, watch: Any
) -> None:
    with pytest.raises(ValueError, match="invalid tube name"):
        greenstalk.Client(address, use=use, watch=watch)


def test_watch_and_ignore_return_the_watch_count(client: Client[bytes]) -> None:
    assert client.watch("a") == 2
    assert client.watch("a") == 2
    assert client.watch("b") == 3
    assert client.ignore("nosuch") == 3
    assert client.ignore("default") == 2
    assert sorted(client.watching()) == ["a", "b"]
    client.ignore("a")
    with pytest.raises(greenstalk.NotIgnoredError):
        client.ignore("b")


def test_reserve_takes_jobs_from_watched_tubes_only(make_client: MakeClient) -> None:
    producer = make_client(use="elsewhere")
    consumer = make_client()
    producer.put(b"x")
    with pytest.raises(greenstalk.TimedOutError):
        consumer.reserve(timeout=0)
    consumer.watch("elsewhere")
    assert consumer.reserve(timeout=0).body == b"x"


def test_tube_with_every_allowed_character(client: Client[bytes]) -> None:
    name = "ABCxyz019-+/;.$_()"
    client.use(name)
    assert client.using() == name
    assert client.stats_tube(name)["name"] == name


def test_numeric_tube_name_stays_a_string(client: Client[bytes]) -> None:
    client.use("123")
    job_id = client.put(b"x")
    assert client.stats_tube("123")["name"] == "123"
    assert client.stats_job(job_id)["tube"] == "123"
    assert "123" in client.tubes()


# -- priorities, delays, TTR --------------------------------------------------------


def test_reserve_order_follows_priority_then_id(client: Client[bytes]) -> None:
    low = client.put(b"low", priority=2**32 - 1)
    mid = client.put(b"mid", priority=10)
    first = client.put(b"first", priority=0)
    second = client.put(b"second", priority=0)
    order = [client.reserve(timeout=0).id for _ in range(4)]
    assert order == [first, second, mid, low]


@pytest.mark.parametrize("priority", [0, 1023, 2**31, 2**32 - 1])
def test_priority_bounds_are_accepted(client: Client[bytes], priority: int) -> None:
    job_id = client.put(b"x", priority=priority)
    assert client.stats_job(job_id)["pri"] == priority


def test_delayed_job_becomes_ready_after_its_delay(client: Client[bytes]) -> None:
    job_id = client.put(b"later", delay=1)
    assert state(client, job_id) == "delayed"
    assert client.peek_delayed().id == job_id
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    started = time.monotonic()
    job = client.reserve(timeout=5)
    assert job.id == job_id
    assert time.monotonic() - started > 0.5


def test_ttr_expiry_hands_the_job_to_another_consumer(
    make_client: MakeClient, server_kind: str
) -> None:
    first = make_client()
    second = make_client()
    job_id = first.put(b"slow", ttr=1)
    assert first.reserve().id == job_id
    # The thread is bounded: closing the client ends its wait.
    reserved: list[greenstalk.Job[bytes]] = []
    waiter = threading.Thread(target=lambda: reserved.append(second.reserve()), daemon=True)
    waiter.start()
    waiter.join(4)
    if not reserved and server_kind == "beanstalkd":
        # beanstalkd 1.12 can lose track of the holder's TTR until that
        # connection sends another command (docs/server.rst).
        first.stats()
    waiter.join(6)
    assert reserved, "the job did not come back after its TTR"
    job = reserved[0]
    assert job.id == job_id
    # At least 1: on a loaded machine the second reservation may time out too.
    assert second.stats_job(job_id)["timeouts"] >= 1
    with pytest.raises(greenstalk.NotFoundError):
        first.touch(job_id)


def test_ttr_zero_is_raised_to_one_second_by_the_server(client: Client[bytes]) -> None:
    job_id = client.put(b"x", ttr=0)
    assert client.stats_job(job_id)["ttr"] == 1


def test_touch_restarts_the_ttr(client: Client[bytes]) -> None:
    job_id = client.put(b"x", ttr=3)
    job = client.reserve()
    client.touch(job)
    assert client.stats_job(job_id)["time-left"] >= 2
    client.touch(job_id)


def test_deadline_soon(client: Client[bytes]) -> None:
    client.put(b"x", ttr=1)
    client.reserve()
    with pytest.raises(greenstalk.DeadlineSoonError):
        client.reserve(timeout=2)


def test_closing_a_client_releases_its_jobs(make_client: MakeClient) -> None:
    first = make_client()
    second = make_client()
    job_id = first.put(b"x")
    first.reserve()
    first.close()
    assert second.reserve(timeout=5).id == job_id


# -- the lifecycle flowchart, arrow by arrow ----------------------------------------


def test_lifecycle_put_to_ready(client: Client[bytes]) -> None:
    assert state(client, client.put(b"x")) == "ready"


def test_lifecycle_put_with_delay_to_delayed(client: Client[bytes]) -> None:
    assert state(client, client.put(b"x", delay=100)) == "delayed"


def test_lifecycle_ready_to_reserved(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    assert client.reserve().id == job_id
    assert state(client, job_id) == "reserved"
    assert client.stats_job(job_id)["reserves"] == 1


def test_lifecycle_reserved_release_to_ready(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    job = client.reserve()
    client.release(job, priority=7)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"], stats["releases"]) == ("ready", 7, 1)


def test_lifecycle_reserved_release_with_delay_to_delayed(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    client.reserve()
    client.release(job_id, delay=100)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["delay"]) == ("delayed", 100)


def test_lifecycle_reserved_bury_to_buried(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    job = client.reserve()
    client.bury(job, priority=3)
    stats = client.stats_job(job_id)
    assert (stats["state"], stats["pri"], stats["buries"]) == ("buried", 3, 1)
    assert client.peek_buried() == greenstalk.Job(job_id, b"x")


def test_lifecycle_buried_kick_to_ready(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    client.bury(client.reserve())
    assert client.kick(10) == 1
    assert state(client, job_id) == "ready"
    assert client.stats_job(job_id)["kicks"] == 1


def test_lifecycle_reserved_delete_to_gone(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    client.delete(client.reserve())
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_job(job_id)


def test_lifecycle_buried_delete_to_gone(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    client.bury(client.reserve())
    client.delete(job_id)
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_kick_moves_delayed_jobs_when_none_is_buried(client: Client[bytes]) -> None:
    first = client.put(b"a", delay=100)
    second = client.put(b"b", delay=100)
    assert client.kick(1) == 1
    assert state(client, first) == "ready"
    assert state(client, second) == "delayed"
    assert client.kick(0) == 0


def test_kick_job(client: Client[bytes]) -> None:
    delayed = client.put(b"a", delay=100)
    client.kick_job(delayed)
    assert state(client, delayed) == "ready"
    with pytest.raises(greenstalk.NotFoundError):
        client.kick_job(delayed)
    buried = client.put(b"b", priority=0)
    client.bury(client.reserve())
    client.kick_job(greenstalk.Job(buried, b"b"))
    assert state(client, buried) == "ready"


def test_reserve_job(make_client: MakeClient) -> None:
    client = make_client()
    other = make_client()
    job_id = client.put(b"a", delay=100)
    assert client.reserve_job(job_id) == greenstalk.Job(job_id, b"a")
    assert state(client, job_id) == "reserved"
    with pytest.raises(greenstalk.NotFoundError):
        other.reserve_job(job_id)
    with pytest.raises(greenstalk.NotFoundError):
        client.reserve_job(job_id + 1)


def test_commands_on_jobs_held_by_another_client(make_client: MakeClient) -> None:
    owner = make_client()
    other = make_client()
    job_id = owner.put(b"x")
    owner.reserve()
    for command in (other.delete, other.release, other.bury, other.touch):
        with pytest.raises(greenstalk.NotFoundError):
            command(job_id)
    assert state(owner, job_id) == "reserved"


def test_release_bury_touch_of_a_ready_job_are_not_found(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    for command in (client.release, client.bury, client.touch):
        with pytest.raises(greenstalk.NotFoundError):
            command(job_id)


# -- peeking and stats ------------------------------------------------------------------


def test_peeks(client: Client[bytes]) -> None:
    for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
        with pytest.raises(greenstalk.NotFoundError):
            peek()
    ready = client.put(b"ready")
    delayed = client.put(b"delayed", delay=100)
    assert client.peek_ready() == greenstalk.Job(ready, b"ready")
    assert client.peek_delayed() == greenstalk.Job(delayed, b"delayed")
    assert client.peek(delayed).body == b"delayed"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(0)


def test_binary_bodies_round_trip(client: Client[bytes]) -> None:
    body = bytes(range(256)) + b"\r\n" + b"\x00" * 10 + b"\r\n"
    job_id = client.put(body)
    assert client.peek(job_id).body == body
    assert client.reserve().body == body
    assert client.put(b"") > job_id
    assert client.reserve().body == b""


def test_largest_body_the_server_accepts(client: Client[bytes]) -> None:
    body = b"x" * 65535
    job_id = client.put(body)
    assert client.reserve().body == body
    client.delete(job_id)


def test_stats_types(client: Client[bytes]) -> None:
    stats = client.stats()
    assert stats["version"] == "1.12"
    assert stats["draining"] is False
    assert isinstance(stats["id"], str)
    assert isinstance(stats["hostname"], str)
    assert isinstance(stats["os"], str)
    assert isinstance(stats["rusage-utime"], float)
    assert stats["current-connections"] == 1
    assert stats["max-job-size"] == 65535
    assert stats["cmd-stats"] == 1


def test_stats_tube_and_job(client: Client[bytes]) -> None:
    job_id = client.put(b"x", priority=5)
    tube = client.stats_tube("default")
    assert tube["current-jobs-ready"] == 1
    assert tube["current-jobs-urgent"] == 1
    assert tube["total-jobs"] == 1
    job = client.stats_job(greenstalk.Job(job_id, b"x"))
    assert job["id"] == job_id
    assert job["pri"] == 5
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_tube("nosuch")
    with pytest.raises(greenstalk.NotFoundError):
        client.stats_job(job_id + 1)


def test_pause_tube(make_client: MakeClient) -> None:
    client = make_client()
    client.put(b"x")
    client.pause_tube("default", 100)
    assert client.stats_tube("default")["pause"] == 100
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)
    client.pause_tube("default", 0)
    assert client.reserve(timeout=5).body == b"x"
    with pytest.raises(greenstalk.NotFoundError):
        client.pause_tube("nosuch", 1)


# -- server refusals --------------------------------------------------------------------


def test_job_too_big_leaves_the_client_usable(client: Client[bytes]) -> None:
    with pytest.raises(greenstalk.JobTooBigError):
        client.put(b"x" * 65536)
    assert client.put(b"small") == 1


def test_draining_server_refuses_puts(beanstalkd: BeanstalkdProcess, client: Client[bytes]) -> None:
    assert client.stats()["draining"] is False
    beanstalkd.drain()
    assert client.stats()["draining"] is True
    with pytest.raises(greenstalk.DrainingError) as info:
        client.put(b"x")
    assert str(info.value) == (
        "put 1 byte: DRAINING (the server is in drain mode and takes no new jobs)"
    )
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=0)


def test_server_errors_name_the_command(client: Client[bytes]) -> None:
    """A server error says which command it answers, with its job id or tube, and what
    the reply means; an empty message (greenstalk 2.x) helps nobody."""
    cases: list[tuple[Any, str]] = [
        (lambda: client.delete(42), "delete 42: NOT_FOUND (no such job, or it is reserved "
         "by another connection)"),
        (lambda: client.release(greenstalk.Job(42, b"")), "release 42 65536 0: NOT_FOUND "
         "(no such job reserved by this connection)"),
        (lambda: client.reserve(timeout=0), "reserve-with-timeout 0: TIMED_OUT (no job "
         "became ready in time)"),
        (lambda: client.ignore("default"), "ignore default: NOT_IGNORED (it is the only tube "
         "on the watch list)"),
        (lambda: client.stats_tube("nosuch"), "stats-tube nosuch: NOT_FOUND (no such tube)"),
        (lambda: client.peek_ready(), "peek-ready: NOT_FOUND (no ready job in the used tube)"),
        (lambda: client.put(b"x" * 65536), "put 65536 bytes: JOB_TOO_BIG (the body is larger "
         "than the server's max-job-size)"),
    ]
    for call, message in cases:
        with pytest.raises(greenstalk.BeanstalkdError) as info:
            call()
        assert str(info.value) == message
    with pytest.raises(greenstalk.PutManyError) as many:
        client.put_many([b"x", b"x" * 65536])
    assert str(many.value.errors[1]) == (
        "put: JOB_TOO_BIG (the body is larger than the server's max-job-size)"
    )
    assert client.using() == "default"  # refusals leave the connection as it was


def test_the_worker_step_names_the_commands(make_sync_client: MakeClient) -> None:
    client = make_sync_client()
    finished, reserved = client._finish_and_reserve(commands.delete(99), 0)
    assert str(finished) == (
        "delete 99: NOT_FOUND (no such job, or it is reserved by another connection)"
    )
    assert str(reserved) == "reserve-with-timeout 0: TIMED_OUT (no job became ready in time)"


def test_tbody_is_greenstalk_2s_type_variable() -> None:
    assert greenstalk.TBody.__constraints__ == (str, bytes)
    assert "TBody" in greenstalk.__all__

    def first_body(jobs: list[greenstalk.Job[greenstalk.TBody]]) -> greenstalk.TBody:
        return jobs[0].body

    assert first_body([greenstalk.Job(1, b"x")]) == b"x"
    assert first_body([greenstalk.Job(1, "x")]) == "x"


def test_server_error_classes_are_beanstalkd_errors() -> None:
    for name in (
        "NotFoundError", "TimedOutError", "DeadlineSoonError", "NotIgnoredError", "BuriedError",
        "DrainingError", "JobTooBigError", "ExpectedCrlfError", "InternalError",
        "BadFormatError", "UnknownCommandError", "OutOfMemoryError",
    ):
        error_class = getattr(greenstalk, name)
        assert issubclass(error_class, greenstalk.BeanstalkdError)
        assert issubclass(error_class, greenstalk.Error)
    assert issubclass(greenstalk.BuriedWithJobIDError, greenstalk.BuriedError)
    assert greenstalk.BuriedWithJobIDError(5).id == 5
    assert greenstalk.BuriedError([b"7"]).id == 7
    assert greenstalk.BuriedError().id is None


# -- pipelining ---------------------------------------------------------------------------


def test_put_many_returns_ids_in_order(client: Client[bytes]) -> None:
    bodies = [b"%d" % i for i in range(3000)]
    ids = client.put_many(bodies, priority=1, ttr=5)
    assert ids == list(range(1, 3001))
    assert client.peek(ids[1234]).body == b"1234"
    assert client.stats_job(ids[-1])["ttr"] == 5
    assert client.stats_tube("default")["current-jobs-ready"] == 3000


def test_put_many_of_large_bodies(client: Client[bytes]) -> None:
    bodies = [bytes([i % 256]) * 60000 for i in range(100)]
    ids = client.put_many(bodies)
    assert [client.reserve().body for _ in ids] == bodies


def test_put_many_of_nothing(client: Client[bytes]) -> None:
    assert client.put_many([]) == []
    assert client.put_many(iter([])) == []


def test_put_many_reports_refused_bodies(client: Client[bytes]) -> None:
    bodies = [b"a", b"x" * 70000, b"b", b"y" * 70000]
    with pytest.raises(greenstalk.PutManyError) as caught:
        client.put_many(bodies)
    error = caught.value
    assert error.ids == [1, None, 2, None]
    assert sorted(error.errors) == [1, 3]
    assert all(isinstance(e, greenstalk.JobTooBigError) for e in error.errors.values())
    assert "2 of 4" in str(error)
    assert client.put(b"after") == 3
    assert [client.reserve().body for _ in range(3)] == [b"a", b"b", b"after"]


def test_put_many_checks_every_body_before_sending(client: Client[bytes]) -> None:
    with pytest.raises(TypeError):
        client.put_many([b"a", "not bytes", b"c"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="priority"):
        client.put_many([b"a"], priority=-1)
    assert command_count(client, "cmd-put") == 0


def test_put_many_into_a_draining_server(
    beanstalkd: BeanstalkdProcess, client: Client[bytes]
) -> None:
    beanstalkd.drain()
    with pytest.raises(greenstalk.PutManyError) as caught:
        client.put_many([b"a", b"b"])
    assert caught.value.ids == [None, None]
    assert client.using() == "default"


# -- bad input never reaches the wire ------------------------------------------------------


BAD_TUBES = ["", "has space", "crlf\r\nput 0 0 1 1", "lf\n", "cr\r", "-dash", "x" * 201, "é",
             "tab\t", "star*", "colon:"]


@pytest.mark.parametrize("tube", BAD_TUBES)
def test_bad_tube_names_are_refused_before_sending(client: Client[bytes], tube: str) -> None:
    for command in (client.use, client.watch, client.ignore, client.stats_tube):
        with pytest.raises(ValueError, match="invalid tube name"):
            command(tube)
    with pytest.raises(ValueError, match="invalid tube name"):
        client.pause_tube(tube, 1)
    stats = client.stats()
    assert (stats["cmd-use"], stats["cmd-watch"], stats["cmd-ignore"]) == (0, 0, 0)
    assert (stats["cmd-stats-tube"], stats["cmd-pause-tube"]) == (0, 0)
    assert client.using() == "default"
    assert client.watching() == ["default"]


def test_wrong_type_tube_names(client: Client[bytes]) -> None:
    with pytest.raises(TypeError):
        client.use(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.watch(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 2**32, 2**40])
def test_out_of_range_numbers_are_refused_before_sending(client: Client[bytes], value: int) -> None:
    with pytest.raises(ValueError, match="priority"):
        client.put(b"x", priority=value)
    with pytest.raises(ValueError, match="delay"):
        client.put(b"x", delay=value)
    with pytest.raises(ValueError, match="ttr"):
        client.put(b"x", ttr=value)
    with pytest.raises(ValueError, match="timeout"):
        client.reserve(timeout=value)
    with pytest.raises(ValueError, match="bound"):
        client.kick(value)
    with pytest.raises(ValueError, match="priority"):
        client.release(1, priority=value)
    with pytest.raises(ValueError, match="delay"):
        client.pause_tube("default", value)
    assert command_count(client, "cmd-put") == 0
    assert client.put(b"fine") == 1


@pytest.mark.parametrize("value", [1.5, "1", None, True])
def test_non_integer_numbers_are_refused(client: Client[bytes], value: Any) -> None:
    with pytest.raises(TypeError):
        client.put(b"x", priority=value)
    with pytest.raises(TypeError):
        client.delete(value)
    assert client.put(b"fine") == 1


def test_int_subclasses_are_numbers(client: Client[bytes]) -> None:
    class Priority(enum.IntEnum):
        HIGH = 1

    job_id = client.put(b"x", priority=Priority.HIGH)
    assert client.stats_job(job_id)["pri"] == 1


@pytest.mark.parametrize("job_id", [-1, 2**64])
def test_out_of_range_job_ids(client: Client[bytes], job_id: int) -> None:
    with pytest.raises(ValueError, match="job id"):
        client.delete(job_id)
    with pytest.raises(ValueError, match="job id"):
        client.peek(greenstalk.Job(job_id, b""))


def test_largest_job_id_is_sent(client: Client[bytes]) -> None:
    with pytest.raises(greenstalk.NotFoundError):
        client.delete(2**64 - 1)


def test_str_body_without_encoding_is_refused(client: Client[bytes]) -> None:
    with pytest.raises(TypeError, match="encoding"):
        client.put("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes"):
        client.put(123)  # type: ignore[arg-type]
    assert client.put(bytearray(b"ba")) == 1
    assert client.put(memoryview(b"mv")) == 2
    assert client.reserve().body == b"ba"


def test_reserve_timeout_beyond_a_c_int_waits_like_reserve(client: Client[bytes]) -> None:
    job_id = client.put(b"x")
    assert client.reserve(timeout=2**32 - 1).id == job_id


# -- encodings ----------------------------------------------------------------------------


def test_encoding_gives_str_bodies(make_client: MakeClient) -> None:
    client = make_client(encoding="utf-8")
    job_id = client.put("héllo")
    assert client.peek(job_id).body == "héllo"
    client.put(b"raw bytes too")
    assert client.reserve().body == "héllo"
    assert client.reserve().body == "raw bytes too"
    ids = client.put_many(["ü", b"b"])
    assert [client.peek(i).body for i in ids] == ["ü", "b"]


def test_unknown_encoding_is_refused_before_connecting(address: greenstalk.Address) -> None:
    with pytest.raises(LookupError):
        greenstalk.Client(address, encoding="no-such-codec")


def test_undecodable_body_leaves_the_job_reserved(make_client: MakeClient) -> None:
    raw = make_client()
    text = make_client(encoding="utf-8")
    job_id = raw.put(b"\xff\xfe not utf-8")
    with pytest.raises(greenstalk.BodyDecodeError) as caught:
        text.reserve()
    error = caught.value
    assert isinstance(error, UnicodeDecodeError)
    assert error.job == greenstalk.Job(job_id, b"\xff\xfe not utf-8")
    assert f"job {job_id}" in str(error)
    assert state(text, job_id) == "reserved"
    text.bury(error.job)
    assert state(text, job_id) == "buried"
    with pytest.raises(greenstalk.BodyDecodeError):
        text.peek(job_id)


# -- connections ----------------------------------------------------------------------------


def connected_socket(address: greenstalk.Address) -> socket.socket:
    """A plain socket connected to ``address``."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
        return sock
    assert isinstance(address, tuple)
    return socket.create_connection(address, timeout=5)


def test_repr_of_a_socket_handed_in(beanstalkd: BeanstalkdProcess) -> None:
    """Named by the socket's peer, as greenstalk 2.1.1 did."""
    with connected_socket(beanstalkd.address) as sock, greenstalk.Client(sock) as client:
        assert repr(client) == repr_at("greenstalk.Client", beanstalkd.address)


def test_repr_of_a_path_like_address(start_server: StartServer) -> None:
    import pathlib

    server = start_server(unix=True)
    assert isinstance(server.address, str)
    with greenstalk.Client(pathlib.Path(server.address)) as client:
        assert repr(client) == f"greenstalk.Client(socket={server.address!r})"


def test_pre_connected_socket(beanstalkd: BeanstalkdProcess) -> None:
    address = beanstalkd.address
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
    else:
        sock = socket.create_connection(address)
    with greenstalk.Client(sock) as client:
        assert client.put(b"x") == 1
    assert sock.fileno() == -1


def test_context_manager_and_close(address: greenstalk.Address) -> None:
    with greenstalk.Client(address) as client:
        assert repr(client) == repr_at("greenstalk.Client", address)
        assert not client.closed
    assert client.closed
    assert repr(client) == repr_at("greenstalk.Client", address)
    client.close()
    with pytest.raises(greenstalk.ClientConnectionError, match="closed"):
        client.put(b"x")


def test_server_going_away(start_server: StartServer) -> None:
    server = start_server()
    client = greenstalk.Client(server.address)
    client.put(b"x")
    server.stop()
    with pytest.raises(greenstalk.ClientConnectionError) as caught:
        client.put(b"y")
    assert isinstance(caught.value, ConnectionError)
    assert client.closed
    with pytest.raises(ConnectionError, match="the connection is closed"):
        client.stats()


def test_connect_to_nothing(tmp_path: Any) -> None:
    with pytest.raises(greenstalk.ClientConnectionError, match="cannot connect"):
        greenstalk.Client(str(tmp_path / "no-socket"))
    with pytest.raises(ConnectionError):
        greenstalk.Client(tmp_path / "no-socket")


def test_path_like_address(start_server: StartServer) -> None:
    import pathlib

    server = start_server(unix=True)
    assert isinstance(server.address, str)
    with greenstalk.Client(pathlib.Path(server.address)) as client:
        assert client.using() == "default"


def test_small_max_job_size(start_server: StartServer) -> None:
    server = start_server(args=["-z", "10"])
    with greenstalk.Client(server.address) as client:
        assert client.put(b"x" * 10) == 1
        with pytest.raises(greenstalk.JobTooBigError):
            client.put(b"x" * 11)
        assert client.stats()["max-job-size"] == 10


def test_socket_timeout_does_not_cut_a_reserve_short(make_client: MakeClient) -> None:
    client = make_client(socket_timeout=0.3)
    job_id = client.put(b"x", delay=1)
    assert client.reserve(timeout=3).id == job_id
    with pytest.raises(greenstalk.TimedOutError):
        client.reserve(timeout=1)
    assert client.put(b"y") == job_id + 1


def test_job_repr_and_equality() -> None:
    job = greenstalk.Job(3, b"body")
    assert repr(job) == "greenstalk.Job(id=3, body=b'body')"
    assert repr(greenstalk.Job(4, "text")) == "greenstalk.Job(id=4, body='text')"
    long = greenstalk.Job(5, b"x" * 1000)  # 2.1.1 shows the whole body
    assert repr(long) == f"greenstalk.Job(id=5, body={b'x' * 1000!r})"
    assert job == greenstalk.Job(3, b"body")
    assert job != greenstalk.Job(3, b"other")
    assert job != 3
    assert hash(job) == hash(greenstalk.Job(3, b"other"))


class Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted


def test_interrupted_reserve_closes_the_connection(make_sync_client: MakeClient) -> None:
    client = make_sync_client()
    other = make_sync_client()
    previous = signal.signal(signal.SIGALRM, _interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Interrupted):
            client.reserve(timeout=10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The reserve is still pending on the server; reusing the connection
    # would take its reply as the answer to the next command.
    assert client.closed
    with pytest.raises(greenstalk.ClientConnectionError, match="interrupted"):
        client.put(b"x")
    job_id = other.put(b"x")
    assert other.reserve(timeout=5).id == job_id

