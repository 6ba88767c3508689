"""Commands to bytes: exact wire format and argument validation, no server needed."""

from __future__ import annotations

import array
import enum
from collections.abc import Callable
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenstalk._protocol import commands as c

# beanstalkd 1.12 prot.c NAME_CHARS: the oracle for tube names, written apart from the code.
NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
)
U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1


def beanstalkd_accepts_tube(name: str) -> bool:
    return 1 <= len(name) <= 200 and name[0] != "-" and all(ch in NAME_CHARS for ch in name)


class Priority(enum.IntEnum):
    HIGH = 0
    NORMAL = 2**16
    LOW = U32_MAX


class JobId(int):
    """An int subclass, as an ORM or a NewType-ish wrapper might hand over."""


# -- exact bytes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (c.put(b"hello", 2**16, 0, 60)[0], b"put 65536 0 60 5\r\nhello\r\n"),
        (c.put(b"", 0, 0, 0)[0], b"put 0 0 0 0\r\n\r\n"),
        (
            c.put(b"a\r\nb\x00c", U32_MAX, U32_MAX, U32_MAX)[0],
            b"put 4294967295 4294967295 4294967295 6\r\na\r\nb\x00c\r\n",
        ),
        (c.put(b"x", 1, 2, 3)[0], b"put 1 2 3 1\r\nx\r\n"),
        (c.use("default")[0], b"use default\r\n"),
        (c.reserve(None)[0], b"reserve\r\n"),
        (c.reserve(0)[0], b"reserve-with-timeout 0\r\n"),
        (c.reserve(5)[0], b"reserve-with-timeout 5\r\n"),
        (c.reserve(2**31 - 1)[0], b"reserve-with-timeout 2147483647\r\n"),
        (c.reserve(2**31)[0], b"reserve\r\n"),
        (c.reserve(U32_MAX)[0], b"reserve\r\n"),
        (c.reserve_job(7)[0], b"reserve-job 7\r\n"),
        (c.delete(1)[0], b"delete 1\r\n"),
        (c.delete(0)[0], b"delete 0\r\n"),
        (c.delete(U64_MAX)[0], b"delete 18446744073709551615\r\n"),
        (c.release(3, 10, 20)[0], b"release 3 10 20\r\n"),
        (c.bury(4, 99)[0], b"bury 4 99\r\n"),
        (c.touch(5)[0], b"touch 5\r\n"),
        (c.watch("emails")[0], b"watch emails\r\n"),
        (c.ignore("default")[0], b"ignore default\r\n"),
        (c.peek(6)[0], b"peek 6\r\n"),
        (c.peek_ready()[0], b"peek-ready\r\n"),
        (c.peek_delayed()[0], b"peek-delayed\r\n"),
        (c.peek_buried()[0], b"peek-buried\r\n"),
        (c.kick(0)[0], b"kick 0\r\n"),
        (c.kick(U32_MAX)[0], b"kick 4294967295\r\n"),
        (c.kick_job(8)[0], b"kick-job 8\r\n"),
        (c.stats_job(9)[0], b"stats-job 9\r\n"),
        (c.stats_tube("t")[0], b"stats-tube t\r\n"),
        (c.stats()[0], b"stats\r\n"),
        (c.list_tubes()[0], b"list-tubes\r\n"),
        (c.list_tube_used()[0], b"list-tube-used\r\n"),
        (c.list_tubes_watched()[0], b"list-tubes-watched\r\n"),
        (c.pause_tube("t", 0)[0], b"pause-tube t 0\r\n"),
        (c.pause_tube("x" * 200, U32_MAX)[0], b"pause-tube " + b"x" * 200 + b" 4294967295\r\n"),
    ],
)
def test_exact_bytes(request_bytes: bytes, expected: bytes) -> None:
    assert type(request_bytes) is bytes
    assert request_bytes == expected


def test_longest_command_fits_beanstalkd_line_buffer() -> None:
    # beanstalkd 1.12 LINE_BUF_SIZE: 224 bytes including CRLF.
    data = c.pause_tube("a" * 200, U32_MAX)[0]
    assert len(data) == 224


# -- tube names ------------------------------------------------------------------

TUBE_COMMANDS: list[tuple[str, Callable[[Any], tuple[bytes, object]]]] = [
    ("use", c.use),
    ("watch", c.watch),
    ("ignore", c.ignore),
    ("stats-tube", c.stats_tube),
    ("pause-tube", lambda name: c.pause_tube(name, 1)),
]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "is empty"),
        ("a" * 201, "is longer than 200 characters"),
        ("a" * 1000, "is longer than 200 characters"),
        ("-foo", "starts with '-'"),
        ("-", "starts with '-'"),
        ("foo bar", "may only contain"),
        (" foo", "may only contain"),
        ("foo ", "may only contain"),
        ("foo\r", "may only contain"),
        ("foo\n", "may only contain"),
        ("foo\r\nput 0 0 0 0", "may only contain"),
        ("a\tb", "may only contain"),
        ("a\x00b", "may only contain"),
        ("caf\xe9", "may only contain"),
        ("\u0661", "may only contain"),  # ARABIC-INDIC DIGIT ONE: a Unicode digit, not ASCII
        ("\uff21", "may only contain"),  # FULLWIDTH A
        ("a*b", "may only contain"),
        ("a:b", "may only contain"),
        ("a,b", "may only contain"),
        ("a'b", "may only contain"),
        ('a"b', "may only contain"),
        ("a#b", "may only contain"),
        ("a[b]", "may only contain"),
        ("a\\b", "may only contain"),
        ("a=b", "may only contain"),
        ("a@b", "may only contain"),
    ],
)
@pytest.mark.parametrize(("command", "make"), TUBE_COMMANDS)
def test_invalid_tube_name(
    command: str, make: Callable[[Any], tuple[bytes, object]], name: str, message: str
) -> None:
    assert not beanstalkd_accepts_tube(name)
    with pytest.raises(ValueError, match=f"^invalid tube name .*: it {message}"):
        make(name)


@pytest.mark.parametrize("name", [None, b"default", bytearray(b"x"), 1, ["default"]])
@pytest.mark.parametrize(("command", "make"), TUBE_COMMANDS)
def test_tube_name_must_be_str(
    command: str, make: Callable[[Any], tuple[bytes, object]], name: Any
) -> None:
    with pytest.raises(TypeError, match=r"^tube name must be a str, not "):
        make(name)


@pytest.mark.parametrize(
    "name",
    ["(", "$", ".", "/", "+x", "_", ")", ";", "a" * 200, "ABCxyz019-+/;.$_()", "a-", "0", "a--b"],
)
def test_valid_tube_names(name: str) -> None:
    encoded = name.encode("ascii")
    assert c.check_tube(name) == encoded
    assert c.use(name)[0] == b"use " + encoded + b"\r\n"
    assert c.watch(name)[0] == b"watch " + encoded + b"\r\n"
    assert c.ignore(name)[0] == b"ignore " + encoded + b"\r\n"
    assert c.stats_tube(name)[0] == b"stats-tube " + encoded + b"\r\n"
    assert c.pause_tube(name, 3)[0] == b"pause-tube " + encoded + b" 3\r\n"


def test_str_subclass_tube_name_accepted() -> None:
    class Name(str):
        pass

    assert c.use(Name("jobs"))[0] == b"use jobs\r\n"


@given(st.text(max_size=210))
def test_tube_name_never_injects_a_line(name: str) -> None:
    for _, make in TUBE_COMMANDS:
        try:
            data = make(name)[0]
        except ValueError:
            assert not beanstalkd_accepts_tube(name)
            continue
        assert beanstalkd_accepts_tube(name)
        assert data.count(b"\r\n") == 1
        assert data.endswith(b"\r\n")
        assert b"\r" not in data[:-2]
        assert b"\n" not in data[:-2]
        assert b"\x00" not in data
        assert name.encode("ascii") in data


@given(st.text(alphabet=[*sorted(NAME_CHARS), " ", "\r", "\n", "\x00", "\xe9"], max_size=205))
def test_tube_name_validation_matches_beanstalkd(name: str) -> None:
    if beanstalkd_accepts_tube(name):
        assert c.check_tube(name) == name.encode("ascii")
    else:
        with pytest.raises(ValueError, match=r"^invalid tube name"):
            c.check_tube(name)


# -- numbers ------------------------------------------------------------------

U32_ARGUMENTS: list[tuple[str, str, Callable[[Any], tuple[bytes, object]], bytes]] = [
    ("put priority", "priority", lambda v: c.put(b"x", v, 0, 60), b"put %d 0 60 1\r\nx\r\n"),
    ("put delay", "delay", lambda v: c.put(b"x", 0, v, 60), b"put 0 %d 60 1\r\nx\r\n"),
    ("put ttr", "ttr", lambda v: c.put(b"x", 0, 0, v), b"put 0 0 %d 1\r\nx\r\n"),
    ("release priority", "priority", lambda v: c.release(1, v, 0), b"release 1 %d 0\r\n"),
    ("release delay", "delay", lambda v: c.release(1, 0, v), b"release 1 0 %d\r\n"),
    ("bury priority", "priority", lambda v: c.bury(1, v), b"bury 1 %d\r\n"),
    ("kick bound", "bound", c.kick, b"kick %d\r\n"),
    ("pause-tube delay", "delay", lambda v: c.pause_tube("t", v), b"pause-tube t %d\r\n"),
]

JOB_ID_ARGUMENTS: list[tuple[str, Callable[[Any], tuple[bytes, object]]]] = [
    ("reserve-job", c.reserve_job),
    ("delete", c.delete),
    ("release", lambda v: c.release(v, 0, 0)),
    ("bury", lambda v: c.bury(v, 0)),
    ("touch", c.touch),
    ("peek", c.peek),
    ("kick-job", c.kick_job),
    ("stats-job", c.stats_job),
]


@pytest.mark.parametrize("value", [-1, -(2**40), 2**32, 2**64])
@pytest.mark.parametrize(("argument", "what", "make", "template"), U32_ARGUMENTS)
def test_u32_out_of_range(
    argument: str,
    what: str,
    make: Callable[[Any], tuple[bytes, object]],
    template: bytes,
    value: int,
) -> None:
    with pytest.raises(
        ValueError, match=f"^{what} must be between 0 and 4294967295, got {value}$"
    ):
        make(value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(True, "bool"), (False, "bool"), (1.0, "float"), (0.5, "float"), ("1", "str"),
     (b"1", "bytes"), (None, "NoneType")],
)
@pytest.mark.parametrize(("argument", "what", "make", "template"), U32_ARGUMENTS)
def test_u32_not_an_int(
    argument: str,
    what: str,
    make: Callable[[Any], tuple[bytes, object]],
    template: bytes,
    value: Any,
    type_name: str,
) -> None:
    with pytest.raises(TypeError, match=f"^{what} must be an int, not {type_name}$"):
        make(value)


@pytest.mark.parametrize("value", [0, 1, U32_MAX, Priority.LOW, Priority.HIGH, JobId(7)])
@pytest.mark.parametrize(("argument", "what", "make", "template"), U32_ARGUMENTS)
def test_u32_accepted(
    argument: str,
    what: str,
    make: Callable[[Any], tuple[bytes, object]],
    template: bytes,
    value: int,
) -> None:
    assert make(value)[0] == template % int(value)


def test_int_enum_values_are_sent_as_numbers() -> None:
    assert c.put(b"x", Priority.NORMAL, Priority.HIGH, Priority.LOW)[0] == (
        b"put 65536 0 4294967295 1\r\nx\r\n"
    )
    assert c.release(JobId(3), Priority.NORMAL, JobId(2))[0] == b"release 3 65536 2\r\n"
    assert c.bury(JobId(3), Priority.LOW)[0] == b"bury 3 4294967295\r\n"
    assert c.kick(Priority.NORMAL)[0] == b"kick 65536\r\n"
    assert c.pause_tube("t", Priority.NORMAL)[0] == b"pause-tube t 65536\r\n"
    assert c.reserve(Priority.HIGH)[0] == b"reserve-with-timeout 0\r\n"
    assert c.reserve(JobId(30))[0] == b"reserve-with-timeout 30\r\n"
    assert c.check_u32("priority", Priority.LOW) == U32_MAX
    assert type(c.check_u32("priority", Priority.LOW)) is int
    assert type(c.check_job_id(JobId(5))) is int


@pytest.mark.parametrize("value", [-1, 2**64, 2**70])
@pytest.mark.parametrize(("command", "make"), JOB_ID_ARGUMENTS)
def test_job_id_out_of_range(
    command: str, make: Callable[[Any], tuple[bytes, object]], value: int
) -> None:
    with pytest.raises(
        ValueError, match=f"^job id must be between 0 and {U64_MAX}, got {value}$"
    ):
        make(value)


@pytest.mark.parametrize(
    ("value", "type_name"),
    [(True, "bool"), (1.0, "float"), ("1", "str"), (None, "NoneType"), (b"1", "bytes")],
)
@pytest.mark.parametrize(("command", "make"), JOB_ID_ARGUMENTS)
def test_job_id_not_an_int(
    command: str, make: Callable[[Any], tuple[bytes, object]], value: Any, type_name: str
) -> None:
    with pytest.raises(TypeError, match=f"^job id must be an int, not {type_name}$"):
        make(value)


@pytest.mark.parametrize(
    ("value", "text"), [(0, b"0"), (U64_MAX, b"18446744073709551615"), (JobId(42), b"42")]
)
@pytest.mark.parametrize(("command", "make"), JOB_ID_ARGUMENTS)
def test_job_id_accepted(
    command: str, make: Callable[[Any], tuple[bytes, object]], value: int, text: bytes
) -> None:
    data = make(value)[0]
    assert data.startswith(command.encode() + b" " + text)
    assert data.count(b"\r\n") == 1


@given(st.integers(min_value=-(2**65), max_value=2**65))
def test_numbers_never_corrupt_a_line(value: int) -> None:
    for _, _, make, template in U32_ARGUMENTS:
        try:
            data = make(value)[0]
        except ValueError:
            assert not 0 <= value <= U32_MAX
        else:
            assert 0 <= value <= U32_MAX
            assert data == template % value
    for _, make in JOB_ID_ARGUMENTS:
        try:
            data = make(value)[0]
        except ValueError:
            assert not 0 <= value <= U64_MAX
        else:
            assert 0 <= value <= U64_MAX
            assert data.count(b"\r\n") == 1
            assert data.split(b" ")[1].rstrip(b"\r\n") == b"%d" % value


# -- reserve timeout ------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [
        (None, b"reserve\r\n"),
        (0, b"reserve-with-timeout 0\r\n"),
        (1, b"reserve-with-timeout 1\r\n"),
        (2**31 - 1, b"reserve-with-timeout 2147483647\r\n"),
        (2**31, b"reserve\r\n"),
        (2**32 - 1, b"reserve\r\n"),
    ],
)
def test_reserve_timeout(timeout: int | None, expected: bytes) -> None:
    assert c.reserve(timeout)[0] == expected


@pytest.mark.parametrize("timeout", [-1, 2**32])
def test_reserve_timeout_out_of_range(timeout: int) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be between 0 and 4294967295"):
        c.reserve(timeout)


@pytest.mark.parametrize("timeout", [True, 0.5, 1.0, "1"])
def test_reserve_timeout_not_an_int(timeout: Any) -> None:
    with pytest.raises(TypeError, match=r"^timeout must be an int, not "):
        c.reserve(timeout)


# -- bodies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"hello", bytearray(b"hello"), memoryview(b"hello"), memoryview(b"xhellox")[1:6]],
)
def test_body_buffer_types_accepted(body: Any) -> None:
    assert c.put(body, 1, 2, 3)[0] == b"put 1 2 3 5\r\nhello\r\n"
    assert type(c.check_body(body)) is bytes


def test_body_memoryview_of_wider_items_counts_bytes() -> None:
    body = memoryview(array.array("i", [1, 2]))
    data = c.put(cast(Any, body), 0, 0, 0)[0]
    assert data == b"put 0 0 0 8\r\n" + bytes(body) + b"\r\n"


def test_body_with_crlf_and_nul_is_counted_whole() -> None:
    body = b"put 0 0 0 1\r\nx\r\n\x00"
    assert c.put(body, 0, 0, 0)[0] == b"put 0 0 0 17\r\n" + body + b"\r\n"


def test_large_body() -> None:
    body = bytes(range(256)) * 4096
    data = c.put(body, 0, 0, 60)[0]
    assert data == b"put 0 0 60 1048576\r\n" + body + b"\r\n"


@pytest.mark.parametrize("body", ["hello", ""])
def test_str_body_rejected_mentions_encoding(body: Any) -> None:
    with pytest.raises(TypeError, match="encoding"):
        c.put(body, 0, 0, 60)


@pytest.mark.parametrize(("body", "type_name"), [(None, "NoneType"), (1, "int"), ([1], "list")])
def test_other_bodies_rejected(body: Any, type_name: str) -> None:
    with pytest.raises(TypeError, match=f"^job body must be bytes, not {type_name}$"):
        c.put(body, 0, 0, 60)


@given(
    st.binary(max_size=300),
    st.integers(0, U32_MAX),
    st.integers(0, U32_MAX),
    st.integers(0, U32_MAX),
)
def test_put_frames_any_body(body: bytes, priority: int, delay: int, ttr: int) -> None:
    data = c.put(body, priority, delay, ttr)[0]
    line, _, rest = data.partition(b"\r\n")
    assert line == b"put %d %d %d %d" % (priority, delay, ttr, len(body))
    assert rest == body + b"\r\n"
