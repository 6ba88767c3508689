"""The server's replies, byte for byte as beanstalkd 1.12 writes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .stats import StatValue

DELETED = b"DELETED\r\n"
RELEASED = b"RELEASED\r\n"
BURIED = b"BURIED\r\n"
TOUCHED = b"TOUCHED\r\n"
KICKED = b"KICKED\r\n"
PAUSED = b"PAUSED\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
NOT_IGNORED = b"NOT_IGNORED\r\n"
TIMED_OUT = b"TIMED_OUT\r\n"
DEADLINE_SOON = b"DEADLINE_SOON\r\n"
DRAINING = b"DRAINING\r\n"
JOB_TOO_BIG = b"JOB_TOO_BIG\r\n"
EXPECTED_CRLF = b"EXPECTED_CRLF\r\n"
INTERNAL_ERROR = b"INTERNAL_ERROR\r\n"
OUT_OF_MEMORY = b"OUT_OF_MEMORY\r\n"

# 1.12 quotes this one stats value and no other (1.13 also quotes names).
_QUOTED_FIELDS = frozenset({"version"})


def inserted(job_id: int) -> bytes:
    """``INSERTED <id>``: put stored the job."""
    return b"INSERTED %d\r\n" % job_id


def buried_on_put(job_id: int) -> bytes:
    """``BURIED <id>``: put stored the job, buried (the server was out of memory)."""
    return b"BURIED %d\r\n" % job_id


def using(tube: bytes) -> bytes:
    """``USING <tube>``: the answer to use and list-tube-used."""
    return b"USING %b\r\n" % tube


def watching(count: int) -> bytes:
    """``WATCHING <count>``: the answer to watch and ignore."""
    return b"WATCHING %d\r\n" % count


def kicked(count: int) -> bytes:
    """``KICKED <count>``: the answer to kick."""
    return b"KICKED %d\r\n" % count


def reserved(job_id: int, body: bytes) -> bytes:
    """``RESERVED <id> <bytes>`` and the body: a job handed to a reserve."""
    return b"RESERVED %d %d\r\n%b\r\n" % (job_id, len(body), body)


def found(job_id: int, body: bytes) -> bytes:
    """``FOUND <id> <bytes>`` and the body: the answer to the peeks."""
    return b"FOUND %d %d\r\n%b\r\n" % (job_id, len(body), body)


def ok(data: bytes) -> bytes:
    """``OK <bytes>`` and the data: the answer to stats and list commands."""
    return b"OK %d\r\n%b\r\n" % (len(data), data)


def _stat(key: str, value: StatValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # CPU times, printed as seconds.microseconds
        seconds, microseconds = divmod(round(value * 1_000_000), 1_000_000)
        return f"{seconds}.{microseconds:06d}"
    if key in _QUOTED_FIELDS:
        return f'"{value}"'
    return str(value)


def stats_yaml(shape: Any, values: Mapping[str, StatValue]) -> bytes:
    """The YAML of a stats reply: ``values`` in the wire order of ``shape``.

    ``shape`` is one of the TypedDicts :class:`Stats`, :class:`StatsTube`
    and :class:`StatsJob`, whose keys are in beanstalkd's order; a ``bool``
    value (``draining``) is written ``true`` or ``false``. Raises KeyError
    when ``values`` lacks one of the keys.
    """
    lines = ["---\n"]
    lines += [f"{key}: {_stat(key, values[key])}\n" for key in shape.__annotations__]
    return "".join(lines).encode()


def list_yaml(names: Iterable[bytes]) -> bytes:
    """The YAML of a list reply: one ``- name`` line a tube."""
    return b"---\n" + b"".join(b"- %b\n" % name for name in names)
