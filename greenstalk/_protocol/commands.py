"""Typed commands turned into bytes, with every argument checked first.

Each function validates its arguments and returns a :data:`Request`: the
exact bytes to send and the function that turns the server's reply into a
result (or raises the matching error). Nothing invalid ever reaches the
wire: a bad argument raises :class:`ValueError` or :class:`TypeError` here,
before a transport has sent anything, so the connection stays in step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Callable, TypeVar, Union

from .responses import Reply, expect_data, expect_int, expect_job, expect_nothing, expect_word
from .stats import (
    JOB_TEXT_FIELDS,
    SERVER_FLAG_FIELDS,
    SERVER_TEXT_FIELDS,
    TUBE_TEXT_FIELDS,
    StatValue,
    parse_list,
    parse_stats,
)

T = TypeVar("T")

Request = tuple[bytes, Callable[[Reply], T]]
"""The bytes of one command and the parser of its reply."""

BodyBytes = Union[bytes, bytearray, memoryview]
"""The binary types a job body may be given as."""

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
# beanstalkd 1.12 reads the reserve timeout as a C int: larger values would
# wrap to "wait forever" there and are refused by 1.13.
RESERVE_TIMEOUT_MAX = 2**31 - 1
MAX_TUBE_NAME_LENGTH = 200
TUBE_NAME_CHARACTERS = "A-Z a-z 0-9 - + / ; . $ _ ( )"
_TUBE_NAME = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def _integer(what: str, value: object, maximum: int) -> int:
    # bool is an int subclass, but True as a priority is a bug, not a number.
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int, not {type(value).__name__}")
        value = int(value)
    if 0 <= value <= maximum:
        return value
    raise ValueError(f"{what} must be between 0 and {maximum}, got {value}")


def check_u32(what: str, value: object) -> int:
    """Return ``value`` if it is an int in 0..2**32-1 (priority, delay, ttr, ...).

    Raises TypeError for a non-int, ValueError when out of range.
    """
    return _integer(what, value, U32_MAX)


def check_job_id(value: object) -> int:
    """Return ``value`` if it is an int job id in 0..2**64-1.

    Raises TypeError for a non-int, ValueError when out of range.
    """
    if type(value) is int and 0 <= value <= U64_MAX:
        return value
    return _integer("job id", value, U64_MAX)


def check_tube(name: object) -> bytes:
    """Return a tube name as ASCII bytes if beanstalkd accepts it.

    A name is 1 to 200 characters from ``A-Z a-z 0-9 - + / ; . $ _ ( )`` and
    does not start with ``-``. Raises TypeError for a non-str, ValueError
    for any other name (spaces, CR and LF included).
    """
    if not isinstance(name, str):
        raise TypeError(f"tube name must be a str, not {type(name).__name__}")
    if _TUBE_NAME.fullmatch(name) is None:
        if not name:
            problem = "is empty"
        elif len(name) > MAX_TUBE_NAME_LENGTH:
            problem = f"is longer than {MAX_TUBE_NAME_LENGTH} characters"
        elif name[0] == "-":
            problem = "starts with '-'"
        else:
            problem = f"may only contain {TUBE_NAME_CHARACTERS}"
        raise ValueError(f"invalid tube name {name!r}: it {problem}")
    return name.encode("ascii")


def check_body(body: object) -> bytes:
    """Return a job body as bytes.

    Raises TypeError for anything but bytes, bytearray or memoryview.
    """
    if type(body) is bytes:
        return body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        raise TypeError(
            "str body given but the client has no encoding: pass bytes, "
            "or create the client with encoding='utf-8'"
        )
    raise TypeError(f"job body must be bytes, not {type(body).__name__}")


def _inserted(reply: Reply) -> int:
    return expect_int(reply, b"INSERTED")


def _reserved(reply: Reply) -> tuple[int, bytes]:
    return expect_job(reply, b"RESERVED")


def _found(reply: Reply) -> tuple[int, bytes]:
    return expect_job(reply, b"FOUND")


def _using(reply: Reply) -> str:
    return expect_word(reply, b"USING")


def _watching(reply: Reply) -> int:
    return expect_int(reply, b"WATCHING")


def _kicked_count(reply: Reply) -> int:
    return expect_int(reply, b"KICKED")


def _deleted(reply: Reply) -> None:
    expect_nothing(reply, b"DELETED")


def _released(reply: Reply) -> None:
    expect_nothing(reply, b"RELEASED")


def _buried(reply: Reply) -> None:
    expect_nothing(reply, b"BURIED")


def _touched(reply: Reply) -> None:
    expect_nothing(reply, b"TOUCHED")


def _kicked(reply: Reply) -> None:
    expect_nothing(reply, b"KICKED")


def _paused(reply: Reply) -> None:
    expect_nothing(reply, b"PAUSED")


def _server_stats(reply: Reply) -> dict[str, StatValue]:
    return parse_stats(expect_data(reply), SERVER_TEXT_FIELDS, SERVER_FLAG_FIELDS)


def _tube_stats(reply: Reply) -> dict[str, StatValue]:
    return parse_stats(expect_data(reply), TUBE_TEXT_FIELDS)


def _job_stats(reply: Reply) -> dict[str, StatValue]:
    return parse_stats(expect_data(reply), JOB_TEXT_FIELDS)


def _tube_list(reply: Reply) -> list[str]:
    return parse_list(expect_data(reply))


def put(body: BodyBytes, priority: int, delay: int, ttr: int) -> Request[int]:
    """``put``: insert a job into the used tube; the reply gives its id."""
    if type(body) is not bytes:
        body = check_body(body)
    # Fast path for the common case: three plain ints, and since U32_MAX is
    # all one bits, their OR is in range exactly when each of them is.
    if not (
        type(priority) is type(delay) is type(ttr) is int
        and 0 <= (priority | delay | ttr) <= U32_MAX
    ):
        priority = check_u32("priority", priority)
        delay = check_u32("delay", delay)
        ttr = check_u32("ttr", ttr)
    return b"put %d %d %d %d\r\n%b\r\n" % (priority, delay, ttr, len(body), body), _inserted


def put_many(
    bodies: Iterable[BodyBytes], priority: int, delay: int, ttr: int
) -> tuple[Iterator[bytes], Callable[[Reply], int]]:
    """Many ``put`` commands: every argument is checked now, each command formatted later.

    Returns an iterator of the commands' bytes, which formats each one only
    when it is taken (so a batch of large bodies is not copied all at once),
    and the parser of each reply.
    """
    checked = [check_body(body) for body in bodies]
    head = b"put %d %d %d " % (
        check_u32("priority", priority),
        check_u32("delay", delay),
        check_u32("ttr", ttr),
    )
    return (b"%b%d\r\n%b\r\n" % (head, len(body), body) for body in checked), _inserted


def use(tube: str) -> Request[str]:
    """``use``: set the tube that ``put`` inserts into."""
    return b"use %b\r\n" % check_tube(tube), _using


def reserve(timeout: int | None) -> Request[tuple[int, bytes]]:
    """``reserve`` (timeout None) or ``reserve-with-timeout``.

    The timeout must be 0..2**32-1 seconds like every other duration; values
    above 2**31-1 (68 years), which beanstalkd cannot hold, become a plain
    ``reserve``.
    """
    if timeout is None or check_u32("timeout", timeout) > RESERVE_TIMEOUT_MAX:
        return b"reserve\r\n", _reserved
    return b"reserve-with-timeout %d\r\n" % timeout, _reserved


def waits_for_a_job(data: bytes) -> bool:
    """True for a command the server may answer only much later: a waiting reserve.

    The server handles nothing else from the connection until it answers.
    """
    # The first byte settles it for most commands, cheaply: this runs for every one.
    return data[:1] == b"r" and (
        data == b"reserve\r\n" or data.startswith(b"reserve-with-timeout ")
    )


def reserve_job(job_id: int) -> Request[tuple[int, bytes]]:
    """``reserve-job``: reserve a job by id, whatever its state (beanstalkd 1.12)."""
    return b"reserve-job %d\r\n" % check_job_id(job_id), _reserved


def delete(job_id: int) -> Request[None]:
    """``delete``: remove a job."""
    return b"delete %d\r\n" % check_job_id(job_id), _deleted


def release(job_id: int, priority: int, delay: int) -> Request[None]:
    """``release``: put a reserved job back, ready or delayed."""
    return b"release %d %d %d\r\n" % (
        check_job_id(job_id),
        check_u32("priority", priority),
        check_u32("delay", delay),
    ), _released


def bury(job_id: int, priority: int) -> Request[None]:
    """``bury``: move a reserved job to its tube's buried list."""
    return b"bury %d %d\r\n" % (check_job_id(job_id), check_u32("priority", priority)), _buried


def touch(job_id: int) -> Request[None]:
    """``touch``: restart the TTR of a reserved job."""
    return b"touch %d\r\n" % check_job_id(job_id), _touched


def watch(tube: str) -> Request[int]:
    """``watch``: add a tube to the watch list; the reply gives the list's length."""
    return b"watch %b\r\n" % check_tube(tube), _watching


def ignore(tube: str) -> Request[int]:
    """``ignore``: remove a tube from the watch list; the reply gives the list's length."""
    return b"ignore %b\r\n" % check_tube(tube), _watching


def peek(job_id: int) -> Request[tuple[int, bytes]]:
    """``peek``: fetch a job by id without reserving it."""
    return b"peek %d\r\n" % check_job_id(job_id), _found


def peek_ready() -> Request[tuple[int, bytes]]:
    """``peek-ready``: the next ready job of the used tube."""
    return b"peek-ready\r\n", _found


def peek_delayed() -> Request[tuple[int, bytes]]:
    """``peek-delayed``: the delayed job of the used tube that is due soonest."""
    return b"peek-delayed\r\n", _found


def peek_buried() -> Request[tuple[int, bytes]]:
    """``peek-buried``: the oldest buried job of the used tube."""
    return b"peek-buried\r\n", _found


def kick(bound: int) -> Request[int]:
    """``kick``: move up to ``bound`` buried (or else delayed) jobs of the used tube to ready."""
    return b"kick %d\r\n" % check_u32("bound", bound), _kicked_count


def kick_job(job_id: int) -> Request[None]:
    """``kick-job``: move one buried or delayed job to ready."""
    return b"kick-job %d\r\n" % check_job_id(job_id), _kicked


def stats_job(job_id: int) -> Request[dict[str, StatValue]]:
    """``stats-job``: the statistics of one job."""
    return b"stats-job %d\r\n" % check_job_id(job_id), _job_stats


def stats_tube(tube: str) -> Request[dict[str, StatValue]]:
    """``stats-tube``: the statistics of one tube."""
    return b"stats-tube %b\r\n" % check_tube(tube), _tube_stats


def stats() -> Request[dict[str, StatValue]]:
    """``stats``: the server's statistics."""
    return b"stats\r\n", _server_stats


def list_tubes() -> Request[list[str]]:
    """``list-tubes``: every existing tube."""
    return b"list-tubes\r\n", _tube_list


def list_tube_used() -> Request[str]:
    """``list-tube-used``: the tube ``put`` inserts into."""
    return b"list-tube-used\r\n", _using


def list_tubes_watched() -> Request[list[str]]:
    """``list-tubes-watched``: the watch list."""
    return b"list-tubes-watched\r\n", _tube_list


def pause_tube(tube: str, delay: int) -> Request[None]:
    """``pause-tube``: hold back reservations from a tube for ``delay`` seconds."""
    return b"pause-tube %b %d\r\n" % (check_tube(tube), check_u32("delay", delay)), _paused
