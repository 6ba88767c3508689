"""The YAML subset of ``stats*`` and ``list-tubes*`` replies, and their typed shapes.

beanstalkd writes flat ``key: value`` maps and ``- item`` lists. It does not
quote tube names, the host name or the kernel version in 1.12 (1.13 does),
so a real YAML parser can read a tube named ``123`` as a number or an ``os``
starting with ``#`` as a comment. This parser reads the lines as they are:
numbers become ``int`` (``float`` for the CPU times), ``draining`` becomes a
``bool``, every field that names something stays ``str`` whatever it looks
like, and surrounding quotes are removed.
"""

from __future__ import annotations

from typing import TypedDict, Union

from .errors import ProtocolError

StatValue = Union[bool, int, float, str]

Stats = TypedDict(
    "Stats",
    {
        "current-jobs-urgent": int,
        "current-jobs-ready": int,
        "current-jobs-reserved": int,
        "current-jobs-delayed": int,
        "current-jobs-buried": int,
        "cmd-put": int,
        "cmd-peek": int,
        "cmd-peek-ready": int,
        "cmd-peek-delayed": int,
        "cmd-peek-buried": int,
        "cmd-reserve": int,
        "cmd-reserve-with-timeout": int,
        "cmd-delete": int,
        "cmd-release": int,
        "cmd-use": int,
        "cmd-watch": int,
        "cmd-ignore": int,
        "cmd-bury": int,
        "cmd-kick": int,
        "cmd-touch": int,
        "cmd-stats": int,
        "cmd-stats-job": int,
        "cmd-stats-tube": int,
        "cmd-list-tubes": int,
        "cmd-list-tube-used": int,
        "cmd-list-tubes-watched": int,
        "cmd-pause-tube": int,
        "job-timeouts": int,
        "total-jobs": int,
        "max-job-size": int,
        "current-tubes": int,
        "current-connections": int,
        "current-producers": int,
        "current-workers": int,
        "current-waiting": int,
        "total-connections": int,
        "pid": int,
        "version": str,
        "rusage-utime": float,
        "rusage-stime": float,
        "uptime": int,
        "binlog-oldest-index": int,
        "binlog-current-index": int,
        "binlog-records-migrated": int,
        "binlog-records-written": int,
        "binlog-max-size": int,
        "draining": bool,
        "id": str,
        "hostname": str,
        "os": str,
        "platform": str,
    },
)
Stats.__doc__ = "The server-wide statistics returned by ``stats()``, in beanstalkd's order."

StatsTube = TypedDict(
    "StatsTube",
    {
        "name": str,
        "current-jobs-urgent": int,
        "current-jobs-ready": int,
        "current-jobs-reserved": int,
        "current-jobs-delayed": int,
        "current-jobs-buried": int,
        "total-jobs": int,
        "current-using": int,
        "current-watching": int,
        "current-waiting": int,
        "cmd-delete": int,
        "cmd-pause-tube": int,
        "pause": int,
        "pause-time-left": int,
    },
)
StatsTube.__doc__ = "The statistics of one tube returned by ``stats_tube()``."

StatsJob = TypedDict(
    "StatsJob",
    {
        "id": int,
        "tube": str,
        "state": str,
        "pri": int,
        "age": int,
        "delay": int,
        "ttr": int,
        "time-left": int,
        "file": int,
        "reserves": int,
        "timeouts": int,
        "releases": int,
        "buries": int,
        "kicks": int,
    },
)
StatsJob.__doc__ = "The statistics of one job returned by ``stats_job()``."

SERVER_TEXT_FIELDS = frozenset({"version", "id", "hostname", "os", "platform"})
SERVER_FLAG_FIELDS = frozenset({"draining"})
TUBE_TEXT_FIELDS = frozenset({"name"})
JOB_TEXT_FIELDS = frozenset({"tube", "state"})


def _text(data: bytes) -> list[str]:
    lines = data.decode("utf-8", "replace").split("\n")
    if not lines or lines[0] != "---":
        raise ProtocolError("YAML reply does not start with '---'")
    return [line for line in lines[1:] if line]


def _unquote(value: str) -> tuple[str, bool]:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1], True
    return value, False


def _number(value: str) -> StatValue:
    digits = value[1:] if value.startswith("-") else value
    if digits.isascii():
        if digits.isdigit():
            return int(value)
        whole, dot, fraction = digits.partition(".")
        if dot and whole.isdigit() and fraction.isdigit():
            return float(value)
    return value


_FLAGS = {"true": True, "false": False}


def parse_stats(
    data: bytes, text_fields: frozenset[str], flag_fields: frozenset[str] = frozenset()
) -> dict[str, StatValue]:
    """Parse a ``stats``, ``stats-tube`` or ``stats-job`` YAML map.

    Fields named in ``text_fields`` and quoted values stay ``str``; fields
    named in ``flag_fields`` become ``bool``; other values become ``int`` or
    ``float`` when they are numbers. Raises :class:`ProtocolError` on a line
    that is not ``key: value``, or a flag that is neither ``true`` nor ``false``.
    """
    stats: dict[str, StatValue] = {}
    for line in _text(data):
        key, sep, raw = line.partition(":")
        if not sep or not key or (raw and raw[0] != " "):
            raise ProtocolError(f"malformed YAML line: {line!r}")
        value, quoted = _unquote(raw.strip())
        if key in flag_fields:
            flag = _FLAGS.get(value)
            if flag is None:
                raise ProtocolError(f"malformed YAML line: {line!r} (true or false expected)")
            stats[key] = flag
        else:
            stats[key] = value if quoted or key in text_fields else _number(value)
    return stats


def parse_list(data: bytes) -> list[str]:
    """Parse a ``list-tubes`` or ``list-tubes-watched`` YAML list of names.

    Raises :class:`ProtocolError` on a line that is not ``- item``.
    """
    names = []
    for line in _text(data):
        if not line.startswith("- "):
            raise ProtocolError(f"malformed YAML list line: {line!r}")
        names.append(_unquote(line[2:])[0])
    return names
