"""``greenstalk top``: every tube's job counts and the put and reserve rates, refreshed."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import select
import sys
import time
from types import TracebackType
from typing import Any

import click
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.live import Live
from rich.text import Text

from .. import Client, ClientConnectionError, Stats, StatsTube, describe_address
from .._address import TextAddress
from . import EXIT_CONNECTION
from ._common import (
    Failure,
    Seconds,
    Settings,
    WholeNumber,
    common_options,
    connection_failure,
    connection_reason,
    emit_json,
    plural,
    show,
    stdout_console,
    tube_statistics,
)

Frame = dict[str, Any]
"""What one refresh shows, as JSON-able data."""

# The table's columns: the key of each in a tube's frame, and its header.
TOP_COLUMNS = {
    "name": "tube",
    "ready": "ready",
    "reserved": "reserved",
    "delayed": "delayed",
    "buried": "buried",
    "waiting": "waiting",
    "urgent": "urgent",
    "puts_per_second": "puts/s",
    "pause_time_left": "paused",
}
# On a narrow terminal, whole columns go, in this order, rather than cut numbers.
DROPPED_FIRST = (
    "urgent", "waiting", "pause_time_left", "puts_per_second", "delayed", "buried", "reserved",
)
# A tube name is shortened (with an ellipsis) to no fewer characters than this.
SHORTEST_NAME = 8
GAP = "  "
QUIT_KEYS = (b"q", b"Q")


@dataclasses.dataclass
class Snapshot:
    """The statistics of the server and of every tube at one moment."""

    monotonic: float
    time: float
    server: Stats
    tubes: list[StatsTube]


def take_snapshot(client: Client[bytes]) -> Snapshot:
    """Read the statistics of the server and of all its tubes."""
    return Snapshot(time.monotonic(), time.time(), client.stats(), tube_statistics(client))


def _reserves(stats: Stats) -> int:
    return stats["cmd-reserve"] + stats["cmd-reserve-with-timeout"]


def make_frame(address: str, previous: Snapshot | None, current: Snapshot) -> Frame:
    """The counts of ``current``, and the rates since ``previous`` (None without one)."""
    base = current if previous is None else previous
    elapsed = current.monotonic - base.monotonic

    def rate(now: int, before: int) -> float | None:
        # A counter that went down (a restarted server, a re-created tube) counts from zero.
        return round(max(0, now - before) / elapsed, 2) if elapsed > 0 else None

    totals_before = {stats["name"]: stats["total-jobs"] for stats in base.tubes}
    server = current.server
    return {
        "address": address,
        "time": current.time,
        "connected": True,
        "server": {
            "version": server["version"],
            "uptime": server["uptime"],
            "draining": server["draining"],
            "connections": server["current-connections"],
            "producers": server["current-producers"],
            "workers": server["current-workers"],
            "waiting": server["current-waiting"],
            "ready": server["current-jobs-ready"],
            "reserved": server["current-jobs-reserved"],
            "delayed": server["current-jobs-delayed"],
            "buried": server["current-jobs-buried"],
            "urgent": server["current-jobs-urgent"],
            "total_jobs": server["total-jobs"],
            "puts_per_second": rate(server["cmd-put"], base.server["cmd-put"]),
            "reserves_per_second": rate(_reserves(server), _reserves(base.server)),
        },
        "tubes": [
            {
                "name": stats["name"],
                "ready": stats["current-jobs-ready"],
                "reserved": stats["current-jobs-reserved"],
                "delayed": stats["current-jobs-delayed"],
                "buried": stats["current-jobs-buried"],
                "waiting": stats["current-waiting"],
                "urgent": stats["current-jobs-urgent"],
                "total_jobs": stats["total-jobs"],
                "puts_per_second": rate(
                    stats["total-jobs"], totals_before.get(stats["name"], 0)
                ),
                "paused": stats["pause"] > 0,
                "pause_time_left": stats["pause-time-left"],
            }
            for stats in current.tubes
        ],
    }


def disconnected_frame(address: str, error: str) -> Frame:
    """What a refresh shows while the server cannot be reached."""
    return {"address": address, "time": time.time(), "connected": False, "error": error}


def duration(seconds: int) -> str:
    """``45s``, ``3m 07s``, ``2h 05m``, ``4d 1h``."""
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cell(tube: Frame, key: str) -> str:
    value = tube[key]
    if key == "puts_per_second":
        return _rate(value)
    if key == "pause_time_left":
        return f"{value}s" if tube["paused"] else "-"
    return str(value)


def _pack(items: list[str], width: int) -> list[str]:
    """``items`` joined by two spaces into lines of at most ``width``, never splitting one."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(GAP) + len(item) <= width:
            lines[-1] += GAP + item
        else:
            lines.append(item)
    return lines


def _table(tubes: list[Frame], width: int) -> list[tuple[str, str]]:
    """The tubes' table as lines of text and their styles, fitted to ``width``.

    Numbers are never cut: columns are left out (the least telling first)
    until the rest fits, and only tube names are shortened.
    """
    cells = {key: [header] + [_cell(tube, key) for tube in tubes]
             for key, header in TOP_COLUMNS.items()}
    widths = {key: max(map(len, column)) for key, column in cells.items()}
    shortest_name = min(widths["name"], SHORTEST_NAME)
    shown = list(TOP_COLUMNS)

    def numbers_width() -> int:
        return sum(widths[key] + len(GAP) for key in shown[1:])

    for key in DROPPED_FIRST:
        if shortest_name + numbers_width() <= width:
            break
        shown.remove(key)
    name_width = max(shortest_name, min(widths["name"], width - numbers_width()))
    lines = []
    for row in range(len(tubes) + 1):
        name = cells["name"][row]
        if len(name) > name_width:
            name = name[: name_width - 1] + "…"
        numbers = (GAP + cells[key][row].rjust(widths[key]) for key in shown[1:])
        lines.append((name.ljust(name_width) + "".join(numbers), "bold" if row == 0 else ""))
    return lines


class TopView:
    """A frame as the lines ``top`` shows, fitted to the width it is drawn in."""

    def __init__(self, frame: Frame) -> None:
        self.frame = frame

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The lines: about the server, about its jobs, then the tubes' table."""
        width = options.max_width
        for text, style in self.lines(width):
            yield Text(text, style=style, no_wrap=True, overflow="ignore", end="\n")

    def lines(self, width: int) -> list[tuple[str, str]]:
        """Each line of the view at ``width`` columns, with its style."""
        frame = self.frame
        if not frame["connected"]:
            return [
                *((line, "bold") for line in _pack([frame["address"], "DISCONNECTED"], width)),
                (frame["error"], ""),
                ("reconnecting...", ""),
            ]
        server = frame["server"]
        about = [
            frame["address"],
            f"version {server['version']}",
            f"up {duration(server['uptime'])}",
            plural(server["connections"], "connection"),
        ] + (["DRAINING"] if server["draining"] else [])
        return _summary(about, server, frame["tubes"], width)


def _summary(about: list[str], server: Frame, tubes: list[Frame],
             width: int) -> list[tuple[str, str]]:
    """The lines about a server (or all of them), its jobs, then the tubes' table."""
    jobs = [
        f"puts/s {_rate(server['puts_per_second'])}",
        f"reserves/s {_rate(server['reserves_per_second'])}",
    ] + [f"{key} {server[key]}" for key in ("ready", "reserved", "delayed", "buried", "waiting")]
    return [
        *((line, "bold") for line in _pack(about, width)),
        *((line, "") for line in _pack(jobs, width)),
        ("", ""),
        *_table(tubes, width),
    ]


class SeveralView(TopView):
    """A frame of several servers: each server's view, then their totals."""

    def lines(self, width: int) -> list[tuple[str, str]]:
        """Each server's lines, a blank line after each, then the totals' lines."""
        result: list[tuple[str, str]] = []
        for frame in self.frame["servers"]:
            result += [*TopView(frame).lines(width), ("", "")]
        total = self.frame["total"]
        down = total["servers"] - total["connected"]
        about = [f"total of {plural(total['connected'], 'server')}"] + (
            [f"{down} DISCONNECTED"] if down else []
        ) + [plural(total["server"]["connections"], "connection")] + (
            ["DRAINING"] if total["server"]["draining"] else []
        )
        return result + _summary(about, total["server"], total["tubes"], width)


def render(frame: Frame) -> RenderableType:
    """A frame as two lines about the server and a table of the tubes, fitted to the width.

    A frame of several servers shows each, then the totals.
    """
    return SeveralView(frame) if "servers" in frame else TopView(frame)


# What a total adds up (the rest is the largest, or true if any is).
_SUMMED = ("connections", "producers", "workers", "waiting", "ready", "reserved", "delayed",
           "buried", "urgent", "total_jobs")
_TUBE_SUMMED = ("ready", "reserved", "delayed", "buried", "waiting", "urgent", "total_jobs")


def _sum_rates(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return round(sum(known), 2) if known else None


def total_frame(frames: list[Frame]) -> Frame:
    """The totals of the servers' frames: counts and rates added up, over those connected."""
    live = [frame for frame in frames if frame["connected"]]
    servers = [frame["server"] for frame in live]
    server: Frame = {key: sum(each[key] for each in servers) for key in _SUMMED}
    server["uptime"] = max((each["uptime"] for each in servers), default=0)
    server["draining"] = any(each["draining"] for each in servers)
    for key in ("puts_per_second", "reserves_per_second"):
        server[key] = _sum_rates([each[key] for each in servers])
    by_name: dict[str, list[Frame]] = {}
    for frame in live:
        for each in frame["tubes"]:
            by_name.setdefault(each["name"], []).append(each)
    tubes = []
    for name in sorted(by_name):
        same = by_name[name]
        tube: Frame = {"name": name, **{key: sum(t[key] for t in same) for key in _TUBE_SUMMED}}
        tube["puts_per_second"] = _sum_rates([t["puts_per_second"] for t in same])
        tube["paused"] = any(t["paused"] for t in same)
        tube["pause_time_left"] = max(t["pause_time_left"] for t in same)
        tubes.append(tube)
    return {"servers": len(frames), "connected": len(live), "server": server, "tubes": tubes}


class Watch:
    """The frames of one server: a new one for each call, reconnecting when the server is back."""

    def __init__(self, settings: Settings, where: TextAddress | None = None,
                 connect: bool = True) -> None:
        """Connect to ``where`` (or the server), unless ``connect`` is false.

        Raises Failure: exit 2 for a bad address, 3 when the server is not there.
        """
        self.settings = settings
        self.where = settings.resolve() if where is None else where
        self.address = describe_address(self.where)
        self.client: Client[bytes] | None = (
            settings.connect(address=self.where) if connect else None
        )
        self.previous: Snapshot | None = None

    def next_frame(self) -> Frame:
        """The statistics now, with the rates since the last frame; or why there are none."""
        try:
            if self.client is None:
                self.client = self.settings.open_client(address=self.where)
            current = take_snapshot(self.client)
        except ClientConnectionError as error:
            self.close()
            self.previous = None
            return disconnected_frame(self.address, connection_reason(error))
        frame = make_frame(self.address, self.previous, current)
        self.previous = current
        return frame

    def close(self) -> None:
        """Close the connection, if there is one."""
        if self.client is not None:
            self.client.close()
            self.client = None


class Watches:
    """The frames of several servers, each with its own connection, and their totals."""

    def __init__(self, settings: Settings, servers: list[TextAddress]) -> None:
        """Connect to each server. Raises Failure (exit 3) when none is there."""
        self.watches = [Watch(settings, where, connect=False) for where in servers]
        failures = []
        for watch in self.watches:
            try:
                watch.client = settings.open_client(address=watch.where)
            except ClientConnectionError as error:
                failures.append(connection_failure(watch.where, error).message)
        if len(failures) == len(self.watches):
            raise Failure("; ".join(failures), EXIT_CONNECTION)

    def next_frame(self) -> Frame:
        """Each server's frame (see :meth:`Watch.next_frame`), and their totals."""
        frames = [watch.next_frame() for watch in self.watches]
        return {"time": time.time(), "servers": frames, "total": total_frame(frames)}

    def close(self) -> None:
        """Close every connection."""
        for watch in self.watches:
            watch.close()


class QuitKeys:
    """While in use, keys typed on the terminal are read without echo, so ``q`` can quit.

    Without a terminal on stdin, waiting is plain sleeping.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> QuitKeys:
        try:
            import termios
            import tty
        except ImportError:  # not a POSIX system: no key reading
            return self
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if sys.stdin.isatty():
                fd = sys.stdin.fileno()
                self._saved = termios.tcgetattr(fd)
                tty.setcbreak(fd)
                self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None and self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds``; True as soon as ``q`` is typed."""
        if self._fd is None:
            time.sleep(seconds)
            return False
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self._fd], [], [], left)
            if readable and any(key in os.read(self._fd, 64) for key in QUIT_KEYS):
                return True
        return False


@click.command()
@click.option(
    "--interval",
    "-n",
    type=Seconds("interval"),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between refreshes; the rates are measured over it.",
)
@click.option("--once", is_flag=True, help="Print one frame, without the live view, and exit.")
@click.option(
    "--iterations",
    "-i",
    type=WholeNumber("iterations", 1),
    metavar="N",
    help="Stop after N refreshes [default: on a terminal never, else after 1].",
)
@common_options
@click.pass_obj
def top(settings: Settings, interval: float, once: bool, iterations: int | None) -> None:
    """Show a live view of every tube.

    Each tube's ready, reserved, delayed, buried, waiting and urgent jobs,
    refreshed every --interval. The header has the server's puts and
    reserves per second, each tube its puts per second, measured over the
    last interval. q or Ctrl-C quits. When the server goes away, top says
    so and reconnects when it is back.

    When stdout is not a terminal, or with --once or --json, frames are
    printed one after the other instead (one JSON document per frame with
    --json); the first comes after one interval, to have rates.

    With several servers, each is shown, then the totals; top starts when
    at least one of them answers.
    """
    if once and iterations not in (None, 1):
        raise click.UsageError("--once and --iterations exclude each other")
    console = stdout_console()
    live = console.is_interactive and not (once or settings.json)
    servers = settings.servers()
    watch = Watch(settings) if len(servers) == 1 else Watches(settings, servers)
    try:
        if live:
            _show_live(console, watch, interval, iterations)
            return
        watch.next_frame()  # without rates yet
        for count in range(iterations or 1):
            time.sleep(interval)
            frame = watch.next_frame()
            if settings.json:
                emit_json(frame)
                continue
            if count:
                click.echo()
            show(console, render(frame))
    finally:
        watch.close()


def _show_live(console: Console, watch: Watch | Watches, interval: float,
               iterations: int | None) -> None:
    """Redraw the frames in place, ``iterations`` times or until q or Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt), QuitKeys() as keys, Live(
        render(watch.next_frame()), console=console, auto_refresh=False
    ) as view:
        for _ in itertools.islice(itertools.count(), iterations):
            if keys.wait(interval):
                break
            view.update(render(watch.next_frame()), refresh=True)
