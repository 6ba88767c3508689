"""The pool's pure decisions: placement (round-robin, rendezvous), health and backoff, sums."""

from __future__ import annotations

import collections

import pytest

from greenstalk import NotFoundError
from greenstalk._placement import Health, Placement, check_strategy, key_bytes
from greenstalk._pool_common import (
    merge_tubes,
    parse_addresses,
    pool_addresses,
    sum_stats,
    sum_tube_stats,
)

NAMES = ["10.0.0.1:11300", "10.0.0.2:11300", "10.0.0.3:11300"]


def test_round_robin_starts_one_server_further_each_time() -> None:
    placement = Placement(NAMES, NAMES, "round-robin")
    firsts = [placement.order()[0] for _ in range(9)]
    assert firsts == NAMES * 3
    assert sorted(placement.order()) == sorted(NAMES)


def test_first_is_the_first_of_the_order() -> None:
    placement = Placement(NAMES, NAMES, "round-robin")
    assert [placement.first() for _ in range(6)] == NAMES * 2
    for n in range(200):
        assert placement.first(f"k{n}") == placement.order(f"k{n}")[0]
    randomly = Placement(NAMES, NAMES, "random")
    assert {randomly.first() for _ in range(200)} == set(NAMES)


def test_random_spreads_evenly() -> None:
    placement = Placement(NAMES, NAMES, "random")
    counts = collections.Counter(placement.order()[0] for _ in range(30_000))
    assert all(9_000 < count < 11_000 for count in counts.values())


def test_a_key_always_ranks_the_same_server_first_whatever_the_list_order() -> None:
    forward = Placement(NAMES, NAMES, "round-robin")
    backward = Placement(NAMES[::-1], NAMES[::-1], "round-robin")
    for n in range(500):
        key = f"customer-{n}"
        assert forward.order(key) == backward.order(key)
        assert forward.order(key) == forward.order(key.encode())


def test_keys_spread_evenly_and_a_fourth_server_takes_only_its_share() -> None:
    three = Placement(NAMES, NAMES, "round-robin")
    four_names = [*NAMES, "10.0.0.4:11300"]
    four = Placement(four_names, four_names, "round-robin")
    keys = [f"key-{n}" for n in range(10_000)]
    before = {key: three.order(key)[0] for key in keys}
    after = {key: four.order(key)[0] for key in keys}
    spread = collections.Counter(before.values())
    assert all(3_000 < count < 3_700 for count in spread.values()), spread
    moved = [key for key in keys if before[key] != after[key]]
    # Only the keys the new server now takes move, about a quarter of them.
    assert all(after[key] == "10.0.0.4:11300" for key in moved)
    assert len(moved) / len(keys) <= 0.30


def test_losing_a_server_moves_only_its_keys() -> None:
    three = Placement(NAMES, NAMES, "round-robin")
    keys = [f"key-{n}" for n in range(3_000)]
    for key in keys:
        order = three.order(key)
        survivors = [name for name in order if name != NAMES[1]]
        if order[0] != NAMES[1]:
            assert survivors[0] == order[0]


def test_bad_strategies_and_keys() -> None:
    with pytest.raises(ValueError, match="round-robin, random"):
        check_strategy("least-loaded")
    with pytest.raises(TypeError, match="str or bytes"):
        key_bytes(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="each server needs a name"):
        Placement(NAMES, NAMES[:2], "random")


def test_health_backs_off_doubling_up_to_the_cap() -> None:
    health = Health(base=1.0, cap=8.0)
    assert health.up
    assert not health.due(1e9)
    delays = []
    for _ in range(6):
        health.failed(100.0, "refused")
        delays.append(health.retry_at - 100.0)
    assert not health.up
    assert health.reason == "refused"
    for delay, nominal in zip(delays, [1, 2, 4, 8, 8, 8]):
        assert 0.8 * nominal <= delay <= nominal
    assert not health.due(100.0)
    assert health.due(108.0)
    health.succeeded()
    assert health.up
    assert health.failures == 0
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Health(base=2.0, cap=1.0)


def test_address_lists() -> None:
    assert parse_addresses("a:1, b ,/run/q.sock") == [("a", 1), ("b", 11300), "/run/q.sock"]
    with pytest.raises(ValueError, match="no server address"):
        parse_addresses(" , ")
    assert pool_addresses(("h", 1)) == [("h", 1)]
    assert pool_addresses("/run/socket") == ["/run/socket"]
    assert pool_addresses([("h", 1), "/s"]) == [("h", 1), "/s"]
    with pytest.raises(ValueError, match="listed twice"):
        pool_addresses([("h", 1), ("h", 1)])
    with pytest.raises(ValueError, match="at least one"):
        pool_addresses([])
    with pytest.raises(TypeError, match="not a server address"):
        pool_addresses([42])  # type: ignore[list-item]


def test_address_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEANSTALKD_ADDRESS", "a:1,b:2")
    assert pool_addresses(None) == [("a", 1), ("b", 2)]
    monkeypatch.delenv("BEANSTALKD_ADDRESS")
    assert pool_addresses(None) == [("127.0.0.1", 11300)]


def test_sums_of_server_statistics() -> None:
    first = {"cmd-put": 3, "uptime": 10, "max-job-size": 100, "draining": False, "pid": 1}
    second = {"cmd-put": 4, "uptime": 30, "max-job-size": 50, "draining": True, "pid": 2}
    total = sum_stats([first, second])  # type: ignore[list-item]
    assert total == {  # type: ignore[comparison-overlap]
        "cmd-put": 7, "uptime": 30, "max-job-size": 50, "draining": True, "pid": 1
    }
    with pytest.raises(ValueError, match="no statistics"):
        sum_stats([])


def test_sums_of_tube_statistics() -> None:
    a = {"name": "t", "current-jobs-ready": 2, "pause": 0, "pause-time-left": 0}
    b = {"name": "t", "current-jobs-ready": 5, "pause": 9, "pause-time-left": 4}
    total = sum_tube_stats("t", {"x": a, "y": None, "z": b})  # type: ignore[dict-item]
    assert total == {
        "name": "t", "current-jobs-ready": 7, "pause": 9, "pause-time-left": 4
    }
    with pytest.raises(NotFoundError, match="no server has this tube"):
        sum_tube_stats("t", {"x": None})


def test_merged_tube_lists() -> None:
    assert merge_tubes([["default", "a"], ["default", "b"], []]) == ["default", "a", "b"]
