"""``greenstalk top``: every tube's job counts and the put and reserve rates, refreshed."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import Iterator
from typing import Any

import click
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from .. import Client, Stats, StatsTube, describe_address
from ._common import (
    Settings,
    common_options,
    emit_json,
    plural,
    show,
    stdout_console,
    table,
    tube_statistics,
)

Frame = dict[str, Any]
"""What one refresh shows, as JSON-able data."""

TOP_COLUMNS = ("tube", "ready", "reserved", "delayed", "buried", "waiting", "urgent", "puts/s",
               "paused")


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
        "server": {
            "version": server["version"],
            "uptime": server["uptime"],
            "draining": server["draining"] == "true",
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


def render(frame: Frame) -> RenderableType:
    """A frame as two lines about the server and a table of the tubes."""
    server = frame["server"]
    about = (
        f"{frame['address']}  version {server['version']}  up {duration(server['uptime'])}  "
        f"{plural(server['connections'], 'connection')}"
        + ("  DRAINING" if server["draining"] else "")
    )
    jobs = (
        f"puts/s {_rate(server['puts_per_second'])}  "
        f"reserves/s {_rate(server['reserves_per_second'])}  "
        f"ready {server['ready']}  reserved {server['reserved']}  delayed {server['delayed']}  "
        f"buried {server['buried']}  waiting {server['waiting']}"
    )
    tubes = table(*TOP_COLUMNS)
    for tube in frame["tubes"]:
        counts = [tube[key] for key in ("ready", "reserved", "delayed", "buried", "waiting",
                                         "urgent")]
        paused = f"{tube['pause_time_left']}s" if tube["paused"] else "-"
        tubes.add_row(tube["name"], *map(str, counts), _rate(tube["puts_per_second"]), paused)
    return Group(Text(about, style="bold"), Text(jobs), Text(""), tubes)


def frames(client: Client[bytes], address: str, interval: float) -> Iterator[Frame]:
    """Frames of the server: the first at once without rates, then one per interval."""
    previous = None
    while True:
        current = take_snapshot(client)
        yield make_frame(address, previous, current)
        previous = current
        time.sleep(interval)


@click.command()
@click.option(
    "--interval",
    "-n",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between refreshes; the rates are measured over it.",
)
@click.option("--once", is_flag=True, help="Print one frame, without the live view, and exit.")
@click.option(
    "--iterations",
    "-i",
    type=click.IntRange(min=1),
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
    last interval. Ctrl-C quits.

    When stdout is not a terminal, or with --once or --json, frames are
    printed one after the other instead (one JSON document per frame with
    --json); the first comes after one interval, to have rates.
    """
    if once and iterations not in (None, 1):
        raise click.UsageError("--once and --iterations exclude each other")
    console = stdout_console()
    live = console.is_interactive and not (once or settings.json)
    address = describe_address(settings.resolve())
    with settings.connect() as client:
        updates = frames(client, address, interval)
        if live:
            _show_live(console, updates, iterations)
            return
        next(updates)  # without rates yet
        for count, frame in enumerate(itertools.islice(updates, iterations or 1)):
            if settings.json:
                emit_json(frame)
                continue
            if count:
                click.echo()
            show(console, render(frame))


def _show_live(console: Console, updates: Iterator[Frame], iterations: int | None) -> None:
    """Redraw the frames in place, ``iterations`` times or until Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt), Live(
        render(next(updates)), console=console, auto_refresh=False
    ) as view:
        for frame in itertools.islice(updates, iterations):
            view.update(render(frame), refresh=True)
