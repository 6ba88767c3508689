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

from collections import deque
from typing import Optional

from .errors import (
    REPLY_WORDS,
    ClientConnectionError,
    ProtocolError,
    error_for,
    excerpt,
)

# The longest line beanstalkd sends is "USING <200-byte tube name>"; a line
# this long without CRLF means the peer is not a beanstalkd server.
MAX_REPLY_LINE = 1024
# beanstalkd's largest max-job-size (-z), and so the most data a reply
# carries: a larger size is garbage, refused before anything is buffered.
MAX_DATA_SIZE = 1 << 30

_CRLF = b"\r\n"
# Status -> how many values (the data size last) a reply with data has.
_DATA_STATUSES = {b"RESERVED": 2, b"FOUND": 2, b"OK": 1}
_MAX_SIZE_DIGITS = 20


Reply = tuple[bytes, list[bytes], Optional[bytes]]
"""One reply from the server: its status word, its values, and its data chunk or None.

A plain tuple rather than a named one: building it is several times
cheaper, and every command pays for one.
"""


class ReplyReader:
    """Incremental reply parser: any split of a valid byte stream parses the same.

    :meth:`receive` is the whole interface a transport needs: give it the
    bytes that arrived and it returns the replies they complete, in order.
    :meth:`feed` and :meth:`next_reply` offer the same one reply at a time.
    """

    __slots__ = ("_chunked", "_chunks", "_data", "_header", "_pos", "_ready", "drained", "error")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0
        # Set while the line of a data reply has arrived but its data has not;
        # the data then collects in _chunks, joined once it is complete.
        self._header: tuple[bytes, list[bytes], int] | None = None
        self._chunks: list[bytes] = []
        self._chunked = 0
        self._ready: deque[Reply] = deque()
        #: The error found in the bytes received, once there is one; every
        #: later call raises it.
        self.error: ProtocolError | None = None
        #: True when every byte received so far was part of a reply that
        #: :meth:`receive` returned (a plain attribute: transports check it
        #: after every reply).
        self.drained = True

    @property
    def idle(self) -> bool:
        """True when nothing is buffered: no partial reply and no reply not yet taken."""
        return self.drained and not self._ready

    def receive(self, data: bytes) -> list[Reply]:
        """Add bytes from the server; return the replies they complete, in order.

        Raises :class:`ProtocolError` when the bytes cannot be a beanstalkd
        reply. Complete replies before the bad bytes are still returned; the
        error is then raised by the next call, and by every call after it.
        """
        if self.error is not None:
            raise self.error
        self.drained = False
        replies: list[Reply] = []
        try:
            if self._header is not None:
                self._chunks.append(data)
                self._chunked += len(data)
                first = self._finish_data_reply(self._header)
                if first is None:
                    return replies
                replies.append(first)
                data = self._data
                pos = self._pos
            elif self._pos < len(self._data):
                data = self._data[self._pos :] + data
                pos = 0
            else:
                pos = 0
            # One loop over every complete reply in the buffer, for speed.
            while True:
                if pos == len(data):
                    self._data = b""
                    self._pos = 0
                    self.drained = True
                    return replies
                end = data.find(_CRLF, pos)
                if end < 0:
                    # A final CR may be the first half of the line's CRLF.
                    if len(data) - pos - data.endswith(b"\r") > MAX_REPLY_LINE:
                        raise _long_line_error(data[pos:])
                    self._data = data
                    self._pos = pos
                    return replies
                if end - pos > MAX_REPLY_LINE:
                    raise _long_line_error(data[pos:end])
                values = data[pos:end].split(b" ")
                status = values[0]
                del values[0]
                pos = end + 2
                value_count = _DATA_STATUSES.get(status)
                if value_count is None:
                    replies.append((status, values, None))
                    continue
                size = _data_size(status, values, value_count)
                del values[-1]
                stop = pos + size
                if len(data) < stop + 2:
                    self._header = (status, values, size)
                    rest = data[pos:]
                    self._chunks = [rest]
                    self._chunked = len(rest)
                    self._data = b""
                    self._pos = 0
                    return replies
                if data[stop : stop + 2] != _CRLF:
                    raise ProtocolError(f"{status.decode()} data not followed by CRLF")
                replies.append((status, values, data[pos:stop]))
                pos = stop + 2
        except ProtocolError as error:
            self.error = error
            if not replies:
                raise
            return replies

    def closed_error(self) -> ClientConnectionError:
        """The error to raise now that the server has closed the connection.

        It says whether a reply was cut short, and when the bytes left over
        start no beanstalkd reply, quotes them as the peer's.
        """
        if self.idle:
            return ClientConnectionError("the server closed the connection")
        if self._header is None and not _may_start_a_reply(self._data[self._pos :]):
            return ProtocolError(
                f"the server sent {excerpt(self._data[self._pos :])} and closed the "
                "connection: is this a beanstalkd server?"
            )
        return ClientConnectionError("the server closed the connection in the middle of a reply")

    def feed(self, data: bytes) -> None:
        """Add bytes from the server, for :meth:`next_reply` to take."""
        self._ready.extend(self.receive(data))

    def next_reply(self) -> Reply | None:
        """Return the next complete reply fed so far, or None.

        Raises :class:`ProtocolError` once the replies before bad bytes are taken.
        """
        if self._ready:
            return self._ready.popleft()
        if self.error is not None:
            raise self.error
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
        return status, values, data[:size]


def _data_size(status: bytes, values: list[bytes], value_count: int) -> int:
    if len(values) != value_count:
        raise ProtocolError(f"malformed {status.decode()} reply: {values!r}")
    for value in values:
        if not value.isdigit() or len(value) > _MAX_SIZE_DIGITS:
            raise ProtocolError(f"malformed {status.decode()} reply: {values!r}")
    size = int(values[-1])
    if size > MAX_DATA_SIZE:
        raise ProtocolError(
            f"{status.decode()} reply announces {size} bytes of data, more than a beanstalkd "
            f"server ever sends ({MAX_DATA_SIZE})"
        )
    return size


def _may_start_a_reply(line: bytes) -> bool:
    """Whether an unfinished line may be the start of a beanstalkd reply."""
    word, space, _ = line.partition(b" ")
    if space:
        return word in REPLY_WORDS
    if word.endswith(b"\r"):
        word = word[:-1]
    return any(known.startswith(word) for known in REPLY_WORDS)


def _long_line_error(line: bytes) -> ProtocolError:
    """The error for a line too long to be a reply: from another protocol, most likely."""
    message = f"reply line longer than {MAX_REPLY_LINE} bytes"
    if line.split(b" ", 1)[0] not in REPLY_WORDS:
        message += f" ({excerpt(line)}): is this a beanstalkd server?"
    return ProtocolError(message)


def expect_nothing(reply: Reply, status: bytes) -> None:
    """Check that ``reply`` is exactly ``status`` with no values."""
    if reply[0] != status or reply[1]:
        raise error_for(reply[0], reply[1], status)


def expect_int(reply: Reply, status: bytes) -> int:
    """Return the single integer of a ``status <n>`` reply."""
    reply_status, values, _ = reply
    if reply_status != status:
        raise error_for(reply_status, values, status)
    if len(values) != 1 or not values[0].isdigit():
        raise ProtocolError(f"malformed {status.decode()} reply: {values!r}")
    return int(values[0])


def expect_word(reply: Reply, status: bytes) -> str:
    """Return the single word of a ``status <word>`` reply, such as ``USING <tube>``."""
    reply_status, values, _ = reply
    if reply_status != status or len(values) != 1:
        raise error_for(reply_status, values, status)
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"non-ASCII {status.decode()} reply") from None


def expect_job(reply: Reply, status: bytes) -> tuple[int, bytes]:
    """Return the id and body of a ``RESERVED`` or ``FOUND`` reply."""
    reply_status, values, data = reply
    if reply_status != status or data is None:
        raise error_for(reply_status, values, status)
    return int(values[0]), data


def reserved_job_id(reply: Reply) -> int | None:
    """The id of the job a reply hands over to this connection (``RESERVED``), else None."""
    status, values, _ = reply
    return int(values[0]) if status == b"RESERVED" else None


def expect_data(reply: Reply) -> bytes:
    """Return the data chunk of an ``OK <bytes>`` reply."""
    reply_status, values, data = reply
    if reply_status != b"OK" or data is None:
        raise error_for(reply_status, values)
    return data
