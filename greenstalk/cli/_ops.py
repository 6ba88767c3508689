"""``greenstalk exporter`` and ``greenstalk web``: the operations commands (the ``ops`` extra).

prometheus_client and aiohttp are imported when one of these commands
runs, never when the command line starts.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Sequence
from typing import Any, Callable

import click
from click.core import ParameterSource

from .. import describe_address
from .._address import TextAddress
from . import EXIT_FAILURE, EXIT_USAGE
from ._common import Failure, OneOf, Seconds, Settings

OPS_EXTRA = "this command needs the ops extra: pip install 'greenstalk[ops]'"
LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TOKEN_MINIMUM = 16

addresses_option = click.option(
    "--address",
    "-a",
    "addresses",
    multiple=True,
    metavar="ADDRESS",
    help="A server: host:port, host (port 11300) or a Unix socket path; repeat it, or separate "
    "addresses with commas, for several [default: $BEANSTALKD_ADDRESS, else 127.0.0.1:11300].",
)
log_level_option = click.option(
    "--log-level",
    type=OneOf("log level", LOG_LEVELS),
    default="warning",
    metavar="LEVEL",
    help="Log messages of LEVEL and above on stderr: debug, info, warning or error "
    "[default: warning].",
)


def _servers(settings: Settings, addresses: Sequence[str]) -> list[TextAddress]:
    """The servers of this command's -a and greenstalk's own --address together, else those
    of ``$BEANSTALKD_ADDRESS``, else the default; read as every command reads them.

    Raises Failure (exit 2) for text that is not an address, or a server given twice.
    """
    settings.addresses.extend(addresses)
    return settings.servers()


def _timeout(ctx: click.Context, settings: Settings, given: float | None, default: float) -> float:
    """This command's --timeout, else greenstalk's own (before the command) when given,
    else ``default``."""
    if given is not None:
        return given
    parent = ctx.parent
    if parent is not None and parent.get_parameter_source("timeout") is ParameterSource.COMMANDLINE:
        return settings.timeout
    return default


def _listen(text: str, default_port: int) -> Any:
    from ..ops._links import parse_listen

    try:
        return parse_listen(text, default_port)
    except ValueError as error:
        raise Failure(f"bad --listen: {error}", EXIT_USAGE) from None


def _regex(text: str | None, option: str) -> re.Pattern[str] | None:
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as error:
        raise Failure(f"bad {option}: {text!r} is not a regular expression: {error}",
                      EXIT_USAGE) from None


def _log(level: str) -> None:
    """Send the ops modules' log messages to stderr (unless logging is set up already)."""
    logger = logging.getLogger("greenstalk.ops")
    logger.setLevel(LOG_LEVELS[level])
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger.addHandler(handler)


def _ops_import(load: Callable[[], Any]) -> Any:
    """``load()``, which imports the ops modules; their missing libraries become a usage error."""
    try:
        return load()
    except ImportError as error:
        if (error.name or "").partition(".")[0] in ("prometheus_client", "aiohttp"):
            raise Failure(OPS_EXTRA, EXIT_USAGE) from None
        raise


def _serve(make_app: Any, listen: Any, started: Callable[[list[str]], None]) -> None:
    """Serve until SIGTERM or Ctrl-C; a listen address that cannot be bound exits 1."""
    from ..ops._http import run_until_signalled
    from ..ops._links import describe_listen

    try:
        run_until_signalled(make_app, listen, started)
    except OSError as error:
        reason = error.strerror or str(error)
        raise Failure(f"cannot listen on {describe_listen(listen)}: {reason}",
                      EXIT_FAILURE) from None


@click.command(short_help="Serve Prometheus metrics of beanstalkd servers.")
@addresses_option
@click.option("--listen", "-l", default="127.0.0.1:9127", show_default=True, metavar="HOST:PORT",
              help="Where to serve /metrics: HOST:PORT, :PORT for every interface, or a Unix "
              "socket path.")
@click.option("--names", type=OneOf("names", ("prometheus", "messagebird")),
              default="prometheus", metavar="NAMES",
              help="prometheus: Prometheus' conventions (beanstalkd_ prefix, a server label); "
              "messagebird: the names of messagebird/beanstalkd_exporter 1.0.5 "
              "[default: prometheus].")
@click.option("--tubes", metavar="REGEX",
              help="Export only the tubes whose whole name matches REGEX.")
@click.option("--exclude-tubes", metavar="REGEX",
              help="Leave out the tubes whose whole name matches REGEX.")
@click.option("--mapping-config", "mapping", metavar="FILE",
              help="A mapping file (beanstalkd_exporter's format) that turns tube names into "
              "labels; read again when it changes.")
@click.option("--timeout", type=Seconds("timeout"), metavar="SECONDS",
              help="Give up on a server after SECONDS per scrape: it then has "
              "beanstalkd_up 0 [default: 5].")
@log_level_option
@click.pass_context
def exporter(
    ctx: click.Context,
    addresses: tuple[str, ...],
    listen: str,
    names: str,
    tubes: str | None,
    exclude_tubes: str | None,
    mapping: str | None,
    timeout: float | None,
    log_level: str,
) -> None:
    """Serve Prometheus metrics of one or several beanstalkd servers.

    Each request for /metrics reads every server at once, over one
    connection per server; a server that cannot be read has beanstalkd_up 0.
    --names messagebird gives the names, types and labels of
    messagebird/beanstalkd_exporter 1.0.5, for the dashboards made for it.
    Runs until SIGTERM or Ctrl-C.
    """
    settings = ctx.find_object(Settings) or Settings()
    servers = _servers(settings, addresses)
    where = _listen(listen, 9127)
    include = _regex(tubes, "--tubes")
    exclude = _regex(exclude_tubes, "--exclude-tubes")
    seconds = _timeout(ctx, settings, timeout, 5.0)
    _log(log_level)

    def load() -> Any:
        from ..ops._mapping import MappingError
        from ..ops._scrape import TubeFilter
        from ..ops.exporter import Exporter

        try:
            return Exporter(servers, names=names, tubes=TubeFilter(include, exclude),
                            mapping=mapping, timeout=seconds)
        except MappingError as error:
            raise Failure(str(error), EXIT_USAGE) from None

    the_exporter = _ops_import(load)

    async def make_app() -> Any:
        return the_exporter.app()

    def started(urls: list[str]) -> None:
        shown = ", ".join(url + "/metrics" if url.startswith("http") else url for url in urls)
        listed = ", ".join(describe_address(server) for server in servers)
        click.echo(f"greenstalk exporter: serving {shown} ({names} names) for {listed}",
                   err=True)

    _serve(make_app, where, started)


@click.command(short_help="Serve a web console for beanstalkd servers.")
@addresses_option
@click.option("--listen", "-l", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Where to serve the console: HOST:PORT, :PORT for every interface, or a Unix "
              "socket path. Anything but loopback needs --token or --basic-auth.")
@click.option("--token", envvar="GREENSTALK_WEB_TOKEN", metavar="TOKEN",
              help="Require this token: open the console as /?token=TOKEN, or send "
              "Authorization: Bearer TOKEN [env: GREENSTALK_WEB_TOKEN].")
@click.option("--basic-auth", envvar="GREENSTALK_WEB_BASIC_AUTH", metavar="USER:PASSWORD",
              help="Require this user and password (HTTP basic authentication; use it over "
              "HTTPS) [env: GREENSTALK_WEB_BASIC_AUTH].")
@click.option("--refresh", type=Seconds("refresh"), default=1.0, metavar="SECONDS",
              help="How often the page updates [default: 1].")
@click.option("--timeout", type=Seconds("timeout"), metavar="SECONDS",
              help="Give up on a silent server after SECONDS [default: 10].")
@log_level_option
@click.pass_context
def web(
    ctx: click.Context,
    addresses: tuple[str, ...],
    listen: str,
    token: str | None,
    basic_auth: str | None,
    refresh: float,
    timeout: float | None,
    log_level: str,
) -> None:
    """Serve a web console for one or several beanstalkd servers.

    It shows every tube of every server, live, and lets you put, kick,
    delete, move and pause. It listens on loopback unless given a token or a
    password: anyone who reaches it can delete jobs. Runs until SIGTERM or
    Ctrl-C.
    """
    settings = ctx.find_object(Settings) or Settings()
    servers = _servers(settings, addresses)
    where = _listen(listen, 8080)
    seconds = _timeout(ctx, settings, timeout, 10.0)
    if token is not None and len(token) < TOKEN_MINIMUM:
        raise Failure(
            f"the token must be at least {TOKEN_MINIMUM} characters long (make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())')",
            EXIT_USAGE,
        )
    user = password = None
    if basic_auth is not None:
        user, colon, password = basic_auth.partition(":")
        if not colon or not user or not password:
            raise Failure("--basic-auth must be USER:PASSWORD, both non-empty", EXIT_USAGE)
    _log(log_level)

    def load() -> Any:
        from ..ops._links import is_loopback
        from ..ops.web import Access, Console

        access = Access(token, user, password)
        if access.open and not is_loopback(where):
            raise Failure(
                f"refusing to serve the console on {listen} without --token or --basic-auth: "
                "anyone who can reach it could delete jobs (listen on 127.0.0.1, or set one)",
                EXIT_USAGE,
            )
        return Console(servers, access=access, check_host=not isinstance(where, str),
                       refresh=refresh, timeout=seconds)

    console = _ops_import(load)

    async def make_app() -> Any:
        return console.app()

    def started(urls: list[str]) -> None:
        shown = ", ".join(url + "/" if url.startswith("http") else url for url in urls)
        listed = ", ".join(describe_address(server) for server in servers)
        login = " (open it as /?token=TOKEN)" if token else ""
        click.echo(f"greenstalk web: serving {shown}{login} for {listed}", err=True)

    _serve(make_app, where, started)
