"""How long the server's loop polls for events before it sleeps: an adaptive window.

A loop that sleeps in ``epoll_wait`` as soon as it runs out of work pays
for waking up when the next command comes: the CPU it ran on may have gone
idle, and waking an idle CPU costs tens of microseconds, far more under a
hypervisor. A client in a loop of round trips sends its next command a
few tens of microseconds after its reply, so every command paid that
wake-up. Polling for a short while first catches such a command on a CPU
that is still running.

The window adapts, as Linux's guest ``haltpoll`` idle driver does: it grows
while events come a little after the window ended (a longer poll would have
caught them), shrinks while they come only after the limit (polling was
wasted), and stays while polling catches them. A server that is idle
sleeps at once: it polls only after the work it just did, and only for as
long as that has been paying off.
"""

from __future__ import annotations

# The first window opened; a window shrunk below it goes to 0 (not worth a poll).
_START = 0.00002


class SpinWindow:
    """The current polling window (seconds), adapted to how soon events have come.

    ``limit`` is the longest window; 0 turns polling off for good. Raises
    ValueError when it is negative.
    """

    __slots__ = ("limit", "window")

    def __init__(self, limit: float) -> None:
        if not limit >= 0:
            raise ValueError(f"the spin limit must be >= 0 seconds, not {limit!r}")
        self.limit = limit
        #: How long to poll before the next sleep; 0: sleep at once.
        self.window = 0.0

    def waited(self, seconds: float) -> None:
        """An event came ``seconds`` after the loop began to wait (polling, then sleeping)."""
        window = self.window
        if seconds <= window:
            return  # polling caught it
        if seconds <= self.limit:
            # A longer poll would have caught it.
            self.window = min(self.limit, max(window * 2, _START))
        elif window:
            # Nothing comes soon now: poll less.
            window /= 2
            self.window = window if window >= _START else 0.0
