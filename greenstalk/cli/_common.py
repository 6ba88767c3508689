"""What the commands share: settings, errors, parameter checks, consoles and tables."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from typing import Any, Callable, TypeVar

import click
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .. import (
    DEFAULT_TUBE,
    BeanstalkdError,
    BuriedError,
    Client,
    ClientConnectionError,
    DrainingError,
    JobTooBigError,
    NotFoundError,
    OutOfMemoryError,
    StatsTube,
    address_from_environment,
    describe_address,
    parse_address,
)
from .._address import ADDRESS_VARIABLE, TextAddress
from .._protocol.commands import U32_MAX, U64_MAX, check_tube
from . import EXIT_CONNECTION, EXIT_FAILURE, EXIT_USAGE

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TIMEOUT = 10.0
# Output that is not a terminal is not wrapped at 80 columns: lines stay whole for scripts.
PLAIN_WIDTH = 1000


class Failure(Exception):
    """An expected failure: reported as one line on stderr, exiting with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclasses.dataclass
class Settings:
    """The global options, which may be given before or after the command's name."""

    #: ``--address`` as given, or None to use ``$BEANSTALKD_ADDRESS``.
    address: str | None = None
    #: ``--json``: print JSON documents instead of tables.
    json: bool = False
    #: ``--timeout``: seconds to wait for the server, to connect and for each reply.
    timeout: float = DEFAULT_TIMEOUT
    #: The address of the last connection made, for error messages.
    connected_to: TextAddress | None = None

    @property
    def address_given(self) -> bool:
        """True when ``--address`` or ``$BEANSTALKD_ADDRESS`` names a server."""
        return self.address is not None or bool(os.environ.get(ADDRESS_VARIABLE))

    def resolve(self) -> TextAddress:
        """The server's address: ``--address``, else ``$BEANSTALKD_ADDRESS``, else the default.

        Raises :class:`Failure` (exit 2) for text that is not an address.
        """
        try:
            if self.address is not None:
                return parse_address(self.address)
            return address_from_environment()
        except ValueError as error:
            source = "--address" if self.address is not None else f"${ADDRESS_VARIABLE}"
            raise Failure(f"bad {source}: {error}", EXIT_USAGE) from None

    def connect(self, tube: str = DEFAULT_TUBE) -> Client[bytes]:
        """A client of the server, putting into ``tube``.

        Raises :class:`Failure`: exit 2 for a bad address, exit 3 when the
        server cannot be reached.
        """
        address = self.resolve()
        self.connected_to = address
        try:
            return Client(
                address,
                use=tube,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
            )
        except ClientConnectionError as error:
            reason = error.__cause__ or error
            raise Failure(
                f"cannot connect to {describe_address(address)}: {reason}", EXIT_CONNECTION
            ) from None


def _settings(ctx: click.Context) -> Settings:
    return ctx.ensure_object(Settings)


def _set_address(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _settings(ctx).address = value


def _set_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        _settings(ctx).json = True


def _set_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:
        _settings(ctx).timeout = value


def common_options(function: F) -> F:
    """Add ``--address``, ``--json`` and ``--timeout`` to a command; they fill its Settings."""
    options = [
        click.option(
            "--address",
            "-a",
            metavar="ADDRESS",
            expose_value=False,
            callback=_set_address,
            help=f"host:port or Unix socket path [default: ${ADDRESS_VARIABLE}, "
            "else 127.0.0.1:11300]",
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
            type=click.FloatRange(min=0, min_open=True),
            metavar="SECONDS",
            expose_value=False,
            callback=_set_timeout,
            help=f"give up on a silent server after SECONDS [default: {DEFAULT_TIMEOUT:g}]",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


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


U32 = click.IntRange(0, U32_MAX)
JOB_ID = click.IntRange(0, U64_MAX)


def tube_option(help: str) -> Callable[[F], F]:
    """The ``--tube``/``-t`` option, ``default`` unless given."""
    return click.option(
        "--tube",
        "-t",
        metavar="TUBE",
        default=DEFAULT_TUBE,
        show_default=True,
        callback=check_tube_name,
        help=help,
    )


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


def progress_bar() -> Progress:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    console = Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
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
        result.add_row(Text(key), Text(str(value)))
    return result


def tube_statistics(client: Client[bytes]) -> list[StatsTube]:
    """The statistics of every tube, by name; tubes that vanish meanwhile are left out."""
    found = []
    for name in sorted(client.tubes()):
        with contextlib.suppress(NotFoundError):
            found.append(client.stats_tube(name))
    return found
