"""greenstalk web: its JSON API against both servers, its guards, and the page in real Chromium.

The browser tests drive Debian's headless Chromium (through its
chromedriver and Selenium) against greenstalkd, and leave a screenshot of
each page in test-artefacts/web/.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

import greenstalk
from greenstalk.cli import main
from greenstalk.cli._ops import _ops_import
from greenstalk.ops import _console
from greenstalk.ops._links import ServerLink, describe_listen, is_loopback, parse_listen
from greenstalk.ops.web import APP_KEY, REQUESTED_BY, Access, Console, is_loopback_host
from greenstalk.testing import ServerProcess, run_server

from .conftest import StartServer
from .fakeserver import Expect, FakeServer, Send, Step
from .ops_browser import cell, chromium, css, job_button, open_tube, tube_row, until
from .ops_support import DEADLINE, Reply, eventually, request, served

ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / "test-artefacts" / "web"
TOKEN = "a-long-enough-test-token"


def name_of(address: Any) -> str:
    return greenstalk.describe_address(address)


def post(url: str, action: str, headers: dict[str, str] | None = None, **fields: Any) -> Reply:
    """An action of the console, sent as its page sends it."""
    return request(
        f"{url}/api/{action}", fields, headers={"X-Requested-By": REQUESTED_BY, **(headers or {})}
    )


@contextlib.contextmanager
def console_at(*addresses: Any, **options: Any) -> Iterator[str]:
    console = Console(list(addresses), **options)
    with served(console.app) as url:
        yield url


def closed_port() -> tuple[str, int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()  # type: ignore[no-any-return]


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[greenstalk.Client[bytes]]:
    with greenstalk.Client(server.address) as client:
        yield client


@pytest.fixture
def url(server: ServerProcess) -> Iterator[str]:
    with console_at(server.address) as url:
        yield url


# -- reading -----------------------------------------------------------------------------


def test_the_state_of_every_server(server: ServerProcess, client: greenstalk.Client[bytes]) -> None:
    client.use("emails")
    client.put(b"x")
    client.pause_tube("emails", 100)
    dead = closed_port()
    with console_at(server.address, dead, refresh=2.5) as url:
        state = request(url + "/api/state").json()
    assert state["refresh"] == 2.5
    up, down = state["servers"]
    assert (up["index"], up["name"], up["up"]) == (0, name_of(server.address), True)
    assert up["stats"]["version"] == "1.12"
    tubes = {tube["name"]: tube for tube in up["tubes"]}
    assert set(tubes) == {"default", "emails"}
    assert tubes["emails"]["ready"] == 1
    assert tubes["emails"]["pause"] == 100
    assert (down["index"], down["up"], down["tubes"]) == (1, False, [])
    assert "cannot connect" in down["error"]


def test_a_tube_and_its_next_jobs(url: str, client: greenstalk.Client[bytes]) -> None:
    client.use("mixed")
    ready = client.put("héllo".encode(), priority=7, ttr=30)
    delayed = client.put(b"\x00\xffbinary", delay=200)
    client.watch("mixed")
    buried = client.put(b"x" * 500)
    client.reserve_job(buried)
    client.bury(buried, 9)
    view = request(url + "/api/tube?server=0&tube=mixed").json()
    assert view["exists"] is True
    assert view["stats"]["ready"] == 1
    jobs = view["jobs"]
    assert jobs["ready"]["id"] == ready
    assert jobs["ready"]["priority"] == 7
    assert jobs["ready"]["ttr"] == 30
    assert jobs["ready"]["preview"] == "héllo"
    assert jobs["ready"]["text"] is True
    assert jobs["delayed"]["id"] == delayed
    assert jobs["delayed"]["text"] is False
    assert jobs["delayed"]["preview"] == repr(b"\x00\xffbinary")
    assert 150 < jobs["delayed"]["time_left"] <= 200
    assert jobs["buried"]["id"] == buried
    assert jobs["buried"]["priority"] == 9
    assert jobs["buried"]["truncated"] is True
    assert jobs["buried"]["size"] == 500
    missing = request(url + "/api/tube?server=0&tube=nothing").json()
    assert missing == {"name": "nothing", "exists": False, "jobs": {}}
    empty = request(url + "/api/tube?server=0&tube=default").json()
    assert empty["jobs"] == {"ready": None, "delayed": None, "buried": None}
    bad = request(url + "/api/tube?server=0&tube=bad%20name")
    assert bad.status == 400


# -- acting ---------------------------------------------------------------------------


def test_put_kick_delete_and_pause(url: str, client: greenstalk.Client[bytes]) -> None:
    reply = post(url, "put", server=0, tube="work", body="hello", priority=3, delay=0, ttr=9)
    assert reply.status == 200
    job_id = reply.json()["id"]
    stats = client.stats_job(job_id)
    assert (stats["tube"], stats["pri"], stats["ttr"]) == ("work", 3, 9)
    assert client.peek(job_id).body == b"hello"
    client.watch("work")
    client.bury(client.reserve(0))
    second = post(url, "put", server=0, tube="work", body="", delay=500).json()["id"]
    assert post(url, "kick", server=0, tube="work", bound=5).json() == {"kicked": 1}
    assert client.stats_job(job_id)["state"] == "ready"
    assert post(url, "kick", server=0, tube="nothing", bound=5).json() == {"kicked": 0}
    assert post(url, "kick-job", server=0, id=second).json() == {"kicked": 1}
    assert client.stats_job(second)["state"] == "ready"
    assert post(url, "kick-job", server=0, id=second).status == 404
    assert post(url, "delete", server=0, id=second).json() == {"deleted": 1}
    assert post(url, "delete", server=0, id=second).status == 404
    assert post(url, "pause", server=0, tube="work", seconds=120).json() == {"paused": 120}
    assert client.stats_tube("work")["pause"] == 120
    assert post(url, "pause", server=0, tube="work", seconds="0").json() == {"paused": 0}
    assert client.stats_tube("work")["pause"] == 0
    assert post(url, "pause", server=0, tube="nothing", seconds=1).status == 404


@pytest.mark.parametrize("state", ["ready", "delayed", "buried"])
def test_move_keeps_priority_ttr_remaining_delay_and_state(
    url: str, client: greenstalk.Client[bytes], state: str
) -> None:
    client.use("source")
    job_id = client.put(b"payload", priority=123, ttr=77, delay=300 if state == "delayed" else 0)
    if state == "buried":
        client.reserve_job(job_id)
        client.bury(job_id, 123)
    reply = post(url, "move", server=0, id=job_id, to="target")
    assert reply.status == 200, reply.text
    moved = reply.json()["id"]
    stats = client.stats_job(moved)
    assert (stats["tube"], stats["state"], stats["pri"], stats["ttr"]) == (
        "target", state, 123, 77
    )
    if state == "delayed":
        assert 250 < stats["time-left"] <= 300
    assert client.peek(moved).body == b"payload"
    with pytest.raises(greenstalk.NotFoundError):
        client.peek(job_id)


def test_what_cannot_be_moved(url: str, client: greenstalk.Client[bytes]) -> None:
    client.use("source")
    job_id = client.put(b"stays")
    same = post(url, "move", server=0, id=job_id, to="source")
    assert (same.status, same.json()) == (400, {"error": f"job {job_id} is already in tube source"})
    bad = post(url, "move", server=0, id=job_id, to="bad name!")
    assert bad.status == 400
    assert client.stats_job(job_id)["state"] == "ready"  # nothing lost
    assert post(url, "move", server=0, id=99999, to="x").status == 404
    client.watch("source")
    client.reserve_job(job_id)
    held = post(url, "move", server=0, id=job_id, to="target")
    assert held.status == 409
    assert "reserved" in held.json()["error"]


def test_delete_all_buried_needs_the_tube_name_to_confirm(
    url: str, client: greenstalk.Client[bytes]
) -> None:
    client.use("failing")
    client.watch("failing")
    client.put_many([b"a", b"b", b"c", b"d"])
    for _ in range(3):
        client.bury(client.reserve(0))
    refused = post(url, "delete-buried", server=0, tube="failing", confirm="yes")
    assert refused.status == 400
    assert client.stats_tube("failing")["current-jobs-buried"] == 3
    done = post(url, "delete-buried", server=0, tube="failing", confirm="failing")
    assert done.json() == {"deleted": 3}
    stats = client.stats_tube("failing")
    assert (stats["current-jobs-buried"], stats["current-jobs-ready"]) == (0, 1)
    assert post(url, "delete-buried", server=0, tube="none", confirm="none").json() == {
        "deleted": 0
    }


def test_failures_are_answered_as_sentences(server: ServerProcess) -> None:
    dead = closed_port()
    with console_at(server.address, dead) as url:
        down = post(url, "put", server=1, tube="x", body="b")
        assert down.status == 502
        assert down.json()["error"].startswith(f"{name_of(dead)}: cannot connect")
        server.drain()
        draining = post(url, "put", server=0, tube="x", body="b")
        assert (draining.status, draining.json()) == (
            409, {"error": f"{name_of(server.address)}: the server is in drain mode and accepts "
                           "no new jobs"}
        )
        too_big = post(url, "put", server=0, tube="x", body="b", priority=2**40)
        assert too_big.status == 400


def test_requests_are_checked(url: str) -> None:
    assert request(f"{url}/api/put", {"server": 0}).status == 403  # no X-Requested-By
    form = request(f"{url}/api/put", b"server=0", headers={
        "X-Requested-By": REQUESTED_BY, "Content-Type": "application/x-www-form-urlencoded"
    })
    assert form.status == 403
    foreign = post(url, "put", headers={"Origin": "https://evil.example"}, server=0, tube="t")
    assert (foreign.status, foreign.json()) == (
        403, {"error": "requests from https://evil.example are not accepted"}
    )
    assert post(url, "put", headers={"Origin": url}, server=0, tube="t", body="").status == 200
    missing = post(url, "put", server=0, tube="t")
    assert (missing.status, missing.json()) == (400, {"error": "body must be a string"})
    not_json = request(f"{url}/api/put", b"{", headers={"X-Requested-By": REQUESTED_BY})
    assert (not_json.status, not_json.json()) == (400, {"error": "the request is not JSON"})
    assert request(f"{url}/api/put", [1], headers={"X-Requested-By": REQUESTED_BY}).status == 400
    assert post(url, "explode", server=0).status == 404
    for server in (5, -1, "x", None, True):
        assert post(url, "kick", server=server, tube="t", bound=1).status == 400
    assert post(url, "kick", server="0", tube="t", bound=1).status == 200
    assert post(url, "kick", server=0, tube="", bound=1).status == 400
    assert post(url, "kick", server=0, tube="t", bound=-1).status == 400
    assert post(url, "kick", server=0, tube="t", bound=1.5).status == 400
    assert post(url, "kick", server=0, tube="t", bound=True).status == 400
    assert request(f"{url}/api/tube?server=9&tube=t").status == 400
    assert request(f"{url}/static/missing.js").status == 404
    # DNS rebinding: a page of another name that resolves here is not served.
    rebound = request(url + "/api/state", headers={"Host": "evil.example"})
    assert rebound.status == 403
    assert "localhost only" in rebound.json()["error"]
    page = request(url + "/")
    assert page.status == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_a_token(server: ServerProcess) -> None:
    with console_at(server.address, access=Access(token=TOKEN)) as url:
        denied = request(url + "/api/state")
        assert denied.status == 401
        assert "token" in denied.json()["error"]
        assert request(url + "/?token=wrong").status == 401
        login = request(url + f"/?token={TOKEN}", follow=False)
        assert (login.status, login.headers["location"]) == (303, "./")
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        session = {"Cookie": cookie.split(";")[0]}
        assert request(url + "/api/state", headers=session).status == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert request(url + "/api/state", headers=bearer).status == 200
        assert post(url, "put", headers=bearer, server=0, tube="t", body="x").status == 200
        # Any Host will do once a token is required.
        assert request(url + "/", headers={**bearer, "Host": "queue.example"}).status == 200
        assert request(url + "/", headers={"Authorization": "Bearer nope"}).status == 401


def test_basic_authentication(server: ServerProcess) -> None:
    def basic(credentials: bytes) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}

    with console_at(server.address, access=Access(user="ops", password="s3cret:x")) as url:
        denied = request(url + "/")
        assert denied.status == 401
        assert denied.headers["www-authenticate"].startswith('Basic realm="greenstalk web"')
        assert request(url + "/", headers=basic(b"ops:s3cret:x")).status == 200
        assert request(url + "/", headers=basic(b"ops:wrong")).status == 401
        assert request(url + "/", headers=basic(b"other:s3cret:x")).status == 401
        assert request(url + "/", headers=basic(b"no colon")).status == 401
        assert request(url + "/", headers={"Authorization": "Basic !!!"}).status == 401
        assert request(url + "/", headers={"Authorization": "Basic " + base64.b64encode(
            b"\xff:\xff").decode()}).status == 401
        assert request(url + f"/?token={TOKEN}").status == 401


def test_the_overview_is_read_once_for_several_pages(
    server: ServerProcess, client: greenstalk.Client[bytes]
) -> None:
    with console_at(server.address, refresh=30) as url:
        before = client.stats()["cmd-list-tubes"]
        for _ in range(3):
            assert request(url + "/api/state").status == 200
        assert client.stats()["cmd-list-tubes"] == before + 1
        post(url, "put", server=0, tube="t", body="x")  # an action reads afresh
        request(url + "/api/state")
        assert client.stats()["cmd-list-tubes"] == before + 2


def test_loopback_names() -> None:
    for host in ("localhost:8080", "127.0.0.1", "127.1.2.3:80", "[::1]:8080", "[::1]",
                 "app.localhost"):
        assert is_loopback_host(host), host
    for host in ("example.com", "10.0.0.1:8080", "[2001:db8::1]:80", "0.0.0.0"):
        assert not is_loopback_host(host), host
    assert is_loopback(("127.0.0.1", 1))
    assert is_loopback(("localhost", 1))
    assert is_loopback("/run/console.sock")
    assert not is_loopback(("", 1))
    assert not is_loopback(("0.0.0.0", 1))
    assert not is_loopback(("no-such-host.invalid", 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9127", ("127.0.0.1", 9127)),
        ("localhost", ("localhost", 8080)),
        (":80", ("", 80)),
        ("[::1]:0", ("::1", 0)),
        ("[::1]", ("::1", 8080)),
        ("unix:/run/web.sock", "/run/web.sock"),
        ("/run/web.sock", "/run/web.sock"),
    ],
)
def test_listen_addresses(text: str, expected: Any) -> None:
    assert parse_listen(text, 8080) == expected


@pytest.mark.parametrize("text", ["", "a b", "::1", "1:99999", "x:y", "[::1]x", "[::1", "unix:"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 (each has its own message)
        parse_listen(text, 8080)


def test_describe_listen() -> None:
    assert describe_listen(("", 80)) == "0.0.0.0:80"
    assert describe_listen(("::1", 80)) == "[::1]:80"
    assert describe_listen("/run/x") == "unix:/run/x"


def test_a_console_needs_a_server() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Console([])


def test_the_page_and_its_files_ship_with_the_package() -> None:
    from importlib import resources

    static = resources.files("greenstalk.ops").joinpath("static")
    for name in ("index.html", "console.js", "console.css"):
        text = static.joinpath(name).read_text(encoding="utf-8")
        # Nothing is loaded from elsewhere.
        assert "http://" not in text
        assert "https://" not in text


# -- the command ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--listen", "0.0.0.0:0"], "refusing to serve the console on 0.0.0.0:0 without --token"),
        (["--listen", ":0"], "without --token or --basic-auth"),
        (["--token", "short"], "the token must be at least 16 characters"),
        (["--basic-auth", "nopassword"], "--basic-auth must be USER:PASSWORD"),
        (["--basic-auth", ":x"], "--basic-auth must be USER:PASSWORD"),
        (["--listen", "[::1"], "bad --listen"),
        (["--refresh", "0"], "refresh must be a number of seconds above 0"),
    ],
)
def test_bad_options(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["web", "-a", "127.0.0.1:1", *arguments]) == 2
    assert message in capsys.readouterr().err


def test_the_command_serves_until_sigterm(server: ServerProcess) -> None:
    command = [
        sys.executable, "-m", "greenstalk", "--timeout", "5", "web", "-a", name_of(server.address),
        "--listen", "127.0.0.1:0", "--token", TOKEN, "--refresh", "2",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        found = re.search(r"serving (http://\S+)/ \(open it as /\?token=TOKEN\) for ", line)
        assert found, line
        url = found.group(1)
        assert request(url + "/").status == 401
        state = request(url + "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
        assert state.json()["refresh"] == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(DEADLINE) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_a_unix_socket(server: ServerProcess, tmp_path: Path) -> None:
    """Behind a proxy on a Unix socket, any Host goes (greenstalk web does not check it there)."""
    path = str(tmp_path / "console.sock")
    console = Console([server.address], check_host=False)
    with served(console.app, path) as where:
        assert where == f"unix:{path}"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(DEADLINE)
            sock.connect(path)
            sock.sendall(b"GET /api/state HTTP/1.0\r\nHost: console.internal\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
    assert reply.split(b"\r\n")[0].endswith(b" 200 OK")


# -- in the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


@pytest.fixture
def greenstalkd() -> Iterator[ServerProcess]:
    with run_server("greenstalkd") as running:
        yield running


@pytest.fixture
def page(
    browser: webdriver.Chrome, greenstalkd: ServerProcess, request: pytest.FixtureRequest
) -> Iterator[webdriver.Chrome]:
    """The console of this test's greenstalkd, open in Chromium; a screenshot at the end."""
    with console_at(greenstalkd.address, refresh=0.25) as url:
        browser.get(url + "/")
        until(lambda: tube_row(browser, "default"), "the page's first update")
        try:
            yield browser
            # No script error, no refused request, nothing the page's policy blocked.
            log: list[dict[str, Any]] = browser.get_log("browser")  # type: ignore[no-untyped-call]
            errors = [entry for entry in log if entry["level"] == "SEVERE"]
            assert errors == []
        finally:
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(ARTEFACTS / f"{request.node.name}.png"))
            browser.get("about:blank")


@pytest.fixture
def producer(greenstalkd: ServerProcess) -> Iterator[greenstalk.Client[bytes]]:
    with greenstalk.Client(greenstalkd.address) as client:
        yield client


def test_a_new_tube_appears_without_a_reload(
    page: webdriver.Chrome, producer: greenstalk.Client[bytes]
) -> None:
    page.execute_script("window.notReloaded = true")
    assert tube_row(page, "arrivals") is None
    producer.use("arrivals")
    producer.put_many([b"1", b"2"])
    until(lambda: cell(page, "arrivals", "ready") == "2", "the new tube's row")
    producer.put(b"3")
    until(lambda: cell(page, "arrivals", "ready") == "3", "the count to update")
    assert page.execute_script("return window.notReloaded") is True
    card = css(page, '#servers .server[data-server="0"]')[0]
    assert "up" in card.text
    assert "1.12" in card.text


def test_kick_a_buried_job(page: webdriver.Chrome, producer: greenstalk.Client[bytes]) -> None:
    producer.use("kickme")
    producer.watch("kickme")
    job_id = producer.put(b"retry me")
    producer.bury(producer.reserve(0))
    open_tube(page, "kickme")
    until(lambda: css(page, "#job-buried dd")[0].text == str(job_id), "the buried job")
    assert "retry me" in css(page, "#job-buried pre")[0].text
    job_button(page, "buried", "kick-job").click()
    until(lambda: producer.stats_job(job_id)["state"] == "ready", "the kick")
    until(lambda: cell(page, "kickme", "buried") == "0", "the buried count to drop")
    until(lambda: "No buried job" in css(page, "#job-buried")[0].text, "the empty buried card")
    assert "kicked job" in page.find_element(By.ID, "notice").text


def test_move_a_job(page: webdriver.Chrome, producer: greenstalk.Client[bytes]) -> None:
    producer.use("source")
    job_id = producer.put(b"move me", priority=123, ttr=77, delay=300)
    open_tube(page, "source")
    until(lambda: css(page, "#job-delayed dd")[0].text == str(job_id), "the delayed job")
    job_button(page, "delayed", "move").click()
    target = until(lambda: page.find_element(By.ID, "move-target"), "the move dialog")
    until(lambda: target.is_displayed(), "the move dialog to open")
    target.send_keys("destination")
    page.find_element(By.ID, "move-ok").click()
    until(lambda: "moved job" in page.find_element(By.ID, "notice").text, "the move")
    producer.use("destination")
    moved = producer.peek_delayed()
    stats = producer.stats_job(moved)
    assert (stats["tube"], stats["state"], stats["pri"], stats["ttr"]) == (
        "destination", "delayed", 123, 77
    )
    assert 240 < stats["time-left"] <= 300
    assert moved.body == b"move me"
    with pytest.raises(greenstalk.NotFoundError):
        producer.stats_job(job_id)
    until(lambda: cell(page, "destination", "delayed") == "1", "the destination's row")


def test_pause_a_tube(page: webdriver.Chrome, producer: greenstalk.Client[bytes]) -> None:
    producer.use("slow")
    producer.put(b"x")
    open_tube(page, "slow")
    seconds = page.find_element(By.ID, "pause-seconds")
    seconds.clear()
    seconds.send_keys("120")
    css(page, "#pause-form button[type=submit]")[0].click()
    until(lambda: producer.stats_tube("slow")["pause"] == 120, "the pause")
    until(lambda: (cell(page, "slow", "pause_time_left") or "").startswith("1m"),
          "the paused column")
    until(lambda: page.find_element(By.ID, "tube-counts").get_attribute("data-paused") == "yes",
          "the panel to say paused")
    page.find_element(By.ID, "unpause").click()
    until(lambda: producer.stats_tube("slow")["pause"] == 0, "the unpause")
    until(lambda: cell(page, "slow", "pause_time_left") == "\u2013", "the paused column to clear")


def test_put_then_delete_all_buried_after_confirming(
    page: webdriver.Chrome, producer: greenstalk.Client[bytes]
) -> None:
    producer.use("failing")
    producer.put(b"seed")
    open_tube(page, "failing")
    page.find_element(By.ID, "put-body").send_keys("from the browser")
    priority = page.find_element(By.ID, "put-priority")
    priority.clear()
    priority.send_keys("42")
    css(page, "#put-form button[type=submit]")[0].click()
    until(lambda: "put job" in page.find_element(By.ID, "notice").text, "the put")
    found = int(page.find_element(By.ID, "notice").text.split()[2])
    assert producer.peek(found).body == b"from the browser"
    assert producer.stats_job(found)["pri"] == 42
    producer.watch("failing")
    for _ in range(2):
        producer.bury(producer.reserve(0))
    until(lambda: cell(page, "failing", "buried") == "2", "the buried count")
    delete_all = page.find_element(By.ID, "delete-buried")
    until(lambda: delete_all.is_enabled(), "the delete button")
    delete_all.click()
    until(lambda: page.find_element(By.ID, "confirm-dialog").is_displayed(), "the question")
    assert "Delete all 2 buried jobs of tube failing" in page.find_element(
        By.ID, "confirm-text").text
    page.find_element(By.ID, "confirm-cancel").click()
    until(lambda: not page.find_element(By.ID, "confirm-dialog").is_displayed(), "the cancel")
    assert producer.stats_tube("failing")["current-jobs-buried"] == 2
    delete_all.click()
    until(lambda: page.find_element(By.ID, "confirm-dialog").is_displayed(), "the question")
    page.find_element(By.ID, "confirm-ok").click()
    until(lambda: producer.stats_tube("failing")["current-jobs-buried"] == 0, "the deletion")
    until(lambda: cell(page, "failing", "buried") == "0", "the row to update")


def test_delete_one_job(page: webdriver.Chrome, producer: greenstalk.Client[bytes]) -> None:
    producer.use("single")
    job_id = producer.put(b"delete me")
    open_tube(page, "single")
    job_button(page, "ready", "delete").click()
    until(lambda: page.find_element(By.ID, "confirm-dialog").is_displayed(), "the question")
    assert f"Delete job {job_id}?" in page.find_element(By.ID, "confirm-text").text
    page.find_element(By.ID, "confirm-ok").click()
    eventually(lambda: producer.stats_tube("single")["current-jobs-ready"] == 0, "the delete")


def test_several_servers_in_one_view_sorted(
    browser: webdriver.Chrome, greenstalkd: ServerProcess, request: pytest.FixtureRequest
) -> None:
    dead = closed_port()
    with run_server("greenstalkd") as other, console_at(
        greenstalkd.address, other.address, dead, refresh=0.25
    ) as url, greenstalk.Client(greenstalkd.address, use="alpha") as first, greenstalk.Client(
        other.address, use="beta"
    ) as second:
        first.put_many([b"a"] * 3)
        second.put_many([b"b"] * 5)
        browser.get(url + "/")
        until(lambda: cell(browser, "alpha", "ready", 0) == "3", "the first server's tube")
        until(lambda: cell(browser, "beta", "ready", 1) == "5", "the second server's tube")
        cards = css(browser, "#servers .server")
        assert [card.get_attribute("class") for card in cards] == [
            "server up", "server up", "server down"
        ]
        assert "Connection refused" in cards[2].text

        def order() -> list[str]:
            return [row.get_attribute("data-tube") or "" for row in
                    css(browser, "#tubes tbody tr")]

        css(browser, '#tubes th[data-key="ready"] button')[0].click()
        until(lambda: order()[:2] == ["beta", "alpha"], "the rows sorted by ready")
        css(browser, '#tubes th[data-key="ready"] button')[0].click()
        until(lambda: order()[-2:] == ["alpha", "beta"], "the order reversed")
        assert css(browser, '#tubes th[data-key="ready"]')[0].get_attribute(
            "aria-sort") == "ascending"
        browser.find_element(By.ID, "filter").send_keys("bet")
        until(lambda: order() == ["beta"], "the filter")
        assert "1 of 4 tubes" in browser.find_element(By.ID, "tube-count").text
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTEFACTS / f"{request.node.name}.png"))
        browser.get("about:blank")


# -- failures on the server's side ------------------------------------------------------------


@pytest.mark.parametrize("state", ["delayed", "buried"])
def test_a_move_that_cannot_put_puts_the_job_back(
    url: str, server: ServerProcess, client: greenstalk.Client[bytes], state: str
) -> None:
    client.use("source")
    job_id = client.put(b"stay", priority=321, ttr=30, delay=300 if state == "delayed" else 0)
    if state == "buried":
        client.reserve_job(job_id)
        client.bury(job_id, 321)
    server.drain()
    refused = post(url, "move", server=0, id=job_id, to="target")
    assert refused.status == 409
    assert "drain mode" in refused.json()["error"]
    stats = client.stats_job(job_id)
    assert (stats["tube"], stats["state"], stats["pri"], stats["ttr"]) == (
        "source", state, 321, 30
    )
    if state == "delayed":
        assert 250 < stats["time-left"] <= 300


def test_a_job_too_big(start_server: StartServer) -> None:
    small = start_server(args=("-z", "10"))
    with console_at(small.address) as url:
        refused = post(url, "put", server=0, tube="t", body="x" * 20)
    assert (refused.status, refused.json()) == (
        409, {"error": f"{name_of(small.address)}: the job is larger than the server's "
                       "max-job-size"}
    )


def test_aiohttp_refusals_carry_the_security_headers(url: str) -> None:
    wrong_method = request(url + "/api/put")
    assert wrong_method.status == 405
    assert wrong_method.headers["x-content-type-options"] == "nosniff"
    nowhere = request(url + "/nowhere")
    assert nowhere.status == 404
    assert "content-security-policy" in nowhere.headers


def yaml(text: str) -> bytes:
    body = ("---\n" + text).encode()
    return b"OK %d\r\n%s\r\n" % (len(body), body)


def job_yaml(job_id: int, state: str) -> str:
    return (
        f"id: {job_id}\ntube: t\nstate: {state}\npri: 1\nage: 3\ndelay: 0\nttr: 60\n"
        "time-left: 0\nfile: 0\nreserves: 0\ntimeouts: 0\nreleases: 0\nburies: 1\nkicks: 0\n"
    )


TUBE_YAML = (
    "name: t\ncurrent-jobs-urgent: 0\ncurrent-jobs-ready: 1\ncurrent-jobs-reserved: 0\n"
    "current-jobs-delayed: 0\ncurrent-jobs-buried: 1\ntotal-jobs: 2\ncurrent-using: 0\n"
    "current-watching: 0\ncurrent-waiting: 0\ncmd-delete: 0\ncmd-pause-tube: 0\npause: 0\n"
    "pause-time-left: 0\n"
)


def run_console(fake: FakeServer, work: Callable[[ServerLink], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        link = ServerLink(fake.address, DEADLINE)
        try:
            return await work(link)
        finally:
            await link.close()

    return asyncio.run(main())


def test_jobs_that_vanish_while_the_console_looks() -> None:
    script: list[Step] = [
        Expect(b"stats-tube t\r\n"),
        Send(yaml(TUBE_YAML)),
        Expect(b"use t\r\n"),
        Send(b"USING t\r\n"),
        Expect(b"peek-ready\r\npeek-delayed\r\npeek-buried\r\nuse default\r\n"),
        Send(b"FOUND 5 1\r\nx\r\nNOT_FOUND\r\nFOUND 6 1\r\ny\r\nUSING default\r\n"),
        Expect(b"stats-job 5\r\nstats-job 6\r\n"),
        Send(b"NOT_FOUND\r\n" + yaml(job_yaml(6, "buried"))),
    ]
    with FakeServer(script) as fake:
        view = run_console(fake, lambda link: _console.tube_view(link, "t"))
    assert view["jobs"]["ready"] is None  # deleted between the peek and stats-job
    assert view["jobs"]["delayed"] is None
    assert view["jobs"]["buried"]["id"] == 6


def test_buried_jobs_taken_while_deleting_them() -> None:
    script: list[Step] = [
        Expect(b"stats-tube t\r\n"),
        Send(yaml(TUBE_YAML)),
        Expect(b"use t\r\n"),
        Send(b"USING t\r\n"),
        Expect(b"peek-buried\r\n"),
        Send(b"FOUND 7 1\r\nz\r\n"),
        Expect(b"delete 7\r\npeek-buried\r\n"),
        Send(b"NOT_FOUND\r\nNOT_FOUND\r\n"),
        Expect(b"use default\r\n"),
        Send(b"USING default\r\n"),
    ]
    with FakeServer(script) as fake:
        assert run_console(fake, lambda link: _console.delete_buried(link, "t")) == {
            "deleted": 0
        }


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        # beanstalkd before 1.12 has no reserve-job.
        (b"UNKNOWN_COMMAND\r\n", "the server has no reserve-job command"),
        (b"NOT_FOUND\r\n", "job 5 was taken by a worker meanwhile"),
    ],
)
def test_a_move_that_cannot_take_the_job(reply: bytes, message: str) -> None:
    script: list[Step] = [
        Expect(b"stats-job 5\r\n"),
        Send(yaml(job_yaml(5, "ready"))),
        Expect(b"use elsewhere\r\n"),
        Send(b"USING elsewhere\r\n"),
        Expect(b"reserve-job 5\r\n"),
        Send(reply),
    ]
    with FakeServer(script) as fake, pytest.raises(_console.ConsoleError, match=message):
        run_console(fake, lambda link: _console.move(link, 5, "elsewhere"))


# -- the command's choices ---------------------------------------------------------------


def test_a_password_lets_the_console_listen_anywhere(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(make_app: Any, listen: Any, started: Any) -> None:
        seen["console"] = asyncio.run(make_app())[APP_KEY]
        seen["listen"] = listen

    monkeypatch.setattr("greenstalk.cli._ops._serve", fake_serve)
    code = main(["web", "-a", name_of(server.address), "--listen", ":0",
                 "--basic-auth", "ops:pass:word"])
    assert code == 0
    console = seen["console"]
    assert console.access == Access(None, "ops", "pass:word")
    assert (console.check_host, console.timeout, seen["listen"]) == (True, 10.0, ("", 0))
    main(["web", "-a", name_of(server.address), "--listen", "unix:/tmp/x.sock"])
    assert seen["console"].check_host is False


def test_other_import_errors_are_not_taken_for_a_missing_extra() -> None:
    def load() -> None:
        raise ImportError("something else", name="yaml")

    with pytest.raises(ImportError, match="something else"):
        _ops_import(load)
