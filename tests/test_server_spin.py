"""The adaptive polling window of greenstalkd's loop, and the loop polling before it sleeps."""

from __future__ import annotations

import math
import time

import pytest

import greenstalk
from greenstalk.server.spin import SpinWindow
from greenstalk.testing import run_server

LIMIT = 0.0002


def test_a_window_starts_shut_and_opens_while_events_come_just_after_it() -> None:
    spin = SpinWindow(LIMIT)
    assert spin.window == 0
    windows = []
    for _ in range(6):
        spin.waited(LIMIT * 0.9)
        windows.append(spin.window)
    assert windows == sorted(windows)
    assert windows[0] > 0
    assert windows[-1] == LIMIT


def test_events_caught_by_polling_leave_the_window_as_it_is() -> None:
    spin = SpinWindow(LIMIT)
    spin.waited(LIMIT / 2)
    opened = spin.window
    for _ in range(10):
        spin.waited(opened / 2)
    assert spin.window == opened


def test_events_that_come_only_after_the_limit_shut_the_window() -> None:
    spin = SpinWindow(LIMIT)
    while spin.window < LIMIT:
        spin.waited(LIMIT)
    halves = []
    while spin.window:
        spin.waited(1.0)
        halves.append(spin.window)
        assert len(halves) < 10
    assert halves[0] == LIMIT / 2
    # Once shut, long waits keep it shut: an idle server sleeps at once.
    spin.waited(5.0)
    assert spin.window == 0


def test_a_limit_of_zero_never_polls() -> None:
    spin = SpinWindow(0)
    for seconds in (0.0, 1e-6, 1e-4, 1.0):
        spin.waited(seconds)
        assert spin.window == 0


@pytest.mark.parametrize("limit", [-1e-6, math.nan])
def test_a_negative_limit_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="spin limit"):
        SpinWindow(limit)


def test_a_server_that_polls_still_answers_and_fires_its_timers() -> None:
    """Round trips open the window; a delayed job still becomes ready on time while it is open."""
    server_running = run_server("greenstalkd", args=["-w", "200"], in_process=False)
    with server_running as server, greenstalk.Client(server.address) as client:
        for _ in range(200):
            client.put(b"x")
            client.delete(client.reserve(timeout=0))
        client.put(b"later", delay=1)
        started = time.monotonic()
        job = client.reserve(timeout=5)
        waited = time.monotonic() - started
        assert job.body == b"later"
        assert 0.5 < waited < 2.5
