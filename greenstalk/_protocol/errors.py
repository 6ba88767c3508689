"""The exception tree, and the mapping from server error replies to it.

Everything greenstalk raises on purpose derives from :class:`Error`:

* :class:`BeanstalkdError` and its subclasses: the server answered with an
  error reply. The connection is still in step and usable.
* :class:`ClientConnectionError` (also a builtin :class:`ConnectionError`):
  the connection is gone or can no longer be trusted, so it has been closed.
  :class:`ClientTimeoutError` is the socket timeout case (also a builtin
  :class:`TimeoutError`), :class:`ProtocolError` the case of bytes that are
  not a beanstalkd reply, :class:`CommandNotSentError` the case of a command
  that surely never reached the server.

Invalid arguments raise the builtin :class:`ValueError` or :class:`TypeError`
before anything is sent.

A server error is raised often (``reserve(timeout=0)`` on an empty tube, say),
so building one costs no formatting: its message is written only when it is
shown, from the reply word and the command it answered.
"""

from __future__ import annotations

from typing import Any, ClassVar

# Every first word of a beanstalkd 1.12 reply; a reply starting with anything
# else comes from a peer that speaks another protocol.
REPLY_WORDS = frozenset(
    {
        b"INSERTED", b"BURIED", b"USING", b"RESERVED", b"DEADLINE_SOON", b"TIMED_OUT",
        b"DELETED", b"NOT_FOUND", b"RELEASED", b"TOUCHED", b"WATCHING", b"NOT_IGNORED",
        b"FOUND", b"KICKED", b"OK", b"PAUSED", b"EXPECTED_CRLF", b"JOB_TOO_BIG",
        b"DRAINING", b"OUT_OF_MEMORY", b"INTERNAL_ERROR", b"BAD_FORMAT", b"UNKNOWN_COMMAND",
    }
)

# How many bytes of a stranger's reply an error message quotes.
_EXCERPT = 60


def excerpt(data: bytes) -> str:
    """``data`` as a repr cut to its first bytes, for an error message."""
    if len(data) <= _EXCERPT:
        return repr(data)
    return f"{data[:_EXCERPT]!r}..."


class Error(Exception):
    """Base class of every exception that greenstalk raises on purpose."""


class BeanstalkdError(Error):
    """The server answered a command with an error reply."""

    #: The reply word of the error (a class attribute of each subclass).
    _reply: ClassVar[bytes] = b""
    # The command line this error answers (its body left out), or only the
    # command's name when nothing more is known; set by whoever knows it.
    _command = b""

    def __str__(self) -> str:
        if self.args and isinstance(self.args[0], str):
            return super().__str__()  # a message given by whoever raised it
        command = _command_text(self._command)
        reply = self._reply_text()
        verb = self._command.split(b" ", 1)[0]
        explanation = _EXPLANATIONS.get((verb, self._reply)) or _EXPLANATIONS.get(
            (b"", self._reply), "the server refused the command"
        )
        text = f"{reply} ({explanation})"
        return f"{command}: {text}" if command else text

    def _reply_text(self) -> str:
        return self._reply.decode() or "error reply"


class NotFoundError(BeanstalkdError):
    """NOT_FOUND: no such job or tube, or the job is not in a state that allows this command."""

    _reply = b"NOT_FOUND"


class TimedOutError(BeanstalkdError):
    """TIMED_OUT: ``reserve(timeout=...)`` found no job in time."""

    _reply = b"TIMED_OUT"


class DeadlineSoonError(BeanstalkdError):
    """DEADLINE_SOON: a job this connection holds is within a second of its TTR."""

    _reply = b"DEADLINE_SOON"


class NotIgnoredError(BeanstalkdError):
    """NOT_IGNORED: the tube is the only one on the watch list."""

    _reply = b"NOT_IGNORED"


class BuriedError(BeanstalkdError):
    """BURIED: the server ran out of memory and buried the job.

    ``id`` is the job id when the server gave one (a ``put``), otherwise None.
    """

    _reply = b"BURIED"

    def __init__(self, values: list[bytes] | int | None = None) -> None:
        if isinstance(values, int):
            self.id: int | None = values
        elif values:
            self.id = int(values[0])
        else:
            self.id = None
        super().__init__(self.id)

    def _reply_text(self) -> str:
        return "BURIED" if self.id is None else f"BURIED {self.id}"


class BuriedWithJobIDError(BuriedError):
    """BURIED <id>: ``put`` stored the job but buried it at once (server out of memory)."""

    id: int
    _command = b"put"

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)

    @property
    def job_id(self) -> int:
        """The id of the buried job (the name greenstalk 2.0 used)."""
        return self.id


class DrainingError(BeanstalkdError):
    """DRAINING: the server is in drain mode and accepts no new jobs."""

    _reply = b"DRAINING"


class JobTooBigError(BeanstalkdError):
    """JOB_TOO_BIG: the body is larger than the server's ``max-job-size``."""

    _reply = b"JOB_TOO_BIG"


class ExpectedCrlfError(BeanstalkdError):
    """EXPECTED_CRLF: the body was not followed by CRLF (never caused by this client)."""

    _reply = b"EXPECTED_CRLF"


class InternalError(BeanstalkdError):
    """INTERNAL_ERROR: a bug or a failed binlog write in the server."""

    _reply = b"INTERNAL_ERROR"


class BadFormatError(BeanstalkdError):
    """BAD_FORMAT: the server could not parse the command line."""

    _reply = b"BAD_FORMAT"


class UnknownCommandError(BeanstalkdError):
    """UNKNOWN_COMMAND: the server does not know the command."""

    _reply = b"UNKNOWN_COMMAND"


class OutOfMemoryError(BeanstalkdError):
    """OUT_OF_MEMORY: the server could not allocate memory or binlog space."""

    _reply = b"OUT_OF_MEMORY"


class ClientConnectionError(Error, ConnectionError):
    """The connection failed, was closed, or can no longer be trusted.

    The client has closed its socket; any further call raises
    :class:`CommandNotSentError`, unless the client was made with
    ``reconnect=True``: then the next call connects again. Jobs this
    connection had reserved return to the ready queue on the server.
    """


class CommandNotSentError(ClientConnectionError):
    """The command surely never reached the server.

    The connection had failed or been closed before the command went out,
    the first send of its bytes failed with nothing sent, or (with
    ``reconnect=True``) a new connection could not be made; the message says
    which. The command had no effect, so sending it again cannot do it
    twice. Every other :class:`ClientConnectionError` leaves a command's
    effect unknown: the server may have carried it out.
    """


class ClientTimeoutError(ClientConnectionError, TimeoutError):
    """A command took longer than ``socket_timeout``; the connection was closed.

    Closing is what keeps a late reply from being read as the answer to the
    next command.
    """


class NoServerError(ClientConnectionError):
    """No server of the pool could take the command; the message says why for each."""


class UnknownPutError(ClientConnectionError):
    """A put was sent to a server that did not answer, so whether it was stored is unknown.

    Raised only by a pool made with ``at_most_once=True`` (otherwise the put
    is placed on another server and counted in ``pool.unknown_puts``).
    ``address`` is the server the put was sent to.
    """

    def __init__(self, message: str, address: tuple[str, int] | str) -> None:
        super().__init__(message)
        self.address = address

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.args[0], self.address)

class ProtocolError(ClientConnectionError):
    """The server sent bytes that are not a valid beanstalkd reply."""


class UnknownResponseError(ProtocolError):
    """A well-formed reply line that does not answer the command that was sent.

    A line that starts with no beanstalkd reply word at all says so, and asks
    whether the peer is a beanstalkd server.
    """

    def __init__(self, status: bytes, values: list[bytes]) -> None:
        line = b" ".join([status, *values])
        if status in REPLY_WORDS:
            message = f"unexpected reply: {line!r}"
        else:
            message = f"the server sent {excerpt(line)}: is this a beanstalkd server?"
        super().__init__(message)
        self.status = status
        self.values = values

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.status, self.values), self.__dict__


class BodyDecodeError(Error, UnicodeDecodeError):
    """A job body could not be decoded with the client's ``encoding``.

    ``job`` holds the id and the raw ``bytes`` body. When the body came from
    a reserve the job stays reserved by this client: delete, bury or release
    it, or it returns to the ready queue when its TTR runs out.
    """

    job: Any

    def __init__(self, job: Any, cause: UnicodeDecodeError) -> None:
        super().__init__(cause.encoding, cause.object, cause.start, cause.end, cause.reason)
        self.job = job

    def __str__(self) -> str:
        return f"job {self.job.id}: {super().__str__()}"

    def __reduce__(self) -> tuple[Any, ...]:
        cause = UnicodeDecodeError(self.encoding, self.object, self.start, self.end, self.reason)
        return type(self), (self.job, cause), self.__dict__


class PutManyError(Error):
    """Some bodies given to ``put_many`` were refused by the server.

    ``ids`` has one entry per body, in order: the new job id, or None where
    the server refused the body. ``errors`` maps the index of each refused
    body to the server's error. Every reply was read, so the client is
    still usable.
    """

    def __init__(self, ids: list[int | None], errors: dict[int, BeanstalkdError]) -> None:
        refused = ", ".join(f"#{i}: {type(e).__name__}" for i, e in sorted(errors.items()))
        super().__init__(f"{len(errors)} of {len(ids)} bodies refused ({refused})")
        self.ids = ids
        self.errors = errors

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.ids, self.errors), self.__dict__


_ERRORS_BY_STATUS: dict[bytes, type[BeanstalkdError]] = {
    error_class._reply: error_class
    for error_class in (
        NotFoundError, TimedOutError, DeadlineSoonError, NotIgnoredError, DrainingError,
        JobTooBigError, ExpectedCrlfError, InternalError, BadFormatError,
        UnknownCommandError, OutOfMemoryError,
    )
}

# The command a success reply word answers, where only one command can.
_COMMANDS_BY_SUCCESS = {
    b"INSERTED": b"put",
    b"DELETED": b"delete",
    b"RELEASED": b"release",
    b"BURIED": b"bury",
    b"TOUCHED": b"touch",
    b"PAUSED": b"pause-tube",
}

_NO_SUCH_JOB = "no such job"
_NOT_HELD = "no such job reserved by this connection"
# (command, reply) -> what the reply means; command b"" is the default.
_EXPLANATIONS: dict[tuple[bytes, bytes], str] = {
    (b"delete", b"NOT_FOUND"): "no such job, or it is reserved by another connection",
    (b"release", b"NOT_FOUND"): _NOT_HELD,
    (b"bury", b"NOT_FOUND"): _NOT_HELD,
    (b"touch", b"NOT_FOUND"): _NOT_HELD,
    (b"reserve-job", b"NOT_FOUND"): "no such job, or it is reserved",
    (b"kick-job", b"NOT_FOUND"): "no such job, or it is neither buried nor delayed",
    (b"peek", b"NOT_FOUND"): _NO_SUCH_JOB,
    (b"stats-job", b"NOT_FOUND"): _NO_SUCH_JOB,
    (b"peek-ready", b"NOT_FOUND"): "no ready job in the used tube",
    (b"peek-delayed", b"NOT_FOUND"): "no delayed job in the used tube",
    (b"peek-buried", b"NOT_FOUND"): "no buried job in the used tube",
    (b"stats-tube", b"NOT_FOUND"): "no such tube",
    (b"pause-tube", b"NOT_FOUND"): "no such tube",
    (b"", b"NOT_FOUND"): "no such job or tube, or the job is not in a state this command needs",
    (b"", b"TIMED_OUT"): "no job became ready in time",
    (b"", b"DEADLINE_SOON"): "a job this connection holds is within a second of its TTR",
    (b"", b"NOT_IGNORED"): "it is the only tube on the watch list",
    (b"put", b"BURIED"): "the server is out of memory: the job was stored, but buried",
    (b"", b"BURIED"): "the server is out of memory: the job was buried",
    (b"", b"DRAINING"): "the server is in drain mode and takes no new jobs",
    (b"", b"JOB_TOO_BIG"): "the body is larger than the server's max-job-size",
    (b"", b"EXPECTED_CRLF"): "the body was not followed by CRLF",
    (b"", b"INTERNAL_ERROR"): "a bug or a failed binlog write in the server",
    (b"", b"BAD_FORMAT"): "the server could not parse the command",
    (b"", b"UNKNOWN_COMMAND"): "the server does not know the command",
    (b"", b"OUT_OF_MEMORY"): "the server could not allocate memory or binlog space",
}


def _command_text(command: bytes) -> str:
    """A command line as a message shows it: a put by its body size."""
    if command.startswith(b"put "):
        size = command.rsplit(b" ", 1)[-1].decode("ascii", "replace")
        return f"put {size} {'byte' if size == '1' else 'bytes'}"
    return command.decode("ascii", "replace")


def name_command(error: BeanstalkdError, data: bytes) -> None:
    """Record in ``error`` the command (the bytes sent) that it answers, for its message."""
    end = data.find(b"\r\n")
    error._command = data if end < 0 else data[:end]


def error_for(status: bytes, values: list[bytes], success: bytes = b"") -> Error:
    """Return the exception for a reply that is not the command's success reply.

    ``success`` is the reply word the command expected, which names the
    command when only one command answers with it. Server error replies
    map to their :class:`BeanstalkdError` subclass; anything else is an
    :class:`UnknownResponseError`.
    """
    error: BeanstalkdError
    error_class = _ERRORS_BY_STATUS.get(status)
    if error_class is not None and not values:
        error = error_class()
    elif status == b"BURIED" and len(values) <= 1 and (not values or values[0].isdigit()):
        error = BuriedWithJobIDError(int(values[0])) if values else BuriedError()
    else:
        return UnknownResponseError(status, values)
    command = _COMMANDS_BY_SUCCESS.get(success)
    if command is not None:
        error._command = command
    return error


def stray_error(replies: list[tuple[bytes, list[bytes], Any]], asked: int) -> ProtocolError:
    """The error for bytes beyond the replies to the ``asked`` commands sent.

    They are more replies than ``asked``, or the start of one. When the first
    reply, or the first one nobody asked for, is no beanstalkd reply at all,
    the error is an :class:`UnknownResponseError` asking whether the peer is
    a beanstalkd server.
    """
    for status, values, _ in replies[:1] + replies[asked : asked + 1]:
        if status not in REPLY_WORDS:
            return UnknownResponseError(status, values)
    if len(replies) > asked:
        return ProtocolError("the server sent a reply to no command")
    return ProtocolError("the server sent bytes that answer no command")
