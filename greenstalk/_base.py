"""What the sync and asyncio clients share: jobs, defaults, and the I/O-free helpers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from typing import Any, Generic, TypeVar, Union, cast

from ._protocol import commands
from ._protocol.commands import BodyBytes, Request
from ._protocol.errors import BodyDecodeError

DEFAULT_TUBE = "default"
DEFAULT_PRIORITY = 2**16
DEFAULT_DELAY = 0
DEFAULT_TTR = 60

TBody = TypeVar("TBody")
T = TypeVar("T")

Address = Union[tuple[str, int], str, "os.PathLike[str]", socket.socket]
"""Where the server is: ``(host, port)``, a Unix socket path, or a connected socket."""


ConnectionTarget = Address
"""greenstalk 2.x's name for :data:`Address`."""

class Job(Generic[TBody]):
    """A job: its id and its body (``bytes``, or ``str`` when the client has an encoding)."""

    __slots__ = ("body", "id")

    def __init__(self, id: int, body: TBody) -> None:
        self.id = id
        self.body = body

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, body={self.body!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return bool(self.id == other.id and self.body == other.body)

    def __hash__(self) -> int:
        return hash((Job, self.id))


JobOrID = Union[Job[Any], int]
"""A job, or a job id."""


def job_id(job: JobOrID) -> int:
    """The id of a job given as a Job or an id."""
    return job.id if isinstance(job, Job) else job


class ClientBase(Generic[TBody]):
    """The state and helpers both clients have; they add the transport."""

    def __init__(
        self, address: Address, encoding: str | None, use: str, watch: str | Iterable[str]
    ) -> None:
        """Check the arguments; raises ValueError, TypeError or LookupError."""
        if encoding is not None:
            "".encode(encoding)  # a LookupError now, not at the first put
        watch_list = [watch] if isinstance(watch, str) else list(watch)
        if not watch_list:
            raise ValueError("watch must name at least one tube")
        #: The commands that give a new connection its used tube and watch list.
        self._setup = setup_requests(use, watch_list)
        self.address = address
        self.encoding = encoding
        self._closed_reason = ""

    def _job(self, found: tuple[int, bytes]) -> Job[TBody]:
        job_id, body = found
        if self.encoding is None:
            return Job(job_id, cast(TBody, body))
        try:
            return Job(job_id, cast(TBody, body.decode(self.encoding)))
        except UnicodeDecodeError as error:
            raise BodyDecodeError(Job(job_id, body), error) from error

    def _body(self, body: BodyBytes | TBody) -> BodyBytes:
        if self.encoding is not None and type(body) is str:
            return body.encode(self.encoding)
        return cast(BodyBytes, body)


def setup_requests(use: str, watch: list[str]) -> list[Request[Any]]:
    """The commands that give a new connection its used tube and watch list."""
    requests: list[Request[Any]] = []
    if use != DEFAULT_TUBE:
        requests.append(commands.use(use))
    requests.extend(commands.watch(tube) for tube in watch if tube != DEFAULT_TUBE)
    if DEFAULT_TUBE not in watch:
        requests.append(commands.ignore(DEFAULT_TUBE))
    return requests
