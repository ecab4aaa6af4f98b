"""The signup form's per-address rate limiter: a sliding window, bounded memory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dispatcher.demo.ratelimit import RateLimiter, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_sliding_window_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(limit=3, window=60.0, timer=clock)
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    clock.now += 15
    assert limiter.hit("a") == 45.0
    assert limiter.hit("b") is None  # another key is not affected
    clock.now += 44.5
    assert limiter.hit("a") == 0.5
    clock.now += 0.5  # the first three are a window old
    assert limiter.hit("a") is None
    assert limiter.hit("a") is None
    assert limiter.hit("a") is None
    assert limiter.hit("a") == 60.0  # all three came just now


def test_a_refused_hit_is_not_counted() -> None:
    clock = Clock()
    limiter = RateLimiter(limit=1, window=10.0, timer=clock)
    assert limiter.hit("a") is None
    for _ in range(100):
        assert limiter.hit("a") == 10.0
    clock.now += 10
    assert limiter.hit("a") is None


def test_memory_is_bounded_by_max_clients() -> None:
    clock = Clock()
    limiter = RateLimiter(limit=1, window=60.0, max_clients=100, timer=clock)
    assert limiter.hit("first") is None
    for i in range(10_000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter) <= 100
    assert len(limiter) == 100
    # The least recently seen was forgotten first.
    assert limiter.hit("first") is None


def test_a_recently_seen_client_is_kept() -> None:
    limiter = RateLimiter(limit=1, window=60.0, max_clients=2, timer=Clock())
    limiter.hit("a")
    limiter.hit("b")
    limiter.hit("a")  # refused, but seen: "b" is now the oldest
    limiter.hit("c")
    assert limiter.hit("a") is not None
    assert limiter.hit("b") is None  # forgotten, so allowed again


def test_threads_never_get_more_than_the_limit() -> None:
    limiter = RateLimiter(limit=50, window=60.0, timer=Clock())
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: limiter.hit("a"), range(400)))
    assert answers.count(None) == 50


@pytest.mark.parametrize(
    ("address", "key"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="ipv4"),
        pytest.param("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", id="ipv6"),
        pytest.param("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64", id="same-64"),
        pytest.param("2001:db8:1:3::1", "2001:db8:1:3::/64", id="other-64"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="v4-mapped"),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="none"),
        pytest.param("unix:/run/x.sock", "unix:/run/x.sock", id="not-an-ip"),
    ],
)
def test_client_key(address: str | None, key: str) -> None:
    assert client_key(address) == key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"limit": 0}, "limit must be a positive integer, not 0", id="0"),
        pytest.param({"limit": 1.5}, "limit must be a positive integer", id="float"),
        pytest.param({"limit": True}, "limit must be a positive integer", id="bool"),
        pytest.param({"window": 0}, "window must be a positive number, not 0", id="w0"),
        pytest.param({"window": float("inf")}, "window must be", id="inf"),
        pytest.param({"window": float("nan")}, "window must be", id="nan"),
        pytest.param({"max_clients": 0}, "max_clients must be", id="clients"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(**kwargs)
