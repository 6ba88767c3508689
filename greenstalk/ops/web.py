"""The web console behind ``greenstalk web``: an aiohttp application and a static page.

The page (``static/``: HTML, one script, one style sheet; no build step,
nothing fetched from elsewhere) polls a small JSON API:

* ``GET api/state``: every server, its main statistics and its tubes' counts;
* ``GET api/tube?server=N&tube=NAME``: a tube's counts and its next ready,
  next delayed and oldest buried job;
* ``POST api/ACTION`` with a JSON object: ``put``, ``kick``, ``kick-job``,
  ``delete``, ``pause``, ``move``, ``delete-buried``.

Servers are numbered in the order they were given. Every reply is JSON; a
failure is ``{"error": "..."}`` with a 4xx or 5xx status.

Security: with neither a token nor a password the console only serves
requests whose ``Host`` is a loopback name or address (so that a web page
cannot reach it by DNS rebinding); the command line refuses to listen
elsewhere without one. Every ``POST`` must carry ``Content-Type:
application/json`` and ``X-Requested-By: greenstalk-web``, which a page of
another site cannot send without the console's consent (it gives none), and
an ``Origin``, when there is one, must be the console's own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hmac
import ipaddress
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from .. import (
    BeanstalkdError,
    ClientConnectionError,
    DrainingError,
    JobTooBigError,
    OutOfMemoryError,
)
from .._address import TextAddress
from . import _console
from ._console import ConsoleError, Json
from ._links import ServerLink

DEFAULT_PORT = 8080
DEFAULT_REFRESH = 1.0
DEFAULT_TIMEOUT = 10.0
STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "greenstalk_web_token"
REQUESTED_BY = "greenstalk-web"
# What the pages may load and do: only this site's own files, no framing.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

APP_KEY: web.AppKey[Console] = web.AppKey("console")
"""Where :meth:`Console.app` keeps its console in the application."""
# What the server's refusals mean, for people.
_REFUSALS: dict[type[BeanstalkdError], str] = {
    DrainingError: "the server is in drain mode and accepts no new jobs",
    JobTooBigError: "the job is larger than the server's max-job-size",
    OutOfMemoryError: "the server is out of memory",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass(frozen=True)
class Access:
    """Who may use the console: a token, a user and password, or (neither) loopback clients."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def open(self) -> bool:
        """True when no credential is required (the console must then listen on loopback)."""
        return self.token is None and self.password is None

    def allows(self, request: web.Request) -> bool:
        """Whether ``request`` carries the token (header or cookie) or the password."""
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if self.token is not None:
            offered = request.cookies.get(TOKEN_COOKIE)
            if scheme.lower() == "bearer":
                offered = credentials.strip()
            if offered is not None and _same(offered, self.token):
                return True
        if self.password is not None and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, colon, password = decoded.partition(":")
            return bool(colon) and _same(user, self.user or "") and _same(password, self.password)
        return False


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode("utf-8"), expected.encode("utf-8"))


def is_loopback_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine: localhost or a loopback address."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Console:
    """The console for one or several servers.

    ``access`` says who may use it (see :class:`Access`); ``check_host``
    restricts an open console to requests addressed to a loopback name.
    ``refresh`` is how often, in seconds, the page updates; ``timeout``
    bounds each command to a server. Raises ValueError without addresses.
    Make it anywhere; use it in one event loop.
    """

    def __init__(
        self,
        addresses: Sequence[TextAddress],
        *,
        access: Access | None = None,
        check_host: bool = True,
        refresh: float = DEFAULT_REFRESH,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not addresses:
            raise ValueError("give at least one server address")
        self.addresses = list(addresses)
        self.access = access or Access()
        self.check_host = check_host
        self.refresh = refresh
        self.timeout = timeout
        self._links: list[ServerLink] | None = None
        # The last overview of each server, and when it was read: several
        # open pages share one read per half refresh.
        self._overviews: dict[int, tuple[float, asyncio.Future[Json]]] = {}

    @property
    def links(self) -> list[ServerLink]:
        """The servers, each with its connection (made on first use, in the running loop)."""
        if self._links is None:
            self._links = [ServerLink(address, self.timeout) for address in self.addresses]
        return self._links

    async def close(self) -> None:
        """Close every server's connection."""
        for link in self._links or ():
            await link.close()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(middlewares=[self._guard])
        app[APP_KEY] = self
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/state", self._state)
        app.router.add_get("/api/tube", self._tube)
        app.router.add_post("/api/{action}", self._act)

        async def close(app: web.Application) -> None:
            await self.close()

        app.on_cleanup.append(close)
        return app

    # -- guarding every request ---------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            self._check(request)
            if self._logging_in(request):
                response = self._token_login(request)
            else:
                response = await handler(request)
        except _Refused as refusal:
            response = web.json_response(
                {"error": refusal.message}, status=refusal.status, headers=refusal.headers
            )
        except web.HTTPException as error:  # aiohttp's own: no such file, wrong method
            _secure(error.headers)
            raise
        _secure(response.headers)
        return response

    def _check(self, request: web.Request) -> None:
        """Raises an HTTP error response for a request the console must not serve."""
        if self.access.open:
            if self.check_host and not is_loopback_host(request.host):
                raise _Refused(
                    403,
                    f"this console answers requests for localhost only, not {request.host!r}: "
                    "give it a token or a password to serve other names",
                )
        elif not self.access.allows(request) and not self._logging_in(request):
            headers = {}
            if self.access.password is not None:
                headers["WWW-Authenticate"] = 'Basic realm="greenstalk web", charset="UTF-8"'
            message = "log in with the console's password" if self.access.password else (
                "open the console as /?token=TOKEN (or send Authorization: Bearer TOKEN)"
            )
            raise _Refused(401, message, headers)
        if request.method == "POST":
            if request.headers.get("X-Requested-By") != REQUESTED_BY or (
                request.content_type != "application/json"
            ):
                raise _Refused(
                    403,
                    f"requests that change anything need Content-Type: application/json and "
                    f"X-Requested-By: {REQUESTED_BY}",
                )
            origin = request.headers.get("Origin")
            if origin is not None and origin not in (
                f"http://{request.host}",
                f"https://{request.host}",
            ):
                raise _Refused(403, f"requests from {origin} are not accepted")

    def _logging_in(self, request: web.Request) -> bool:
        """Whether ``request`` is ``/?token=...`` to a console that takes a token."""
        return self.access.token is not None and request.path == "/" and "token" in request.query

    def _token_login(self, request: web.Request) -> web.StreamResponse:
        """``/?token=TOKEN``: keep the token in a cookie, and show the page without it."""
        token = request.query["token"]
        if not _same(token, self.access.token or ""):
            raise _Refused(401, "wrong token")
        response = web.Response(status=303, headers={"Location": "./"})
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/",
            secure=request.secure,
        )
        return response

    # -- reading --------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _state(self, request: web.Request) -> web.StreamResponse:
        servers = await asyncio.gather(*(self._overview(index) for index in range(len(self.links))))
        return web.json_response({"refresh": self.refresh, "servers": servers})

    async def _overview(self, index: int) -> Json:
        """The server's overview, read at most once per half refresh whoever asks."""
        now = time.monotonic()
        cached = self._overviews.get(index)
        if cached is None or now - cached[0] >= self.refresh / 2:
            future = asyncio.ensure_future(_console.overview(self.links[index]))
            self._overviews[index] = cached = (now, future)
        view = dict(await asyncio.shield(cached[1]))
        view["index"] = index
        return view

    async def _tube(self, request: web.Request) -> web.StreamResponse:
        link = self._link(request.query.get("server"))
        tube = request.query.get("tube", "")
        return await self._answer(link, _console.tube_view(link, tube))

    # -- acting ---------------------------------------------------------------------

    async def _act(self, request: web.Request) -> web.StreamResponse:
        try:
            data = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "the request is not JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, "the request must be a JSON object")
        action = request.match_info["action"]
        link = self._link(data.get("server"))
        fields = _Fields(data)
        work: Awaitable[Json]
        if action == "put":
            work = _console.put(
                link, fields.text("tube"), fields.text("body", allow_empty=True).encode("utf-8"),
                fields.number("priority", 2**16), fields.number("delay", 0),
                fields.number("ttr", 60),
            )
        elif action == "kick":
            work = _console.kick(link, fields.text("tube"), fields.number("bound"))
        elif action == "kick-job":
            work = _console.kick_job(link, fields.number("id"))
        elif action == "delete":
            work = _console.delete(link, fields.number("id"))
        elif action == "pause":
            work = _console.pause(link, fields.text("tube"), fields.number("seconds"))
        elif action == "move":
            work = _console.move(link, fields.number("id"), fields.text("to"))
        elif action == "delete-buried":
            tube = fields.text("tube")
            if fields.text("confirm") != tube:
                raise _Refused(
                    400,
                    "deleting every buried job needs confirm set to the tube's name",
                )
            work = _console.delete_buried(link, tube)
        else:
            raise _Refused(404, f"no such action: {action}")
        try:
            return await self._answer(link, work)
        finally:
            self._overviews.clear()  # the next overview shows what this changed

    def _link(self, value: object) -> ServerLink:
        """The server numbered ``value`` (a number, or its text). Raises HTTP 400 otherwise."""
        text = str(value) if value is not None else ""
        if isinstance(value, int) and not isinstance(value, bool):
            text = str(value)
        if not (text.isascii() and text.isdigit()) or int(text) >= len(self.links):
            raise _Refused(400, f"no server numbered {value!r}")
        return self.links[int(text)]

    async def _answer(self, link: ServerLink, work: Awaitable[Json]) -> web.StreamResponse:
        """Run ``work`` and answer with its result, or with its failure as a sentence."""
        try:
            return web.json_response(await work)
        except ConsoleError as error:
            return _error(error.status, error.message)
        except (ValueError, TypeError) as error:  # an argument the client refused
            return _error(400, str(error))
        except ClientConnectionError as error:
            await link.close()
            return _error(502, f"{link.name}: {error}")
        except BeanstalkdError as error:
            return _error(409, f"{link.name}: {_REFUSALS.get(type(error), type(error).__name__)}")


class _Fields:
    """The fields of a request's JSON object, checked."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def text(self, name: str, allow_empty: bool = False) -> str:
        value = self.data.get(name)
        if not isinstance(value, str) or not (value or allow_empty):
            kind = "a string" if allow_empty else "a non-empty string"
            raise _Refused(400, f"{name} must be {kind}")
        return value

    def number(self, name: str, default: int | None = None) -> int:
        value = self.data.get(name, default)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _Refused(400, f"{name} must be a whole number of at least 0")
        return value


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class _Refused(Exception):
    """A request refused: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _secure(headers: Any) -> None:
    for name, value in _SECURITY_HEADERS.items():
        headers.setdefault(name, value)
