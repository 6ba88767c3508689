"""The server's side of the protocol: command lines parsed exactly as beanstalkd 1.12 does.

:func:`parse_command` takes one command line (without its CRLF) and returns
a :class:`Command`, or raises :class:`CommandError` carrying the reply that
beanstalkd gives (``BAD_FORMAT`` or ``UNKNOWN_COMMAND``). It reproduces
1.12's quirks, so that a server built on it answers malformed input as the
real one does: commands are recognised by prefix, in beanstalkd's order;
numbers may be preceded by any number of spaces; most commands refuse
trailing characters; ``kick`` and ``reserve-with-timeout`` read their
number the lax way of C's ``strtoul`` and ``strtol``.
"""

from __future__ import annotations

import enum
from typing import NamedTuple, Union

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
_LONG_MAX = 2**63 - 1
_NAME_CHARACTERS = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
)
_MAX_NAME = 200
_C_SPACE = b" \t\n\v\f\r"


class Op(enum.Enum):
    """A command, as the server recognises it."""

    PUT = "put"
    PEEK = "peek"
    PEEK_READY = "peek-ready"
    PEEK_DELAYED = "peek-delayed"
    PEEK_BURIED = "peek-buried"
    RESERVE_WITH_TIMEOUT = "reserve-with-timeout"
    RESERVE_JOB = "reserve-job"
    RESERVE = "reserve"
    DELETE = "delete"
    RELEASE = "release"
    BURY = "bury"
    KICK = "kick"
    KICK_JOB = "kick-job"
    TOUCH = "touch"
    STATS_JOB = "stats-job"
    STATS_TUBE = "stats-tube"
    STATS = "stats"
    USE = "use"
    WATCH = "watch"
    IGNORE = "ignore"
    LIST_TUBES_WATCHED = "list-tubes-watched"
    LIST_TUBE_USED = "list-tube-used"
    LIST_TUBES = "list-tubes"
    QUIT = "quit"
    PAUSE_TUBE = "pause-tube"


# beanstalkd tries these prefixes in this order and takes the first match,
# which is why "reserve-job" must come before "reserve", and why
# "pause-tube" (no space) also matches "pause-tubefoo 1".
_PREFIXES: tuple[tuple[bytes, Op], ...] = (
    (b"put ", Op.PUT),
    (b"peek ", Op.PEEK),
    (b"peek-ready", Op.PEEK_READY),
    (b"peek-delayed", Op.PEEK_DELAYED),
    (b"peek-buried", Op.PEEK_BURIED),
    (b"reserve-with-timeout ", Op.RESERVE_WITH_TIMEOUT),
    (b"reserve-job ", Op.RESERVE_JOB),
    (b"reserve", Op.RESERVE),
    (b"delete ", Op.DELETE),
    (b"release ", Op.RELEASE),
    (b"bury ", Op.BURY),
    (b"kick ", Op.KICK),
    (b"kick-job ", Op.KICK_JOB),
    (b"touch ", Op.TOUCH),
    (b"stats-job ", Op.STATS_JOB),
    (b"stats-tube ", Op.STATS_TUBE),
    (b"stats", Op.STATS),
    (b"use ", Op.USE),
    (b"watch ", Op.WATCH),
    (b"ignore ", Op.IGNORE),
    (b"list-tubes-watched", Op.LIST_TUBES_WATCHED),
    (b"list-tube-used", Op.LIST_TUBE_USED),
    (b"list-tubes", Op.LIST_TUBES),
    (b"quit", Op.QUIT),
    (b"pause-tube", Op.PAUSE_TUBE),
)

Argument = Union[int, bytes, bool]


class Command(NamedTuple):
    """A parsed command: its op and its arguments, in the protocol's order.

    Numbers are ints (durations in seconds) and tube names bytes. ``put``
    has a fifth argument: False when characters trail the size, which the
    server reports as BAD_FORMAT only after its JOB_TOO_BIG check.
    ``reserve-with-timeout`` gives a C ``int``: negative means wait forever.
    """

    op: Op
    args: tuple[Argument, ...] = ()


class CommandError(Exception):
    """A command line the server refuses.

    ``reply`` is the whole reply line to send. ``op`` is the command the
    line was taken for, if any: beanstalkd counts some refused commands in
    its stats.
    """

    def __init__(self, reply: bytes, op: Op | None = None) -> None:
        super().__init__(reply)
        self.reply = reply
        self.op = op


BAD_FORMAT = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND = b"UNKNOWN_COMMAND\r\n"


def _bad(op: Op | None) -> CommandError:
    return CommandError(BAD_FORMAT, op)


def _read_uint(line: bytes, pos: int, maximum: int, last: bool, op: Op) -> tuple[int, int]:
    """beanstalkd's read_u32/read_u64: spaces, then digits only; ``last`` forbids anything after."""
    while pos < len(line) and line[pos] == 0x20:
        pos += 1
    start = pos
    while pos < len(line) and 0x30 <= line[pos] <= 0x39:
        pos += 1
    if pos == start or (last and pos != len(line)):
        raise _bad(op)
    value = int(line[start:pos])
    if value > maximum:
        raise _bad(op)
    return value, pos


def _read_numbers(line: bytes, pos: int, maxima: tuple[int, ...], op: Op) -> tuple[int, ...]:
    values = []
    for index, maximum in enumerate(maxima):
        value, pos = _read_uint(line, pos, maximum, index == len(maxima) - 1, op)
        values.append(value)
    return tuple(values)


def _c_integer(text: bytes) -> tuple[int, bool]:
    """C's strto(u)l in base 10: leading white space, a sign, digits; the rest ignored.

    Returns the signed value and whether any digit was read.
    """
    pos = 0
    while pos < len(text) and text[pos] in _C_SPACE:
        pos += 1
    sign = 1
    if pos < len(text) and text[pos] in b"+-":
        sign = -1 if text[pos] == 0x2D else 1
        pos += 1
    start = pos
    while pos < len(text) and 0x30 <= text[pos] <= 0x39:
        pos += 1
    if pos == start:
        return 0, False
    return sign * int(text[start:pos]), True


def _c_int(value: int) -> int:
    """Wrap to a 32-bit signed C int."""
    value &= U32_MAX
    return value - 2**32 if value > 2**31 - 1 else value


def is_valid_tube_name(name: bytes) -> bool:
    """True for 1 to 200 bytes of ``A-Za-z0-9-+/;.$_()`` not starting with ``-``."""
    return (
        0 < len(name) <= _MAX_NAME
        and name[0] != 0x2D
        and all(byte in _NAME_CHARACTERS for byte in name)
    )


def _whole_line_tube(line: bytes, prefix_length: int, op: Op) -> Command:
    name = line[prefix_length:]
    if not is_valid_tube_name(name):
        raise _bad(op)
    return Command(op, (name,))


def parse_command(line: bytes) -> Command:
    """Parse one command line (without CRLF) the way beanstalkd 1.12 does.

    Raises :class:`CommandError` with the reply for a line the server refuses.
    """
    if 0 in line:
        raise _bad(None)
    matched = next(((p, o) for p, o in _PREFIXES if line.startswith(p)), None)
    if matched is None:
        raise CommandError(UNKNOWN_COMMAND)
    prefix, op = matched
    start = len(prefix)
    rest = line[start:]
    if op is Op.PUT:
        priority, pos = _read_uint(line, start, U32_MAX, False, op)
        delay, pos = _read_uint(line, pos, U32_MAX, False, op)
        ttr, pos = _read_uint(line, pos, U32_MAX, False, op)
        size, pos = _read_uint(line, pos, U32_MAX, False, op)
        return Command(op, (priority, delay, ttr, size, pos == len(line)))
    if op in (Op.PEEK, Op.RESERVE_JOB, Op.DELETE, Op.KICK_JOB, Op.TOUCH, Op.STATS_JOB):
        return Command(op, _read_numbers(line, start, (U64_MAX,), op))
    if op is Op.RELEASE:
        return Command(op, _read_numbers(line, start, (U64_MAX, U32_MAX, U32_MAX), op))
    if op is Op.BURY:
        return Command(op, _read_numbers(line, start, (U64_MAX, U32_MAX), op))
    if op is Op.KICK:
        bound, digits = _c_integer(rest)
        if not digits or abs(bound) > U64_MAX:
            raise _bad(op)
        return Command(op, ((bound % 2**64) & U32_MAX,))
    if op is Op.RESERVE_WITH_TIMEOUT:
        timeout, _ = _c_integer(rest)
        if not -_LONG_MAX - 1 <= timeout <= _LONG_MAX:
            raise _bad(op)
        return Command(op, (_c_int(timeout),))
    if op in (Op.USE, Op.WATCH, Op.IGNORE, Op.STATS_TUBE):
        return _whole_line_tube(line, start, op)
    if op is Op.PAUSE_TUBE:
        pos = start
        while pos < len(line) and line[pos] == 0x20:
            pos += 1
        name_start = pos
        while pos < len(line) and line[pos] in _NAME_CHARACTERS:
            pos += 1
        if pos == name_start:
            raise _bad(op)
        (delay,) = _read_numbers(line, pos, (U32_MAX,), op)
        name = line[name_start:pos]
        if not is_valid_tube_name(name):
            raise _bad(op)
        return Command(op, (name, delay))
    if op is Op.QUIT:
        return Command(op)
    # The rest take no argument and refuse anything after the command.
    if rest:
        raise _bad(op)
    return Command(op)
