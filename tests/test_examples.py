"""The scripts in examples/ run, as their docstrings say, against a server with no set-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import greenstalk
from greenstalk.testing import ServerProcess

from .conftest import StartServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(server: ServerProcess, *argv: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ, BEANSTALKD_ADDRESS=greenstalk.describe_address(server.address))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / argv[0]), *argv[1:]],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=True,
    )


def test_producer_then_consumer(start_server: StartServer) -> None:
    server = start_server()
    run_example(server, "producer.py", "1", "2", "3")
    result = run_example(server, "consumer.py", "--timeout", "0")
    assert result.stdout.count("sent the registration email") == 3


def test_producer_then_worker(start_server: StartServer) -> None:
    server = start_server(unix=True)
    run_example(server, "producer.py", "7", "8")
    with greenstalk.Client(server.address, use="registrations") as client:
        broken = client.put(b'{"user": "nobody"}')
        run_example(server, "worker.py", "--burst")
        assert client.stats_job(broken)["state"] == "buried"
        assert client.stats_tube("registrations")["current-jobs-ready"] == 0


def test_asyncio_producer_then_consumer(start_server: StartServer) -> None:
    server = start_server()
    run_example(server, "aio_producer.py", "4", "5")
    result = run_example(server, "aio_consumer.py", "--timeout", "0")
    assert "user 4" in result.stdout
    assert "user 5" in result.stdout


def test_demo(start_server: StartServer) -> None:
    result = run_example(start_server(), "demo.py")
    assert "Done: 3 email(s) sent" in result.stdout
