"""Bytes from the server turned into typed replies.

:class:`ReplyReader` is an incremental parser: feed it whatever the socket
gave, in pieces of any size, and take complete replies out. A reply is a
line (status and values), plus a data chunk of exactly the announced size
for the three statuses that carry one (``RESERVED``, ``FOUND`` and ``OK``).

The ``expect_*`` functions check that a reply is the success reply of the
command it answers and return its value; any other reply becomes the
matching exception from :mod:`.errors`.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ProtocolError, error_for

# The longest line beanstalkd sends is "USING <200-byte tube name>"; a line
# this long without CRLF means the peer is not a beanstalkd server.
MAX_REPLY_LINE = 1024

_CRLF = b"\r\n"
# Status -> how many values (the data size last) a reply with data has.
_DATA_STATUSES = {b"RESERVED": 2, b"FOUND": 2, b"OK": 1}
_MAX_SIZE_DIGITS = 20


class Reply(NamedTuple):
    """One reply from the server: its status word, its values and any data chunk."""

    status: bytes
    values: list[bytes]
    data: bytes | None


class ReplyReader:
    """Incremental reply parser: any split of a valid byte stream parses the same."""

    __slots__ = ("_chunked", "_chunks", "_data", "_header", "_pos")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0
        # Set while the line of a data reply has arrived but its data has not.
        self._header: tuple[bytes, list[bytes], int] | None = None
        self._chunks: list[bytes] = []
        self._chunked = 0

    @property
    def idle(self) -> bool:
        """True when no partial reply is buffered."""
        return self._header is None and self._pos >= len(self._data)

    def feed(self, data: bytes) -> None:
        """Add bytes received from the server."""
        if self._header is not None:
            self._chunks.append(data)
            self._chunked += len(data)
        elif self._pos >= len(self._data):
            self._data = data
            self._pos = 0
        else:
            self._data = self._data[self._pos :] + data
            self._pos = 0

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or None until more bytes are fed.

        Raises :class:`ProtocolError` when the bytes cannot be a beanstalkd reply.
        """
        if self._header is not None:
            return self._finish_data_reply(self._header)
        data = self._data
        pos = self._pos
        end = data.find(_CRLF, pos)
        if end < 0:
            if len(data) - pos > MAX_REPLY_LINE:
                raise ProtocolError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            return None
        values = data[pos:end].split(b" ")
        status = values[0]
        del values[0]
        pos = end + 2
        value_count = _DATA_STATUSES.get(status)
        if value_count is None:
            self._pos = pos
            return Reply(status, values, None)
        size = _data_size(status, values, value_count)
        del values[-1]
        stop = pos + size
        if len(data) >= stop + 2:
            if data[stop : stop + 2] != _CRLF:
                raise ProtocolError(f"{status.decode()} data not followed by CRLF")
            self._pos = stop + 2
            return Reply(status, values, data[pos:stop])
        self._header = (status, values, size)
        rest = data[pos:]
        self._chunks = [rest]
        self._chunked = len(rest)
        self._data = b""
        self._pos = 0
        return None

    def _finish_data_reply(self, header: tuple[bytes, list[bytes], int]) -> Reply | None:
        status, values, size = header
        if self._chunked < size + 2:
            return None
        data = b"".join(self._chunks)
        self._header = None
        self._chunks = []
        self._chunked = 0
        if data[size : size + 2] != _CRLF:
            raise ProtocolError(f"{status.decode()} data not followed by CRLF")
        self._data = data
        self._pos = size + 2
        return Reply(status, values, data[:size])


def _data_size(status: bytes, values: list[bytes], value_count: int) -> int:
    if len(values) != value_count:
        raise ProtocolError(f"malformed {status.decode()} reply: {values!r}")
    for value in values:
        if not value.isdigit() or len(value) > _MAX_SIZE_DIGITS:
            raise ProtocolError(f"malformed {status.decode()} reply: {values!r}")
    return int(values[-1])


def _int_value(reply: Reply) -> int:
    values = reply.values
    if len(values) != 1 or not values[0].isdigit():
        raise ProtocolError(f"malformed {reply.status.decode()} reply: {values!r}")
    return int(values[0])


def expect_nothing(reply: Reply, status: bytes) -> None:
    """Check that ``reply`` is exactly ``status`` with no values."""
    if reply.status != status or reply.values:
        raise error_for(reply.status, reply.values)


def expect_int(reply: Reply, status: bytes) -> int:
    """Return the single integer of a ``status <n>`` reply."""
    if reply.status != status:
        raise error_for(reply.status, reply.values)
    return _int_value(reply)


def expect_word(reply: Reply, status: bytes) -> str:
    """Return the single word of a ``status <word>`` reply, such as ``USING <tube>``."""
    if reply.status != status or len(reply.values) != 1:
        raise error_for(reply.status, reply.values)
    try:
        return reply.values[0].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"non-ASCII {status.decode()} reply") from None


def expect_job(reply: Reply, status: bytes) -> tuple[int, bytes]:
    """Return the id and body of a ``RESERVED`` or ``FOUND`` reply."""
    if reply.status != status or reply.data is None:
        raise error_for(reply.status, reply.values)
    return int(reply.values[0]), reply.data


def expect_data(reply: Reply) -> bytes:
    """Return the data chunk of an ``OK <bytes>`` reply."""
    if reply.status != b"OK" or reply.data is None:
        raise error_for(reply.status, reply.values)
    return reply.data
