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
from typing import Final, Literal, NamedTuple, Union

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

    # Members are singletons, so identity hashing is right, and cheaper than
    # Enum's hash of the name on the server's per-command path.
    __hash__ = object.__hash__


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



def _scan_prefixes(line: bytes) -> tuple[bytes, Op] | None:
    return next(((p, o) for p, o in _PREFIXES if line.startswith(p)), None)


# Which prefix a line matches depends only on its first word and on whether a
# space follows it: a prefix without a space matches when it starts the
# word, one ending in a space when it is the word and a space. So the match
# for each command word, followed by a space or not, can be looked up.
_MATCH_BY_WORD = {
    (word, spaced): _scan_prefixes(word + b" x" if spaced else word)
    for word in (prefix.rstrip(b" ") for prefix, _ in _PREFIXES)
    for spaced in (False, True)
}

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
    line was taken for, if any. ``counted`` is true when beanstalkd still
    counts the command in its stats (``pause-tube`` with a bad tube name).
    """

    def __init__(self, reply: bytes, op: Op | None = None, counted: bool = False) -> None:
        super().__init__(reply)
        self.reply = reply
        self.op = op
        self.counted = counted


# The commands whose arguments are only numbers, and each number's maximum.
_NUMBER_ARGUMENTS = {
    Op.PUT: (U32_MAX, U32_MAX, U32_MAX, U32_MAX),
    Op.RELEASE: (U64_MAX, U32_MAX, U32_MAX),
    Op.BURY: (U64_MAX, U32_MAX),
}
# The commands with no argument, which refuse anything after the command word.
_BARE_COMMANDS = {
    op: Command(op)
    for op in (
        Op.PEEK_READY,
        Op.PEEK_DELAYED,
        Op.PEEK_BURIED,
        Op.RESERVE,
        Op.STATS,
        Op.LIST_TUBES_WATCHED,
        Op.LIST_TUBE_USED,
        Op.LIST_TUBES,
    )
}
_ID_ONLY = frozenset((Op.PEEK, Op.RESERVE_JOB, Op.DELETE, Op.KICK_JOB, Op.TOUCH, Op.STATS_JOB))
_NUMBER_ARGUMENTS.update(dict.fromkeys(_ID_ONLY, (U64_MAX,)))
# reserve-with-timeout's timeout is a C int; larger ones go the long way.
_PLAIN_TIMEOUT = (2**31 - 1,)
# The lines parse_command takes at once: a bare command word alone, and a
# command word whose prefix ends at its space, followed by numbers.
_PLAIN_BARE = {
    word: _BARE_COMMANDS[match[1]]
    for (word, spaced), match in _MATCH_BY_WORD.items()
    if not spaced and match is not None and match[0] == word and match[1] in _BARE_COMMANDS
}
_PLAIN_WORDS = {
    word: (match[1], _NUMBER_ARGUMENTS.get(match[1], _PLAIN_TIMEOUT))
    for (word, spaced), match in _MATCH_BY_WORD.items()
    if spaced
    and match is not None
    and match[0] == word + b" "
    and (match[1] in _NUMBER_ARGUMENTS or match[1] is Op.RESERVE_WITH_TIMEOUT)
}
# Command's own constructor, without the Python-level __new__ a NamedTuple adds.
_new_command = tuple.__new__

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
    # The busiest commands written the usual way (one space between words,
    # plain digits, numbers in range) are taken here at once; every other
    # line, odd or wrong, goes through beanstalkd's own rules below.
    space = line.find(b" ")
    if space < 0:
        bare = _PLAIN_BARE.get(line)
        if bare is not None:
            return bare
    else:
        plain = _PLAIN_WORDS.get(line[:space])
        if plain is not None:
            op, maxima = plain
            rest = line[space + 1 :]
            if len(maxima) == 1:
                if rest.isdigit():
                    number = int(rest)
                    if number <= maxima[0]:
                        return _new_command(Command, (op, (number,)))
            else:
                words = rest.split(b" ")
                if len(words) == len(maxima) and b"" not in words and b"".join(words).isdigit():
                    numbers = tuple(map(int, words))
                    if all(map(int.__le__, numbers, maxima)):
                        if op is Op.PUT:
                            return _new_command(Command, (op, (*numbers, True)))
                        return _new_command(Command, (op, numbers))
    return _parse_by_beanstalkd_rules(line)


def _parse_by_beanstalkd_rules(line: bytes) -> Command:
    """:func:`parse_command` for any line, by beanstalkd's scanning rules."""
    if 0 in line:
        raise _bad(None)
    space = line.find(b" ")
    key = (line, False) if space < 0 else (line[:space], True)
    matched = _MATCH_BY_WORD[key] if key in _MATCH_BY_WORD else _scan_prefixes(line)
    if matched is None:
        raise CommandError(UNKNOWN_COMMAND)
    prefix, op = matched
    start = len(prefix)
    rest = line[start:]
    bare = _BARE_COMMANDS.get(op)
    if bare is not None:
        if rest:
            raise _bad(op)
        return bare
    maxima = _NUMBER_ARGUMENTS.get(op)
    if op is Op.PUT:
        priority, pos = _read_uint(line, start, U32_MAX, False, op)
        delay, pos = _read_uint(line, pos, U32_MAX, False, op)
        ttr, pos = _read_uint(line, pos, U32_MAX, False, op)
        size, pos = _read_uint(line, pos, U32_MAX, False, op)
        return Command(op, (priority, delay, ttr, size, pos == len(line)))
    if maxima is not None:
        return Command(op, _read_numbers(line, start, maxima, op))
    if op is Op.KICK:
        bound, digits = _c_integer(rest)
        if not digits or abs(bound) > U64_MAX:
            raise _bad(op)
        return Command(op, ((bound % 2**64) & U32_MAX,))
    if op is Op.RESERVE_WITH_TIMEOUT:
        timeout = int(rest) if rest.isdigit() else _c_integer(rest)[0]
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
            raise CommandError(BAD_FORMAT, op, counted=True)
        return Command(op, (name, delay))
    return Command(op)  # quit: whatever follows it is ignored


MAX_LINE = 224
"""beanstalkd's command buffer: the longest command line, CRLF included."""



class Malformed(enum.Enum):
    """What :class:`CommandReader` returns for input that is neither a line nor a body."""

    OVERLONG = "a line too long"
    NO_CRLF = "a body not followed by CRLF"


OVERLONG: Final = Malformed.OVERLONG
"""What :meth:`CommandReader.next_line` returns for a line that was too long."""

NO_CRLF: Final = Malformed.NO_CRLF
"""What :meth:`CommandReader.take_body` returns for a body not followed by CRLF."""


class CommandReader:
    """Splits a connection's incoming bytes into command lines and job bodies.

    It finds line ends exactly as beanstalkd 1.12 does, quirks included: it
    looks at most :data:`MAX_LINE` bytes ahead, and only its *first* CR
    counts, so a stray CR hides every later line end within those bytes.
    A line still unended after 224 bytes is dropped, and so is everything
    up to the next CRLF found the same way; the caller answers
    ``BAD_FORMAT`` once for all of it.
    """

    __slots__ = ("_buffer", "_position", "_skipping")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._skipping = False

    def feed(self, data: bytes | memoryview) -> None:
        """Add bytes received from the peer (copied)."""
        buffer = self._buffer
        if self._position == len(buffer):
            buffer.clear()
            self._position = 0
        elif self._position > 65536:
            del buffer[: self._position]
            self._position = 0
        buffer += data

    @property
    def buffered(self) -> int:
        """How many received bytes are not consumed yet."""
        return len(self._buffer) - self._position

    def whole_line(self, data: bytes) -> bytes | None:
        """The command line that ``data`` is, when nothing is buffered and it is one whole line.

        That is the usual arrival of every command but ``put``: it is then
        taken without being buffered, and the line is returned without its
        CRLF. Otherwise None: feed ``data`` as usual.
        """
        size = len(data)
        if (
            2 <= size <= MAX_LINE
            and data.find(b"\r") == size - 2
            and data[-1] == 0x0A
            and self._position == len(self._buffer)
            and not self._skipping
        ):
            return data[:-2]
        return None

    def next_line(self) -> bytes | Literal[Malformed.OVERLONG] | None:
        """The next command line without its CRLF, :data:`OVERLONG`, or None for "need more"."""
        buffer = self._buffer
        while True:
            position = self._position
            window = len(buffer) - position
            if window < 2:
                return None  # not even a CRLF: the usual answer once a batch is read
            if window > MAX_LINE:
                window = MAX_LINE
            carriage_return = buffer.find(b"\r", position, position + window - 1)
            if carriage_return >= 0 and buffer[carriage_return + 1] == 0x0A:
                self._position = carriage_return + 2
                if self._skipping:
                    self._skipping = False
                    return OVERLONG
                return bytes(buffer[position:carriage_return])
            if window < MAX_LINE:
                return None
            self._position = position + MAX_LINE
            self._skipping = True

    def take_body(self, size: int) -> bytes | Literal[Malformed.NO_CRLF] | None:
        """A job body of ``size`` bytes and the CRLF after it, as beanstalkd reads one.

        Returns the body without its CRLF, :data:`NO_CRLF` when the two bytes
        after it are not CRLF (all ``size + 2`` bytes are consumed either
        way), or None until they have arrived.
        """
        position = self._position
        end = position + size + 2
        buffer = self._buffer
        if end > len(buffer):
            return None
        self._position = end
        if buffer[end - 2 : end] != b"\r\n":
            return NO_CRLF
        return bytes(buffer[position : end - 2])

    def skip(self, size: int) -> int:
        """Drop up to ``size`` bytes (an oversized body); returns how many were dropped."""
        dropped = min(size, len(self._buffer) - self._position)
        self._position += dropped
        return dropped
