"""Helpers of the exporter's and the web console's tests: serving an app from a thread, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Callable

from aiohttp import web

from greenstalk.ops._http import serve
from greenstalk.ops._links import ListenAddress

# Generous: the CI machine has two cores shared with other work.
DEADLINE = 30.0


@dataclasses.dataclass
class Reply:
    """An HTTP reply: status, headers (names in lower case), body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


# No proxy from the environment: the servers are on this machine.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def request(
    url: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    follow: bool = True,
) -> Reply:
    """Send a request (``data``, when given, as JSON in a POST) and return the reply.

    Error statuses are returned, not raised.
    """
    body = None
    all_headers = dict(headers or {})
    if data is not None:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        all_headers.setdefault("Content-Type", "application/json")
    sent = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    opener = _OPENER if follow else _NO_REDIRECT
    try:
        with opener.open(sent, timeout=DEADLINE) as response:
            return Reply(
                response.status,
                {name.lower(): value for name, value in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return Reply(
                error.code,
                {name.lower(): value for name, value in error.headers.items()},
                error.read(),
            )


@contextlib.contextmanager
def served(
    make_app: Callable[[], web.Application], listen: ListenAddress = ("127.0.0.1", 0)
) -> Iterator[str]:
    """Serve the app ``make_app`` makes (in the serving loop) from a thread; yields its URL."""
    loop = asyncio.new_event_loop()
    urls: list[str] = []
    started = threading.Event()
    stop: list[asyncio.Event] = []
    failure: list[BaseException] = []

    async def app() -> web.Application:
        return make_app()

    def listening(found: list[str]) -> None:
        urls.extend(found)
        started.set()

    async def main() -> None:
        stop.append(asyncio.Event())
        await serve(app, listen, listening, stop[0])

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as error:
            failure.append(error)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="ops-app", daemon=True)
    thread.start()
    assert started.wait(DEADLINE), "the app did not start"
    if failure:
        raise failure[0]
    try:
        yield urls[0]
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(DEADLINE)
        assert not thread.is_alive(), "the app did not stop"


def eventually(check: Callable[[], Any], what: str, seconds: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns something true (returned), or fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except AssertionError as error:
            last = error
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {seconds} s") from last
