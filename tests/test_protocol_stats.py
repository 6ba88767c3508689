"""The stats* and list-tubes* YAML: real beanstalkd 1.12 (and 1.13) samples, no server needed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greenstalk._protocol import commands as c
from greenstalk._protocol.errors import ProtocolError
from greenstalk._protocol.responses import Reply, ReplyReader
from greenstalk._protocol.stats import (
    JOB_TEXT_FIELDS,
    SERVER_FLAG_FIELDS,
    SERVER_TEXT_FIELDS,
    TUBE_TEXT_FIELDS,
    Stats,
    StatsJob,
    StatsTube,
    parse_list,
    parse_stats,
)

# `stats` of beanstalkd 1.12 (STATS_FMT, prot.c), every field in wire order. Distinct
# values, so that a field read from the wrong line shows.
SERVER_YAML = b"""---
current-jobs-urgent: 1
current-jobs-ready: 2
current-jobs-reserved: 3
current-jobs-delayed: 4
current-jobs-buried: 5
cmd-put: 6
cmd-peek: 7
cmd-peek-ready: 8
cmd-peek-delayed: 9
cmd-peek-buried: 10
cmd-reserve: 11
cmd-reserve-with-timeout: 12
cmd-delete: 13
cmd-release: 14
cmd-use: 15
cmd-watch: 16
cmd-ignore: 17
cmd-bury: 18
cmd-kick: 19
cmd-touch: 20
cmd-stats: 21
cmd-stats-job: 22
cmd-stats-tube: 23
cmd-list-tubes: 24
cmd-list-tube-used: 25
cmd-list-tubes-watched: 26
cmd-pause-tube: 27
job-timeouts: 28
total-jobs: 29
max-job-size: 65535
current-tubes: 30
current-connections: 31
current-producers: 32
current-workers: 33
current-waiting: 34
total-connections: 35
pid: 4242
version: "1.12"
rusage-utime: 0.002394
rusage-stime: 1.010000
uptime: 36
binlog-oldest-index: 0
binlog-current-index: 0
binlog-records-migrated: 0
binlog-records-written: 37
binlog-max-size: 10485760
draining: false
id: 4e1b7495c8dd4da5
hostname: vm
os: #1 SMP PREEMPT_DYNAMIC @0
platform: x86_64
"""

SERVER_STATS: dict[str, Any] = {
    "current-jobs-urgent": 1,
    "current-jobs-ready": 2,
    "current-jobs-reserved": 3,
    "current-jobs-delayed": 4,
    "current-jobs-buried": 5,
    "cmd-put": 6,
    "cmd-peek": 7,
    "cmd-peek-ready": 8,
    "cmd-peek-delayed": 9,
    "cmd-peek-buried": 10,
    "cmd-reserve": 11,
    "cmd-reserve-with-timeout": 12,
    "cmd-delete": 13,
    "cmd-release": 14,
    "cmd-use": 15,
    "cmd-watch": 16,
    "cmd-ignore": 17,
    "cmd-bury": 18,
    "cmd-kick": 19,
    "cmd-touch": 20,
    "cmd-stats": 21,
    "cmd-stats-job": 22,
    "cmd-stats-tube": 23,
    "cmd-list-tubes": 24,
    "cmd-list-tube-used": 25,
    "cmd-list-tubes-watched": 26,
    "cmd-pause-tube": 27,
    "job-timeouts": 28,
    "total-jobs": 29,
    "max-job-size": 65535,
    "current-tubes": 30,
    "current-connections": 31,
    "current-producers": 32,
    "current-workers": 33,
    "current-waiting": 34,
    "total-connections": 35,
    "pid": 4242,
    "version": "1.12",
    "rusage-utime": 0.002394,
    "rusage-stime": 1.01,
    "uptime": 36,
    "binlog-oldest-index": 0,
    "binlog-current-index": 0,
    "binlog-records-migrated": 0,
    "binlog-records-written": 37,
    "binlog-max-size": 10485760,
    "draining": False,
    "id": "4e1b7495c8dd4da5",
    "hostname": "vm",
    "os": "#1 SMP PREEMPT_DYNAMIC @0",
    "platform": "x86_64",
}

# `stats-tube default` (STATS_TUBE_FMT), as in the notes' real sample but with distinct values.
TUBE_YAML = b"""---
name: default
current-jobs-urgent: 1
current-jobs-ready: 2
current-jobs-reserved: 3
current-jobs-delayed: 4
current-jobs-buried: 5
total-jobs: 6
current-using: 7
current-watching: 8
current-waiting: 9
cmd-delete: 10
cmd-pause-tube: 11
pause: 12
pause-time-left: 13
"""

TUBE_STATS: dict[str, Any] = {
    "name": "default",
    "current-jobs-urgent": 1,
    "current-jobs-ready": 2,
    "current-jobs-reserved": 3,
    "current-jobs-delayed": 4,
    "current-jobs-buried": 5,
    "total-jobs": 6,
    "current-using": 7,
    "current-watching": 8,
    "current-waiting": 9,
    "cmd-delete": 10,
    "cmd-pause-tube": 11,
    "pause": 12,
    "pause-time-left": 13,
}

# `stats-job 1` (STATS_JOB_FMT).
JOB_YAML = b"""---
id: 1
tube: default
state: reserved
pri: 65536
age: 2
delay: 3
ttr: 60
time-left: 59
file: 4
reserves: 5
timeouts: 6
releases: 7
buries: 8
kicks: 9
"""

JOB_STATS: dict[str, Any] = {
    "id": 1,
    "tube": "default",
    "state": "reserved",
    "pri": 65536,
    "age": 2,
    "delay": 3,
    "ttr": 60,
    "time-left": 59,
    "file": 4,
    "reserves": 5,
    "timeouts": 6,
    "releases": 7,
    "buries": 8,
    "kicks": 9,
}


def ok_reply(yaml: bytes) -> bytes:
    return b"OK %d\r\n%b\r\n" % (len(yaml), yaml)


def run(request: tuple[bytes, Callable[[Reply], Any]], wire: bytes) -> Any:
    """Parse ``wire`` as the server's answer to ``request``, from bytes, as a client would."""
    reader = ReplyReader()
    reader.feed(wire)
    reply = reader.next_reply()
    assert reply is not None
    assert reader.next_reply() is None
    assert reader.idle
    return request[1](reply)


def stats_of(yaml: bytes) -> Any:
    return run(c.stats(), ok_reply(yaml))


def tube_stats_of(yaml: bytes) -> Any:
    return run(c.stats_tube("default"), ok_reply(yaml))


def job_stats_of(yaml: bytes) -> Any:
    return run(c.stats_job(1), ok_reply(yaml))


def replace(yaml: bytes, key: bytes, line: bytes) -> bytes:
    lines = yaml.split(b"\n")
    (index,) = [i for i, old in enumerate(lines) if old.startswith(key + b":")]
    lines[index] = line
    return b"\n".join(lines)


def test_sample_sizes_match_the_notes() -> None:
    # The real 1.12 sample in the notes is `OK 265` for stats-tube, `OK 143` for stats-job
    # with all-zero counters; ours differ only in the digits we changed.
    zero_tube = (
        b"---\nname: default\ncurrent-jobs-urgent: 1\ncurrent-jobs-ready: 1\n"
        b"current-jobs-reserved: 0\ncurrent-jobs-delayed: 0\ncurrent-jobs-buried: 0\n"
        b"total-jobs: 1\ncurrent-using: 1\ncurrent-watching: 1\ncurrent-waiting: 0\n"
        b"cmd-delete: 0\ncmd-pause-tube: 0\npause: 0\npause-time-left: 0\n"
    )
    assert len(zero_tube) == 265
    assert [line.split(b":")[0] for line in zero_tube.split(b"\n")] == [
        line.split(b":")[0] for line in TUBE_YAML.split(b"\n")
    ]
    zero_job = (
        b"---\nid: 1\ntube: default\nstate: ready\npri: 0\nage: 0\ndelay: 0\nttr: 1\n"
        b"time-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 0\nkicks: 0\n"
    )
    assert len(zero_job) == 143
    assert job_stats_of(zero_job)["state"] == "ready"
    assert tube_stats_of(zero_tube)["current-jobs-ready"] == 1


def test_server_stats() -> None:
    stats = stats_of(SERVER_YAML)
    assert stats == SERVER_STATS
    assert list(stats) == list(SERVER_STATS)  # wire order kept


def test_tube_stats() -> None:
    stats = tube_stats_of(TUBE_YAML)
    assert stats == TUBE_STATS
    assert list(stats) == list(TUBE_STATS)


def test_job_stats() -> None:
    stats = job_stats_of(JOB_YAML)
    assert stats == JOB_STATS
    assert list(stats) == list(JOB_STATS)


@pytest.mark.parametrize(
    ("typed_dict", "sample"),
    [(Stats, SERVER_STATS), (StatsTube, TUBE_STATS), (StatsJob, JOB_STATS)],
)
def test_typed_dicts_list_every_field_in_wire_order_with_its_type(
    typed_dict: Any, sample: dict[str, Any]
) -> None:
    annotations: dict[str, Any] = typed_dict.__annotations__
    assert list(annotations) == list(sample)
    for key, value in sample.items():
        assert type(value) is annotations[key], key


def test_value_types() -> None:
    stats = stats_of(SERVER_YAML)
    for key in ("rusage-utime", "rusage-stime"):
        assert type(stats[key]) is float
    for key in ("version", "id", "hostname", "os", "platform"):
        assert type(stats[key]) is str
    assert stats["draining"] is False
    for key, value in stats.items():
        if key not in SERVER_TEXT_FIELDS | SERVER_FLAG_FIELDS and not key.startswith("rusage-"):
            assert type(value) is int, key


def test_text_field_sets() -> None:
    assert frozenset({"version", "id", "hostname", "os", "platform"}) == SERVER_TEXT_FIELDS
    assert frozenset({"draining"}) == SERVER_FLAG_FIELDS
    assert frozenset({"name"}) == TUBE_TEXT_FIELDS
    assert frozenset({"tube", "state"}) == JOB_TEXT_FIELDS


@pytest.mark.parametrize(
    ("line", "key", "value"),
    [
        # a server id that happens to be all digits is still an id, not a number
        (b"id: 1234567890123456", "id", "1234567890123456"),
        (b"id: 0000000000000000", "id", "0000000000000000"),
        (b"id: 1234567890abcdef", "id", "1234567890abcdef"),
        # YAML would read these as a comment (None), a float, an int, a bool
        (b"os: #1 SMP PREEMPT_DYNAMIC @0", "os", "#1 SMP PREEMPT_DYNAMIC @0"),
        (
            b"os: #40~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC Tue Nov  5 09:53:26 UTC 2",
            "os",
            "#40~22.04.1-Ubuntu SMP PREEMPT_DYNAMIC Tue Nov  5 09:53:26 UTC 2",
        ),
        (b'version: "1.12"', "version", "1.12"),
        (b"version: 1.12", "version", "1.12"),
        (b"hostname: 12345", "hostname", "12345"),
        (b"hostname: 1.5", "hostname", "1.5"),
        (b"hostname: host-01.example.org", "hostname", "host-01.example.org"),
        (b"platform: aarch64", "platform", "aarch64"),
        (b"draining: true", "draining", True),
        (b"draining: false", "draining", False),
        (b"rusage-utime: 0.000000", "rusage-utime", 0.0),
        (b"rusage-stime: 123.456789", "rusage-stime", 123.456789),
        (b"pid: 1", "pid", 1),
        (b"total-jobs: 18446744073709551615", "total-jobs", 2**64 - 1),
        # 1.13 quotes hostname, os and platform
        (b'hostname: "vm"', "hostname", "vm"),
        (b'hostname: "12345"', "hostname", "12345"),
        (b'os: "#1 SMP PREEMPT_DYNAMIC @0"', "os", "#1 SMP PREEMPT_DYNAMIC @0"),
        (b'platform: "x86_64"', "platform", "x86_64"),
        (b'version: "1.13"', "version", "1.13"),
    ],
)
def test_server_stats_values(line: bytes, key: str, value: object) -> None:
    yaml = replace(SERVER_YAML, key.encode(), line)
    stats = stats_of(yaml)
    assert stats[key] == value
    assert type(stats[key]) is type(value)
    assert {k: v for k, v in stats.items() if k != key} == {
        k: v for k, v in SERVER_STATS.items() if k != key
    }


@pytest.mark.parametrize(
    ("line", "name"),
    [
        (b"name: 123", "123"),
        (b'name: "123"', "123"),  # 1.13
        (b'name: "default"', "default"),  # 1.13
        (b"name: 1.5", "1.5"),
        (b"name: (", "("),
        (b"name: $", "$"),
        (b"name: ABCxyz019-+/;.$_()", "ABCxyz019-+/;.$_()"),
        (b"name: true", "true"),
        (b"name: null", "null"),
        (b"name: 0x10", "0x10"),
        (b"name: " + b"a" * 200, "a" * 200),
    ],
)
def test_tube_stats_name_stays_str(line: bytes, name: str) -> None:
    stats = tube_stats_of(replace(TUBE_YAML, b"name", line))
    assert stats["name"] == name
    assert type(stats["name"]) is str
    assert stats["current-jobs-ready"] == 2


@pytest.mark.parametrize(
    ("line", "tube"),
    [
        (b"tube: 123", "123"),
        (b'tube: "123"', "123"),  # 1.13
        (b"tube: 1.5", "1.5"),
        (b"tube: emails", "emails"),
        (b'tube: "emails"', "emails"),  # 1.13
    ],
)
def test_job_stats_tube_stays_str(line: bytes, tube: str) -> None:
    stats = job_stats_of(replace(JOB_YAML, b"tube", line))
    assert stats["tube"] == tube
    assert type(stats["tube"]) is str
    assert stats["id"] == 1
    assert type(stats["id"]) is int


@pytest.mark.parametrize("state", ["ready", "reserved", "buried", "delayed"])
def test_job_states(state: str) -> None:
    stats = job_stats_of(replace(JOB_YAML, b"state", b"state: " + state.encode()))
    assert stats["state"] == state


def test_stats_1_13_style() -> None:
    yaml = SERVER_YAML
    for key in (b"hostname", b"os", b"platform"):
        old = next(line for line in yaml.split(b"\n") if line.startswith(key + b": "))
        yaml = replace(yaml, key, key + b': "' + old[len(key) + 2 :] + b'"')
    assert b'os: "#1 SMP PREEMPT_DYNAMIC @0"' in yaml
    assert stats_of(yaml) == SERVER_STATS


tube_names = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()",
    min_size=1,
    max_size=200,
).filter(lambda name: not name.startswith("-"))


@given(tube_names, st.booleans())
def test_any_tube_name_round_trips(name: str, quoted: bool) -> None:
    raw = name.encode("ascii")
    shown = b'"' + raw + b'"' if quoted else raw
    assert tube_stats_of(replace(TUBE_YAML, b"name", b"name: " + shown))["name"] == name
    assert job_stats_of(replace(JOB_YAML, b"tube", b"tube: " + shown))["tube"] == name
    assert run(c.list_tubes(), ok_reply(b"---\n- " + raw + b"\n- default\n")) == [
        name,
        "default",
    ]


# -- lists -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yaml", "names"),
    [
        (b"---\n- default\n", ["default"]),
        (b"---\n- default\n- 123\n", ["default", "123"]),
        (b"---\n- c\n- a\n- b\n", ["c", "a", "b"]),
        (b"---\n- 1.5\n- true\n- null\n- (\n- $\n", ["1.5", "true", "null", "(", "$"]),
        (b'---\n- "quoted"\n', ["quoted"]),
        (b"---\n", []),
    ],
)
def test_lists(yaml: bytes, names: list[str]) -> None:
    for request in (c.list_tubes(), c.list_tubes_watched()):
        result = run(request, ok_reply(yaml))
        assert result == names
        assert all(type(name) is str for name in result)
    assert parse_list(yaml) == names


def test_list_exact_bytes_of_beanstalkd() -> None:
    # test `list_tube` of beanstalkd: exactly these bytes on the wire
    assert run(c.list_tubes(), b"OK 14\r\n---\n- default\n\r\n") == ["default"]


# -- malformed -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "yaml",
    [
        b"",
        b"\n",
        b"current-jobs-urgent: 1\n",  # no document start
        b"--\ncurrent-jobs-urgent: 1\n",
        b"--- \ncurrent-jobs-urgent: 1\n",
        b"---\ncurrent-jobs-urgent 1\n",  # no colon
        b"---\ncurrent-jobs-urgent:1\n",  # no space after the colon
        b"---\n: 1\n",  # no key
        b"---\n- default\n",  # a list where a map belongs
        b"---\nname: default\ngarbage\n",
    ],
)
def test_malformed_stats(yaml: bytes) -> None:
    for parse in (stats_of, tube_stats_of, job_stats_of):
        with pytest.raises(ProtocolError, match=r"^(YAML reply|malformed YAML line)"):
            parse(yaml)


@pytest.mark.parametrize(
    "yaml",
    [
        b"",
        b"- default\n",
        b"---\ndefault\n",
        b"---\n-default\n",
        b"---\nname: default\n",  # a map where a list belongs
        b"---\n- a\n-\n",
    ],
)
def test_malformed_list(yaml: bytes) -> None:
    for request in (c.list_tubes(), c.list_tubes_watched()):
        with pytest.raises(ProtocolError, match=r"^(YAML reply|malformed YAML list line)"):
            run(request, ok_reply(yaml))


@pytest.mark.parametrize("value", [b"True", b"1", b"yes", b""])
def test_draining_is_true_or_false(value: bytes) -> None:
    """draining is a bool: anything but true or false is not beanstalkd's."""
    with pytest.raises(ProtocolError, match=r"^malformed YAML line: 'draining: .*true or false"):
        stats_of(replace(SERVER_YAML, b"draining", b"draining: " + value))


def test_parse_stats_directly() -> None:
    assert parse_stats(b"---\na: 1\nb: x\nc: 2.5\nd: -3\ne: \"7\"\nf:\n", frozenset({"b"})) == {
        "a": 1,
        "b": "x",
        "c": 2.5,
        "d": -3,
        "e": "7",
        "f": "",
    }
    assert parse_stats(b"---\n", frozenset()) == {}
    assert parse_stats(b"---\nx: 1\n", frozenset({"x"})) == {"x": "1"}
    assert parse_stats(b"---\nx: 1e5\ny: 1.\nz: .5\n", frozenset()) == {
        "x": "1e5",
        "y": "1.",
        "z": ".5",
    }
    assert parse_stats(b"---\nx: \xd9\xa1\n", frozenset()) == {"x": "\u0661"}
