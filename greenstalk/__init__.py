"""greenstalk: a fast, careful Python client for the beanstalkd work queue.

``Client``, ``Pool``, ``Worker`` and ``WorkerJob`` are imported on first use, so
that ``import greenstalk.aio`` does not load the blocking client, pool and worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._address import address_from_environment, describe_address, parse_address
from ._base import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    Address,
    ConnectionTarget,
    Job,
    JobOrID,
    TBody,
)
from ._protocol.errors import (
    BadFormatError,
    BeanstalkdError,
    BodyDecodeError,
    BuriedError,
    BuriedWithJobIDError,
    ClientConnectionError,
    ClientTimeoutError,
    CommandNotSentError,
    DeadlineSoonError,
    DrainingError,
    Error,
    ExpectedCrlfError,
    InternalError,
    JobTooBigError,
    NoServerError,
    NotFoundError,
    NotIgnoredError,
    OutOfMemoryError,
    ProtocolError,
    PutManyError,
    TimedOutError,
    UnknownCommandError,
    UnknownPutError,
    UnknownResponseError,
)
from ._protocol.stats import Stats, StatsJob, StatsTube

if TYPE_CHECKING:
    from .client import Client
    from .pool import Pool
    from .worker import Worker, WorkerJob

# The names of the blocking side, and the modules that define them.
_ON_FIRST_USE = {"Client": "client", "Pool": "pool", "Worker": "worker", "WorkerJob": "worker"}


def __getattr__(name: str) -> Any:
    """Import ``Client``, ``Pool``, ``Worker`` or ``WorkerJob`` when first asked for.

    Raises AttributeError for any other missing name.
    """
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ON_FIRST_USE))

__version__ = "3.0.0.dev0"

# Tracebacks and reprs name the exceptions where users import them from.
for _error_class in (
    BadFormatError, BeanstalkdError, BodyDecodeError, BuriedError, BuriedWithJobIDError,
    ClientConnectionError, ClientTimeoutError, DeadlineSoonError, DrainingError, Error,
    ExpectedCrlfError, InternalError, JobTooBigError, NotFoundError, NotIgnoredError,
    OutOfMemoryError, ProtocolError, PutManyError, TimedOutError, UnknownCommandError,
    UnknownResponseError, CommandNotSentError, NoServerError, UnknownPutError,
):
    _error_class.__module__ = __name__
del _error_class

__all__ = [
    "DEFAULT_DELAY",
    "DEFAULT_PRIORITY",
    "DEFAULT_TTR",
    "DEFAULT_TUBE",
    "Address",
    "BadFormatError",
    "BeanstalkdError",
    "BodyDecodeError",
    "BuriedError",
    "BuriedWithJobIDError",
    "Client",
    "ClientConnectionError",
    "ClientTimeoutError",
    "CommandNotSentError",
    "ConnectionTarget",
    "DeadlineSoonError",
    "DrainingError",
    "Error",
    "ExpectedCrlfError",
    "InternalError",
    "Job",
    "JobOrID",
    "JobTooBigError",
    "NoServerError",
    "NotFoundError",
    "NotIgnoredError",
    "OutOfMemoryError",
    "Pool",
    "ProtocolError",
    "PutManyError",
    "Stats",
    "StatsJob",
    "StatsTube",
    "TBody",
    "TimedOutError",
    "UnknownCommandError",
    "UnknownPutError",
    "UnknownResponseError",
    "Worker",
    "WorkerJob",
    "address_from_environment",
    "describe_address",
    "parse_address",
]
