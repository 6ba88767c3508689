"""The asyncio client's command methods are generated from the sync client's."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_aio", ROOT / "scripts/generate_aio.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_aio_commands_are_up_to_date() -> None:
    generator = _generator()
    current = (ROOT / "greenstalk/aio.py").read_text()
    wanted = generator.generate(current, (ROOT / "greenstalk/client.py").read_text())
    assert wanted == current, "greenstalk/aio.py is out of date: run scripts/generate_aio.py"


def test_generation_makes_coroutines_that_await_io() -> None:
    generator = _generator()
    sync = (
        "class C:\n"
        "    # BEGIN COMMANDS\n"
        "    def put(self, body: bytes) -> int:\n"
        "        return self._run(commands.put(body))\n"
        "    def many(self) -> list[int]:\n"
        "        return [x for x in self._pipeline(p)]\n"
        "    # END COMMANDS\n"
    )
    region = generator.async_commands(sync)
    assert "    async def put(self, body: bytes) -> int:\n" in region
    assert "        return await self._run(commands.put(body))\n" in region
    assert "[x for x in await self._pipeline(p)]" in region
