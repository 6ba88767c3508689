"""The greenstalk command line: its main() in this process, and a few runs as subprocesses."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import greenstalk
from greenstalk.cli import _top, main
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
        "count": 2, "first_id": 5, "last_id": 6, "tube": "default",
    }
    assert cli("put", "--lines", stdin=b"").out == "put no job into tube default\n"


def test_put_lines_in_chunks(
    run_at: Callable[..., Result], start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server()
    path = tmp_path / "lines"
    path.write_bytes(b"".join(b"%d\n" % n for n in range(2500)))
    result = run_at(text(server.address), "--json", "put", "--lines", "--file", str(path))
    assert result.json() == {"count": 2500, "first_id": 1, "last_id": 2500, "tube": "default"}
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
    assert result.out.endswith("\n\nb'\\xff\\xfe\\x00'\n")
    document = cli("--json", "peek", str(job_id)).json()
    assert (document["body"], document["encoding"]) == ("//4A", "base64")
    assert cli("peek", "--raw", "--json", str(job_id)).failed_with(
        2, "--raw and --json exclude each other (see 'greenstalk peek --help')"
    )
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw))
    assert main(["--address", text(client.address), "peek", "--raw", str(job_id)]) == 0
    assert raw.getvalue() == b"\xff\xfe\x00"


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
    assert cli("kick", "5", "--json").json() == {"tube": "default", "kicked": 0}
    assert cli("kick-job", "--json", "3").json() == {"kicked": 3}
    assert cli("kick-job", "1").failed_with(1, "job 1 is not buried or delayed")
    assert client.stats_tube("jobs")["current-jobs-ready"] == 3
    delayed = client.put_many([b"later", b"later still"], delay=100)
    assert cli("kick-job", str(delayed[1])).out == f"kicked job {delayed[1]}\n"
    assert cli("kick", "5", "-t", "jobs").out == "kicked 1 job in tube jobs\n"
    assert cli("kick", "-1").code == 2


def test_pause(cli: Run, client: greenstalk.Client[bytes]) -> None:
    assert cli("pause", "default", "60").out == "paused tube default for 60 seconds\n"
    assert client.stats_tube("default")["pause"] == 60
    assert cli("pause", "default", "1", "--json").json() == {"tube": "default", "seconds": 1}
    assert cli("pause", "default", "0").out == "tube default is no longer paused\n"
    assert client.stats_tube("default")["pause"] == 0
    assert cli("pause", "nowhere", "10").failed_with(1, "tube nowhere not found")


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
        "tube": "work", "deleted": 0, "reserved": 1,
    }
    assert cli("drain", "nowhere", "-y").failed_with(1, "tube nowhere not found")


def test_drain_chosen_states(cli: Run, client: greenstalk.Client[bytes]) -> None:
    fill(client, "work")
    result = cli("drain", "work", "-y", "--state", "buried", "-s", "delayed", "--json")
    assert result.json() == {"tube": "work", "deleted": 2, "reserved": 1}
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
    pipeline = greenstalk.Client._pipeline
    calls = 0

    def reserve_one_first(self: greenstalk.Client[bytes], requests: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # after the first peek, before its delete
            client.reserve()
        return pipeline(self, requests)

    monkeypatch.setattr(greenstalk.Client, "_pipeline", reserve_one_first)
    result = cli("drain", "default", "--yes", "--json")
    assert result.json() == {"tube": "default", "deleted": 2, "reserved": 1}


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


# -- addresses, connections, usage --------------------------------------------------


def test_addresses(
    run_at: Callable[..., Result],
    address: greenstalk.Address,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert run_at("nonsense", "stats").failed_with(
        2,
        "bad --address: 'nonsense' is neither host:port (such as 127.0.0.1:11300) "
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
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "nonsense")
    result = run_at(None, "tubes")
    assert result.code == 2
    assert result.err.startswith("greenstalk: bad $BEANSTALKD_ADDRESS: 'nonsense' is neither")


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
        "Invalid value for MODULE:OBJECT: 'no_colon' is not MODULE:OBJECT (such as "
        "tasks:worker) (see 'greenstalk worker --help')",
    )
    assert run_at(None, "worker", "cli_no_such_module:x").failed_with(
        2, "cannot import cli_no_such_module: No module named 'cli_no_such_module'"
    )
    assert run_at(None, "worker", f"{name}:missing").failed_with(
        2, f"module {name} has no missing"
    )
    assert run_at(None, "worker", f"{name}:number").failed_with(
        2, f"{name}:number is neither a greenstalk.Worker nor a mapping of tube names to "
        "handlers: it is a int",
    )
    assert run_at(None, "worker", f"{name}:no_handlers").failed_with(
        2, f"{name}:no_handlers: the worker has no handler: add one with worker.handler(tube)"
    )
    monkeypatch.delitem(sys.modules, name)
    (tmp_path / f"{name}_exits.py").write_text(EXITING_MODULE)
    with pytest.raises(SystemExit, match=r"^cannot start: no configuration$"):
        main(["worker", f"{name}_exits:x"])


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
