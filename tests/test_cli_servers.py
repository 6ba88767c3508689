"""The greenstalk command line over several real servers: -a repeated or a comma list.

Three servers, mixed (beanstalkd and greenstalkd; the last on a Unix
socket). Each command's per-server results are checked against the servers
themselves, and totals against the sums.
"""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

import greenstalk
import greenstalk.aio
from greenstalk.cli import main
from greenstalk.testing import ServerProcess, run_server

from .test_cli import Result, complete, text, with_stdin
from .test_worker_servers import kinds

Run = Callable[..., Result]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Three fresh servers, mixed; the last one on a Unix socket."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(run_server(kind, unix=index == 2))
            for index, kind in enumerate(kinds(3))
        ]


@pytest.fixture
def clients(servers: list[ServerProcess]) -> Iterator[list[greenstalk.Client[bytes]]]:
    """A client of each server, in the same order."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(greenstalk.Client(s.address, socket_timeout=10))
               for s in servers]


@pytest.fixture
def names(servers: list[ServerProcess]) -> list[str]:
    """The servers' addresses as the command line writes them."""
    return [text(server.address) for server in servers]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run main() with ``args``; ``stdin`` bytes become the standard input."""

    def run(*args: str, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            with_stdin(monkeypatch, stdin)
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli(run: Run, names: list[str]) -> Run:
    """Run main() against the three servers (-a with a comma list)."""

    def run_all(*args: str, stdin: bytes | None = None) -> Result:
        return run("-a", ",".join(names), *args, stdin=stdin)

    return run_all


@pytest.fixture
def nowhere(tmp_path: Path) -> str:
    """An address nothing listens on (a Unix socket path), as text."""
    return f"unix:{tmp_path / 'no-server'}"


def stat(client: greenstalk.Client[bytes], name: str) -> Any:
    return client.stats()[name]  # type: ignore[literal-required]


def ready(client: greenstalk.Client[bytes], tube: str = "default") -> int:
    try:
        return client.stats_tube(tube)["current-jobs-ready"]
    except greenstalk.NotFoundError:
        return 0


# -- addresses -----------------------------------------------------------------------


def test_several_addresses_in_every_form(
    run: Run, names: list[str], clients: list[greenstalk.Client[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def listed(result: Result) -> list[str]:
        assert result.code == 0, result.err
        return [part["address"] for part in result.json()["servers"]]

    assert listed(run("-a", names[0], "-a", names[1], "--json", "tubes")) == names[:2]
    assert listed(run("-a", f"{names[0]}, {names[1]},", "--json", "tubes")) == names[:2]
    # Before and after the command's name, they add up.
    assert listed(run("-a", names[0], "--json", "tubes", "-a", names[2])) == [names[0], names[2]]
    monkeypatch.setenv("BEANSTALKD_ADDRESS", ",".join(names))
    assert listed(run("--json", "tubes")) == names
    # --address wins over the environment; one server gives the one server's list.
    clients[1].use("only-here")
    document = run("--json", "tubes", "-a", names[1]).json()
    assert [tube["name"] for tube in document] == ["default", "only-here"]


def test_bad_address_lists_are_usage_errors(
    run: Run, names: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("-a", f"{names[0]},{names[0]}", "tubes").failed_with(
        2, f"bad --address: {names[0]} is listed twice"
    )
    assert run("-a", ",", "tubes").failed_with(2, "bad --address: no server address given")
    assert run("-a", names[0], "-a", "bad host", "tubes").code == 2
    monkeypatch.setenv("BEANSTALKD_ADDRESS", f"{names[0]},bad host")
    result = run("tubes")
    assert result.code == 2
    assert result.err.startswith("greenstalk: bad $BEANSTALKD_ADDRESS: 'bad host' is neither")


# -- put -----------------------------------------------------------------------------


def test_put_lines_spreads_the_jobs_evenly(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    result = cli("put", "--lines", "-t", "spread", stdin=b"".join(b"%d\n" % n for n in range(30)))
    assert result.code == 0, result.err
    assert result.out.startswith("put 30 jobs into tube spread: ")
    for name in names:
        assert f"10 on {name}" in result.out
    assert [ready(client, "spread") for client in clients] == [10, 10, 10]
    document = cli("--json", "put", "--lines", "-t", "spread", stdin=b"a\nb\nc\n").json()
    assert document["count"] == 3
    assert sorted(server["address"] for server in document["servers"]) == sorted(names)
    assert sum(server["count"] for server in document["servers"]) == 3
    for job in document["jobs"]:
        client = clients[names.index(job["address"])]
        assert client.stats_job(job["id"])["tube"] == "spread"
    assert sum(ready(client, "spread") for client in clients) == 33


def test_single_puts_land_on_every_server(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    """A run puts where a random start points, so single puts from a shell loop spread."""
    seen: dict[str, int] = {}
    for _ in range(40):
        result = cli("put", "x")
        job_id, on, name = result.out.split()
        assert on == "on"
        seen[name] = seen.get(name, 0) + 1
        assert clients[names.index(name)].peek(int(job_id)).body == b"x"
    assert sorted(seen) == sorted(names)
    document = cli("--json", "put", "-p", "7", "y").json()
    assert set(document) == {"id", "address"}
    client = clients[names.index(document["address"])]
    assert client.stats_job(document["id"])["pri"] == 7


def test_put_with_a_key_goes_to_one_server(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    places = {cli("--json", "put", "--key", "order-7", "x").json()["address"] for _ in range(5)}
    assert len(places) == 1
    result = cli("--json", "put", "--lines", "-k", "order-7", stdin=b"a\nb\nc\n").json()
    assert {job["address"] for job in result["jobs"]} == places
    keyed = {cli("--json", "put", "--key", f"user-{n}", "x").json()["address"]
             for n in range(30)}
    assert len(keyed) >= 2


def test_put_fails_over_to_the_servers_that_are_up(
    run: Run, names: list[str], nowhere: str, clients: list[greenstalk.Client[bytes]]
) -> None:
    result = run("-a", ",".join([names[0], nowhere, names[1]]), "--json", "put", "--lines",
                 stdin=b"".join(b"%d\n" % n for n in range(20)))
    assert result.code == 0, result.err
    document = result.json()
    assert document["count"] == 20
    counts = {server["address"]: server["count"] for server in document["servers"]}
    assert counts == {names[0]: 10, nowhere: 0, names[1]: 10}
    assert [ready(client) for client in clients[:2]] == [10, 10]
    result = run("-a", f"{nowhere},{nowhere}x", "put", "y")
    assert result.code == 3
    assert result.err.startswith("greenstalk: cannot connect to any server of the pool: ")
    assert nowhere in result.err


def test_put_refused_lines_are_named(
    run: Run, names: list[str], tmp_path: Path
) -> None:
    """A job too big for every server is refused wherever it goes: status 1, its line named."""
    with run_server(kinds(1)[0], args=["-z", "10"]) as small, \
            run_server(kinds(2)[1], args=["-z", "10"]) as also_small:
        both = f"{text(small.address)},{text(also_small.address)}"
        result = run("-a", both, "--json", "put", "--lines",
                     stdin=b"short\nmuch too long for it\nshort\n")
    assert result.code == 1
    assert result.json()["refused"] == [
        {"line": 2, "error": "the job is larger than the server's max-job-size"}
    ]
    assert result.json()["count"] == 2


# -- stats, tubes --------------------------------------------------------------------


def test_stats_of_each_server_and_the_total(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for count, client in zip((2, 3, 4), clients):
        client.put_many([b"x"] * count)
    document = cli("--json", "stats").json()
    assert [part["address"] for part in document["servers"]] == names
    for part, client in zip(document["servers"], clients):
        assert part["stats"]["current-jobs-ready"] == stat(client, "current-jobs-ready")
        assert part["stats"]["pid"] == stat(client, "pid")
    total = document["total"]
    assert total["current-jobs-ready"] == 9
    assert total["cmd-put"] == 9
    assert total["draining"] is False
    assert total["max-job-size"] == min(part["stats"]["max-job-size"]
                                        for part in document["servers"])
    assert "pid" not in total
    assert "version" not in total
    lines = cli("stats").out.splitlines()
    assert lines[0].split() == [*names, "total"]
    row = next(line.split() for line in lines if line.startswith("current-jobs-ready "))
    assert row == ["current-jobs-ready", "2", "3", "4", "9"]
    pid = next(line for line in lines if line.startswith("pid "))
    assert pid.split()[1:] == [str(stat(client, "pid")) for client in clients]


def test_stats_of_a_tube_on_some_servers(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for client in (clients[0], clients[2]):
        client.use("emails")
        client.put_many([b"x", b"y"])
    document = cli("--json", "stats", "--tube", "emails").json()
    assert document["tube"] == "emails"
    assert [part["address"] for part in document["servers"]] == names
    assert document["servers"][1]["stats"] is None
    assert document["servers"][2]["stats"] == dict(clients[2].stats_tube("emails"))
    assert document["total"]["current-jobs-ready"] == 4
    assert document["total"]["name"] == "emails"
    row = next(line.split() for line in cli("stats", "-t", "emails").out.splitlines()
               if line.startswith("current-jobs-ready "))
    assert row == ["current-jobs-ready", "2", "-", "2", "4"]
    assert cli("stats", "--tube", "nowhere").failed_with(1, "tube nowhere not found")


def test_tubes_of_each_server_and_the_total(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    clients[0].use("emails")
    clients[0].put_many([b"x"] * 3)
    clients[1].use("emails")
    clients[1].put(b"x", delay=100)
    clients[2].use("thumbnails")
    clients[2].put(b"x")
    clients[2].pause_tube("thumbnails", 100)
    document = cli("--json", "tubes").json()
    assert [part["address"] for part in document["servers"]] == names
    for part, client in zip(document["servers"], clients):
        assert {tube["name"] for tube in part["tubes"]} == set(client.tubes())
    total = {tube["name"]: tube for tube in document["total"]}
    assert sorted(total) == ["default", "emails", "thumbnails"]
    assert (total["emails"]["current-jobs-ready"], total["emails"]["current-jobs-delayed"]) == (
        3, 1)
    assert total["thumbnails"]["pause"] == 100
    out = cli("tubes").out
    sections = out.split("\n\n")
    assert [section.splitlines()[0] for section in sections] == [*names, "total of 3 servers"]
    emails = next(line.split() for line in sections[3].splitlines() if line.startswith("emails"))
    assert emails[:5] == ["emails", "3", "0", "1", "0"]


# -- kick, pause, drain --------------------------------------------------------------


def bury(client: greenstalk.Client[bytes], tube: str, count: int) -> None:
    client.use(tube)
    client.watch(tube)
    for _ in range(count):
        client.put(b"x")
        client.bury(client.reserve())


def test_kick_up_to_the_bound_over_the_servers_in_turn(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for client in clients[:2]:
        bury(client, "work", 2)
    result = cli("kick", "3", "-t", "work")
    assert result.code == 0
    assert result.out == (
        f"{names[0]}: kicked 2 jobs in tube work\n"
        f"{names[1]}: kicked 1 job in tube work\n"
        f"{names[2]}: kicked 0 jobs: tube work does not exist\n"
        "kicked 3 jobs in tube work on 3 servers\n"
    )
    assert [stat(client, "current-jobs-buried") for client in clients] == [0, 1, 0]
    assert cli("--json", "kick", "10", "-t", "work").json() == {
        "tube": "work", "kicked": 1, "exists": True, "servers": [
            {"address": names[0], "kicked": 0, "exists": True},
            {"address": names[1], "kicked": 1, "exists": True},
            {"address": names[2], "kicked": 0, "exists": False},
        ],
    }


def test_pause_on_every_server(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for client in clients[:2]:
        client.use("thumbnails")
    result = cli("pause", "thumbnails", "60")
    assert result.out == (
        f"{names[0]}: paused tube thumbnails for 60 seconds\n"
        f"{names[1]}: paused tube thumbnails for 60 seconds\n"
        f"{names[2]}: paused nothing: tube thumbnails does not exist\n"
    )
    assert [client.stats_tube("thumbnails")["pause"] for client in clients[:2]] == [60, 60]
    assert cli("--json", "pause", "thumbnails", "0").json() == {
        "tube": "thumbnails", "seconds": 0, "exists": True, "servers": [
            {"address": names[0], "exists": True},
            {"address": names[1], "exists": True},
            {"address": names[2], "exists": False},
        ],
    }
    assert [client.stats_tube("thumbnails")["pause"] for client in clients[:2]] == [0, 0]


def fill(client: greenstalk.Client[bytes], tube: str, ready_jobs: int) -> None:
    """``ready_jobs`` ready jobs, one buried and one reserved (by ``client``) in ``tube``."""
    client.use(tube)
    client.watch(tube)
    client.put_many([b"reserved", b"buried"])
    client.reserve()
    client.bury(client.reserve())
    client.put_many([b"ready"] * ready_jobs)


def test_drain_every_server(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fill(clients[0], "work", 3)
    fill(clients[1], "work", 1)
    result = cli("drain", "work", stdin=b"")
    assert result.failed_with(
        2, "not deleting 6 jobs without confirmation: stdin is not a terminal (pass --yes)"
    )
    with_stdin(monkeypatch, b"y\n", tty=True)
    result = cli("drain", "work")
    assert result.code == 0
    assert result.err.startswith("Delete 6 jobs (4 ready, 2 buried) from tube work on 2 "
                                 "servers?")
    # (Some versions of click leave a space of the prompt on stdout.)
    assert [line.strip() for line in result.out.splitlines()] == [
        f"{names[0]}: deleted 4 jobs, 1 reserved job left",
        f"{names[1]}: deleted 2 jobs, 1 reserved job left",
        f"{names[2]}: deleted 0 jobs: tube work does not exist",
        "deleted 6 jobs from tube work on 3 servers",
        "2 reserved jobs left: only the connection that reserved a job can delete it",
    ]
    assert [stat(client, "cmd-delete") for client in clients] == [4, 2, 0]
    assert cli("--json", "drain", "work", "-y").json() == {
        "tube": "work", "exists": True, "deleted": 0, "reserved": 2, "servers": [
            {"address": names[0], "exists": True, "deleted": 0, "reserved": 1},
            {"address": names[1], "exists": True, "deleted": 0, "reserved": 1},
            {"address": names[2], "exists": False, "deleted": 0, "reserved": 0},
        ],
    }


# -- a server that cannot be reached ---------------------------------------------------


def test_a_server_that_cannot_be_reached_is_named_and_the_others_are_shown(
    run: Run, names: list[str], nowhere: str, clients: list[greenstalk.Client[bytes]]
) -> None:
    clients[0].put_many([b"x"] * 2)
    bury(clients[1], "default", 1)
    both = ",".join([names[0], nowhere, names[1]])
    refused = f"greenstalk: cannot connect to {nowhere}: [Errno 2] No such file or directory\n"
    for args in (["stats"], ["tubes"], ["stats", "-t", "default"], ["pause", "default", "0"],
                 ["kick", "5"], ["drain", "default", "--yes"], ["top", "--once", "-n", "0.01"]):
        result = run("-a", both, "--json", *args)
        assert (result.code, result.err) == (3, refused) if args[0] != "top" else (0, ""), args
        document = result.json()
        entries = document["servers"]
        assert [entry["address"] for entry in entries] == [names[0], nowhere, names[1]], args
        if args[0] == "top":
            assert entries[1]["connected"] is False
            assert document["total"]["connected"] == 2
        else:
            assert entries[1]["error"] == refused[len("greenstalk: "):-1], args
    assert [stat(client, "cmd-kick") for client in clients[:2]] == [1, 1]
    assert [stat(client, "cmd-delete") for client in clients[:2]] == [2, 1]
    result = run("-a", both, "stats")
    assert result.code == 3
    assert result.out.splitlines()[0].split() == [names[0], names[1], "total"]
    result = run("-a", f"{nowhere},{nowhere}x", "--json", "stats")
    assert (result.code, result.out) == (3, "")
    assert result.err.startswith(f"greenstalk: cannot connect to {nowhere}: ")
    assert "; cannot connect to " in result.err
    for args in (["tubes"], ["top", "--once"]):
        result = run("-a", f"{nowhere},{nowhere}x", *args)
        assert (result.code, result.out) == (3, ""), args


@pytest.fixture
def silent() -> Iterator[str]:
    """A server that takes connections and never answers (as a frozen one would), as text."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield text(listener.getsockname())


def test_a_server_that_stops_answering_is_named_and_the_others_are_shown(
    run: Run, names: list[str], silent: str, clients: list[greenstalk.Client[bytes]]
) -> None:
    clients[0].put_many([b"x"] * 3)
    both = f"{names[0]},{silent}"
    for args in (["stats"], ["tubes"], ["kick", "1"], ["pause", "default", "0"],
                 ["drain", "default", "--yes"]):
        result = run("-a", both, "--timeout", "0.3", "--json", *args)
        assert result.code == 3, args
        [first, stuck] = result.json()["servers"]
        assert first["address"] == names[0]
        assert stuck["error"].startswith(f"{silent}: "), args
        assert result.err == f"greenstalk: {stuck['error']}\n"
    assert ready(clients[0]) == 0  # the drain deleted them
    frame = run("-a", both, "--timeout", "0.3", "--json", "top", "--once", "-n", "0.01").json()
    assert [server["connected"] for server in frame["servers"]] == [True, False]


def test_puts_sent_to_a_server_that_does_not_answer_go_elsewhere_and_are_counted(
    run: Run, names: list[str], silent: str, clients: list[greenstalk.Client[bytes]]
) -> None:
    result = run("-a", f"{names[0]},{silent}", "--timeout", "0.3", "--json", "put", "--lines",
                 stdin=b"a\nb\nc\nd\n")
    assert result.code == 0
    document = result.json()
    assert document["count"] == 4
    assert document["servers"] == [{"address": names[0], "count": 4},
                                   {"address": silent, "count": 0}]
    assert ready(clients[0]) == 4
    # The two sent to the silent server may have been stored there: said, not silent.
    assert result.err == ("greenstalk: 2 puts got no answer from a server, and were put on "
                          "another: they may have been stored twice\n")


def test_a_drain_interrupted_says_how_many_it_deleted(
    cli: Run, clients: list[greenstalk.Client[bytes]], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for client in clients:
        client.put_many([b"x"] * 3)
    delete = greenstalk.aio.Client.delete
    calls = 0

    async def interrupt_the_fourth(self: greenstalk.aio.Client[bytes], job: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:  # the first delete of the second round: the others are done
            raise KeyboardInterrupt
        await delete(self, job)

    monkeypatch.setattr(greenstalk.aio.Client, "delete", interrupt_the_fourth)
    result = cli("--json", "drain", "default", "--yes")
    assert result.code == 130
    assert result.err == "greenstalk: interrupted: deleted 3 jobs from tube default\n"
    document = result.json()
    assert document["deleted"] == 3
    assert [part["deleted"] for part in document["servers"]] == [1, 1, 1]
    assert [stat(client, "cmd-delete") for client in clients] == [1, 1, 1]
    # Nothing is left for asyncio to complain about (with a traceback) when it is collected.
    gc.collect()
    assert not [record for record in caplog.records if record.name == "asyncio"]


def test_a_server_lost_in_the_middle_of_a_drain(
    cli: Run, names: list[str], servers: list[ServerProcess],
    clients: list[greenstalk.Client[bytes]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for client in clients:
        client.put_many([b"x"] * 3)
    delete = greenstalk.aio.Client.delete
    stopped = False

    async def stop_a_server(self: greenstalk.aio.Client[bytes], job: Any) -> None:
        nonlocal stopped
        if not stopped and self.address == servers[1].address:
            stopped = True
            servers[1].stop()
        await delete(self, job)

    monkeypatch.setattr(greenstalk.aio.Client, "delete", stop_a_server)
    result = cli("--json", "drain", "default", "--yes")
    assert result.code == 3
    [first, lost, last] = result.json()["servers"]
    assert (first["deleted"], last["deleted"]) == (3, 3)
    assert lost["error"].startswith(f"{names[1]}: ")
    assert result.err == f"greenstalk: {lost['error']}\n"


# -- commands about one server -------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["peek", "1"], ["peek-ready"], ["peek-delayed", "-t", "x"], ["peek-buried"],
    ["delete", "1", "2"], ["kick-job", "1"], ["stats", "--job", "1"],
])
def test_commands_about_a_job_need_one_server(cli: Run, names: list[str],
                                              args: list[str]) -> None:
    assert cli(*args).failed_with(
        2, f"{args[0]} works on one server, and 3 are given ({', '.join(names)}): choose one "
        "with --server ADDRESS (job ids are only unique per server)"
    )


def test_server_chooses_one_of_several(
    cli: Run, run: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for index, client in enumerate(clients):
        client.put(b"job of server %d" % index)
    result = cli("peek", "1", "--server", names[1])
    assert result.code == 0
    assert result.out.endswith("job of server 1\n")
    assert cli("peek-ready", "--raw", "--server", names[2]).out == "job of server 2"
    assert cli("--json", "stats", "--job", "1", "--server", names[0]).json()["id"] == 1
    assert cli("--json", "stats", "--server", names[0]).json()["pid"] == stat(clients[0], "pid")
    assert cli("delete", "1", "--server", names[2]).out == "deleted job 1\n"
    assert [ready(client) for client in clients] == [1, 1, 0]
    bury(clients[0], "default", 1)
    assert cli("kick-job", "1", "--server", names[0]).code == 0
    assert cli("peek", "1", "--server", "10.0.0.9:1").failed_with(
        2, f"--server 10.0.0.9:1 is not one of the servers given ({', '.join(names)})"
    )
    assert cli("peek", "1", "--server", "bad host").code == 2
    # With one server, --server may name it.
    assert run("-a", names[1], "peek", "1", "--server", names[1]).code == 0


# -- top -----------------------------------------------------------------------------


def test_top_shows_each_server_and_the_total(
    cli: Run, names: list[str], clients: list[greenstalk.Client[bytes]]
) -> None:
    for count, client in zip((1, 2, 3), clients):
        client.use("emails")
        client.put_many([b"x"] * count)
    frame = cli("--json", "top", "--once", "--interval", "0.05").json()
    assert [server["address"] for server in frame["servers"]] == names
    assert [server["server"]["ready"] for server in frame["servers"]] == [1, 2, 3]
    total = frame["total"]
    assert (total["servers"], total["connected"]) == (3, 3)
    assert total["server"]["ready"] == 6
    assert total["server"]["connections"] == sum(
        server["server"]["connections"] for server in frame["servers"]
    )
    [emails] = [tube for tube in total["tubes"] if tube["name"] == "emails"]
    assert (emails["ready"], emails["total_jobs"], emails["paused"]) == (6, 6, False)
    out = cli("top", "--once", "--interval", "0.05").out
    blocks = out.split("\n\n")
    assert [block.split()[0] for block in blocks[::2]] == [*names, "total"]
    assert blocks[6].startswith("total of 3 servers  ")
    assert "  ready 6  " in blocks[6]
    assert blocks[7].splitlines()[2].split()[:2] == ["emails", "6"]


# -- worker --------------------------------------------------------------------------


WORKER_MODULE = """
import greenstalk

done = []

def handle(job):
    done.append((job.address, job.body))

handlers = {"jobs": handle}
worker = greenstalk.Worker("127.0.0.1:1", handlers=handlers)
"""


def test_the_worker_works_for_every_server(
    cli: Run, run: Run, names: list[str], servers: list[ServerProcess],
    clients: list[greenstalk.Client[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    nowhere: str,
) -> None:
    name = f"cli_servers_worker_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(WORKER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for index, client in enumerate(clients):
        client.use("jobs")
        client.put(b"%d" % index)
    assert cli("worker", f"{name}:handlers", "--burst").code == 0
    module = sys.modules[name]
    assert sorted((body, text(address)) for address, body in module.done) == [
        (b"%d" % index, name) for index, name in enumerate(names)
    ]
    for client in clients:
        client.put(b"again")
    # A Worker's own address gives way to the servers given.
    monkeypatch.setenv("BEANSTALKD_ADDRESS", ",".join(names))
    assert run("worker", f"{name}:worker", "--burst").code == 0
    assert [stat(client, "cmd-delete") for client in clients] == [2, 2, 2]
    result = run("-a", f"{names[0]},{nowhere}", "worker", f"{name}:worker", "--burst")
    assert result.code == 3
    assert result.err.endswith(
        f"\ngreenstalk: cannot connect to {nowhere}: [Errno 2] No such file or directory\n"
    )
    monkeypatch.delitem(sys.modules, name)


def test_tube_completion_asks_every_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, names: list[str],
    clients: list[greenstalk.Client[bytes]], nowhere: str,
) -> None:
    clients[0].use("emails")
    clients[2].use("errors")
    line = f"greenstalk -a {names[0]} -a {nowhere} -a {names[2]} stats --tube e"
    assert complete(capsys, monkeypatch, line) == ["emails", "errors"]
    assert complete(capsys, monkeypatch, f"greenstalk -a {names[0]},{names[0]} drain ") == []
