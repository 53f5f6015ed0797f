"""Rate limits per API key on the costly actions: uploads, trainings and generations.

One interface (`RateLimiter.hit`), two stores:
- Redis, when the service runs with a Redis broker: every API process, on every machine, counts
  against the same budget, updated atomically by one Lua script.
- The process's memory otherwise (the embedded broker). `lookalike serve` runs one API process, so
  its memory holds the whole count; `lookalike api --workers N` on the embedded broker gives each
  worker process a budget of its own.

Fixed windows: a key's first request opens a window of the configured period, which admits `limit`
requests; a refused request learns how many seconds remain until the window ends. Buckets are named
after the API key's id, never the key. Failed sign-ins (refused API keys) are counted the same way per
client address (`RateLimiter.fail_sign_in`), and only failures: a good key is never counted or checked.
If Redis cannot be reached, requests pass with a logged warning: a broken limiter must not stop every
upload (the queue is then down too, and /readyz says so).

The HTTP half (the route dependency, the 429) is `app.core.http_ratelimit`; this half imports no web code.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.core.settings import Settings

log = logging.getLogger(__name__)

UPLOADS = "uploads"
TRAININGS = "trainings"
GENERATIONS = "generations"
ACTIONS = (UPLOADS, TRAININGS, GENERATIONS)
SIGN_IN_FAILURES = "sign_in_failures"  # counted per client address, not per key: see RateLimiter.fail_sign_in

_UNITS = {"s": 1, "second": 1, "m": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
_RATE = re.compile(r"(\d+)\s*/\s*(\d*)\s*([a-z]+)")


@dataclass(frozen=True)
class Rate:
    limit: int
    period_s: int

    def describe(self, action: str) -> str:
        """`120 uploads per minute`, `1 training per 30 seconds`."""
        names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
        period = names.get(self.period_s, f"{self.period_s} seconds")
        noun = action.removesuffix("s") if self.limit == 1 else action
        return f"{self.limit} {noun} per {period}"


def parse_rate(value: str | None) -> Rate | None:
    """`"120/minute"`, `"10/hour"`, `"5/30s"`; None, empty or 0 turn the limit off."""
    text = (value or "").strip().lower()
    if text in ("", "0"):
        return None
    match = _RATE.fullmatch(text)
    if match:
        unit = match[3] if match[3] in _UNITS else match[3].removesuffix("s")  # "hours" as "hour"
        count, multiple = int(match[1]), int(match[2] or 1)
        if unit in _UNITS and multiple > 0:
            return Rate(limit=count, period_s=multiple * _UNITS[unit]) if count else None
    raise ValueError(
        f"{value!r} is not a rate: write N/second, N/minute, N/hour, N/day or N/<seconds>s "
        "(for example 120/minute), or 0 to turn the limit off"
    )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int  # whole seconds until the window ends, at least 1
    first_refused: bool = False  # the window's first refusal (failed sign-ins only: the one that is recorded)

    def headers(self) -> dict[str, str]:
        """The IETF draft's RateLimit-* fields (draft-ietf-httpapi-ratelimit-headers)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


def _decision(allowed: bool, count: int, limit: int, reset_s: float) -> Decision:
    return Decision(allowed, limit, max(0, limit - count), max(1, math.ceil(reset_s)))


class Store(Protocol):
    def hit(self, bucket: str, *, limit: int, period_s: int) -> Decision | None:
        """Count one request in `bucket` unless its window is full; None when the store cannot tell."""


class MemoryStore:
    """The process's own counts: the whole truth when one API process serves (embedded mode)."""

    PRUNE_ABOVE = 4096  # buckets kept before the ended windows are dropped

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[int, float]] = {}  # bucket: (count, end of window)

    def hit(self, bucket: str, *, limit: int, period_s: int) -> Decision:
        now = self._clock()
        with self._lock:
            count, ends = self._windows.get(bucket, (0, now))
            if ends <= now:
                count, ends = 0, now + period_s
            allowed = count < limit
            if allowed:
                count += 1
                self._windows[bucket] = (count, ends)
            if len(self._windows) > self.PRUNE_ABOVE:
                self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        return _decision(allowed, count, limit, ends - now)


# KEYS[1]: the bucket. ARGV: limit, period in ms, now in ms (empty: the Redis server's clock, which all
# API processes share). The hash holds the count and the window's end; its expiry only clears it away.
_HIT = """
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local state = redis.call('HMGET', KEYS[1], 'count', 'ends')
local count = tonumber(state[1]) or 0
local ends = tonumber(state[2]) or 0
if ends <= now then
  count = 0
  ends = now + tonumber(ARGV[2])
end
local allowed = 0
if count < tonumber(ARGV[1]) then
  allowed = 1
  count = count + 1
  redis.call('HSET', KEYS[1], 'count', count, 'ends', ends)
  redis.call('PEXPIRE', KEYS[1], ends - now)
end
return {allowed, count, ends - now}
"""


@lru_cache(maxsize=8)
def redis_client(url: str) -> Any:
    """One client (and connection pool) per process and URL; short timeouts, as the limiter fails open."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30)


class RedisStore:
    """Counts in Redis, shared by every API process that uses the same Redis and key prefix."""

    WARN_EVERY_S = 60.0

    def __init__(self, url: str, *, prefix: str = "", clock: Callable[[], float] | None = None) -> None:
        self._client = redis_client(url)
        self._script = self._client.register_script(_HIT)
        self._prefix = f"{prefix}ratelimit:"
        self._clock = clock
        self._warned_at = -math.inf

    def hit(self, bucket: str, *, limit: int, period_s: int) -> Decision | None:
        import redis

        now = "" if self._clock is None else str(int(self._clock() * 1000))
        try:
            allowed, count, reset_ms = self._script(keys=[self._prefix + bucket], args=[limit, period_s * 1000, now])
        except redis.RedisError as exc:
            if time.monotonic() - self._warned_at > self.WARN_EVERY_S:
                self._warned_at = time.monotonic()
                log.warning("rate limits are not applied: Redis is unreachable (%s: %s)", type(exc).__name__, exc)
            return None
        return _decision(bool(allowed), int(count), limit, int(reset_ms) / 1000)


class RateLimiter:
    """The configured rate of each action, counted per API key in one store."""

    def __init__(self, *, rates: dict[str, Rate | None], store: Store) -> None:
        self.rates = rates
        self.store = store

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] | None = None) -> RateLimiter:
        """Redis when the broker is Redis, the process's memory otherwise; `clock` (seconds) is for tests."""
        actions = (*ACTIONS, SIGN_IN_FAILURES)
        rates = {action: parse_rate(getattr(settings, f"rate_limit_{action}")) for action in actions}
        url = settings.resolved_broker_url
        store: Store
        if url.startswith(("redis://", "rediss://")):
            store = RedisStore(url, prefix=settings.broker_key_prefix, clock=clock)
        else:
            store = MemoryStore(clock) if clock else MemoryStore()
        return cls(rates=rates, store=store)

    def hit(self, action: str, key_id: uuid.UUID) -> Decision | None:
        """Count one `action` by the key; None when unlimited (or the store cannot tell)."""
        rate = self.rates.get(action)
        if rate is None:
            return None
        return self.store.hit(f"{action}:{key_id}", limit=rate.limit, period_s=rate.period_s)

    def fail_sign_in(self, address: str | None) -> Decision | None:
        """Count one refused API key from the client `address`; None when unlimited (or the store cannot tell).

        The bucket is named after the address alone, never the key or any part of it. The window admits
        `limit` failures; the store is asked for one more, so that the first refused one is told from the
        rest (`first_refused`, the one the audit log records) in the same atomic step.
        """
        rate = self.rates.get(SIGN_IN_FAILURES)
        if rate is None:
            return None
        bucket = f"{SIGN_IN_FAILURES}:{client_block(address)}"
        counted = self.store.hit(bucket, limit=rate.limit + 1, period_s=rate.period_s)
        if counted is None:
            return None
        over = counted.remaining == 0  # this failure or an earlier one was the window's (limit + 1)th
        return Decision(
            allowed=not over,
            limit=rate.limit,
            remaining=max(0, counted.remaining - 1),
            reset_s=counted.reset_s,
            first_refused=over and counted.allowed,
        )


def client_block(address: str | None) -> str:
    """Who a failed sign-in is counted against: the IPv4 address, or the IPv6 /64 (one client holds a
    whole /64 and could otherwise take a fresh address for every guess)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.1, a dual-stack socket's IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
