"""Drive a greenstalk.aio.Client from synchronous test code.

The behavioural tests of the sync client are written once and run against
both clients: for the asyncio one, the test's client is this adapter, which
runs every coroutine method on an event loop in a background thread and
waits for its result (exceptions included).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import greenstalk.aio

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class BlockingAioClient:
    """A connected greenstalk.aio.Client whose coroutine methods block until done."""

    def __init__(self, runner: LoopThread, *args: Any, **kwargs: Any) -> None:
        self._runner = runner
        self.aio_client: greenstalk.aio.Client[Any] = runner.run(
            greenstalk.aio.connect(*args, **kwargs)
        )

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.aio_client, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attribute(*args, **kwargs))

        return call
