"""Bytes to replies (ReplyReader), reply checks (expect_*) and the exception tree."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenstalk._protocol import commands as c
from greenstalk._protocol.errors import (
    BadFormatError,
    BeanstalkdError,
    BodyDecodeError,
    BuriedError,
    BuriedWithJobIDError,
    ClientConnectionError,
    ClientTimeoutError,
    DeadlineSoonError,
    DrainingError,
    Error,
    ExpectedCrlfError,
    InternalError,
    JobTooBigError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    ProtocolError,
    PutManyError,
    TimedOutError,
    UnknownCommandError,
    UnknownResponseError,
    error_for,
    name_command,
    stray_error,
)
from greenstalk._protocol.responses import (
    MAX_DATA_SIZE,
    MAX_REPLY_LINE,
    Reply,
    ReplyReader,
    expect_data,
    expect_int,
    expect_job,
    expect_nothing,
    expect_word,
)

ERROR_CLASSES: list[tuple[bytes, type[BeanstalkdError]]] = [
    (b"NOT_FOUND", NotFoundError),
    (b"TIMED_OUT", TimedOutError),
    (b"DEADLINE_SOON", DeadlineSoonError),
    (b"NOT_IGNORED", NotIgnoredError),
    (b"DRAINING", DrainingError),
    (b"JOB_TOO_BIG", JobTooBigError),
    (b"EXPECTED_CRLF", ExpectedCrlfError),
    (b"INTERNAL_ERROR", InternalError),
    (b"BAD_FORMAT", BadFormatError),
    (b"UNKNOWN_COMMAND", UnknownCommandError),
    (b"OUT_OF_MEMORY", OutOfMemoryError),
]


def rep(status: bytes, values: list[bytes], data: bytes | None) -> Reply:
    """A reply as the reader returns it: (status, values, data)."""
    return (status, values, data)


def parse_all(pieces: Iterable[bytes]) -> list[Reply]:
    """Feed ``pieces`` one after another, taking every complete reply as soon as it is there."""
    reader = ReplyReader()
    replies = []
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.next_reply()) is not None:
            replies.append(reply)
    assert reader.idle
    assert reader.next_reply() is None
    return replies


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:])]


# -- every reply kind -------------------------------------------------------------

REPLIES: list[tuple[bytes, Reply]] = [
    (b"INSERTED 1\r\n", rep(b"INSERTED", [b"1"], None)),
    (b"INSERTED 18446744073709551615\r\n", rep(b"INSERTED", [b"18446744073709551615"], None)),
    (b"BURIED 12\r\n", rep(b"BURIED", [b"12"], None)),
    (b"BURIED\r\n", rep(b"BURIED", [], None)),
    (b"EXPECTED_CRLF\r\n", rep(b"EXPECTED_CRLF", [], None)),
    (b"JOB_TOO_BIG\r\n", rep(b"JOB_TOO_BIG", [], None)),
    (b"DRAINING\r\n", rep(b"DRAINING", [], None)),
    (b"USING default\r\n", rep(b"USING", [b"default"], None)),
    (b"USING ABCxyz019-+/;.$_()\r\n", rep(b"USING", [b"ABCxyz019-+/;.$_()"], None)),
    (b"RESERVED 5 5\r\nhello\r\n", rep(b"RESERVED", [b"5"], b"hello")),
    (b"RESERVED 6 7\r\na\r\nb\x00c\r\r\n", rep(b"RESERVED", [b"6"], b"a\r\nb\x00c\r")),
    (b"RESERVED 7 0\r\n\r\n", rep(b"RESERVED", [b"7"], b"")),
    (b"DEADLINE_SOON\r\n", rep(b"DEADLINE_SOON", [], None)),
    (b"TIMED_OUT\r\n", rep(b"TIMED_OUT", [], None)),
    (b"DELETED\r\n", rep(b"DELETED", [], None)),
    (b"RELEASED\r\n", rep(b"RELEASED", [], None)),
    (b"TOUCHED\r\n", rep(b"TOUCHED", [], None)),
    (b"WATCHING 2\r\n", rep(b"WATCHING", [b"2"], None)),
    (b"NOT_IGNORED\r\n", rep(b"NOT_IGNORED", [], None)),
    (b"FOUND 3 2\r\n\r\n\r\n", rep(b"FOUND", [b"3"], b"\r\n")),
    (b"FOUND 4 12\r\nRESERVED 1 1\r\n", rep(b"FOUND", [b"4"], b"RESERVED 1 1")),
    (b"KICKED 3\r\n", rep(b"KICKED", [b"3"], None)),
    (b"KICKED\r\n", rep(b"KICKED", [], None)),
    (b"OK 14\r\n---\n- default\n\r\n", rep(b"OK", [], b"---\n- default\n")),
    (
        b"OK 27\r\n---\nname: default\npause: 0\n\r\n",
        rep(b"OK", [], b"---\nname: default\npause: 0\n"),
    ),
    (b"PAUSED\r\n", rep(b"PAUSED", [], None)),
    (b"NOT_FOUND\r\n", rep(b"NOT_FOUND", [], None)),
    (b"OUT_OF_MEMORY\r\n", rep(b"OUT_OF_MEMORY", [], None)),
    (b"INTERNAL_ERROR\r\n", rep(b"INTERNAL_ERROR", [], None)),
    (b"BAD_FORMAT\r\n", rep(b"BAD_FORMAT", [], None)),
    (b"UNKNOWN_COMMAND\r\n", rep(b"UNKNOWN_COMMAND", [], None)),
    (b"\r\n", rep(b"", [], None)),
    (b"SOMETHING_NEW a b\r\n", rep(b"SOMETHING_NEW", [b"a", b"b"], None)),
]


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
def test_reply_kinds(wire: bytes, expected: Reply) -> None:
    reader = ReplyReader()
    reader.feed(wire)
    reply = reader.next_reply()
    assert reply == expected
    assert reply is not None
    status, values, data = reply
    assert type(status) is bytes
    assert all(type(value) is bytes for value in values)
    assert data is None or type(data) is bytes
    assert reader.next_reply() is None
    assert reader.idle


@pytest.mark.parametrize(("wire", "expected"), REPLIES)
def test_reply_kinds_one_byte_at_a_time(wire: bytes, expected: Reply) -> None:
    assert parse_all(one_byte_at_a_time(wire)) == [expected]


def test_all_reply_kinds_in_one_stream() -> None:
    stream = b"".join(wire for wire, _ in REPLIES)
    expected = [reply for _, reply in REPLIES]
    assert parse_all([stream]) == expected
    assert parse_all(one_byte_at_a_time(stream)) == expected
    assert parse_all(split_at(stream, range(0, len(stream), 7))) == expected


def test_next_reply_without_data() -> None:
    reader = ReplyReader()
    assert reader.next_reply() is None
    reader.feed(b"")
    assert reader.next_reply() is None
    assert reader.idle


# -- any split parses the same ------------------------------------------------------

bodies = st.one_of(
    st.binary(max_size=64),
    st.lists(
        st.sampled_from([b"\r\n", b"\r", b"\n", b"\x00", b"x", b" ", b"RESERVED 1 2\r\n", b"OK 3"]),
        max_size=12,
    ).map(b"".join),
)
ids = st.integers(0, 2**64 - 1)
tube_names = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()",
    min_size=1,
    max_size=200,
).filter(lambda name: not name.startswith("-"))


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, Reply]:
    kind = draw(st.sampled_from(["plain", "int", "using", "job", "ok"]))
    if kind == "plain":
        status = draw(
            st.sampled_from(
                [b"DELETED", b"RELEASED", b"BURIED", b"TOUCHED", b"KICKED", b"PAUSED",
                 b"TIMED_OUT", b"DEADLINE_SOON", *(status for status, _ in ERROR_CLASSES)]
            )
        )
        return status + b"\r\n", rep(status, [], None)
    if kind == "int":
        status = draw(st.sampled_from([b"INSERTED", b"BURIED", b"WATCHING", b"KICKED"]))
        value = b"%d" % draw(ids)
        return status + b" " + value + b"\r\n", rep(status, [value], None)
    if kind == "using":
        name = draw(tube_names).encode("ascii")
        return b"USING " + name + b"\r\n", rep(b"USING", [name], None)
    body = draw(bodies)
    if kind == "job":
        status = draw(st.sampled_from([b"RESERVED", b"FOUND"]))
        job_id = b"%d" % draw(ids)
        wire = b"%b %b %d\r\n%b\r\n" % (status, job_id, len(body), body)
        return wire, rep(status, [job_id], body)
    return b"OK %d\r\n%b\r\n" % (len(body), body), rep(b"OK", [], body)


@given(st.lists(replies(), min_size=1, max_size=8), st.data())
def test_any_split_parses_the_same(items: list[tuple[bytes, Reply]], data: st.DataObject) -> None:
    stream = b"".join(wire for wire, _ in items)
    expected = [reply for _, reply in items]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))
    assert parse_all([stream]) == expected
    assert parse_all(split_at(stream, cuts)) == expected
    assert parse_all(one_byte_at_a_time(stream)) == expected


@given(st.lists(replies(), min_size=1, max_size=5), st.data())
def test_replies_taken_lazily_parse_the_same(
    items: list[tuple[bytes, Reply]], data: st.DataObject
) -> None:
    # A pipelining client may feed several pieces before it asks for any reply.
    stream = b"".join(wire for wire, _ in items)
    expected = [reply for _, reply in items]
    pieces = split_at(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = ReplyReader()
    got: list[Reply] = []
    for piece in pieces:
        reader.feed(piece)
        if data.draw(st.booleans()):
            reply = reader.next_reply()
            if reply is not None:
                got.append(reply)
    while (reply := reader.next_reply()) is not None:
        got.append(reply)
    assert got == expected
    assert reader.idle


# -- idle ---------------------------------------------------------------------------


def test_idle() -> None:
    reader = ReplyReader()
    assert reader.idle
    reader.feed(b"INSER")
    assert not reader.idle
    assert reader.next_reply() is None
    assert not reader.idle
    reader.feed(b"TED 1\r\nRESERVED 2 5\r\nhel")
    assert not reader.idle
    assert reader.next_reply() == rep(b"INSERTED", [b"1"], None)
    assert not reader.idle
    assert reader.next_reply() is None
    assert not reader.idle  # inside the data of RESERVED
    reader.feed(b"lo\r")
    assert reader.next_reply() is None
    assert not reader.idle
    reader.feed(b"\n")
    assert not reader.idle  # fed but not yet taken
    assert reader.next_reply() == rep(b"RESERVED", [b"2"], b"hello")
    assert reader.idle
    reader.feed(b"DELETED\r\nDELETED\r\n")
    assert reader.next_reply() == rep(b"DELETED", [], None)
    assert not reader.idle
    assert reader.next_reply() == rep(b"DELETED", [], None)
    assert reader.idle


def test_idle_after_data_reply_line_only() -> None:
    reader = ReplyReader()
    reader.feed(b"OK 3\r\n")
    assert reader.next_reply() is None
    assert not reader.idle


# -- large bodies ------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 65536, 1 << 20])
def test_large_body_in_many_chunks(chunk_size: int) -> None:
    size = 1 << 20 if chunk_size > 1 else 1 << 16
    body = bytes(range(256)) * (size // 256)
    body = body[:-2] + b"\r\n"  # a CRLF right where a confused parser would look
    stream = b"RESERVED 9 %d\r\n%b\r\nDELETED\r\nFOUND 10 3\r\nabc\r\n" % (len(body), body)
    pieces = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    assert parse_all(pieces) == [
        rep(b"RESERVED", [b"9"], body),
        rep(b"DELETED", [], None),
        rep(b"FOUND", [b"10"], b"abc"),
    ]


def test_large_body_split_right_after_line() -> None:
    body = b"z" * 100_000
    reader = ReplyReader()
    reader.feed(b"FOUND 1 100000\r\n")
    assert reader.next_reply() is None
    reader.feed(body[:50_000])
    assert reader.next_reply() is None
    reader.feed(body[50_000:])
    assert reader.next_reply() is None
    reader.feed(b"\r\nTOUCHED\r")
    assert reader.next_reply() == rep(b"FOUND", [b"1"], body)
    assert reader.next_reply() is None
    reader.feed(b"\n")
    assert reader.next_reply() == rep(b"TOUCHED", [], None)
    assert reader.idle


# -- malformed input ------------------------------------------------------------------


def reader_with(data: bytes) -> ReplyReader:
    reader = ReplyReader()
    reader.feed(data)
    return reader


def collect(reader: ReplyReader, pieces: Iterable[bytes], out: list[Reply]) -> None:
    """Feed ``pieces`` and take replies into ``out``, so that replies before an error are kept."""
    for piece in pieces:
        reader.feed(piece)
        while (reply := reader.next_reply()) is not None:
            out.append(reply)


def test_line_without_crlf_too_long() -> None:
    with pytest.raises(ProtocolError, match=r"^reply line longer than 1024 bytes"):
        parse_all([b"X" * (MAX_REPLY_LINE + 1)])


def test_long_line_of_another_protocol_asks_what_the_peer_is() -> None:
    page = b"<html><head><title>400 Bad Request</title></head><body>" + b"x" * 2000
    with pytest.raises(ProtocolError) as info:
        parse_all([page])
    assert str(info.value) == (
        "reply line longer than 1024 bytes "
        "(b'<html><head><title>400 Bad Request</title></head><body>xxxxx'...): "
        "is this a beanstalkd server?"
    )
    with pytest.raises(ProtocolError) as beanstalkd_like:
        parse_all([b"USING " + b"a" * 2000 + b"\r\n"])
    assert str(beanstalkd_like.value) == "reply line longer than 1024 bytes"


def test_line_without_crlf_too_long_in_pieces() -> None:
    reader = ReplyReader()
    got: list[Reply] = []
    collect(reader, [b"X"] * MAX_REPLY_LINE, got)
    assert got == []
    assert not reader.idle
    with pytest.raises(ProtocolError, match=r"^reply line longer than 1024 bytes"):
        collect(reader, [b"X"], got)


def test_bare_lf_does_not_end_a_line() -> None:
    reader = ReplyReader()
    got: list[Reply] = []
    collect(reader, [b"DELETED\n"], got)
    assert got == []
    with pytest.raises(ProtocolError, match=r"^reply line longer than 1024 bytes"):
        collect(reader, [b"X" * MAX_REPLY_LINE], got)


def test_line_of_1024_bytes_parses_in_any_split() -> None:
    # MAX_REPLY_LINE is the longest accepted line; how TCP splits it must not matter.
    line = b"USING " + b"a" * (MAX_REPLY_LINE - 6)
    expected = [rep(b"USING", [b"a" * (MAX_REPLY_LINE - 6)], None)]
    assert parse_all([line + b"\r\n"]) == expected
    assert parse_all([line, b"\r\n"]) == expected
    assert parse_all([line + b"\r", b"\n"]) == expected
    assert parse_all(one_byte_at_a_time(line + b"\r\n")) == expected


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(lambda wire: [wire], id="whole"),
        pytest.param(lambda wire: [wire[:-2], wire[-2:]], id="crlf-apart"),
        pytest.param(one_byte_at_a_time, id="bytewise"),
    ],
)
def test_line_over_1024_bytes_rejected_in_any_split(
    pieces: Callable[[bytes], list[bytes]],
) -> None:
    wire = b"USING " + b"a" * (MAX_REPLY_LINE - 5) + b"\r\n"
    with pytest.raises(ProtocolError, match=r"^reply line longer than 1024 bytes"):
        parse_all(pieces(wire))


@pytest.mark.parametrize(
    "line",
    [
        b"RESERVED 1 x",
        b"RESERVED x 1",
        b"RESERVED 1 -1",
        b"RESERVED 1 +1",
        b"RESERVED 1 1.0",
        b"RESERVED 1 0x1",
        b"RESERVED 1",
        b"RESERVED",
        b"RESERVED 1 2 3",
        b"RESERVED 1  2",
        b"RESERVED 1 2 ",
        b"RESERVED 1 \xd9\xa1",  # a Unicode digit in UTF-8
        b"FOUND 1",
        b"FOUND",
        b"FOUND a 1",
        b"OK",
        b"OK x",
        b"OK 1 2",
        b"OK -1",
        b"OK " + b"1" * 21,
        b"RESERVED 1 " + b"9" * 21,
        b"RESERVED " + b"9" * 21 + b" 1",
    ],
)
def test_malformed_data_reply_line(line: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"^malformed (RESERVED|FOUND|OK) reply"):
        parse_all([line + b"\r\n"])
    with pytest.raises(ProtocolError, match=r"^malformed (RESERVED|FOUND|OK) reply"):
        parse_all(one_byte_at_a_time(line + b"\r\n"))


@pytest.mark.parametrize(
    "wire",
    [
        b"RESERVED 1 1\r\nxyz",
        b"RESERVED 1 1\r\nx\n\r",
        b"RESERVED 1 1\r\nx\r\r\n",
        b"FOUND 1 0\r\nx\r\n",
        b"OK 2\r\nabc\r\n",
        b"OK 4\r\nab\r\nDELETED\r\n",  # announced size larger than the data
    ],
)
def test_data_not_followed_by_crlf(wire: bytes) -> None:
    match = r"^(RESERVED|FOUND|OK) data not followed by CRLF"
    with pytest.raises(ProtocolError, match=match):
        parse_all([wire])
    with pytest.raises(ProtocolError, match=match):
        parse_all(one_byte_at_a_time(wire))
    line, _, rest = wire.partition(b"\r\n")
    with pytest.raises(ProtocolError, match=match):
        parse_all([line + b"\r\n", rest])
    with pytest.raises(ProtocolError, match=match):
        parse_all([line + b"\r\n", rest[:1], rest[1:]])


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(lambda wire: [wire], id="whole"),
        pytest.param(lambda wire: [wire[:14], wire[14:]], id="two-pieces"),
        pytest.param(one_byte_at_a_time, id="bytewise"),
    ],
)
def test_replies_before_malformed_data_are_delivered(
    pieces: Callable[[bytes], list[bytes]],
) -> None:
    # Pipelined replies that arrived intact before garbage must reach the caller
    # however TCP split the stream: the first one may report a put's job id.
    wire = b"FOUND 1 1\r\na\r\nFOUND 2 1\r\nbXY"
    got: list[Reply] = []
    with pytest.raises(ProtocolError, match=r"^FOUND data not followed by CRLF"):
        collect(ReplyReader(), pieces(wire), got)
    assert got == [rep(b"FOUND", [b"1"], b"a")]


def test_data_not_followed_by_crlf_detected_only_once_complete() -> None:
    reader = ReplyReader()
    got: list[Reply] = []
    collect(reader, [b"RESERVED 1 3\r\nabc", b"X"], got)
    assert got == []
    with pytest.raises(ProtocolError, match=r"^RESERVED data not followed by CRLF"):
        collect(reader, [b"Y"], got)


@pytest.mark.parametrize("status", [b"RESERVED 1", b"FOUND 1", b"OK"])
def test_data_larger_than_beanstalkd_sends_is_refused_at_once(status: bytes) -> None:
    """beanstalkd sends at most 1 GiB (its largest -z): a larger size is refused
    from the reply line alone, before any data is waited for or buffered."""
    assert MAX_DATA_SIZE == 1073741824
    for size in (MAX_DATA_SIZE + 1, 2**32 - 1, 2**32, 10**19):
        line = b"%b %d\r\n" % (status, size)
        with pytest.raises(ProtocolError, match=r"announces \d+ bytes of data, more than"):
            parse_all([line])
        with pytest.raises(ProtocolError, match=r"announces \d+ bytes of data, more than"):
            parse_all(one_byte_at_a_time(line))
    reader = ReplyReader()
    assert reader.receive(b"%b %d\r\nabc" % (status, MAX_DATA_SIZE)) == []
    assert not reader.idle  # the largest size is a reply still coming


def test_size_of_20_digits_is_a_number() -> None:
    assert parse_all([b"OK 00000000000000000003\r\nabc\r\n"]) == [rep(b"OK", [], b"abc")]


# -- expect_* ------------------------------------------------------------------------


def test_expect_success_values() -> None:
    expect_nothing(rep(b"DELETED", [], None), b"DELETED")
    assert expect_int(rep(b"INSERTED", [b"42"], None), b"INSERTED") == 42
    assert expect_int(rep(b"KICKED", [b"0"], None), b"KICKED") == 0
    assert expect_word(rep(b"USING", [b"a-b"], None), b"USING") == "a-b"
    assert expect_job(rep(b"RESERVED", [b"7"], b"x\r\n"), b"RESERVED") == (7, b"x\r\n")
    assert expect_job(rep(b"FOUND", [b"18446744073709551615"], b""), b"FOUND") == (
        2**64 - 1,
        b"",
    )
    assert expect_data(rep(b"OK", [], b"---\n")) == b"---\n"


EXPECTS: list[tuple[str, Callable[[Reply], object]]] = [
    ("nothing", lambda reply: expect_nothing(reply, b"DELETED")),
    ("int", lambda reply: expect_int(reply, b"INSERTED")),
    ("word", lambda reply: expect_word(reply, b"USING")),
    ("job", lambda reply: expect_job(reply, b"RESERVED")),
    ("data", expect_data),
]


@pytest.mark.parametrize(("status", "error_class"), ERROR_CLASSES)
@pytest.mark.parametrize(("kind", "expect"), EXPECTS)
def test_expect_maps_error_status(
    kind: str,
    expect: Callable[[Reply], object],
    status: bytes,
    error_class: type[BeanstalkdError],
) -> None:
    with pytest.raises(error_class) as info:
        expect(rep(status, [], None))
    assert type(info.value) is error_class


@pytest.mark.parametrize(("kind", "expect"), EXPECTS)
def test_expect_maps_buried(kind: str, expect: Callable[[Reply], object]) -> None:
    with pytest.raises(BuriedError) as info:
        expect(rep(b"BURIED", [], None))
    assert type(info.value) is BuriedError
    assert info.value.id is None
    with pytest.raises(BuriedWithJobIDError) as with_id:
        expect(rep(b"BURIED", [b"12"], None))
    assert with_id.value.id == 12


@pytest.mark.parametrize(("kind", "expect"), EXPECTS)
@pytest.mark.parametrize(
    "reply",
    [
        rep(b"WHAT", [], None),
        rep(b"WHAT", [b"1", b"2"], None),
        rep(b"", [], None),
        rep(b"not_found", [], None),
        rep(b"NOT_FOUND", [b"1"], None),
        rep(b"BURIED", [b"x"], None),
        rep(b"BURIED", [b"1", b"2"], None),
        rep(b"PAUSED", [], None),
    ],
)
def test_expect_unknown_status(
    kind: str, expect: Callable[[Reply], object], reply: Reply
) -> None:
    with pytest.raises(UnknownResponseError) as info:
        expect(reply)
    assert info.value.status == reply[0]
    assert info.value.values == reply[1]


@pytest.mark.parametrize(
    ("expect", "reply"),
    [
        (lambda reply: expect_int(reply, b"INSERTED"), rep(b"INSERTED", [], None)),
        (lambda reply: expect_int(reply, b"INSERTED"), rep(b"INSERTED", [b"x"], None)),
        (lambda reply: expect_int(reply, b"INSERTED"), rep(b"INSERTED", [b"-1"], None)),
        (lambda reply: expect_int(reply, b"INSERTED"), rep(b"INSERTED", [b"1", b"2"], None)),
        (lambda reply: expect_int(reply, b"WATCHING"), rep(b"WATCHING", [b""], None)),
        (lambda reply: expect_word(reply, b"USING"), rep(b"USING", [b"caf\xc3\xa9"], None)),
    ],
)
def test_expect_malformed_values(expect: Callable[[Reply], object], reply: Reply) -> None:
    with pytest.raises(ProtocolError, match=r"^(malformed|non-ASCII) (INSERTED|WATCHING|USING)"):
        expect(reply)


# -- each command's reply parser -------------------------------------------------------


def run(request: tuple[bytes, Callable[[Reply], Any]], wire: bytes) -> Any:
    """Parse ``wire`` with ReplyReader and hand the reply to the command's parser."""
    (reply,) = parse_all([wire])
    return request[1](reply)


@pytest.mark.parametrize(
    ("request_", "wire", "result"),
    [
        (c.put(b"x", 0, 0, 1), b"INSERTED 5\r\n", 5),
        (c.use("foo"), b"USING foo\r\n", "foo"),
        (c.reserve(None), b"RESERVED 3 4\r\na\x00\r\n\r\n", (3, b"a\x00\r\n")),
        (c.reserve(0), b"RESERVED 3 0\r\n\r\n", (3, b"")),
        (c.reserve_job(3), b"RESERVED 3 1\r\nz\r\n", (3, b"z")),
        (c.delete(1), b"DELETED\r\n", None),
        (c.release(1, 0, 0), b"RELEASED\r\n", None),
        (c.bury(1, 0), b"BURIED\r\n", None),
        (c.touch(1), b"TOUCHED\r\n", None),
        (c.watch("a"), b"WATCHING 2\r\n", 2),
        (c.ignore("a"), b"WATCHING 1\r\n", 1),
        (c.peek(8), b"FOUND 8 2\r\nhi\r\n", (8, b"hi")),
        (c.peek_ready(), b"FOUND 9 0\r\n\r\n", (9, b"")),
        (c.peek_delayed(), b"FOUND 10 1\r\n\n\r\n", (10, b"\n")),
        (c.peek_buried(), b"FOUND 11 1\r\n\r\r\n", (11, b"\r")),
        (c.kick(10), b"KICKED 4\r\n", 4),
        (c.kick_job(4), b"KICKED\r\n", None),
        (c.list_tubes(), b"OK 14\r\n---\n- default\n\r\n", ["default"]),
        (c.list_tubes_watched(), b"OK 20\r\n---\n- default\n- 123\n\r\n", ["default", "123"]),
        (c.list_tube_used(), b"USING 123\r\n", "123"),
        (c.pause_tube("a", 1), b"PAUSED\r\n", None),
    ],
)
def test_command_success_replies(
    request_: tuple[bytes, Callable[[Reply], Any]], wire: bytes, result: object
) -> None:
    assert run(request_, wire) == result


@pytest.mark.parametrize(
    ("request_", "wire", "error_class"),
    [
        (c.put(b"x", 0, 0, 1), b"JOB_TOO_BIG\r\n", JobTooBigError),
        (c.put(b"x", 0, 0, 1), b"DRAINING\r\n", DrainingError),
        (c.put(b"x", 0, 0, 1), b"EXPECTED_CRLF\r\n", ExpectedCrlfError),
        (c.put(b"x", 0, 0, 1), b"OUT_OF_MEMORY\r\n", OutOfMemoryError),
        (c.reserve(None), b"DEADLINE_SOON\r\n", DeadlineSoonError),
        (c.reserve(1), b"TIMED_OUT\r\n", TimedOutError),
        (c.reserve_job(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.delete(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.delete(1), b"INTERNAL_ERROR\r\n", InternalError),
        (c.release(1, 0, 0), b"NOT_FOUND\r\n", NotFoundError),
        (c.bury(1, 0), b"NOT_FOUND\r\n", NotFoundError),
        (c.touch(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.use("a"), b"BAD_FORMAT\r\n", BadFormatError),
        (c.ignore("a"), b"NOT_IGNORED\r\n", NotIgnoredError),
        (c.peek(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.peek_ready(), b"NOT_FOUND\r\n", NotFoundError),
        (c.kick(1), b"UNKNOWN_COMMAND\r\n", UnknownCommandError),
        (c.kick_job(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.stats_job(1), b"NOT_FOUND\r\n", NotFoundError),
        (c.stats_tube("a"), b"NOT_FOUND\r\n", NotFoundError),
        (c.stats(), b"INTERNAL_ERROR\r\n", InternalError),
        (c.list_tubes(), b"OUT_OF_MEMORY\r\n", OutOfMemoryError),
        (c.pause_tube("a", 1), b"NOT_FOUND\r\n", NotFoundError),
    ],
)
def test_command_error_replies(
    request_: tuple[bytes, Callable[[Reply], Any]],
    wire: bytes,
    error_class: type[BeanstalkdError],
) -> None:
    with pytest.raises(error_class) as info:
        run(request_, wire)
    assert type(info.value) is error_class


def test_buried_replies() -> None:
    with pytest.raises(BuriedWithJobIDError) as put_info:
        run(c.put(b"x", 0, 0, 1), b"BURIED 17\r\n")
    assert put_info.value.id == 17
    assert isinstance(put_info.value, BuriedError)
    with pytest.raises(BuriedError) as release_info:
        run(c.release(3, 0, 0), b"BURIED\r\n")
    assert type(release_info.value) is BuriedError
    assert release_info.value.id is None


@pytest.mark.parametrize(
    ("request_", "wire", "status", "values"),
    [
        (c.put(b"x", 0, 0, 1), b"DELETED\r\n", b"DELETED", []),
        (c.put(b"x", 0, 0, 1), b"USING default\r\n", b"USING", [b"default"]),
        (c.delete(1), b"INSERTED 1\r\n", b"INSERTED", [b"1"]),
        (c.delete(1), b"DELETED 1\r\n", b"DELETED", [b"1"]),
        (c.reserve(None), b"FOUND 1 1\r\nx\r\n", b"FOUND", [b"1"]),
        (c.peek(1), b"RESERVED 1 1\r\nx\r\n", b"RESERVED", [b"1"]),
        (c.watch("a"), b"USING a\r\n", b"USING", [b"a"]),
        (c.use("a"), b"WATCHING 1\r\n", b"WATCHING", [b"1"]),
        (c.use("a"), b"USING\r\n", b"USING", []),
        (c.use("a"), b"USING a b\r\n", b"USING", [b"a", b"b"]),
        (c.kick_job(1), b"KICKED 1\r\n", b"KICKED", [b"1"]),
        (c.kick(1), b"KICK 1\r\n", b"KICK", [b"1"]),
        (c.touch(1), b"TOUCHED \r\n", b"TOUCHED", [b""]),
        (c.stats(), b"FOUND 1 1\r\nx\r\n", b"FOUND", [b"1"]),
        (c.list_tubes(), b"USING default\r\n", b"USING", [b"default"]),
        (c.list_tube_used(), b"OK 14\r\n---\n- default\n\r\n", b"OK", []),
        (c.pause_tube("a", 1), b"PAUSED 1\r\n", b"PAUSED", [b"1"]),
        (c.release(1, 0, 0), b"DELETED\r\n", b"DELETED", []),
        (c.bury(1, 0), b"RELEASED\r\n", b"RELEASED", []),
    ],
)
def test_wrong_success_reply_is_unknown_response(
    request_: tuple[bytes, Callable[[Reply], Any]], wire: bytes, status: bytes, values: list[bytes]
) -> None:
    with pytest.raises(UnknownResponseError) as info:
        run(request_, wire)
    assert info.value.status == status
    assert info.value.values == values


def test_kick_without_count_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"^malformed KICKED reply"):
        run(c.kick(5), b"KICKED\r\n")


# -- error_for and the exception tree ---------------------------------------------------


@pytest.mark.parametrize(("status", "error_class"), ERROR_CLASSES)
def test_error_for_each_status(status: bytes, error_class: type[BeanstalkdError]) -> None:
    error = error_for(status, [])
    assert type(error) is error_class
    assert isinstance(error, BeanstalkdError)
    assert isinstance(error, Error)
    assert not isinstance(error, ConnectionError)


def test_error_for_buried() -> None:
    plain = error_for(b"BURIED", [])
    assert type(plain) is BuriedError
    assert plain.id is None
    with_id = error_for(b"BURIED", [b"99"])
    assert type(with_id) is BuriedWithJobIDError
    assert with_id.id == 99
    assert isinstance(with_id, BuriedError)
    assert isinstance(with_id, BeanstalkdError)


@pytest.mark.parametrize(
    ("status", "values"),
    [
        (b"HUH", []),
        (b"HUH", [b"1"]),
        (b"", []),
        (b"NOT_FOUND", [b"x"]),
        (b"BURIED", [b"x"]),
        (b"BURIED", [b"1", b"2"]),
        (b"INSERTED", [b"1"]),
        (b"\xff", []),
    ],
)
def test_error_for_unknown(status: bytes, values: list[bytes]) -> None:
    error = error_for(status, values)
    assert type(error) is UnknownResponseError
    assert error.status == status
    assert error.values == values
    assert isinstance(error, ProtocolError)
    assert isinstance(error, ClientConnectionError)
    assert isinstance(error, ConnectionError)
    assert isinstance(error, OSError)
    assert isinstance(error, Error)
    assert not isinstance(error, BeanstalkdError)


def test_exception_hierarchy() -> None:
    assert issubclass(BeanstalkdError, Error)
    assert issubclass(Error, Exception)
    assert not issubclass(BeanstalkdError, ConnectionError)
    for _, error_class in ERROR_CLASSES:
        assert error_class.__bases__ == (BeanstalkdError,)
    assert issubclass(BuriedError, BeanstalkdError)
    assert issubclass(BuriedWithJobIDError, BuriedError)
    assert issubclass(ClientConnectionError, Error)
    assert issubclass(ClientConnectionError, ConnectionError)
    assert issubclass(ClientTimeoutError, ClientConnectionError)
    assert issubclass(ClientTimeoutError, TimeoutError)
    assert issubclass(ClientTimeoutError, ConnectionError)
    assert issubclass(ProtocolError, ClientConnectionError)
    assert not issubclass(ProtocolError, TimeoutError)
    assert issubclass(UnknownResponseError, ProtocolError)
    assert issubclass(BodyDecodeError, Error)
    assert issubclass(BodyDecodeError, UnicodeDecodeError)
    assert issubclass(BodyDecodeError, ValueError)
    assert issubclass(PutManyError, Error)
    assert not issubclass(PutManyError, BeanstalkdError)


def test_client_timeout_error_caught_as_builtins() -> None:
    with pytest.raises(TimeoutError):
        raise ClientTimeoutError("slow")
    with pytest.raises(ConnectionError, match=r"^slow$"):
        raise ClientTimeoutError("slow")


def test_buried_error_ids() -> None:
    assert BuriedError().id is None
    assert BuriedError([]).id is None
    assert BuriedError([b"5"]).id == 5
    assert BuriedError(6).id == 6
    error = BuriedWithJobIDError(7)
    assert error.id == 7
    assert error.job_id == 7
    assert str(error) == (
        "put: BURIED 7 (the server is out of memory: the job was stored, but buried)"
    )


# -- error messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "wire", "message"),
    [
        (c.delete(42), b"NOT_FOUND", "delete 42: NOT_FOUND (no such job, or it is reserved by "
         "another connection)"),
        (c.release(42, 5, 0), b"NOT_FOUND", "release 42 5 0: NOT_FOUND (no such job reserved "
         "by this connection)"),
        (c.bury(42, 5), b"NOT_FOUND", "bury 42 5: NOT_FOUND (no such job reserved by this "
         "connection)"),
        (c.touch(42), b"NOT_FOUND", "touch 42: NOT_FOUND (no such job reserved by this "
         "connection)"),
        (c.reserve_job(42), b"NOT_FOUND", "reserve-job 42: NOT_FOUND (no such job, or it is "
         "reserved)"),
        (c.kick_job(42), b"NOT_FOUND", "kick-job 42: NOT_FOUND (no such job, or it is neither "
         "buried nor delayed)"),
        (c.peek(42), b"NOT_FOUND", "peek 42: NOT_FOUND (no such job)"),
        (c.stats_job(42), b"NOT_FOUND", "stats-job 42: NOT_FOUND (no such job)"),
        (c.peek_ready(), b"NOT_FOUND", "peek-ready: NOT_FOUND (no ready job in the used tube)"),
        (c.peek_delayed(), b"NOT_FOUND", "peek-delayed: NOT_FOUND (no delayed job in the used "
         "tube)"),
        (c.peek_buried(), b"NOT_FOUND", "peek-buried: NOT_FOUND (no buried job in the used "
         "tube)"),
        (c.stats_tube("emails"), b"NOT_FOUND", "stats-tube emails: NOT_FOUND (no such tube)"),
        (c.pause_tube("emails", 5), b"NOT_FOUND", "pause-tube emails 5: NOT_FOUND (no such "
         "tube)"),
        (c.reserve(5), b"TIMED_OUT", "reserve-with-timeout 5: TIMED_OUT (no job became ready "
         "in time)"),
        (c.reserve(None), b"DEADLINE_SOON", "reserve: DEADLINE_SOON (a job this connection "
         "holds is within a second of its TTR)"),
        (c.ignore("emails"), b"NOT_IGNORED", "ignore emails: NOT_IGNORED (it is the only tube "
         "on the watch list)"),
        (c.put(b"x" * 70000, 1, 0, 60), b"JOB_TOO_BIG", "put 70000 bytes: JOB_TOO_BIG (the body "
         "is larger than the server's max-job-size)"),
        (c.put(b"x", 1, 0, 60), b"DRAINING", "put 1 byte: DRAINING (the server is in drain "
         "mode and takes no new jobs)"),
        (c.put(b"x", 1, 0, 60), b"BURIED 9", "put 1 byte: BURIED 9 (the server is out of "
         "memory: the job was stored, but buried)"),
        (c.release(42, 5, 0), b"BURIED", "release 42 5 0: BURIED (the server is out of memory: "
         "the job was buried)"),
        (c.stats(), b"OUT_OF_MEMORY", "stats: OUT_OF_MEMORY (the server could not allocate "
         "memory or binlog space)"),
        (c.use("t"), b"INTERNAL_ERROR", "use t: INTERNAL_ERROR (a bug or a failed binlog write "
         "in the server)"),
        (c.watch("t"), b"BAD_FORMAT", "watch t: BAD_FORMAT (the server could not parse the "
         "command)"),
        (c.kick(3), b"UNKNOWN_COMMAND", "kick 3: UNKNOWN_COMMAND (the server does not know the "
         "command)"),
        (c.put(b"x", 1, 0, 60), b"EXPECTED_CRLF", "put 1 byte: EXPECTED_CRLF (the body was not "
         "followed by CRLF)"),
    ],
)
def test_error_message_names_the_command(
    request_: tuple[bytes, Callable[[Reply], object]], wire: bytes, message: str
) -> None:
    """A transport names the command it sent in the error; the message says what went wrong."""
    data, parse = request_
    status, *values = wire.split(b" ")
    with pytest.raises(BeanstalkdError) as info:
        parse(rep(status, values, None))
    error = info.value
    name_command(error, data)
    assert str(error) == message


@pytest.mark.parametrize(
    ("request_", "wire", "message"),
    [
        (c.put(b"x", 1, 0, 60), b"JOB_TOO_BIG", "put: JOB_TOO_BIG (the body is larger than the "
         "server's max-job-size)"),
        (c.delete(1), b"NOT_FOUND", "delete: NOT_FOUND (no such job, or it is reserved by "
         "another connection)"),
        (c.release(1, 0, 0), b"BURIED", "release: BURIED (the server is out of memory: the job "
         "was buried)"),
        (c.touch(1), b"NOT_FOUND", "touch: NOT_FOUND (no such job reserved by this connection)"),
        (c.pause_tube("t", 1), b"NOT_FOUND", "pause-tube: NOT_FOUND (no such tube)"),
        (c.peek(1), b"NOT_FOUND", "NOT_FOUND (no such job or tube, or the job is not in a state "
         "this command needs)"),
        (c.reserve(0), b"TIMED_OUT", "TIMED_OUT (no job became ready in time)"),
    ],
)
def test_error_message_without_the_command_line(
    request_: tuple[bytes, Callable[[Reply], object]], wire: bytes, message: str
) -> None:
    """Unnamed by a transport (a pipelined command), an error still names the command
    when its success reply belongs to one command only."""
    status, *values = wire.split(b" ")
    with pytest.raises(BeanstalkdError) as info:
        request_[1](rep(status, values, None))
    assert str(info.value) == message


def test_errors_made_by_hand_have_messages() -> None:
    assert str(NotFoundError()) == (
        "NOT_FOUND (no such job or tube, or the job is not in a state this command needs)"
    )
    assert str(BuriedError()) == "BURIED (the server is out of memory: the job was buried)"
    assert str(BeanstalkdError()) == "error reply (the server refused the command)"
    assert str(NotFoundError("custom")) == "custom"  # a message given when raising wins
    for _, error_class in ERROR_CLASSES:
        assert str(error_class()).startswith(error_class._reply.decode() + " (")


def test_errors_pickle() -> None:
    named = NotFoundError()
    name_command(named, b"delete 42\r\n")
    try:
        b"\xff".decode("utf-8")
    except UnicodeDecodeError as cause:
        decode_error = BodyDecodeError(FakeJob(7, b"\xff"), cause)
    errors: list[Exception] = [
        named,
        BuriedWithJobIDError(7),
        BuriedError(),
        UnknownResponseError(b"HTTP/1.1", [b"400", b"Bad", b"Request"]),
        PutManyError([1, None], {1: JobTooBigError()}),
        ClientTimeoutError("slow"),
        ProtocolError("garbage"),
        decode_error,
        *(error_class() for _, error_class in ERROR_CLASSES),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert vars(copy).keys() == vars(error).keys(), type(error)
    unknown = pickle.loads(pickle.dumps(errors[3]))
    assert (unknown.status, unknown.values) == (b"HTTP/1.1", [b"400", b"Bad", b"Request"])
    many = pickle.loads(pickle.dumps(errors[4]))
    assert many.ids == [1, None]
    assert type(many.errors[1]) is JobTooBigError
    assert pickle.loads(pickle.dumps(decode_error)).job == FakeJob(7, b"\xff")


def test_a_reply_of_another_protocol_asks_what_the_peer_is() -> None:
    error = error_for(b"HTTP/1.1", [b"400", b"Bad", b"Request"], b"INSERTED")
    assert type(error) is UnknownResponseError
    assert str(error) == "the server sent b'HTTP/1.1 400 Bad Request': is this a beanstalkd server?"
    long = error_for(b"SSH-2.0-" + b"x" * 100, [])
    assert str(long) == (
        "the server sent b'SSH-2.0-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...: "
        "is this a beanstalkd server?"
    )
    assert str(error_for(b"DELETED", [b"1"])) == "unexpected reply: b'DELETED 1'"


def test_stray_error() -> None:
    inserted = rep(b"INSERTED", [b"1"], None)
    http = rep(b"HTTP/1.1", [b"400", b"Bad", b"Request"], None)
    header = rep(b"Content-Type:", [b"text/html"], None)
    first = stray_error([http, header], 1)
    assert type(first) is UnknownResponseError
    assert "b'HTTP/1.1 400 Bad Request': is this a beanstalkd server?" in str(first)
    extra = stray_error([inserted, header], 1)
    assert type(extra) is UnknownResponseError
    assert "is this a beanstalkd server?" in str(extra)
    more = stray_error([inserted, inserted], 1)
    assert type(more) is ProtocolError
    assert str(more) == "the server sent a reply to no command"
    partial = stray_error([inserted], 1)
    assert str(partial) == "the server sent bytes that answer no command"


class FakeJob(NamedTuple):
    id: int
    body: bytes


def test_body_decode_error() -> None:
    job = FakeJob(7, b"ok \xff")
    try:
        job.body.decode("utf-8")
    except UnicodeDecodeError as cause:
        error = BodyDecodeError(job, cause)
    else:  # pragma: no cover
        pytest.fail("the body decoded")
    assert error.job is job
    assert error.encoding == "utf-8"
    assert error.object == b"ok \xff"
    assert error.start == 3
    assert error.end == 4
    assert error.reason == "invalid start byte"
    assert str(error) == (
        "job 7: 'utf-8' codec can't decode byte 0xff in position 3: invalid start byte"
    )
    assert isinstance(error, UnicodeDecodeError)
    assert isinstance(error, Error)
    with pytest.raises(UnicodeError):
        raise error


def test_put_many_error() -> None:
    too_big = JobTooBigError()
    draining = DrainingError()
    error = PutManyError([1, None, 3, None], {3: draining, 1: too_big})
    assert str(error) == "2 of 4 bodies refused (#1: JobTooBigError, #3: DrainingError)"
    assert error.ids == [1, None, 3, None]
    assert error.errors == {1: too_big, 3: draining}


def test_pipelined_replies_in_one_chunk_then_partial() -> None:
    stream = b"USING a\r\nUSING b\r\nINSERTED 3\r\nUSING b\r\n"
    assert parse_all([stream]) == [
        rep(b"USING", [b"a"], None),
        rep(b"USING", [b"b"], None),
        rep(b"INSERTED", [b"3"], None),
        rep(b"USING", [b"b"], None),
    ]


def test_receive_returns_the_replies_each_piece_completes() -> None:
    reader = ReplyReader()
    assert reader.receive(b"INSERTED 1\r\nRESERVED 2 3\r\nab") == [rep(b"INSERTED", [b"1"], None)]
    assert not reader.idle
    assert reader.receive(b"c\r") == []
    assert reader.receive(b"\nDELETED\r\nTOUCHED\r\nKICK") == [
        rep(b"RESERVED", [b"2"], b"abc"),
        rep(b"DELETED", [], None),
        rep(b"TOUCHED", [], None),
    ]
    assert not reader.idle
    assert reader.receive(b"ED 4\r\n") == [rep(b"KICKED", [b"4"], None)]
    assert reader.idle


@given(st.lists(replies(), min_size=1, max_size=8), st.data())
def test_receive_any_split_parses_the_same(
    items: list[tuple[bytes, Reply]], data: st.DataObject
) -> None:
    stream = b"".join(wire for wire, _ in items)
    expected = [reply for _, reply in items]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1))
    reader = ReplyReader()
    got: list[Reply] = []
    for piece in split_at(stream, cuts):
        got.extend(reader.receive(piece))
    assert got == expected
    assert reader.idle
