"""The greenstalk command line: its main() in this process, and a few runs as subprocesses."""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from rich.console import Console

import greenstalk
from greenstalk.cli import _commands, _top, main
from greenstalk.cli._common import progress_bar
from greenstalk.server.net import bind_unix
from greenstalk.testing import ServerProcess, run_server, spawn_activated

from .conftest import StartServer

SCRIPT = Path(sys.executable).parent / "greenstalk"


@dataclasses.dataclass
class Result:
    """What a run of the command line gave."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """The output, which must be exactly one JSON document."""
        return json.loads(self.out)

    def failed_with(self, code: int, message: str) -> bool:
        """True when the run exited with ``code`` and said ``message`` in one line on stderr."""
        return (
            self.code == code
            and self.err == f"greenstalk: {message}\n"
            and "Traceback" not in self.out + self.err
        )


Run = Callable[..., Result]


def text(address: greenstalk.Address) -> str:
    """An address as --address takes it."""
    assert isinstance(address, (str, tuple))
    return greenstalk.describe_address(address)


def with_stdin(monkeypatch: pytest.MonkeyPatch, data: bytes, tty: bool = False) -> None:
    """Make ``data`` the process's stdin, looking like a terminal when ``tty``."""

    class Stdin(io.TextIOWrapper):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stdin", Stdin(io.BytesIO(data)))


@pytest.fixture
def run_at(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """Run main() with ``--address``; ``stdin`` bytes become the standard input."""

    def run(address: str | None, *args: str, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            with_stdin(monkeypatch, stdin)
        code = main(([] if address is None else ["--address", address]) + list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli(run_at: Callable[..., Result], address: greenstalk.Address) -> Run:
    """Run main() against this test's server."""

    def run(*args: str, stdin: bytes | None = None) -> Result:
        return run_at(text(address), *args, stdin=stdin)

    return run


@pytest.fixture
def client(address: greenstalk.Address) -> Iterator[greenstalk.Client[bytes]]:
    with greenstalk.Client(address) as client:
        yield client


# -- put -----------------------------------------------------------------------


def test_put_a_body_given_as_argument(cli: Run, client: greenstalk.Client[bytes]) -> None:
    result = cli("put", "hello")
    assert (result.code, result.out, result.err) == (0, "1\n", "")
    assert cli("--json", "put", "again").json() == {"id": 2}
    assert client.peek(1).body == b"hello"
    assert client.peek(2).body == b"again"


def test_put_options(cli: Run, client: greenstalk.Client[bytes]) -> None:
    result = cli("put", "-t", "emails", "--priority", "5", "--delay", "100", "--ttr", "30", "x")
    job_id = int(result.out)
    stats = client.stats_job(job_id)
    assert (stats["tube"], stats["pri"], stats["delay"], stats["ttr"]) == ("emails", 5, 100, 30)
    assert stats["state"] == "delayed"


def test_put_from_a_file_and_from_stdin(
    cli: Run, client: greenstalk.Client[bytes], tmp_path: Path
) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"line 1\nline 2\n")
    from_file = int(cli("put", "--file", str(path)).out)
    from_stdin = int(cli("put", stdin=b"\xff\x00binary").out)
    from_dash = int(cli("put", "-", stdin=b"dash").out)
    assert client.peek(from_file).body == b"line 1\nline 2\n"
    assert client.peek(from_stdin).body == b"\xff\x00binary"
    assert client.peek(from_dash).body == b"dash"


def test_put_lines(cli: Run, client: greenstalk.Client[bytes]) -> None:
    result = cli("put", "--lines", "-t", "lines", stdin=b"one\r\n\ntwo\nthree")
    assert result.code == 0
    assert result.out == "put 4 jobs into tube lines (ids 1 to 4)\n"
    client.use("lines")
    assert [client.peek(job_id).body for job_id in range(1, 5)] == [b"one", b"", b"two", b"three"]
    assert cli("--json", "put", "--lines", stdin=b"a\nb\n").json() == {
        "tube": "default", "count": 2, "first_id": 5, "last_id": 6, "ids": [5, 6], "refused": [],
    }
    assert cli("put", "--lines", stdin=b"").out == "put no job into tube default\n"


def test_put_lines_in_chunks(
    run_at: Callable[..., Result], start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    path = tmp_path / "lines"
    path.write_bytes(b"".join(b"%d\n" % n for n in range(2500)))
    result = run_at(text(server.address), "--json", "put", "--lines", "--file", str(path))
    document = result.json()
    assert (document["count"], document["first_id"], document["last_id"]) == (2500, 1, 2500)
    assert document["ids"] == list(range(1, 2501))
    with greenstalk.Client(server.address) as client:
        assert client.peek(2500).body == b"2499"


def test_put_lines_that_the_server_refuses(
    run_at: Callable[..., Result], start_server: StartServer
) -> None:
    server = start_server(args=["-z", "5"])
    lines = b"".join(b"%d\n" % n for n in range(1500)) + b"too long\nshort\nlong again\n"
    result = run_at(text(server.address), "put", "--lines", stdin=lines)
    assert result.failed_with(
        1,
        "the server refused 2 lines, the first at line 1501: the job is larger than the "
        "server's max-job-size; 1501 jobs were put",
    )


def test_put_into_a_draining_server(
    run_at: Callable[..., Result], start_server: StartServer
) -> None:
    server = start_server()
    server.drain()
    result = run_at(text(server.address), "put", "x")
    assert result.failed_with(1, "the server is in drain mode and accepts no new jobs")


def test_put_usage_errors(cli: Run, tmp_path: Path) -> None:
    result = cli("put", "body", "--lines")
    assert result.failed_with(
        2, "give BODY, or --file and --lines, not both (see 'greenstalk put --help')"
    )
    missing = tmp_path / "missing"
    assert cli("put", "--file", str(missing)).failed_with(
        2, f"cannot read {missing}: No such file or directory"
    )
    assert cli("put", "--lines", "-f", str(tmp_path)).failed_with(
        2, f"cannot read {tmp_path}: Is a directory"
    )


def test_put_lines_json_lists_the_ids_even_when_lines_are_refused(
    run_at: Callable[..., Result], start_server: StartServer
) -> None:
    server = start_server(args=["-z", "5"])
    result = run_at(text(server.address), "--json", "put", "--lines", stdin=b"a\ntoo long\nb\n")
    assert result.code == 1
    assert result.err == (
        "greenstalk: the server refused 1 line, the first at line 2: the job is larger than "
        "the server's max-job-size; 2 jobs were put\n"
    )
    assert result.json() == {
        "tube": "default", "count": 2, "first_id": 1, "last_id": 2, "ids": [1, 2],
        "refused": [{"line": 2, "error": "the job is larger than the server's max-job-size"}],
    }


def test_put_says_it_reads_a_terminal(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_stdin(monkeypatch, b"typed", tty=True)
    result = cli("put")
    assert (result.code, result.out) == (0, "1\n")
    assert result.err == (
        "greenstalk: reading the job body from standard input; end with Ctrl-D\n"
    )
    with_stdin(monkeypatch, b"one\ntwo\n", tty=True)
    result = cli("put", "--lines")
    assert result.err == (
        "greenstalk: reading jobs from standard input, one a line; end with Ctrl-D\n"
    )
    assert result.out == "put 2 jobs into tube default (ids 2 to 3)\n"
    assert cli("put", stdin=b"piped").err == ""
    assert client.peek(1).body == b"typed"


def test_put_with_the_json_codec(
    cli: Run, client: greenstalk.Client[bytes], tmp_path: Path
) -> None:
    assert cli("put", "--codec", "json", '{"to": "ada",  "ids": [1, 2]}').out == "1\n"
    assert client.peek(1).body == b'{"to":"ada","ids":[1,2]}'
    assert cli("put", "-c", "JSON", stdin=b" 17 \n").out == "2\n"
    assert client.peek(2).body == b"17"
    assert cli("put", "--codec", "json", "{nope").failed_with(
        2, "the body is not valid json: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )
    assert cli("put", "--codec", "bytes", "{nope").out == "3\n"
    assert client.peek(3).body == b"{nope"
    result = cli("--json", "put", "--lines", "--codec", "json", stdin=b'{"a": 1}\n[2]\nthree\n4\n')
    assert result.code == 2
    assert result.err == (
        "greenstalk: line 3 is not valid json: Expecting value: line 1 column 1 (char 0); "
        "2 jobs were put\n"
    )
    assert result.json()["ids"] == [4, 5]
    assert [client.peek(job_id).body for job_id in (4, 5)] == [b'{"a":1}', b"[2]"]
    assert client.stats()["current-jobs-ready"] == 5
    assert cli("put", "--codec", "xml", "x").failed_with(
        2, "codec must be bytes or json, not 'xml' (see 'greenstalk put --help')"
    )


def test_progress_bars(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # stderr is a terminal, for rich
    with_stdin(monkeypatch, b"", tty=True)
    assert progress_bar(reads_stdin=True).disable
    assert not progress_bar(reads_stdin=False).disable
    with_stdin(monkeypatch, b"", tty=False)
    assert not progress_bar(reads_stdin=True).disable
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    assert progress_bar().disable
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    # A file's size is the total: the bar shows how much is done and the time left.
    path = tmp_path / "lines"
    path.write_bytes(b"x\n" * 3000)
    result = run_at(text(address), "put", "--lines", "--file", str(path))
    assert result.out == "put 3000 jobs into tube default (ids 1 to 3000)\n"
    assert "6.0/6.0 kB" in result.err
    assert "0:00:00" in result.err  # the time left
    result = run_at(text(address), "drain", "default", "--yes")
    assert result.out == "deleted 3000 jobs from tube default\n"
    assert "3000/3000" in result.err
    assert "0:00:00" in result.err


# -- peek ----------------------------------------------------------------------


def test_peek(cli: Run, client: greenstalk.Client[bytes]) -> None:
    job_id = client.put(b"hello\nworld\n", priority=7)
    result = cli("peek", str(job_id))
    assert result.code == 0
    table, body = result.out.split("\n\n")
    rows = dict(line.split(None, 1) for line in table.splitlines())
    assert rows["id"] == str(job_id)
    assert (rows["tube"], rows["state"], rows["priority"]) == ("default", "ready", "7")
    assert rows["size"] == "12 bytes"
    assert body == "hello\nworld\n"
    document = cli("peek", str(job_id), "--json").json()
    assert document["id"] == job_id
    assert (document["body"], document["encoding"]) == ("hello\nworld\n", "utf-8")
    assert document["stats"]["pri"] == 7


def test_peek_a_body_that_is_not_text(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = client.put(b"\xff\xfe\x00")
    result = cli("peek", str(job_id))
    assert "3 bytes, not UTF-8" in result.out
    assert result.out.endswith(
        "\n\nb'\\xff\\xfe\\x00'\n(not text: --raw writes the body byte for byte)\n"
    )
    document = cli("--json", "peek", str(job_id)).json()
    assert (document["body"], document["encoding"]) == ("//4A", "base64")
    assert cli("peek", "--raw", "--json", str(job_id)).failed_with(
        2, "--raw and --json exclude each other (see 'greenstalk peek --help')"
    )
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw))
    assert main(["--address", text(client.address), "peek", "--raw", str(job_id)]) == 0
    assert raw.getvalue() == b"\xff\xfe\x00"


def test_peek_of_a_long_binary_body_shows_its_start(
    cli: Run, client: greenstalk.Client[bytes]
) -> None:
    job_id = client.put(bytes(range(256)) * 40)
    result = cli("peek", str(job_id))
    assert result.code == 0
    table, preview = result.out.split("\n\n")
    assert "10240 bytes, not UTF-8" in table
    assert preview == (
        repr(bytes(range(64))) + "...\n"
        "(not text: the first 64 of 10240 bytes are shown; --raw writes the body byte for byte)\n"
    )


def test_peek_by_state(cli: Run, client: greenstalk.Client[bytes]) -> None:
    client.use("work")
    client.watch("work")
    client.put(b"ready")
    client.put(b"delayed", delay=100)
    client.put(b"buried")
    client.bury(client.reserve_job(3))
    assert cli("peek-ready", "-t", "work").out.endswith("\nready\n")
    assert cli("peek-delayed", "--tube", "work", "--json").json()["body"] == "delayed"
    assert cli("peek-buried", "-t", "work", "--raw").out == "buried"
    assert cli("peek-ready").failed_with(1, "tube default has no ready job")
    assert cli("peek-buried", "-t", "nowhere").failed_with(1, "tube nowhere has no buried job")


def test_unknown_jobs(cli: Run) -> None:
    assert cli("peek", "42").failed_with(1, "job 42 not found")
    assert cli("stats", "--job", "42").failed_with(1, "job 42 not found")
    assert cli("kick-job", "42").failed_with(1, "job 42 is not buried or delayed")
    assert cli("delete", "42").failed_with(
        1, "job 42 not found (or reserved by another connection)"
    )


def test_a_job_deleted_between_peek_and_its_stats(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = client.put(b"short-lived")
    stats_job = greenstalk.Client.stats_job

    def delete_first(self: greenstalk.Client[bytes], job: greenstalk.JobOrID) -> Any:
        client.delete(job_id)
        return stats_job(self, job)

    monkeypatch.setattr(greenstalk.Client, "stats_job", delete_first)
    assert cli("peek", str(job_id)).failed_with(1, f"job {job_id} not found")


# -- delete, kick, pause ------------------------------------------------------------


def test_delete(cli: Run, client: greenstalk.Client[bytes]) -> None:
    ids = client.put_many([b"a", b"b", b"c", b"d"])
    assert cli("delete", str(ids[0])).out == f"deleted job {ids[0]}\n"
    result = cli("delete", str(ids[1]), str(ids[2]))
    assert (result.code, result.out) == (0, f"deleted jobs {ids[1]}, {ids[2]}\n")
    result = cli("delete", "--json", str(ids[3]), "98", "99")
    assert result.code == 1
    assert result.json() == {"deleted": [ids[3]], "not_found": [98, 99]}
    assert result.err == "greenstalk: jobs 98, 99 not found (or reserved by another connection)\n"
    assert client.stats()["current-jobs-ready"] == 0
    assert cli("delete").code == 2


def test_kick_and_kick_job(cli: Run, client: greenstalk.Client[bytes]) -> None:
    client.use("jobs")
    client.watch("jobs")
    for body in (b"a", b"b", b"c"):
        client.put(body)
        client.bury(client.reserve())
    assert cli("kick", "2", "-t", "jobs").out == "kicked 2 jobs in tube jobs\n"
    assert cli("kick", "5", "--json").json() == {"tube": "default", "kicked": 0, "exists": True}
    assert cli("kick-job", "--json", "3").json() == {"id": 3, "kicked": 1}
    assert cli("kick-job", "1").failed_with(1, "job 1 is not buried or delayed")
    assert client.stats_tube("jobs")["current-jobs-ready"] == 3
    delayed = client.put_many([b"later", b"later still"], delay=100)
    assert cli("kick-job", str(delayed[1])).out == f"kicked job {delayed[1]}\n"
    assert cli("kick", "5", "-t", "jobs").out == "kicked 1 job in tube jobs\n"
    assert cli("kick", "-1").code == 2


def test_pause(cli: Run, client: greenstalk.Client[bytes]) -> None:
    assert cli("pause", "default", "60").out == "paused tube default for 60 seconds\n"
    assert client.stats_tube("default")["pause"] == 60
    assert cli("pause", "default", "1", "--json").json() == {
        "tube": "default", "seconds": 1, "exists": True,
    }
    assert cli("pause", "default", "0").out == "tube default is no longer paused\n"
    assert client.stats_tube("default")["pause"] == 0


def test_a_missing_tube_is_an_empty_one(cli: Run, client: greenstalk.Client[bytes]) -> None:
    assert cli("kick", "10", "-t", "nowhere").out == "kicked 0 jobs: tube nowhere does not exist\n"
    assert cli("pause", "nowhere", "10").out == "paused nothing: tube nowhere does not exist\n"
    result = cli("drain", "nowhere")
    assert (result.code, result.out, result.err) == (
        0, "deleted 0 jobs: tube nowhere does not exist\n", ""
    )
    assert cli("--json", "kick", "1", "--tube", "nowhere").json() == {
        "tube": "nowhere", "kicked": 0, "exists": False,
    }
    assert cli("--json", "pause", "nowhere", "0").json() == {
        "tube": "nowhere", "seconds": 0, "exists": False,
    }
    assert cli("--json", "drain", "nowhere", "-y").json() == {
        "tube": "nowhere", "exists": False, "deleted": 0, "reserved": 0,
    }
    # Asking about the tube does not make it.
    assert "nowhere" not in client.tubes()


# -- stats, tubes --------------------------------------------------------------


def table_rows(output: str) -> dict[str, str]:
    """A two-column table as a dict."""
    return dict(line.split(None, 1) for line in output.splitlines())


def test_stats(cli: Run, client: greenstalk.Client[bytes]) -> None:
    job_id = client.put(b"x")
    server = table_rows(cli("stats").out)
    assert server["current-jobs-ready"] == "1"
    assert server["version"] == client.stats()["version"]
    document = cli("stats", "--json").json()
    assert document["current-jobs-ready"] == 1
    assert document["cmd-put"] == 1
    assert table_rows(cli("stats", "-t", "default").out)["current-jobs-ready"] == "1"
    assert cli("--json", "stats", "--tube", "default").json()["name"] == "default"
    assert table_rows(cli("stats", "--job", str(job_id)).out)["state"] == "ready"
    assert cli("stats", "-j", str(job_id), "--json").json()["tube"] == "default"
    assert cli("stats", "--tube", "nowhere").failed_with(1, "tube nowhere not found")
    assert cli("stats", "--tube", "default", "--job", "1").code == 2


def test_tubes(cli: Run, client: greenstalk.Client[bytes]) -> None:
    client.use("emails")
    client.put(b"a", priority=1)
    client.put(b"b", delay=100)
    client.pause_tube("emails", 100)
    lines = cli("tubes").out.splitlines()
    assert lines[0].split() == [
        "tube", "ready", "reserved", "delayed", "buried", "waiting", "urgent", "total", "paused",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["default"] == ["0", "0", "0", "0", "0", "0", "0", "-"]
    assert rows["emails"][:7] == ["1", "0", "1", "0", "0", "1", "2"]
    assert rows["emails"][7] in ("100s", "99s")
    document = cli("tubes", "--json").json()
    assert [tube["name"] for tube in document] == ["default", "emails"]
    assert document[1]["current-jobs-delayed"] == 1


def test_draining_is_a_json_boolean(
    run_at: Callable[..., Result], start_server: StartServer
) -> None:
    server = start_server()
    address = text(server.address)
    assert run_at(address, "--json", "stats").json()["draining"] is False
    assert table_rows(run_at(address, "stats").out)["draining"] == "false"
    server.drain()
    assert run_at(address, "--json", "stats").json()["draining"] is True
    assert table_rows(run_at(address, "stats").out)["draining"] == "true"
    frame = run_at(address, "top", "--json", "--once", "--interval", "0.01").json()
    assert frame["server"]["draining"] is True
    assert "DRAINING" in run_at(address, "top", "--once", "--interval", "0.01").out


def test_json_keys(cli: Run, client: greenstalk.Client[bytes]) -> None:
    """The keys the CLI makes up are snake_case; statistics keep the server's names."""
    client.put_many([b"a", b"b"])
    client.put(b"buried")
    client.bury(client.reserve_job(3))
    documents = [
        cli("--json", "put", "x").json(),
        cli("--json", "put", "--lines", stdin=b"y\n").json(),
        cli("--json", "delete", "1", "99").json(),
        cli("--json", "kick-job", "3").json(),
        cli("--json", "kick", "1").json(),
        cli("--json", "pause", "default", "0").json(),
        cli("--json", "drain", "nowhere").json(),
        cli("--json", "top", "--once", "--interval", "0.01").json(),
    ]
    invented: list[str] = []

    def collect(value: object) -> None:
        if isinstance(value, dict):
            invented.extend(value)
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(documents)
    peeked = cli("--json", "peek", "2").json()
    collect({key: value for key, value in peeked.items() if key != "stats"})
    assert "time-left" in peeked["stats"]
    assert all(key.isidentifier() and key == key.lower() for key in invented), invented
    assert "current-jobs-ready" in cli("--json", "stats").json()


# -- drain ---------------------------------------------------------------------


def fill(client: greenstalk.Client[bytes], tube: str) -> None:
    """Two ready jobs, one delayed, one buried and one reserved (by ``client``) in ``tube``."""
    client.use(tube)
    client.watch(tube)
    client.put_many([b"reserved", b"buried", b"ready 1", b"ready 2"])
    client.put(b"delayed", delay=100)
    client.reserve()
    client.bury(client.reserve())


def test_drain(cli: Run, client: greenstalk.Client[bytes]) -> None:
    fill(client, "work")
    client.use("default")
    client.put(b"another tube")
    result = cli("drain", "work", "--yes")
    assert result.code == 0
    assert result.out == (
        "deleted 4 jobs from tube work\n"
        "1 reserved job left: only the connection that reserved a job can delete it\n"
    )
    stats = client.stats_tube("work")
    assert (stats["current-jobs-ready"], stats["current-jobs-reserved"]) == (0, 1)
    assert client.stats_tube("default")["current-jobs-ready"] == 1
    assert cli("drain", "-y", "work", "--json").json() == {
        "tube": "work", "exists": True, "deleted": 0, "reserved": 1,
    }


def test_drain_chosen_states(cli: Run, client: greenstalk.Client[bytes]) -> None:
    fill(client, "work")
    result = cli("drain", "work", "-y", "--state", "buried", "-s", "Delayed", "--json")
    assert result.json() == {"tube": "work", "exists": True, "deleted": 2, "reserved": 1}
    stats = client.stats_tube("work")
    assert (stats["current-jobs-ready"], stats["current-jobs-delayed"]) == (2, 0)
    assert cli("drain", "work", "-s", "reserved").code == 2


def test_drain_asks_first(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(client, "work")
    result = cli("drain", "work", stdin=b"")
    assert result.failed_with(
        2, "not deleting 4 jobs without confirmation: stdin is not a terminal (pass --yes)"
    )
    with_stdin(monkeypatch, b"n\n", tty=True)
    result = cli("drain", "work", "-s", "ready")
    assert result.code == 1
    assert result.err.startswith("Delete 2 jobs (2 ready) from tube work? [y/N]")
    assert result.err.endswith("greenstalk: drain cancelled: no job was deleted\n")
    assert client.stats_tube("work")["current-jobs-ready"] == 2
    with_stdin(monkeypatch, b"y\n", tty=True)
    result = cli("drain", "work")
    assert result.err.startswith("Delete 4 jobs (2 ready, 1 delayed, 1 buried) from tube work?")
    assert result.out.endswith("deleted 4 jobs from tube work\n1 reserved job left: only the "
                               "connection that reserved a job can delete it\n")


def test_drain_of_an_empty_tube_does_not_ask(cli: Run) -> None:
    assert cli("drain", "default", stdin=b"").out == "deleted 0 jobs from tube default\n"


def test_drain_skips_jobs_taken_meanwhile(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    client.put_many([b"a", b"b", b"c"])
    delete = greenstalk.aio.Client.delete
    calls = 0

    async def reserve_one_first(self: greenstalk.aio.Client[bytes], job: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # after the first peek, before its delete
            client.reserve()
        await delete(self, job)

    monkeypatch.setattr(greenstalk.aio.Client, "delete", reserve_one_first)
    result = cli("drain", "default", "--yes", "--json")
    assert result.json() == {"tube": "default", "exists": True, "deleted": 2, "reserved": 1}


def test_drain_interrupted(
    cli: Run,
    client: greenstalk.Client[bytes],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client.put_many([b"a", b"b", b"c", b"d"])
    delete = greenstalk.aio.Client.delete
    calls = 0

    async def interrupt_the_third(self: greenstalk.aio.Client[bytes], job: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        await delete(self, job)

    monkeypatch.setattr(greenstalk.aio.Client, "delete", interrupt_the_third)
    result = cli("drain", "default", "--yes")
    assert result.failed_with(130, "interrupted: deleted 2 jobs from tube default")
    assert client.stats_tube("default")["current-jobs-ready"] == 2
    client.put_many([b"e", b"f"])
    calls = 0
    result = cli("--json", "drain", "default", "--yes")
    assert result.code == 130
    assert result.json() == {"tube": "default", "exists": True, "deleted": 2, "reserved": 0}
    # Nothing is left for asyncio to complain about (with a traceback) when it is collected.
    gc.collect()
    assert not [record for record in caplog.records if record.name == "asyncio"]


# -- top -----------------------------------------------------------------------


def test_top_once(cli: Run, client: greenstalk.Client[bytes]) -> None:
    client.use("emails")
    client.put_many([b"a", b"b"])
    client.pause_tube("emails", 100)
    lines = cli("top", "--once", "--interval", "0.05").out.splitlines()
    assert lines[0].startswith(f"{text(client.address)}  version ")
    assert lines[1].startswith("puts/s 0.0  reserves/s 0.0  ready 2  reserved 0")
    assert lines[2] == ""
    assert lines[3].split() == [
        "tube", "ready", "reserved", "delayed", "buried", "waiting", "urgent", "puts/s", "paused",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[4:]}
    assert rows["default"] == ["0", "0", "0", "0", "0", "0", "0.0", "-"]
    assert rows["emails"][:7] == ["2", "0", "0", "0", "0", "0", "0.0"]
    assert rows["emails"][7].endswith("s")


def test_top_json_frames(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    take_snapshot = _top.take_snapshot

    def put_between(client_of_top: greenstalk.Client[bytes]) -> Any:
        client.put_many([b"x"] * 10)
        return take_snapshot(client_of_top)

    monkeypatch.setattr(_top, "take_snapshot", put_between)
    result = cli("--json", "top", "--iterations", "2", "--interval", "0.05")
    frames = [json.loads(line) for line in result.out.splitlines()]
    assert len(frames) == 2
    for frame in frames:
        assert frame["address"] == text(client.address)
        assert frame["server"]["draining"] is False
        assert 0 < frame["server"]["puts_per_second"] <= 10 / 0.05
        (tube,) = frame["tubes"]
        assert tube["name"] == "default"
        assert 0 < tube["puts_per_second"] == frame["server"]["puts_per_second"]
        assert tube["paused"] is False
    assert [frame["server"]["total_jobs"] for frame in frames] == [20, 30]
    assert cli("top", "--once", "--json", "--interval", "0.01").json()["tubes"][0]["ready"] == 50


def test_top_several_frames_and_bad_options(cli: Run) -> None:
    output = cli("top", "-i", "2", "-n", "0.01").out
    assert output.count("puts/s") == 4
    assert "\n\n\n" not in output
    assert "exclude each other" in cli("top", "--once", "--iterations", "3").err
    assert cli("top", "--interval", "0").code == 2


def test_top_live(
    cli: Run, client: greenstalk.Client[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    client.use("live")
    result = cli("top", "--iterations", "2", "--interval", "0.01")
    assert result.code == 0
    assert "\x1b[" in result.out
    assert "live" in result.out
    assert "\x1b[1m" in cli("tubes").out
    take_snapshot = _top.take_snapshot
    snapshots = 0

    def interrupted(client_of_top: greenstalk.Client[bytes]) -> Any:
        nonlocal snapshots
        snapshots += 1
        if snapshots == 3:
            raise KeyboardInterrupt
        return take_snapshot(client_of_top)

    monkeypatch.setattr(_top, "take_snapshot", interrupted)
    result = cli("top", "--interval", "0.01")
    assert (result.code, result.err) == (0, "")
    assert snapshots == 3


def test_durations() -> None:
    assert [_top.duration(seconds) for seconds in (0, 59, 187, 7500, 363600)] == [
        "0s", "59s", "3m 07s", "2h 05m", "4d 5h",
    ]


def narrow_frame() -> _top.Frame:
    """A frame of two tubes with long names and large counts."""
    server = {
        "version": "1.12", "uptime": 7500, "draining": False, "connections": 14,
        "producers": 1, "workers": 2, "waiting": 0, "ready": 123456789, "reserved": 8,
        "delayed": 120, "buried": 2, "urgent": 0, "total_jobs": 987654321,
        "puts_per_second": 41234.5, "reserves_per_second": 398.0,
    }
    tube = {
        "ready": 123456789, "reserved": 7654321, "delayed": 55555, "buried": 4444,
        "waiting": 333, "urgent": 22, "total_jobs": 987654321, "puts_per_second": 41234.5,
        "paused": True, "pause_time_left": 86399,
    }
    return {
        "address": "127.0.0.1:11300", "time": 0.0, "connected": True, "server": server,
        "tubes": [{**tube, "name": "thumbnails-of-every-photo"}, {**tube, "name": "emails"}],
    }


@pytest.mark.parametrize("width", [30, 40, 60, 80, 120])
def test_top_on_a_narrow_terminal_cuts_no_number(width: int) -> None:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(_top.render(narrow_frame()))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    lines = output.splitlines()
    assert all(len(line) <= width for line in lines), output
    words = output.split()
    assert not [word for word in words if "…" in word and any(map(str.isdigit, word))]
    for number in ("123456789", "41234.5", "398.0", "7654321"):
        assert number in words
    header = next(line for line in lines if line.startswith("tube"))
    shown = header.split()
    assert shown[:2] == ["tube", "ready"]
    rows = [line.split() for line in lines if line.startswith(("thumb", "emails"))]
    assert all(len(row) == len(shown) for row in rows)
    assert all(row[1] == "123456789" for row in rows)
    if width >= 120:
        assert shown == ["tube", "ready", "reserved", "delayed", "buried", "waiting", "urgent",
                         "puts/s", "paused"]
        assert rows[0][0] == "thumbnails-of-every-photo"


def test_top_shows_a_lost_server() -> None:
    console = Console(width=80, file=io.StringIO(), color_system=None)
    console.print(_top.render(_top.disconnected_frame("unix:/run/b.sock", "connection refused")))
    assert console.file.getvalue() == (  # type: ignore[attr-defined]
        "unix:/run/b.sock  DISCONNECTED\nconnection refused\nreconnecting...\n"
    )


# -- addresses, connections, usage --------------------------------------------------


def test_addresses(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert run_at("no such host", "stats").failed_with(
        2,
        "bad --address: 'no such host' is neither host[:port] (such as 127.0.0.1:11300) "
        "nor the path of a Unix socket",
    )
    missing = tmp_path / "nothing"
    result = run_at(str(missing), "stats")
    assert result.failed_with(
        3, f"cannot connect to unix:{missing}: [Errno 2] No such file or directory"
    )
    monkeypatch.setenv("BEANSTALKD_ADDRESS", text(address))
    assert run_at(None, "--json", "stats").json()["current-jobs-ready"] == 0
    assert run_at(None, "stats", "--json", "--address", "127.0.0.1:nope").code == 2
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "bad host")
    result = run_at(None, "tubes")
    assert result.code == 2
    assert result.err.startswith("greenstalk: bad $BEANSTALKD_ADDRESS: 'bad host' is neither")


def test_an_address_without_a_port_means_11300(
    run_at: Callable[..., Result], tmp_path: Path
) -> None:
    assert greenstalk.parse_address("beanstalk.internal") == ("beanstalk.internal", 11300)
    assert greenstalk.parse_address("10.0.0.5") == ("10.0.0.5", 11300)
    assert greenstalk.parse_address("[::1]") == ("::1", 11300)
    assert greenstalk.parse_address("[::1]:11301") == ("::1", 11301)
    assert greenstalk.parse_address("unix:/run/b.sock") == "/run/b.sock"
    assert greenstalk.parse_address("run/b.sock") == "run/b.sock"
    for text_address, problem in [
        ("::1", "'::1': write an IPv6 address in brackets, as in [::1]:11300"),
        ("host:0", "'host:0': the port must be a number from 1 to 65535"),
        ("host:", "'host:': the port must be a number from 1 to 65535"),
        ("unix:", "'unix:' names no socket: write unix:PATH"),
    ]:
        with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
            greenstalk.parse_address(text_address)
    # A port bound but not listening refuses connections; the message names it host:port.
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        result = run_at(f"127.0.0.1:{port}", "stats")
    assert result.failed_with(
        3, f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connection refused"
    )


def test_a_server_that_does_not_answer(
    run_at: Callable[..., Result], tmp_path: Path
) -> None:
    path = str(tmp_path / "silent")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()  # and never accepts: connecting works, replies never come
        result = run_at(path, "--timeout", "0.2", "stats")
    assert result.failed_with(
        3, f"unix:{path}: the server did not answer in time (timed out); connection closed"
    )


def test_a_server_refusal_without_a_message(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: greenstalk.Client[bytes]) -> None:
        raise greenstalk.InternalError

    monkeypatch.setattr(greenstalk.Client, "stats", fail)
    assert cli("stats").failed_with(1, "the server refused the command (InternalError)")

    def out_of_memory(self: greenstalk.Client[bytes], *args: Any) -> None:
        raise greenstalk.BuriedWithJobIDError(7)

    monkeypatch.setattr(greenstalk.Client, "put", out_of_memory)
    assert cli("put", "x").failed_with(1, "the server is out of memory and buried job 7")


def test_interrupted(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupt(self: greenstalk.Client[bytes]) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(greenstalk.Client, "tubes", interrupt)
    result = cli("tubes")
    assert result.code == 130
    assert result.err.endswith("greenstalk: interrupted\n")


def test_usage(run_at: Callable[..., Result]) -> None:
    result = run_at(None)
    assert result.code == 2
    assert result.err.startswith("Usage: greenstalk [OPTIONS]")
    assert run_at(None, "frobnicate").failed_with(
        2, "No such command 'frobnicate'. (see 'greenstalk --help')"
    )
    result = run_at(None, "--help")
    assert result.code == 0
    assert "drain" in result.out
    assert run_at(None, "--version").out == f"greenstalk, version {greenstalk.__version__}\n"
    assert run_at(None, "put", "--tube", "bad name", "x").code == 2


def command_names() -> list[str]:
    """Every command of ``greenstalk``."""
    return sorted(_commands.cli.commands)


@pytest.mark.parametrize("name", [None, *command_names()])
def test_help_speaks_plainly(run_at: Callable[..., Result], name: str | None) -> None:
    result = run_at(None, *([] if name is None else [name]), "--help")
    assert result.code == 0
    for leak in ("INTEGER", "RANGE", "FLOAT", "TEXT", "CHOICE", "<=x", "x>0", "x>=", "[0<="):
        assert leak not in result.out


def test_help_says_what_v_means(run_at: Callable[..., Result]) -> None:
    help_text = " ".join(run_at(None, "--help").out.split())
    assert "-V is --version here; for greenstalkd (and greenstalk serve), as for beanstalkd, " \
        "-V means verbose." in help_text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["put", "-p", "abc", "x"],
         "priority must be a whole number from 0 to 4294967295, not 'abc'"),
        (["put", "--priority", "4294967296", "x"],
         "priority must be a whole number from 0 to 4294967295, not '4294967296'"),
        (["put", "--delay", "-1", "x"],
         "delay must be a whole number from 0 to 4294967295, not '-1'"),
        (["put", "--ttr", "1.5", "x"],
         "TTR must be a whole number from 0 to 4294967295, not '1.5'"),
        (["peek", "abc"],
         "job id must be a whole number from 0 to 18446744073709551615, not 'abc'"),
        (["delete", "1", "x"],
         "job id must be a whole number from 0 to 18446744073709551615, not 'x'"),
        (["kick", "many"], "BOUND must be a whole number from 0 to 4294967295, not 'many'"),
        (["pause", "default", "soon"],
         "SECONDS must be a whole number from 0 to 4294967295, not 'soon'"),
        (["top", "--interval", "0"], "interval must be a number of seconds above 0, not '0'"),
        (["top", "-n", "nan"], "interval must be a number of seconds above 0, not 'nan'"),
        (["top", "-i", "0"], "iterations must be a whole number of at least 1, not '0'"),
        (["stats", "--timeout", "-1"], "timeout must be a number of seconds above 0, not '-1'"),
        (["drain", "default", "-s", "reserved"],
         "state must be ready, delayed or buried, not 'reserved'"),
        (["worker", "tasks:worker", "--log-level", "loud"],
         "log level must be debug, info, warning, error or critical, not 'loud'"),
    ],
)
def test_bad_values_in_plain_words(
    run_at: Callable[..., Result], args: list[str], message: str
) -> None:
    result = run_at(None, *args)
    assert result.failed_with(2, f"{message} (see 'greenstalk {args[0]} --help')")


def complete(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, line: str
) -> list[str]:
    """What bash completion offers for the last word of ``line``."""
    words = line.split(" ")
    monkeypatch.setenv("_GREENSTALK_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(len(words) - 1))
    assert main(words[1:]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return [item.partition(",")[2] for item in captured.out.splitlines() if item]


def test_tube_names_are_completed(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    client: greenstalk.Client[bytes],
    tmp_path: Path,
) -> None:
    client.use("emails")
    client.watch("errors")
    address = text(client.address)
    assert complete(capsys, monkeypatch, f"greenstalk -a {address} stats --tube e") == [
        "emails", "errors",
    ]
    assert complete(capsys, monkeypatch, f"greenstalk -a {address} drain ") == [
        "default", "emails", "errors",
    ]
    assert complete(capsys, monkeypatch, f"greenstalk pause -a {address} em") == ["emails"]
    assert complete(capsys, monkeypatch, f"greenstalk put -a {address} -t er") == ["errors"]
    assert complete(capsys, monkeypatch, f"greenstalk -a {address} drain d -s b") == ["buried"]
    # Without a server, nothing is offered, and nothing is said.
    missing = tmp_path / "nothing"
    assert complete(capsys, monkeypatch, f"greenstalk -a {missing} drain ") == []
    assert complete(capsys, monkeypatch, "greenstalk -a bad:address:x drain ") == []


# -- worker --------------------------------------------------------------------


WORKER_MODULE = """
import greenstalk

done = []

def handle(job):
    done.append(job.body)

worker = greenstalk.Worker({address!r}, handlers={{"jobs": handle}})
handlers = {{"jobs": handle}}
no_handlers = {{}}
number = 42
"""

EXITING_MODULE = """
import sys

sys.exit("cannot start: no configuration")
"""


def test_worker(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    client: greenstalk.Client[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"cli_worker_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(WORKER_MODULE.format(address=address))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("BEANSTALKD_ADDRESS", raising=False)
    client.use("jobs")
    client.put(b"first")
    assert run_at(None, "worker", f"{name}:worker", "--burst").code == 0
    module = sys.modules[name]
    assert module.done == [b"first"]
    client.put(b"second")
    assert run_at(text(address), "worker", "--burst", f"{name}:handlers").code == 0
    assert module.done == [b"first", b"second"]
    client.put(b"third")
    # An address given on the command line wins over the Worker's own.
    module.worker.address = ("127.0.0.1", 1)
    assert run_at(text(address), "worker", f"{name}:worker", "--burst").code == 0
    assert module.done == [b"first", b"second", b"third"]
    assert client.stats_tube("jobs")["current-jobs-ready"] == 0
    monkeypatch.delitem(sys.modules, name)


def test_worker_targets_that_do_not_work(
    run_at: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"cli_targets_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(WORKER_MODULE.format(address="127.0.0.1:1"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert run_at(None, "worker", "no_colon").failed_with(
        2,
        "'no_colon' is not MODULE:OBJECT (such as tasks:worker or ./tasks.py:worker) "
        "(see 'greenstalk worker --help')",
    )
    assert run_at(None, "worker", "cli_no_such_module:x").failed_with(
        2, "cannot import cli_no_such_module: No module named 'cli_no_such_module'"
    )
    assert run_at(None, "worker", f"{name}:missing").failed_with(
        2, f"module {name} has no missing"
    )
    assert run_at(None, "worker", f"{name}:number").failed_with(
        2, f"{name}:number is neither a greenstalk.Worker, a greenstalk.aio.Worker nor a "
        "mapping of tube names to handlers: it is a int",
    )
    assert run_at(None, "worker", f"{name}:no_handlers").failed_with(
        2, f"{name}:no_handlers: the worker has no handler: add one with worker.handler(tube)"
    )
    monkeypatch.delitem(sys.modules, name)
    (tmp_path / f"{name}_exits.py").write_text(EXITING_MODULE)
    with pytest.raises(SystemExit, match=r"^cannot start: no configuration$"):
        main(["worker", f"{name}_exits:x"])


AIO_WORKER_MODULE = """
import greenstalk.aio

done = []

async def handle(job):
    done.append(job.body)

worker = greenstalk.aio.Worker({address!r}, handlers={{"jobs": handle}})
handlers = {{"jobs": handle}}
"""

FILE_WORKER_MODULE = """
import greenstalk
from {helper} import record

worker = greenstalk.Worker({address!r}, handlers={{"jobs": record}})
"""

HELPER_MODULE = """
done = []

def record(job):
    done.append(job.body)
"""

LOGGING_MODULE = """
import logging
import greenstalk

log = logging.getLogger("tasks")

def handle(job):
    log.debug("debug line")
    log.info("info line")
    log.warning("warning line")

worker = greenstalk.Worker({address!r}, handlers={{"jobs": handle}})
"""


@pytest.fixture
def module_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The current directory, for worker modules; the modules imported from it are forgotten."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("BEANSTALKD_ADDRESS", raising=False)
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def test_asyncio_workers(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    client: greenstalk.Client[bytes],
    module_directory: Path,
) -> None:
    name = f"cli_aio_worker_{module_directory.name}"
    (module_directory / f"{name}.py").write_text(AIO_WORKER_MODULE.format(address=address))
    client.use("jobs")
    client.put(b"first")
    result = run_at(None, "worker", f"{name}:worker", "--burst")
    assert (result.code, result.out) == (0, "")
    module = sys.modules[name]
    assert module.done == [b"first"]
    # A mapping with coroutine handlers makes an asyncio Worker.
    client.put(b"second")
    assert run_at(text(address), "worker", f"{name}:handlers", "--burst").code == 0
    assert module.done == [b"first", b"second"]
    assert client.stats_tube("jobs")["current-jobs-ready"] == 0


def test_worker_from_a_file(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    client: greenstalk.Client[bytes],
    module_directory: Path,
) -> None:
    helper = f"cli_helper_{module_directory.name}"
    (module_directory / "sub").mkdir()
    for directory in (module_directory, module_directory / "sub"):
        (directory / f"{helper}.py").write_text(HELPER_MODULE)
        (directory / "tasks.py").write_text(
            FILE_WORKER_MODULE.format(helper=helper, address=address)
        )
    client.use("jobs")
    for target in ("./tasks.py:worker", "sub/tasks.py:worker",
                   f"{module_directory}/sub/tasks.py:worker"):
        client.put(target.encode())
        result = run_at(None, "worker", target, "--burst")
        assert (result.code, result.out) == (0, "")
    assert sys.modules[helper].done == [
        b"./tasks.py:worker", b"sub/tasks.py:worker", f"{module_directory}/sub/tasks.py:worker"
        .encode(),
    ]
    assert client.stats_tube("jobs")["current-jobs-ready"] == 0


def test_worker_modules_that_fail_to_import(
    run_at: Callable[..., Result], module_directory: Path
) -> None:
    name = f"cli_raises_{module_directory.name}"
    (module_directory / f"{name}.py").write_text("import os\n\nraise RuntimeError('boom')\n")
    (module_directory / "syntax.py").write_text("x = 1\nx = = 2\n")
    for target, label in [(f"{name}:worker", name), (f"./{name}.py:worker", f"./{name}.py")]:
        assert run_at(None, "worker", target).failed_with(
            2, f"cannot import {label}: RuntimeError: boom ({name}.py, line 3)"
        )
    result = run_at(None, "worker", "./syntax.py:worker")
    assert result.code == 2
    assert re.fullmatch(
        r"greenstalk: cannot import \./syntax\.py: SyntaxError: .+ \(syntax\.py, line 2\)\n",
        result.err,
    )
    assert run_at(None, "worker", "missing/tasks.py:worker").failed_with(
        2, "cannot import missing/tasks.py: no such file"
    )
    assert run_at(None, "worker", ".tasks:worker").failed_with(
        2, "'.tasks' is neither a module name (such as tasks or app.tasks) nor the path of a "
        ".py file (see 'greenstalk worker --help')"
    )


@pytest.mark.parametrize(
    ("options", "shown", "hidden"),
    [
        ([], ["INFO tasks: info line", "WARNING tasks: warning line"], ["debug line"]),
        (["-v"], ["DEBUG tasks: debug line", "INFO tasks: info line"], []),
        (["-q"], ["WARNING tasks: warning line"], ["info line", "debug line"]),
        (["--log-level", "ERROR"], [], ["warning line", "info line"]),
        (["--log-level", "debug", "-q"], ["DEBUG tasks: debug line"], []),
    ],
)
def test_worker_logging(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    client: greenstalk.Client[bytes],
    module_directory: Path,
    options: list[str],
    shown: list[str],
    hidden: list[str],
) -> None:
    name = f"cli_logging_{module_directory.name}"
    (module_directory / f"{name}.py").write_text(LOGGING_MODULE.format(address=address))
    client.use("jobs")
    client.put(b"x")
    level = logging.getLogger().level
    result = run_at(None, "worker", f"{name}:worker", "--burst", *options)
    assert result.code == 0
    lines = result.err.splitlines()
    for line in shown:
        assert [found for found in lines if re.fullmatch(rf"\S+ \S+ {line}", found)], result.err
    for text_shown in hidden:
        assert text_shown not in result.err
    assert logging.getLogger().level == level


# -- subprocesses --------------------------------------------------------------


def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL
    )


def test_python_m_greenstalk(address: greenstalk.Address) -> None:
    with greenstalk.Client(address) as client:
        client.put(b"x")
    done = run_process(sys.executable, "-m", "greenstalk", "-a", text(address), "stats", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["current-jobs-ready"] == 1
    done = run_process(sys.executable, "-m", "greenstalk", "-a", text(address), "peek", "7")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "greenstalk: job 7 not found\n")


def test_the_console_script(tmp_path: Path) -> None:
    assert SCRIPT.exists(), "the greenstalk script is not installed (pip install -e .)"
    path = tmp_path / "lines"
    path.write_text("a\nb\nc\n")
    with run_server("greenstalkd", unix=True) as server:
        env = {**os.environ, "BEANSTALKD_ADDRESS": text(server.address)}
        done = run_process(str(SCRIPT), "put", "--lines", "--json", "--file", str(path), env=env)
        assert json.loads(done.stdout)["count"] == 3
        done = run_process(str(SCRIPT), "drain", "default", env=env)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1
        done = run_process(str(SCRIPT), "drain", "default", "--yes", env=env)
        assert done.stdout == "deleted 3 jobs from tube default\n"


def test_serve(tmp_path: Path) -> None:
    path = tmp_path / "socket"
    command = [sys.executable, "-m", "greenstalk", "serve", "-l", f"unix:{path}", "-z", "10"]
    # Handed over listening (socket activation): no polling for the server.
    with bind_unix(str(path)) as listener:
        server = ServerProcess(str(path), spawn_activated(command, listener), "greenstalkd")
    try:
        with greenstalk.Client(str(path)) as client:
            assert client.put(b"x") == 1
            with pytest.raises(greenstalk.JobTooBigError):
                client.put(b"x" * 11)
    finally:
        server.stop()
    assert server.process is not None
    assert server.process.returncode == 0


def test_serve_passes_on_greenstalkd_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "-x"]) == 5
    assert "greenstalkd: unknown flag: -x" in capsys.readouterr().err
    assert main(["serve", "-v"]) == 0
    assert capsys.readouterr().out.startswith("greenstalkd ")


def test_a_closed_output(address: greenstalk.Address) -> None:
    with greenstalk.Client(address) as client:
        client.put(b"x" * 1000)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "greenstalk", "-a", text(address), "peek", "--raw", "1"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=30,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Exception" not in done.stderr


def test_without_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["rich"] = None
        from greenstalk.cli import main
        sys.exit(main(["tubes"]))
        """
    )
    done = run_process(sys.executable, "-c", code)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "greenstalk: the command line needs its extra: pip install 'greenstalk[cli]'\n"
    )


def test_other_import_errors_are_not_hidden() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["greenstalk.cli._common"] = None
        from greenstalk.cli import main
        main(["tubes"])
        """
    )
    done = run_process(sys.executable, "-c", code)
    assert done.returncode == 1
    assert "ModuleNotFoundError: import of greenstalk.cli._common halted" in done.stderr


def test_the_library_does_not_import_the_command_line_libraries() -> None:
    code = (
        "import sys, greenstalk, greenstalk.cli\n"
        "print(sorted({'click', 'rich'} & set(sys.modules)))"
    )
    assert run_process(sys.executable, "-c", code).stdout == "[]\n"
