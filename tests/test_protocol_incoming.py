"""The server-side command parser, against beanstalkd 1.12's own answers."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenstalk._protocol import incoming
from greenstalk._protocol.incoming import (
    BAD_FORMAT,
    NO_CRLF,
    OVERLONG,
    UNKNOWN_COMMAND,
    Command,
    CommandError,
    CommandReader,
    Op,
    is_valid_tube_name,
    parse_command,
)
from greenstalk.testing import BeanstalkdProcess

NAME_200 = b"a" * 200

ACCEPTED: list[tuple[bytes, Command]] = [
    (b"put 1 2 3 4", Command(Op.PUT, (1, 2, 3, 4, True))),
    (b"put  0   0  1   1", Command(Op.PUT, (0, 0, 1, 1, True))),
    (b"put 0 0 1 1 x", Command(Op.PUT, (0, 0, 1, 1, False))),
    (b"put 0 0 1 1 ", Command(Op.PUT, (0, 0, 1, 1, False))),
    (b"put 0 0 0 10b", Command(Op.PUT, (0, 0, 0, 10, False))),
    (b"put 4294967295 0 0 0", Command(Op.PUT, (2**32 - 1, 0, 0, 0, True))),
    (b"peek 1", Command(Op.PEEK, (1,))),
    (b"peek 18446744073709551615", Command(Op.PEEK, (2**64 - 1,))),
    (b"peek-ready", Command(Op.PEEK_READY)),
    (b"peek-delayed", Command(Op.PEEK_DELAYED)),
    (b"peek-buried", Command(Op.PEEK_BURIED)),
    (b"reserve", Command(Op.RESERVE)),
    (b"reserve-with-timeout 5", Command(Op.RESERVE_WITH_TIMEOUT, (5,))),
    (b"reserve-with-timeout abc", Command(Op.RESERVE_WITH_TIMEOUT, (0,))),
    (b"reserve-with-timeout ", Command(Op.RESERVE_WITH_TIMEOUT, (0,))),
    (b"reserve-with-timeout 1x", Command(Op.RESERVE_WITH_TIMEOUT, (1,))),
    (b"reserve-with-timeout  0", Command(Op.RESERVE_WITH_TIMEOUT, (0,))),
    (b"reserve-with-timeout +0", Command(Op.RESERVE_WITH_TIMEOUT, (0,))),
    (b"reserve-with-timeout -1", Command(Op.RESERVE_WITH_TIMEOUT, (-1,))),
    (b"reserve-with-timeout 4294967295", Command(Op.RESERVE_WITH_TIMEOUT, (-1,))),
    (b"reserve-with-timeout 4294967297", Command(Op.RESERVE_WITH_TIMEOUT, (1,))),
    (b"reserve-job 7", Command(Op.RESERVE_JOB, (7,))),
    (b"delete 9", Command(Op.DELETE, (9,))),
    (b"release 1 2 3", Command(Op.RELEASE, (1, 2, 3))),
    (b"bury 1 2", Command(Op.BURY, (1, 2))),
    (b"kick 3", Command(Op.KICK, (3,))),
    (b"kick -1", Command(Op.KICK, (2**32 - 1,))),
    (b"kick +2", Command(Op.KICK, (2,))),
    (b"kick  2", Command(Op.KICK, (2,))),
    (b"kick 3abc", Command(Op.KICK, (3,))),
    (b"kick 4294967296", Command(Op.KICK, (0,))),
    (b"kick-job 4", Command(Op.KICK_JOB, (4,))),
    (b"touch 4", Command(Op.TOUCH, (4,))),
    (b"stats-job 4", Command(Op.STATS_JOB, (4,))),
    (b"stats-tube default", Command(Op.STATS_TUBE, (b"default",))),
    (b"stats", Command(Op.STATS)),
    (b"use ABCxyz019-+/;.$_()", Command(Op.USE, (b"ABCxyz019-+/;.$_()",))),
    (b"use (", Command(Op.USE, (b"(",))),
    (b"use " + NAME_200, Command(Op.USE, (NAME_200,))),
    (b"watch a", Command(Op.WATCH, (b"a",))),
    (b"ignore a", Command(Op.IGNORE, (b"a",))),
    (b"list-tubes-watched", Command(Op.LIST_TUBES_WATCHED)),
    (b"list-tube-used", Command(Op.LIST_TUBE_USED)),
    (b"list-tubes", Command(Op.LIST_TUBES)),
    (b"quit", Command(Op.QUIT)),
    (b"quitxyz", Command(Op.QUIT)),
    (b"pause-tube default 0", Command(Op.PAUSE_TUBE, (b"default", 0))),
    (b"pause-tube  default  1", Command(Op.PAUSE_TUBE, (b"default", 1))),
    (b"pause-tubedefault 0", Command(Op.PAUSE_TUBE, (b"default", 0))),
]

REFUSED: list[tuple[bytes, bytes, Op | None]] = [
    (b"", UNKNOWN_COMMAND, None),
    (b"PUT 0 0 1 1", UNKNOWN_COMMAND, None),
    (b" stats", UNKNOWN_COMMAND, None),
    (b"put", UNKNOWN_COMMAND, None),
    (b"use", UNKNOWN_COMMAND, None),
    (b"peek", UNKNOWN_COMMAND, None),
    (b"delete", UNKNOWN_COMMAND, None),
    (b"touch", UNKNOWN_COMMAND, None),
    (b"kick", UNKNOWN_COMMAND, None),
    (b"kick-job", UNKNOWN_COMMAND, None),
    (b"stats\x00", BAD_FORMAT, None),
    (b"put -1 0 100 1", BAD_FORMAT, Op.PUT),
    (b"put 4294967296 0 100 1", BAD_FORMAT, Op.PUT),
    (b"put 0 0 0 4294967296", BAD_FORMAT, Op.PUT),
    (b"put 0 0 1", BAD_FORMAT, Op.PUT),
    (b"put 0\t0 1 1", BAD_FORMAT, Op.PUT),
    (b"reservex", BAD_FORMAT, Op.RESERVE),
    (b"reserve ", BAD_FORMAT, Op.RESERVE),
    (b"reserve-with-timeout", BAD_FORMAT, Op.RESERVE),
    (b"reserve-job", BAD_FORMAT, Op.RESERVE),
    (b"reserve-with-timeout 99999999999999999999", BAD_FORMAT, Op.RESERVE_WITH_TIMEOUT),
    (b"stats-job", BAD_FORMAT, Op.STATS),
    (b"stats-tube", BAD_FORMAT, Op.STATS),
    (b"statsx", BAD_FORMAT, Op.STATS),
    (b"stats ", BAD_FORMAT, Op.STATS),
    (b"stats-job 111 222", BAD_FORMAT, Op.STATS_JOB),
    (b"list-tubesx", BAD_FORMAT, Op.LIST_TUBES),
    (b"list-tubes x", BAD_FORMAT, Op.LIST_TUBES),
    (b"list-tube-usedx", BAD_FORMAT, Op.LIST_TUBE_USED),
    (b"peek-readyx", BAD_FORMAT, Op.PEEK_READY),
    (b"peek-ready ", BAD_FORMAT, Op.PEEK_READY),
    (b"peek 18446744073709551616", BAD_FORMAT, Op.PEEK),
    (b"peek 1 ", BAD_FORMAT, Op.PEEK),
    (b"delete x", BAD_FORMAT, Op.DELETE),
    (b"release 1 2", BAD_FORMAT, Op.RELEASE),
    (b"release 1 2 3 4", BAD_FORMAT, Op.RELEASE),
    (b"bury 1", BAD_FORMAT, Op.BURY),
    (b"kick ", BAD_FORMAT, Op.KICK),
    (b"kick abc", BAD_FORMAT, Op.KICK),
    (b"kick 99999999999999999999", BAD_FORMAT, Op.KICK),
    (b"use -foo", BAD_FORMAT, Op.USE),
    (b"use foo ", BAD_FORMAT, Op.USE),
    (b"use  foo", BAD_FORMAT, Op.USE),
    (b"use ", BAD_FORMAT, Op.USE),
    (b"use a*b", BAD_FORMAT, Op.USE),
    (b"use a:b", BAD_FORMAT, Op.USE),
    (b"use \xe9", BAD_FORMAT, Op.USE),
    (b"use " + NAME_200 + b"a", BAD_FORMAT, Op.USE),
    (b"watch a b", BAD_FORMAT, Op.WATCH),
    (b"ignore ", BAD_FORMAT, Op.IGNORE),
    (b"stats-tube a b", BAD_FORMAT, Op.STATS_TUBE),
    (b"pause-tube good", BAD_FORMAT, Op.PAUSE_TUBE),
    (b"pause-tube good 1 ", BAD_FORMAT, Op.PAUSE_TUBE),
    (b"pause-tube good -1", BAD_FORMAT, Op.PAUSE_TUBE),
    (b"pause-tube -x 1", BAD_FORMAT, Op.PAUSE_TUBE),
    (b"pause-tube  1", BAD_FORMAT, Op.PAUSE_TUBE),
]


@pytest.mark.parametrize(("line", "command"), ACCEPTED, ids=repr)
def test_accepted(line: bytes, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(("line", "reply", "op"), REFUSED, ids=repr)
def test_refused(line: bytes, reply: bytes, op: Op | None) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(line)
    assert caught.value.reply == reply
    assert caught.value.op is op


def test_tube_names() -> None:
    assert is_valid_tube_name(b"a")
    assert is_valid_tube_name(NAME_200)
    assert not is_valid_tube_name(b"")
    assert not is_valid_tube_name(NAME_200 + b"a")
    assert not is_valid_tube_name(b"-a")
    assert not is_valid_tube_name(b"a b")


def _blocks_or_closes(command: Command) -> bool:
    if command.op in (Op.QUIT, Op.RESERVE, Op.PUT):
        return True
    return command.op is Op.RESERVE_WITH_TIMEOUT and command.args != (0,)


def _ask(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "beanstalkd closed the connection"
        reply += chunk
    head, _, rest = reply.partition(b"\r\n")
    if head.startswith((b"OK ", b"FOUND ", b"RESERVED ")):
        size = int(head.split(b" ")[-1])
        while len(rest) < size + 2:
            rest += sock.recv(65536)
    return head + b"\r\n"


def test_beanstalkd_answers_the_same(beanstalkd: BeanstalkdProcess) -> None:
    """Every line of the tables, sent to the real server: the same refusals, and no others."""
    address = beanstalkd.address
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        lines = [line for line, _ in ACCEPTED] + [line for line, _, _ in REFUSED]
        for line in lines:
            if line.startswith(b"stats\x00"):
                continue  # the server stops reading a line at NUL differently; covered above
            try:
                ours: bytes | None = None
                command = parse_command(line)
                if _blocks_or_closes(command):
                    continue
            except CommandError as error:
                ours = error.reply
                if error.op is Op.PUT:
                    continue  # its body would then be read as a command
            theirs = _ask(sock, line)
            if ours is None:
                assert theirs not in (BAD_FORMAT, UNKNOWN_COMMAND), line
            else:
                assert theirs == ours, line


def _lines(data: bytes, chunk: int) -> list[object]:
    """Every line the reader finds in ``data`` fed ``chunk`` bytes at a time."""
    reader = CommandReader()
    found: list[object] = []
    for start in range(0, len(data), chunk):
        reader.feed(data[start : start + chunk])
        while (line := reader.next_line()) is not None:
            found.append(line)
    return found


@pytest.mark.parametrize("chunk", [1, 7, 224, 10_000])
def test_reader_finds_lines_like_beanstalkd(chunk: int) -> None:
    longest = b"kick " + b"0" * 217  # 222 bytes, 224 with CRLF: the longest line taken
    assert _lines(b"use a\r\n" + longest + b"\r\nstats\r\n", chunk) == [b"use a", longest, b"stats"]
    # 225 bytes: dropped, and (its CRLF straddling the 224-byte window) the next line too.
    assert _lines(b"x" * 223 + b"\r\nuse a\r\nstats\r\n", chunk) == [OVERLONG, b"stats"]
    # 226 bytes: dropped, then the next line is read.
    assert _lines(b"x" * 224 + b"\r\nstats\r\n", chunk) == [OVERLONG, b"stats"]
    # A stray CR hides the line end until 224 bytes are in.
    assert _lines(b"use a\rb\r\n", chunk) == []
    assert _lines(b"bare\nlf\r\n", chunk) == [b"bare\nlf"]


def test_reader_takes_bodies_and_skips() -> None:
    reader = CommandReader()
    reader.feed(b"abc\r")
    assert reader.take_body(3) is None
    reader.feed(b"\nxyzw\r\nstats\r\n")
    assert reader.take_body(3) == b"abc"
    assert reader.take_body(3) is NO_CRLF  # "xyz" then "w\r": consumed all the same
    assert reader.next_line() == b"\nstats"  # the "\n" left over starts the next line
    reader = CommandReader()
    reader.feed(b"0123456789")
    assert reader.skip(4) == 4
    assert reader.skip(100) == 6
    assert reader.buffered == 0


def _outcome(parse: object, line: bytes) -> object:
    try:
        return parse(line)  # type: ignore[operator]
    except CommandError as error:
        return ("refused", error.reply, error.op, error.counted)


_WORDS = [prefix.rstrip(b" ") for prefix, _ in incoming._PREFIXES] + [b"put0", b"deletex", b""]
_PIECES = st.sampled_from(
    [b" ", b"  ", b"0", b"7", b"00", b"-1", b"+3", b"x", b"\0", b"\t", str(2**31).encode(),
     str(2**32 - 1).encode(), str(2**32).encode(), str(2**64 - 1).encode(), str(2**64).encode()]
)


@given(st.sampled_from(_WORDS), st.lists(_PIECES, max_size=9))
def test_quick_path_agrees_with_beanstalkds_rules(word: bytes, pieces: list[bytes]) -> None:
    """Every line parse_command takes at once, it takes as the general scanner would."""
    line = word + b"".join(pieces)
    assert _outcome(parse_command, line) == _outcome(incoming._parse_by_beanstalkd_rules, line)


_LINE_BYTES = st.lists(
    st.sampled_from([b"delete 1", b"\r", b"\n", b"\r\n", b"x", b" ", b"\r\r\n"]), max_size=40
).map(b"".join)


@given(st.binary(max_size=4) | _LINE_BYTES, st.binary(max_size=4))
def test_a_whole_line_is_taken_as_the_buffered_reader_would_take_it(
    data: bytes, earlier: bytes
) -> None:
    """whole_line answers only for one complete line with nothing buffered, and agrees with feed."""
    reader = CommandReader()
    reader.feed(earlier)
    line = reader.whole_line(data)
    if earlier:
        assert line is None
        return
    buffered = CommandReader()
    buffered.feed(data)
    if line is None:
        return
    assert buffered.next_line() == line
    assert buffered.buffered == 0
    assert reader.buffered == 0


def test_whole_line_refuses_what_is_not_exactly_one_line() -> None:
    reader = CommandReader()
    assert reader.whole_line(b"stats\r\n") == b"stats"
    assert reader.whole_line(b"stats\r\nstats\r\n") is None
    assert reader.whole_line(b"stats") is None
    assert reader.whole_line(b"st\rats\r\n") is None  # the first CR is not a line end
    assert reader.whole_line(b"a" * 222 + b"\r\n") == b"a" * 222
    assert reader.whole_line(b"a" * 223 + b"\r\n") is None  # past beanstalkd's 224 bytes
    reader.feed(b"a" * 224)  # all taken, but the rest of this overlong line is to be skipped
    assert reader.next_line() is None
    assert reader.buffered == 0
    assert reader.whole_line(b"stats\r\n") is None
