"""Copy the sync client's command methods into greenstalk/aio.py as coroutines.

The two clients differ only in how bytes move, so their command methods
are the same code but for ``async``/``await``: they are written once, in
greenstalk/client.py between the COMMANDS markers, and this script rewrites
the marked region of greenstalk/aio.py from them. The test suite fails when
the region is out of date. Run it after changing a command method:

    .venv/bin/python scripts/generate_aio.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SYNC_CLIENT = ROOT / "greenstalk" / "client.py"
ASYNC_CLIENT = ROOT / "greenstalk" / "aio.py"
BEGIN = "    # BEGIN COMMANDS"
END = "    # END COMMANDS"
HEADER = "    # BEGIN COMMANDS (generated from greenstalk/client.py by scripts/generate_aio.py)"
# The transport calls that do I/O: awaited in the asyncio client.
_IO_CALL = re.compile(r"\bself\.(_run|_pipeline)\(")


def _region(source: str) -> tuple[int, int]:
    """The start of the BEGIN marker line and the end of the END marker line."""
    start = source.index(BEGIN)
    end = source.index("\n", source.index(END, start)) + 1
    return start, end


def async_commands(sync_source: str) -> str:
    """The command methods of ``sync_source`` as coroutines, between markers."""
    start, end = _region(sync_source)
    body = sync_source[start:end].split("\n", 1)[1].rsplit(END, 1)[0]
    body = re.sub(r"^    def ", "    async def ", body, flags=re.MULTILINE)
    body = _IO_CALL.sub(r"await self.\1(", body)
    return f"{HEADER}\n{body}{END}\n"


def generate(async_source: str, sync_source: str) -> str:
    """``async_source`` with its command region replaced from ``sync_source``."""
    start, end = _region(async_source)
    return async_source[:start] + async_commands(sync_source) + async_source[end:]


def main() -> int:
    """Rewrite greenstalk/aio.py; with --check, only report whether it is up to date."""
    current = ASYNC_CLIENT.read_text()
    wanted = generate(current, SYNC_CLIENT.read_text())
    if "--check" in sys.argv[1:]:
        if wanted != current:
            print("greenstalk/aio.py is out of date: run scripts/generate_aio.py")
            return 1
        return 0
    if wanted != current:
        ASYNC_CLIENT.write_text(wanted)
        print("greenstalk/aio.py updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
