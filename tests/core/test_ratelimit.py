"""The limiter's parts: the rate syntax, the two stores' windows and atomicity, failing open without Redis."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.ratelimit import MemoryStore, Rate, RedisStore, parse_rate
from app.core.settings import Settings
from tests.procs import free_port

REDIS_URL = os.environ.get("LOOKALIKE_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="LOOKALIKE_TEST_REDIS_URL is not set")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("120/minute", Rate(120, 60)),
        ("10/hour", Rate(10, 3600)),
        ("10/hours", Rate(10, 3600)),
        ("5/30s", Rate(5, 30)),
        (" 1000 / day ", Rate(1000, 86400)),
        ("0", None),
        ("", None),
        ("0/minute", None),
    ],
)
def test_rates_are_read_from_their_text(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["lots", "5", "5/fortnight", "-1/minute", "5/0s", "1.5/minute"])
def test_a_malformed_rate_stops_the_settings_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(ValidationError, match="120/minute"):
        Settings(rate_limit_uploads=text)


def test_the_defaults_limit_every_action() -> None:
    settings = Settings()
    assert parse_rate(settings.rate_limit_uploads) == Rate(120, 60)
    assert parse_rate(settings.rate_limit_trainings) == Rate(10, 3600)
    assert parse_rate(settings.rate_limit_generations) == Rate(60, 60)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    prefix = f"lookalike-test-ratelimit-{uuid.uuid4().hex[:8]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> tuple[Any, Clock]:
    """Each store, on a clock the test moves."""
    clock = Clock()
    if request.param == "memory":
        return MemoryStore(clock), clock
    if not REDIS_URL:
        pytest.skip("LOOKALIKE_TEST_REDIS_URL is not set")
    return RedisStore(REDIS_URL, prefix=request.getfixturevalue("redis_prefix"), clock=clock), clock


def test_a_window_admits_its_limit_then_refuses_until_it_ends(store: tuple[Any, Clock]) -> None:
    store, clock = store
    bucket = f"uploads:{uuid.uuid4()}"
    first = store.hit(bucket, limit=3, period_s=60)
    assert (first.allowed, first.remaining, first.reset_s) == (True, 2, 60)
    clock.now += 10.5
    assert [store.hit(bucket, limit=3, period_s=60).allowed for _ in range(3)] == [True, True, False]
    refused = store.hit(bucket, limit=3, period_s=60)
    assert (refused.allowed, refused.remaining, refused.reset_s) == (False, 0, 50)  # 49.5 s, rounded up
    assert store.hit(f"uploads:{uuid.uuid4()}", limit=3, period_s=60).allowed  # another key
    clock.now += 49.5
    again = store.hit(bucket, limit=3, period_s=60)
    assert (again.allowed, again.remaining, again.reset_s) == (True, 2, 60)


def test_concurrent_requests_never_pass_the_limit(store: tuple[Any, Clock]) -> None:
    store, _ = store
    bucket = f"generations:{uuid.uuid4()}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        decisions = list(pool.map(lambda _: store.hit(bucket, limit=5, period_s=60), range(40)))
    assert sum(d.allowed for d in decisions) == 5


@needs_redis
def test_redis_counts_on_its_own_clock_by_default(redis_prefix: str) -> None:
    store = RedisStore(REDIS_URL, prefix=redis_prefix)
    bucket = f"trainings:{uuid.uuid4()}"
    assert [store.hit(bucket, limit=2, period_s=3600).allowed for _ in range(3)] == [True, True, False]
    assert 3590 <= store.hit(bucket, limit=2, period_s=3600).reset_s <= 3600


def test_an_unreachable_redis_lets_requests_through_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere:")
    with caplog.at_level(logging.WARNING, logger="app.core.ratelimit"):
        assert store.hit("uploads:x", limit=1, period_s=60) is None
        assert store.hit("uploads:x", limit=1, period_s=60) is None
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once a minute, not once per request


@pytest.mark.parametrize(
    ("address", "block"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # an IPv4 client on a dual-stack socket
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # the same client, another address of its /64
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_failed_sign_ins_are_counted_per_ipv4_address_and_per_ipv6_64(address: str | None, block: str) -> None:
    from app.core.ratelimit import client_block

    assert client_block(address) == block
