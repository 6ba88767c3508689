"""greenstalk: a fast, careful Python client for the beanstalkd work queue."""

from ._address import address_from_environment, describe_address, parse_address
from ._protocol.errors import (
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
)
from ._protocol.stats import Stats, StatsJob, StatsTube
from .client import (
    DEFAULT_DELAY,
    DEFAULT_PRIORITY,
    DEFAULT_TTR,
    DEFAULT_TUBE,
    Address,
    Client,
    ConnectionTarget,
    Job,
    JobOrID,
    TBody,
)
from .worker import Worker, WorkerJob

__version__ = "3.0.0.dev0"

# Tracebacks and reprs name the exceptions where users import them from.
for _error_class in (
    BadFormatError, BeanstalkdError, BodyDecodeError, BuriedError, BuriedWithJobIDError,
    ClientConnectionError, ClientTimeoutError, DeadlineSoonError, DrainingError, Error,
    ExpectedCrlfError, InternalError, JobTooBigError, NotFoundError, NotIgnoredError,
    OutOfMemoryError, ProtocolError, PutManyError, TimedOutError, UnknownCommandError,
    UnknownResponseError,
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
    "ConnectionTarget",
    "DeadlineSoonError",
    "DrainingError",
    "Error",
    "ExpectedCrlfError",
    "InternalError",
    "Job",
    "JobOrID",
    "JobTooBigError",
    "NotFoundError",
    "NotIgnoredError",
    "OutOfMemoryError",
    "ProtocolError",
    "PutManyError",
    "Stats",
    "StatsJob",
    "StatsTube",
    "TBody",
    "TimedOutError",
    "UnknownCommandError",
    "UnknownResponseError",
    "Worker",
    "WorkerJob",
    "address_from_environment",
    "describe_address",
    "parse_address",
]
