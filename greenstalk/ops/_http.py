"""Serving an aiohttp application on a listen address until a stop signal."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import Callable

from aiohttp import web

from ._links import ListenAddress

AppFactory = Callable[[], Awaitable[web.Application]]
"""Makes the application; called in the event loop that serves it."""


def bound_urls(runner: web.AppRunner) -> list[str]:
    """The addresses ``runner`` listens on, as ``http://host:port`` or ``unix:PATH``."""
    urls = []
    for address in runner.addresses:
        if isinstance(address, (tuple, list)):
            host, port = str(address[0]), int(address[1])
            urls.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
        else:
            urls.append(f"unix:{address}")
    return urls


async def serve(
    make_app: AppFactory,
    listen: ListenAddress,
    started: Callable[[list[str]], None],
    stop: asyncio.Event,
) -> None:
    """Serve the application ``make_app`` makes on ``listen`` until ``stop`` is set.

    Calls ``started`` with the URLs listened on once connections are
    accepted. Raises OSError when ``listen`` cannot be bound.
    """
    app = await make_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site: web.BaseSite
        if isinstance(listen, str):
            site = web.UnixSite(runner, listen)
        else:
            site = web.TCPSite(runner, listen[0] or None, listen[1])
        await site.start()
        started(bound_urls(runner))
        await stop.wait()
    finally:
        await runner.cleanup()


def run_until_signalled(
    make_app: AppFactory, listen: ListenAddress, started: Callable[[list[str]], None]
) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly. Raises OSError as :func:`serve`."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        try:
            await serve(make_app, listen, started, stop)
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)

    asyncio.run(main())
