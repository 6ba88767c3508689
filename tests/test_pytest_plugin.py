"""The pytest plugin users get with greenstalk: its fixtures, used directly and in a child run."""

from __future__ import annotations

import pytest

import greenstalk
from greenstalk.pytest_plugin import CLIENT_SOCKET_TIMEOUT
from greenstalk.testing import ServerAddress, ServerProcess, run_server


def test_fixtures_give_a_working_server(
    greenstalk_server: ServerProcess,
    greenstalk_address: ServerAddress,
    greenstalk_client: greenstalk.Client[bytes],
) -> None:
    assert greenstalk_address == greenstalk_server.address
    assert greenstalk_server.kind == "greenstalkd"
    job_id = greenstalk_client.put(b"hello")
    assert greenstalk_client.reserve().id == job_id


def test_each_test_gets_a_fresh_server(greenstalk_client: greenstalk.Client[bytes]) -> None:
    assert greenstalk_client.stats()["total-jobs"] == 0


CHILD_TEST = """
def test_server(greenstalk_server, greenstalk_client):
    assert greenstalk_client.put(b"x") == 1
    print("SERVER-KIND", greenstalk_server.kind)
"""


@pytest.mark.parametrize("kind", ["greenstalkd", "beanstalkd"])
def test_the_option_chooses_the_server(pytester: pytest.Pytester, kind: str) -> None:
    pytester.makepyfile(CHILD_TEST)
    result = pytester.runpytest_subprocess(f"--greenstalk-server={kind}", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*SERVER-KIND {kind}*"])


def test_the_ini_option_chooses_the_server(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngreenstalk_server = beanstalkd\n")
    pytester.makepyfile(CHILD_TEST)
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*SERVER-KIND beanstalkd*"])


def test_the_client_fixture_has_a_socket_timeout(
    greenstalk_client: greenstalk.Client[bytes],
) -> None:
    """A server that stops answering fails the test instead of hanging it."""
    assert greenstalk_client._timeout == CLIENT_SOCKET_TIMEOUT == 10


def test_a_bad_ini_value_is_one_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngreenstalk_server = beanstalk\n")
    pytester.makepyfile(CHILD_TEST + CHILD_TEST.replace("test_server", "test_other"))
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: greenstalk_server = 'beanstalk' in the pytest configuration: "
            "the server must be one of greenstalkd, beanstalkd"
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_the_option_overrides_a_bad_ini_value(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ngreenstalk_server = beanstalk\n")
    pytester.makepyfile(CHILD_TEST)
    result = pytester.runpytest_subprocess("--greenstalk-server=greenstalkd", "-s")
    result.assert_outcomes(passed=1)


def test_server_process_repr(greenstalk_server: ServerProcess) -> None:
    address = greenstalk_server.address
    assert isinstance(address, tuple)
    host, port = address
    assert repr(greenstalk_server) == f"<ServerProcess greenstalkd at {host}:{port}, in-process>"
    with run_server("beanstalkd", unix=True) as beanstalkd:
        assert beanstalkd.process is not None
        assert repr(beanstalkd) == (
            f"<ServerProcess beanstalkd at unix:{beanstalkd.address}, "
            f"pid {beanstalkd.process.pid}>"
        )
