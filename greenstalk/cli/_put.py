"""``greenstalk put``: one job, or one job per line, sent as the lines come in."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import stat
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Callable, Optional, Union

import click
from rich.progress import DownloadColumn, ProgressColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import DEFAULT_PRIORITY, DEFAULT_TTR, BeanstalkdError, Client, PutManyError
from .._address import TextAddress
from ..codecs import CODECS, get_codec
from . import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE
from ._common import (
    DELAY,
    PRIORITY,
    TTR,
    Failure,
    OneOf,
    Settings,
    address_text,
    common_options,
    describe_refusal,
    emit_json,
    plural,
    progress_bar,
    tube_option,
)

# At most this many lines go out in one pipelined batch.
LINES_PER_BATCH = 1000
READ_SIZE = 65536

STDIN_HINT = "greenstalk: reading the job body from standard input; end with Ctrl-D"
STDIN_LINES_HINT = "greenstalk: reading jobs from standard input, one a line; end with Ctrl-D"

# Turns the text given for a job into its body (a codec's check and re-encoding).
Convert = Callable[[bytes], bytes]

if TYPE_CHECKING:
    from ..pool import Pool

# A job put: its id, and with several servers its server's address as text.
Placed = tuple[int, Optional[str]]


@dataclasses.dataclass
class JobSettings:
    """What every job put gets."""

    priority: int
    delay: int
    ttr: int


def _strip_line_break(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class LineReader:
    """The lines of a binary stream, without their line breaks (LF or CRLF), in batches.

    A batch ends when ``limit`` lines are in it, at the end of the input,
    and whenever the input stalls: lines that have arrived are never held
    back waiting for more (``tail -f log | greenstalk put --lines``), while
    input that is already there is taken in large batches.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        #: Bytes read so far.
        self.bytes_read = 0
        #: Bytes left to read, when the input is a regular file; else None.
        self.size: int | None = None
        self._fd: int | None = None
        with contextlib.suppress(OSError, ValueError):  # io.UnsupportedOperation is both
            fd = stream.fileno()
            self._fd = fd
            status = os.fstat(fd)
            if stat.S_ISREG(status.st_mode):
                self.size = max(0, status.st_size - os.lseek(fd, 0, os.SEEK_CUR))

    def batches(self, limit: int) -> Iterator[list[bytes]]:
        """Batches of at most ``limit`` lines; an empty input gives none."""
        if self._fd is None:
            yield from self._batches_of_lines(limit)
            return
        fd = self._fd
        batch: list[bytes] = []
        partial: list[bytes] = []  # the start of a line whose end has not come yet
        while data := os.read(fd, READ_SIZE):
            self.bytes_read += len(data)
            if b"\n" in data:
                *complete, rest = b"".join([*partial, data]).split(b"\n")
                partial = [rest] if rest else []
                batch.extend(_strip_line_break(line) for line in complete)
                while len(batch) >= limit:
                    yield batch[:limit]
                    batch = batch[limit:]
            else:
                partial.append(data)
            if batch and not _readable_now(fd):
                yield batch
                batch = []
        if partial:
            batch.append(b"".join(partial))  # a last line without a line break
        if batch:
            yield batch

    def _batches_of_lines(self, limit: int) -> Iterator[list[bytes]]:
        """Batches from a stream without a file descriptor (in memory: it never stalls)."""
        batch: list[bytes] = []
        for line in self.stream:
            self.bytes_read += len(line)
            batch.append(_strip_line_break(line[:-1]) if line.endswith(b"\n") else line)
            if len(batch) == limit:
                yield batch
                batch = []
        if batch:
            yield batch


def _readable_now(fd: int) -> bool:
    """True when more input can be read from ``fd`` at once. Where select() cannot tell, False."""
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(readable)


def make_converter(codec_name: str) -> Convert | None:
    """What checks and re-encodes text for ``--codec``: None for bytes, taken as they are.

    The text is decoded with the codec and encoded again, so that what is
    put is what a worker using that codec decodes (for JSON: checked, and
    written compactly). The function raises ValueError for text the codec
    cannot decode.
    """
    if codec_name == "bytes":
        return None
    codec = get_codec(codec_name)

    def convert(text: bytes) -> bytes:
        return codec.encode(codec.decode(text))

    return convert


class ClientSink:
    """Where ``put`` sends jobs when there is one server: a client of it."""

    def __init__(self, client: Client[bytes]) -> None:
        self.client = client
        #: The servers' addresses as text, with several; None with one.
        self.servers: list[str] | None = None

    def put(self, body: bytes, job: JobSettings) -> Placed:
        """Put one job. Raises as :meth:`greenstalk.Client.put`."""
        return self.client.put(body, job.priority, job.delay, job.ttr), None

    def put_many(
        self, bodies: list[bytes], job: JobSettings
    ) -> tuple[list[Placed | None], dict[int, BeanstalkdError]]:
        """Put the jobs, pipelined: each job put (None: refused), and the refusals by index."""
        try:
            ids: list[int | None] = list(
                self.client.put_many(bodies, job.priority, job.delay, job.ttr)
            )
            errors = {}
        except PutManyError as error:
            ids, errors = list(error.ids), error.errors
        return [None if job_id is None else (job_id, None) for job_id in ids], errors


class PoolSink:
    """Where ``put`` sends jobs when there are several servers: a pool, spreading them.

    With ``key``, every job goes to the server the key is placed on.
    """

    def __init__(self, pool: Pool[bytes], key: str | None) -> None:
        self.pool = pool
        self.key = key
        self.servers: list[str] | None = [address_text(where) for where in pool.addresses]

    def put(self, body: bytes, job: JobSettings) -> Placed:
        """Put one job on a server. Raises as :meth:`greenstalk.Pool.put`."""
        put = self.pool.put(body, job.priority, job.delay, job.ttr, key=self.key)
        return put.id, address_text(put.address)

    def put_many(
        self, bodies: list[bytes], job: JobSettings
    ) -> tuple[list[Placed | None], dict[int, BeanstalkdError]]:
        """Put the jobs, spread and pipelined: as :meth:`ClientSink.put_many`."""
        try:
            jobs = self.pool.put_many(bodies, job.priority, job.delay, job.ttr, key=self.key)
            errors = {}
        except PutManyError as error:
            jobs, errors = list(error.ids), error.errors  # type: ignore[arg-type]
        return [None if put is None else (put.id, address_text(put.address)) for put in jobs], (
            errors
        )


Sink = Union[ClientSink, PoolSink]


@dataclasses.dataclass
class LinesPut:
    """What ``put --lines`` has done so far."""

    tube: str
    ids: list[int] = dataclasses.field(default_factory=list)
    #: Lines sent to the server (put or refused).
    lines: int = 0
    #: The refused lines: their numbers (from 1) and the server's reasons.
    refused: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    #: True while a batch is sent: its replies are not all in yet.
    sending: bool = False
    #: With several servers: their addresses, and the server of each id, in order.
    servers: list[str] | None = None
    addresses: list[str] = dataclasses.field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        """The JSON document ``--json put --lines`` prints."""
        refused = [{"line": line, "error": error} for line, error in self.refused]
        if self.servers is not None:
            return {
                "tube": self.tube,
                "count": len(self.ids),
                "jobs": [{"id": job_id, "address": address}
                         for job_id, address in zip(self.ids, self.addresses)],
                "servers": [{"address": server, "count": self.addresses.count(server)}
                            for server in self.servers],
                "refused": refused,
            }
        return {
            "tube": self.tube,
            "count": len(self.ids),
            "first_id": self.ids[0] if self.ids else None,
            "last_id": self.ids[-1] if self.ids else None,
            "ids": self.ids,
            "refused": refused,
        }

    def summary(self) -> str:
        """``put 3 jobs into tube default (ids 1 to 3)``; with several servers, how many each."""
        if not self.ids:
            return f"put no job into tube {self.tube}"
        if self.servers is not None:
            shares = ", ".join(f"{self.addresses.count(server)} on {server}"
                               for server in self.servers)
            return f"put {plural(len(self.ids), 'job')} into tube {self.tube}: {shares}"
        return (
            f"put {plural(len(self.ids), 'job')} into tube {self.tube} "
            f"(ids {self.ids[0]} to {self.ids[-1]})"
        )


@click.command()
@click.argument("body", required=False)
@click.option(
    "--file",
    "-f",
    "path",
    metavar="PATH",
    help="Read the body (with --lines: the lines) from PATH; - is stdin.",
)
@click.option(
    "--lines",
    is_flag=True,
    help="Put each line (without its line break) as a job, sent as the lines come in.",
)
@click.option(
    "--codec",
    "-c",
    "codec_name",
    type=OneOf("codec", CODECS),
    default="bytes",
    show_default=True,
    metavar="CODEC",
    help=f"Check and encode each body as a worker's codec decodes it: {', '.join(CODECS)} "
    "(json: the text must be JSON; it is sent compactly).",
)
@tube_option("The tube to put into.")
@click.option("--priority", "-p", type=PRIORITY, default=DEFAULT_PRIORITY, show_default=True,
              metavar="N", help="0 (the most urgent) to 4294967295.")
@click.option("--delay", "-d", type=DELAY, default=0, show_default=True, metavar="SECONDS",
              help="Seconds before the job is ready.")
@click.option("--ttr", type=TTR, default=DEFAULT_TTR, show_default=True, metavar="SECONDS",
              help="Seconds a worker may hold the job.")
@click.option("--key", "-k", metavar="KEY",
              help="With several servers, put every job on the server KEY is placed on "
              "(always the same for a key, while it is up) instead of spreading them.")
@common_options
@click.pass_obj
def put(
    settings: Settings,
    body: str | None,
    path: str | None,
    lines: bool,
    codec_name: str,
    tube: str,
    priority: int,
    delay: int,
    ttr: int,
    key: str | None,
) -> None:
    """Put a job, or with --lines one job per line.

    The body is BODY, or the contents of --file, or stdin (when BODY is
    absent or -). Prints the new job's id. With --lines, every line is a
    job of its own; lines are sent as soon as the input pauses, in
    pipelined batches while it flows, and the count is printed. With
    several servers, jobs are spread over them (each in turn, or all on
    --key's), and each id is printed with its server.
    """
    argument = None if body == "-" else body
    if argument is not None and (path is not None or lines):
        raise click.UsageError("give BODY, or --file and --lines, not both")
    convert = make_converter(codec_name)
    job = JobSettings(priority, delay, ttr)
    servers = settings.servers()
    with _sink(settings, servers, tube, key) as sink:
        if argument is not None:
            # The argument's bytes as the shell passed them.
            _put_one(settings, sink, os.fsencode(argument), codec_name, convert, job)
            return
        with _open_input(path) as stream:
            reads_stdin = stream is sys.stdin.buffer
            if reads_stdin and sys.stdin.isatty():
                click.echo(STDIN_LINES_HINT if lines else STDIN_HINT, err=True)
            if lines:
                _put_lines(settings, sink, LineReader(stream), tube, codec_name, convert, job,
                           reads_stdin)
            else:
                _put_one(settings, sink, stream.read(), codec_name, convert, job)


@contextlib.contextmanager
def _sink(
    settings: Settings, servers: list[TextAddress], tube: str, key: str | None
) -> Iterator[Sink]:
    """A client of the one server, or a pool of several; closed at the end.

    With a pool, puts that may have been stored twice (a server took them
    and did not answer) are counted and said on stderr at the end.
    """
    if len(servers) == 1:
        with settings.connect(tube) as client:
            yield ClientSink(client)
        return
    from ..pool import Pool

    # A random start: a pool made for each run would otherwise give every
    # single put to the first server. A batch of lines still goes round the
    # servers in turn.
    with Pool(servers, use=tube, strategy="random", socket_timeout=settings.timeout,
              socket_connect_timeout=settings.timeout) as pool:
        try:
            yield PoolSink(pool, key)
        finally:
            if pool.unknown_puts:
                click.echo(
                    f"greenstalk: {plural(pool.unknown_puts, 'put')} got no answer from a "
                    "server, and were put on another: they may have been stored twice",
                    err=True,
                )


def _open_input(path: str | None) -> contextlib.AbstractContextManager[IO[bytes]]:
    """The file at ``path``, or stdin for None or ``-``. Raises Failure (exit 2) if unreadable."""
    if path is None or path == "-":
        return contextlib.nullcontext(sys.stdin.buffer)
    try:
        return open(path, "rb")
    except OSError as error:
        raise Failure(f"cannot read {path}: {error.strerror}", EXIT_USAGE) from None


def _put_one(
    settings: Settings,
    sink: Sink,
    body: bytes,
    codec_name: str,
    convert: Convert | None,
    job: JobSettings,
) -> None:
    if convert is not None:
        try:
            body = convert(body)
        except ValueError as error:
            raise Failure(f"the body is not valid {codec_name}: {error}", EXIT_USAGE) from None
    job_id, address = sink.put(body, job)
    if settings.json:
        emit_json({"id": job_id} if address is None else {"id": job_id, "address": address})
    else:
        click.echo(job_id if address is None else f"{job_id} on {address}")


def _put_lines(
    settings: Settings,
    sink: Sink,
    reader: LineReader,
    tube: str,
    codec_name: str,
    convert: Convert | None,
    job: JobSettings,
    reads_stdin: bool,
) -> None:
    """Put every line as a job; on a refusal, a bad line or Ctrl-C, say what was done and stop.

    Raises Failure: exit 1 when the server refused lines, 2 for a line the
    codec rejects, 130 when interrupted. With ``--json`` the document of
    what was put is printed in every case.
    """
    done = LinesPut(tube, servers=sink.servers)
    stop: tuple[str, int] | None
    try:
        stop = _put_batches(sink, reader, done, codec_name, convert, job, reads_stdin)
    except KeyboardInterrupt:
        in_flight = "; the batch being sent may be partly in it too" if done.sending else ""
        stop = (
            f"interrupted: put {plural(len(done.ids), 'job')} into tube {tube}{in_flight}",
            EXIT_INTERRUPTED,
        )
    if settings.json:
        emit_json(done.as_json())
    elif stop is None:
        click.echo(done.summary())
    if stop is not None:
        raise Failure(*stop)


def _put_batches(
    sink: Sink,
    reader: LineReader,
    done: LinesPut,
    codec_name: str,
    convert: Convert | None,
    job: JobSettings,
    reads_stdin: bool,
) -> tuple[str, int] | None:
    """Put the lines batch by batch, recording them in ``done``.

    Returns None when every line was put, else why it stopped and the exit
    code. Ctrl-C (KeyboardInterrupt) goes through, with ``done`` up to date.
    """
    columns: list[ProgressColumn] = (
        [TimeElapsedColumn()] if reader.size is None else [DownloadColumn(), TimeRemainingColumn()]
    )
    with progress_bar(*columns, reads_stdin=reads_stdin) as progress:
        task = progress.add_task(f"putting into {done.tube}", total=reader.size)
        for batch in reader.batches(LINES_PER_BATCH):
            bodies, rejection = _convert_batch(batch, convert)
            done.sending = True
            _send(sink, done, bodies, job)
            done.sending = False
            done.lines += len(bodies)
            progress.update(
                task,
                completed=reader.bytes_read,
                description=f"putting into {done.tube}: {plural(len(done.ids), 'job')}",
            )
            if done.refused:
                first, reason = done.refused[0]
                refused = plural(len(done.refused), "line")
                return (
                    f"the server refused {refused}, the first at line {first}: {reason}; "
                    f"{_were_put(done)}",
                    EXIT_FAILURE,
                )
            if rejection is not None:
                return (
                    f"line {done.lines + 1} is not valid {codec_name}: {rejection}; "
                    f"{_were_put(done)}",
                    EXIT_USAGE,
                )
    return None


def _were_put(done: LinesPut) -> str:
    """``1 job was put``, ``2 jobs were put``."""
    count = len(done.ids)
    return f"{plural(count, 'job')} {'was' if count == 1 else 'were'} put"


def _convert_batch(
    batch: list[bytes], convert: Convert | None
) -> tuple[list[bytes], ValueError | None]:
    """The bodies of the lines, up to the first one ``convert`` rejects, and its error."""
    if convert is None:
        return batch, None
    bodies = []
    for line in batch:
        try:
            bodies.append(convert(line))
        except ValueError as error:
            return bodies, error
    return bodies, None


def _send(sink: Sink, done: LinesPut, bodies: list[bytes], job: JobSettings) -> None:
    """Put ``bodies``, pipelined; record the new ids and the refused lines in ``done``."""
    if not bodies:
        return
    placed, errors = sink.put_many(bodies, job)
    for put in placed:
        if put is not None:
            done.ids.append(put[0])
            if put[1] is not None:
                done.addresses.append(put[1])
    for index, refusal in sorted(errors.items()):
        done.refused.append((done.lines + index + 1, describe_refusal(refusal)))
