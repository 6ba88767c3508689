"""The exception tree, and the mapping from server error replies to it.

Everything greenstalk raises on purpose derives from :class:`Error`:

* :class:`BeanstalkdError` and its subclasses: the server answered with an
  error reply. The connection is still in step and usable.
* :class:`ClientConnectionError` (also a builtin :class:`ConnectionError`):
  the connection is gone or can no longer be trusted, so it has been closed.
  :class:`ClientTimeoutError` is the socket timeout case (also a builtin
  :class:`TimeoutError`), :class:`ProtocolError` the case of bytes that are
  not a beanstalkd reply.

Invalid arguments raise the builtin :class:`ValueError` or :class:`TypeError`
before anything is sent.
"""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """Base class of every exception that greenstalk raises on purpose."""


class BeanstalkdError(Error):
    """The server answered a command with an error reply."""


class NotFoundError(BeanstalkdError):
    """NOT_FOUND: no such job or tube, or the job is not in a state that allows this command."""


class TimedOutError(BeanstalkdError):
    """TIMED_OUT: ``reserve(timeout=...)`` found no job in time."""


class DeadlineSoonError(BeanstalkdError):
    """DEADLINE_SOON: a job this connection holds is within a second of its TTR."""


class NotIgnoredError(BeanstalkdError):
    """NOT_IGNORED: the tube is the only one on the watch list."""


class BuriedError(BeanstalkdError):
    """BURIED: the server ran out of memory and buried the job.

    ``id`` is the job id when the server gave one (a ``put``), otherwise None.
    """

    def __init__(self, values: list[bytes] | int | None = None) -> None:
        if isinstance(values, int):
            self.id: int | None = values
        elif values:
            self.id = int(values[0])
        else:
            self.id = None
        super().__init__(self.id)


class BuriedWithJobIDError(BuriedError):
    """BURIED <id>: ``put`` stored the job but buried it at once (server out of memory)."""

    id: int

    def __init__(self, job_id: int) -> None:
        super().__init__(job_id)

    @property
    def job_id(self) -> int:
        """The id of the buried job (the name greenstalk 2.0 used)."""
        return self.id


class DrainingError(BeanstalkdError):
    """DRAINING: the server is in drain mode and accepts no new jobs."""


class JobTooBigError(BeanstalkdError):
    """JOB_TOO_BIG: the body is larger than the server's ``max-job-size``."""


class ExpectedCrlfError(BeanstalkdError):
    """EXPECTED_CRLF: the body was not followed by CRLF (never caused by this client)."""


class InternalError(BeanstalkdError):
    """INTERNAL_ERROR: a bug or a failed binlog write in the server."""


class BadFormatError(BeanstalkdError):
    """BAD_FORMAT: the server could not parse the command line."""


class UnknownCommandError(BeanstalkdError):
    """UNKNOWN_COMMAND: the server does not know the command."""


class OutOfMemoryError(BeanstalkdError):
    """OUT_OF_MEMORY: the server could not allocate memory or binlog space."""


class ClientConnectionError(Error, ConnectionError):
    """The connection failed, was closed, or can no longer be trusted.

    The client has closed its socket; any further call raises this error
    again. Jobs this connection had reserved return to the ready queue on
    the server.
    """


class ClientTimeoutError(ClientConnectionError, TimeoutError):
    """A socket wait took longer than ``socket_timeout``; the connection was closed.

    Closing is what keeps a late reply from being read as the answer to the
    next command.
    """


class ProtocolError(ClientConnectionError):
    """The server sent bytes that are not a valid beanstalkd reply."""


class UnknownResponseError(ProtocolError):
    """A well-formed reply line that does not answer the command that was sent."""

    def __init__(self, status: bytes, values: list[bytes]) -> None:
        super().__init__(f"unexpected reply: {b' '.join([status, *values])!r}")
        self.status = status
        self.values = values


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


_ERRORS_BY_STATUS: dict[bytes, type[BeanstalkdError]] = {
    b"NOT_FOUND": NotFoundError,
    b"TIMED_OUT": TimedOutError,
    b"DEADLINE_SOON": DeadlineSoonError,
    b"NOT_IGNORED": NotIgnoredError,
    b"DRAINING": DrainingError,
    b"JOB_TOO_BIG": JobTooBigError,
    b"EXPECTED_CRLF": ExpectedCrlfError,
    b"INTERNAL_ERROR": InternalError,
    b"BAD_FORMAT": BadFormatError,
    b"UNKNOWN_COMMAND": UnknownCommandError,
    b"OUT_OF_MEMORY": OutOfMemoryError,
}


def error_for(status: bytes, values: list[bytes]) -> Error:
    """Return the exception for a reply that is not the command's success reply.

    Server error replies map to their :class:`BeanstalkdError` subclass;
    anything else is an :class:`UnknownResponseError`.
    """
    error_class = _ERRORS_BY_STATUS.get(status)
    if error_class is not None and not values:
        return error_class()
    if status == b"BURIED" and len(values) <= 1:
        if values and values[0].isdigit():
            return BuriedWithJobIDError(int(values[0]))
        if not values:
            return BuriedError()
    return UnknownResponseError(status, values)
