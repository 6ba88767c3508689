"""What the commands share: settings, errors, parameter types, consoles, tables, completion."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import socket
import sys
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from click.shell_completion import CompletionItem
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from .. import (
    DEFAULT_TUBE,
    BeanstalkdError,
    BuriedError,
    Client,
    ClientConnectionError,
    DrainingError,
    Error,
    JobTooBigError,
    NotFoundError,
    OutOfMemoryError,
    StatsTube,
    aio,
    describe_address,
    parse_address,
)
from .._address import ADDRESS_VARIABLE, DEFAULT_ADDRESS, TextAddress
from .._protocol.commands import U32_MAX, U64_MAX, check_tube
from . import EXIT_CONNECTION, EXIT_FAILURE, EXIT_USAGE

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
# Output that is not a terminal is not wrapped at 80 columns: lines stay whole for scripts.
PLAIN_WIDTH = 1000
# Shell completion runs while someone waits at a prompt: it gives up on the server sooner.
COMPLETION_TIMEOUT = 2.0


class Failure(Exception):
    """An expected failure: reported as one line on stderr, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def connection_reason(error: ClientConnectionError) -> str:
    """Why a connection failed: the system's error underneath ``error`` when there is one.

    The messages above it may name the address, even as a Python value
    (``('127.0.0.1', 1)``, asyncio's "Connect call failed"); callers name
    it as text themselves, so the reason is the error number's own text.
    """
    reason: BaseException = error
    cause = error.__cause__
    while cause is not None:
        if isinstance(cause, OSError) and not isinstance(cause, Error):
            reason = cause
        cause = cause.__cause__
    if (
        isinstance(reason, OSError)
        and reason.errno
        and not isinstance(reason, (Error, socket.gaierror))  # their numbers are not errno's
    ):
        return f"[Errno {reason.errno}] {os.strerror(reason.errno)}"
    return str(reason)


def connection_failure(address: object, error: ClientConnectionError) -> Failure:
    """The Failure (exit 3) for a connection to ``address`` that could not be made."""
    return Failure(
        f"cannot connect to {address_text(address)}: {connection_reason(error)}", EXIT_CONNECTION
    )


def address_text(address: object) -> str:
    """``host:port`` or ``unix:PATH`` for an address; a socket handed in is "a socket"."""
    if isinstance(address, (str, tuple)):
        return describe_address(address)
    return "a socket"


def servers_text(addresses: Iterable[TextAddress]) -> str:
    """Addresses as text, separated by commas."""
    return ", ".join(address_text(address) for address in addresses)


@dataclasses.dataclass
class Settings:
    """The global options, which may be given before or after the command's name."""

    #: ``--address`` as given, each maybe a comma-separated list; empty to use
    #: ``$BEANSTALKD_ADDRESS``.
    addresses: list[str] = dataclasses.field(default_factory=list)
    #: ``--json``: print JSON documents instead of tables.
    json: bool = False
    #: ``--timeout``: seconds to wait for the server, to connect and for each reply.
    timeout: float = DEFAULT_TIMEOUT
    #: The address of the last connection made, for error messages.
    connected_to: TextAddress | None = None
    #: ``--server``: the one of several servers a command works on.
    server: str | None = None
    #: The name of the command when it works on one server and offers ``--server``.
    one_server_command: str | None = None

    @property
    def address_given(self) -> bool:
        """True when ``--address`` or ``$BEANSTALKD_ADDRESS`` names a server."""
        return bool(self.addresses) or bool(os.environ.get(ADDRESS_VARIABLE))

    def servers(self) -> list[TextAddress]:
        """Every server: ``--address`` (repeated, or comma-separated), else
        ``$BEANSTALKD_ADDRESS`` (comma-separated), else the default; only
        ``--server``'s when it is given.

        Raises :class:`Failure` (exit 2) for text that is not an address, a
        server listed twice, or a ``--server`` that is not one of them.
        """
        source = "--address" if self.addresses else f"${ADDRESS_VARIABLE}"
        texts = self.addresses or [os.environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS]
        found: list[TextAddress] = []
        try:
            for text in texts:
                # Text without a comma is one address, even an empty one (a usage error).
                parts = [part for part in text.split(",") if part.strip()] if "," in text else [
                    text
                ]
                found.extend(parse_address(part) for part in parts)
        except ValueError as error:
            raise Failure(f"bad {source}: {error}", EXIT_USAGE) from None
        if not found:
            raise Failure(f"bad {source}: no server address given", EXIT_USAGE)
        for index, where in enumerate(found):
            if where in found[:index]:
                raise Failure(f"bad {source}: {address_text(where)} is listed twice", EXIT_USAGE)
        if self.server is None:
            return found
        try:
            chosen = parse_address(self.server)
        except ValueError as error:
            raise Failure(f"bad --server: {error}", EXIT_USAGE) from None
        if chosen not in found:
            raise Failure(
                f"--server {address_text(chosen)} is not one of the servers given "
                f"({servers_text(found)})",
                EXIT_USAGE,
            )
        return [chosen]

    def resolve(self) -> TextAddress:
        """The server's address: ``--address``, else ``$BEANSTALKD_ADDRESS``, else the default.

        Raises :class:`Failure` (exit 2) for text that is not an address, and
        when several servers are given.
        """
        servers = self.servers()
        if len(servers) == 1:
            return servers[0]
        command = self.one_server_command
        if command is None:
            raise Failure(f"this command works on one server, and {len(servers)} are given "
                          f"({servers_text(servers)})", EXIT_USAGE)
        raise Failure(
            f"{command} works on one server, and {len(servers)} are given "
            f"({servers_text(servers)}): choose one with --server ADDRESS (job ids are only "
            "unique per server)",
            EXIT_USAGE,
        )

    def worker_address(self) -> TextAddress | list[TextAddress]:
        """What a worker is given: the one server, or the list. Raises as :meth:`servers`."""
        servers = self.servers()
        return servers[0] if len(servers) == 1 else servers

    def open_client(
        self, tube: str = DEFAULT_TUBE, address: TextAddress | None = None
    ) -> Client[bytes]:
        """A client of the server (or of ``address``, one of several), putting into ``tube``.

        Raises :class:`Failure` (exit 2) for a bad address, and
        :class:`~greenstalk.ClientConnectionError` when the server cannot be reached.
        """
        if address is None:
            address = self.resolve()
        self.connected_to = address
        return Client(
            address, use=tube, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )

    def connect(self, tube: str = DEFAULT_TUBE, address: TextAddress | None = None
                ) -> Client[bytes]:
        """A client of the server (or of ``address``), putting into ``tube``.

        Raises :class:`Failure`: exit 2 for a bad address, exit 3 when the
        server cannot be reached.
        """
        try:
            return self.open_client(tube, address)
        except ClientConnectionError as error:
            raise connection_failure(self.connected_to, error) from None

    @contextlib.asynccontextmanager
    async def connect_aio(
        self, address: TextAddress | None = None
    ) -> AsyncIterator[aio.Client[bytes]]:
        """An asyncio client of the server (or of ``address``), closed at the end; raises as
        :meth:`connect`."""
        if address is None:
            address = self.resolve()
        self.connected_to = address
        try:
            client = await aio.connect(
                address, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        except ClientConnectionError as error:
            raise connection_failure(address, error) from None
        try:
            yield client
        finally:
            await client.close()


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` with :func:`asyncio.run`; Ctrl-C (KeyboardInterrupt) goes through.

    When the interrupt was raised inside the coroutine (Python before 3.11
    raises it wherever the code is), the task is marked as seen: asyncio
    would otherwise log it, with a traceback, whenever the task is collected.
    """
    task: asyncio.Task[T] | None = None

    async def main() -> T:
        nonlocal task
        task = asyncio.current_task()
        return await coroutine

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        if task is not None and task.done() and not task.cancelled():
            task.exception()
        raise


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(Settings)


def _set_address(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> None:
    _settings(ctx).addresses.extend(value)


def _set_server(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    settings = _settings(ctx)
    settings.one_server_command = ctx.info_name
    if value is not None:
        settings.server = value


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _settings(ctx).json = True


def _set_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:
        _settings(ctx).timeout = value


# -- parameter types: our own messages, never click's wording ----------------------

if TYPE_CHECKING:  # click is generic over the value type only in its newer releases
    IntType = click.ParamType[int]
    FloatType = click.ParamType[float]
    TextType = click.ParamType[str]
else:
    IntType = FloatType = TextType = click.ParamType


class WholeNumber(IntType):
    """A whole number from ``minimum`` to ``maximum`` (None: no upper bound)."""

    name = "whole number"

    def __init__(self, what: str, minimum: int, maximum: int | None = None) -> None:
        self.what = what
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """``value`` as an int; fails (a usage error) for anything out of range or not a number."""
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip()
        if text.isascii() and text.isdigit():
            number = int(text)
            if number >= self.minimum and (self.maximum is None or number <= self.maximum):
                return number
        bounds = (
            f"of at least {self.minimum}"
            if self.maximum is None
            else f"from {self.minimum} to {self.maximum}"
        )
        self.fail(f"{self.what} must be a whole number {bounds}, not {value!r}", param, ctx)


class Seconds(FloatType):
    """A number of seconds above 0 (a fraction allowed)."""

    name = "seconds"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """``value`` as a float; fails for anything that is not a finite number above 0."""
        if isinstance(value, float):
            return value
        try:
            seconds = float(str(value).strip())
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            return seconds
        self.fail(f"{self.what} must be a number of seconds above 0, not {value!r}", param, ctx)


class OneOf(TextType):
    """One of a few words, compared without regard to case."""

    name = "word"

    def __init__(self, what: str, words: Iterable[str]) -> None:
        self.what = what
        self.words = list(words)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """The word ``value`` names, in lower case; fails for any other text."""
        word = str(value).strip().lower()
        if word in self.words:
            return word
        *others, last = self.words
        listed = f"{', '.join(others)} or {last}" if others else last
        self.fail(f"{self.what} must be {listed}, not {value!r}", param, ctx)

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        """The words that start with what was typed."""
        return [CompletionItem(word) for word in self.words if word.startswith(incomplete)]


PRIORITY = WholeNumber("priority", 0, U32_MAX)
DELAY = WholeNumber("delay", 0, U32_MAX)
TTR = WholeNumber("TTR", 0, U32_MAX)
JOB_ID = WholeNumber("job id", 0, U64_MAX)


def common_options(function: F) -> F:
    """Add ``--address``, ``--json`` and ``--timeout`` to a command; they fill its Settings."""
    options = [
        click.option(
            "--address",
            "-a",
            metavar="ADDRESS",
            multiple=True,
            expose_value=False,
            callback=_set_address,
            help="host:port, host (port 11300), or Unix socket path; repeat it, or separate "
            f"addresses with commas, for several servers [default: ${ADDRESS_VARIABLE}, else "
            "127.0.0.1:11300]",
        ),
        click.option(
            "--json",
            is_flag=True,
            expose_value=False,
            callback=_set_json,
            help="print JSON (one document per line) instead of tables",
        ),
        click.option(
            "--timeout",
            type=Seconds("timeout"),
            metavar="SECONDS",
            expose_value=False,
            callback=_set_timeout,
            help=f"give up on a silent server after SECONDS [default: {DEFAULT_TIMEOUT:g}]",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def server_option(function: F) -> F:
    """``--server``, for a command that works on one server: which, when several are given."""
    decorate = click.option(
        "--server",
        metavar="ADDRESS",
        expose_value=False,
        callback=_set_server,
        help="With several servers (--address, $BEANSTALKD_ADDRESS), the one to work on: "
        "job ids are only unique per server.",
    )
    return decorate(function)


def check_tube_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A parameter callback: ``value`` if it is a tube name beanstalkd accepts (or None).

    Raises click.BadParameter (a usage error) for any other name.
    """
    if value is not None:
        try:
            check_tube(value)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx, param) from None
    return value


def complete_tubes(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion: the server's tubes whose names start with ``incomplete``.

    Asks the server given so far on the command line (or the default one)
    with ``list-tubes``; gives nothing on any error, since a completion
    must never print one.
    """
    settings = ctx.find_object(Settings) or Settings()
    timeout = min(settings.timeout, COMPLETION_TIMEOUT)
    names: set[str] = set()
    try:
        servers = settings.servers()
    except Failure:
        return []
    for address in servers:
        try:
            with Client(address, socket_timeout=timeout, socket_connect_timeout=timeout) as client:
                names.update(client.tubes())
        except Exception:
            continue
    return [CompletionItem(name) for name in sorted(names) if name.startswith(incomplete)]


def tube_option(help: str) -> Callable[[F], F]:
    """The ``--tube``/``-t`` option, ``default`` unless given."""
    return click.option(
        "--tube",
        "-t",
        metavar="TUBE",
        default=DEFAULT_TUBE,
        show_default=True,
        callback=check_tube_name,
        shell_complete=complete_tubes,
        help=help,
    )


def tube_argument(function: F) -> F:
    """The ``TUBE`` argument, checked and completed with the server's tubes."""
    decorate = click.argument("tube", callback=check_tube_name, shell_complete=complete_tubes)
    return decorate(function)


@contextlib.contextmanager
def not_found(message: str) -> Iterator[None]:
    """Turn a :class:`~greenstalk.NotFoundError` in the block into a Failure saying ``message``."""
    try:
        yield
    except NotFoundError:
        raise Failure(message) from None


_REFUSALS: list[tuple[type[BeanstalkdError], str]] = [
    (DrainingError, "the server is in drain mode and accepts no new jobs"),
    (JobTooBigError, "the job is larger than the server's max-job-size"),
    (OutOfMemoryError, "the server is out of memory"),
]


def describe_refusal(error: BeanstalkdError) -> str:
    """A sentence for an error reply of the server."""
    if isinstance(error, BuriedError):
        buried = "the job" if error.id is None else f"job {error.id}"
        return f"the server is out of memory and buried {buried}"
    for kind, text in _REFUSALS:
        if isinstance(error, kind):
            return text
    return f"the server refused the command ({type(error).__name__})"


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def emit_json(data: object) -> None:
    """Print ``data`` as one line of JSON on stdout."""
    click.echo(json.dumps(data))


def stdout_console() -> Console:
    """A console on stdout that prints text as it is (no markup, no highlighting)."""
    console = Console(markup=False, highlight=False, emoji=False)
    if not console.is_terminal:
        console.width = PLAIN_WIDTH
    return console


def show(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; on anything but a terminal, without trailing spaces."""
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    for line in capture.get().splitlines():
        click.echo(line.rstrip())


def progress_bar(*columns: ProgressColumn, reads_stdin: bool = False) -> Progress:
    """A transient progress bar on stderr: a spinner, the description, a bar, then ``columns``.

    Shown only when stderr is a terminal, and never while the command reads
    a terminal (``reads_stdin`` with stdin a terminal): it would redraw over
    what is typed.
    """
    console = Console(stderr=True)
    typing = reads_stdin and sys.stdin.isatty()
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        *columns,
        console=console,
        transient=True,
        disable=typing or not console.is_terminal,
    )


def table(*columns: str) -> Table:
    """A borderless table with a bold header; columns after the first are numbers."""
    result = Table(box=None, pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        result.add_column(column, justify="left" if index == 0 else "right")
    return result


def key_value_table(rows: Iterable[tuple[str, object]]) -> Table:
    """A borderless two-column table without a header: names, then values."""
    result = Table(box=None, pad_edge=False, show_header=False)
    result.add_column(style="bold")
    result.add_column()
    for key, value in rows:
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        result.add_row(Text(key), Text(shown))
    return result


def tube_statistics(client: Client[bytes]) -> list[StatsTube]:
    """The statistics of every tube, by name; tubes that vanish meanwhile are left out."""
    found = []
    for name in sorted(client.tubes()):
        with contextlib.suppress(NotFoundError):
            found.append(client.stats_tube(name))
    return found

