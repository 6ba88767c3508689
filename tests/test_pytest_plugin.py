"""The pytest plugin users get with greenstalk: its fixtures, used directly and in a child run."""

from __future__ import annotations

import pytest

import greenstalk
from greenstalk.testing import ServerAddress, ServerProcess


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
