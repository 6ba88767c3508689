"""The ``greenstalk`` command: inspect and operate a beanstalkd server from a shell.

``greenstalk [--address ADDRESS] [--json] [--timeout SECONDS] COMMAND ...``
talks to ``--address`` (``host:port``, ``host`` for port 11300, or the path
of a Unix socket), else to ``$BEANSTALKD_ADDRESS``, else to
127.0.0.1:11300. ``--address`` may be repeated, or list several servers
separated by commas (so may ``$BEANSTALKD_ADDRESS``): then ``stats``,
``tubes`` and ``top`` show each server and the totals, ``put`` spreads
the jobs over them, ``kick``, ``pause`` and ``drain`` act on each,
``worker`` works for all, and the commands about one job (``peek``,
``peek-STATE``, ``delete``, ``kick-job``, ``stats --job``) need
``--server ADDRESS`` to say which, since a job id is unique on one server
only. The commands are ``put``,
``peek``, ``peek-ready``, ``peek-delayed``, ``peek-buried``, ``delete``,
``kick``, ``kick-job``, ``pause``, ``stats``, ``tubes``, ``drain``, ``top``,
``worker`` and ``serve``; ``greenstalk COMMAND --help`` describes each.
Output is a human-readable table or line by default, and one JSON document
per line with ``--json`` (the keys it makes up in snake_case, statistics
under the server's names). An error is one line on stderr, never a
traceback. A tube that does not exist is an empty one: ``kick``, ``pause``
and ``drain`` of it do nothing, say so, and succeed.

Exit codes:

* 0: success.
* 1: the server refused the command or found nothing (an unknown job, a
  tube without a job in the state asked for, a server in drain mode), or a
  drain was declined; also when the output is closed early (a pipe into
  ``head``).
* 2: usage error: a bad option, argument or address (``--address`` or
  ``$BEANSTALKD_ADDRESS``; a server listed twice; a ``--server`` that is
  not one of them), a command about one job given several servers without
  ``--server``, a worker that cannot be loaded, a drain without ``--yes``
  when stdin is not a terminal, a body that ``put --codec`` rejects.
* 3: the server cannot be reached, or the connection failed or timed out;
  also a ``worker --burst`` that cannot reach a server. With several
  servers: any of them (the others' results are printed first), except
  for ``put``, which puts on the others and fails only when none takes
  the jobs, and ``top``, which shows a server that is away as
  disconnected and fails only when none answers at the start.
* 130: interrupted (Ctrl-C); ``put --lines`` and ``drain`` say how many
  jobs they did first.

``greenstalk serve`` and ``greenstalk worker`` return the exit code of the
server and of the worker.

The command line needs click and rich, installed with the ``cli`` extra
(``pip install 'greenstalk[cli]'``); the rest of the package does not.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_INTERRUPTED = 130

MISSING_EXTRA = "greenstalk: the command line needs its extra: pip install 'greenstalk[cli]'"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``greenstalk`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns the exit code. Expected errors (usage, server refusals, failed
    connections, Ctrl-C) are reported as one line on stderr, not raised.
    When click or rich is not installed, says how to install them and
    returns 2.
    """
    try:
        from ._commands import run
    except ImportError as error:
        if (error.name or "").partition(".")[0] not in ("click", "rich"):
            raise
        print(MISSING_EXTRA, file=sys.stderr)
        return EXIT_USAGE
    return run(list(sys.argv[1:] if argv is None else argv))


__all__ = [
    "EXIT_CONNECTION",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "main",
]
