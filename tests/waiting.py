"""Waiting in tests for a condition to hold: polled, with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    """Poll ``condition`` every 10 ms until it is true.

    Fails the test, naming ``what``, after ``seconds``. The deadline is
    generous: a condition that holds returns at once, and only a failing
    test waits it out, on however loaded a machine.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(0.01)
