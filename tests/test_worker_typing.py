"""What mypy says of worker code: async handlers and misspelt settings are type errors."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from mypy import api

# Each line marked "# error" must be reported by mypy, and no other.
SNIPPET = '''
import functools
import greenstalk
import greenstalk.aio

async def later(job: greenstalk.WorkerJob) -> None: ...
async def on_loop(job: greenstalk.aio.WorkerJob) -> None: ...
def now(job: greenstalk.WorkerJob) -> None: ...

worker = greenstalk.Worker(handlers={"a": now, "b": lambda job: None})
greenstalk.Worker(handlers={"a": later})  # error
worker.add_handler("a", later)  # error
worker.add_handler("a", functools.partial(later))  # error
@worker.handler("a")  # error
async def decorated(job: greenstalk.WorkerJob) -> None: ...
@worker.handler("a")
def plain(job: greenstalk.WorkerJob) -> None: ...
reveal_type(plain)  # note

aio_worker = greenstalk.aio.Worker(handlers={"a": on_loop, "b": now}, concurrency=4)
aio_worker.add_handler("c", lambda job: None)
@aio_worker.handler("d")
async def on_loop_too(job: greenstalk.aio.WorkerJob) -> None: ...
greenstalk.aio.Worker(codce="json")  # error
greenstalk.Worker(codce="json")  # error
greenstalk.aio.Worker(concurrency="4")  # error
'''


def test_mypy_rejects_async_handlers_and_unknown_settings(tmp_path: Path) -> None:
    source = textwrap.dedent(SNIPPET).lstrip()
    (tmp_path / "snippet.py").write_text(source)
    expected = {
        number for number, line in enumerate(source.splitlines(), 1) if line.endswith("# error")
    }
    stdout, stderr, _ = api.run([
        "--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"),
        str(tmp_path / "snippet.py"),
    ])
    assert not stderr
    errors = {
        int(found.group(1)): found.group(2)
        for found in re.finditer(r"^.*snippet\.py:(\d+): error: (.*)$", stdout, re.MULTILINE)
    }
    assert set(errors) == expected, stdout
    misspelt = source.splitlines().index('greenstalk.aio.Worker(codce="json")  # error') + 1
    assert errors[misspelt].startswith('Unexpected keyword argument "codce" for "Worker"')
    assert 'Revealed type is "def (job: greenstalk._worker_rules.WorkerJob)"' in stdout
