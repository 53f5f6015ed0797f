"""Failed sign-ins are throttled per client address: past LOOKALIKE_RATE_LIMIT_SIGN_IN_FAILURES, a wrong,
malformed or revoked key gets 429 with Retry-After and no audit entry of its own (one entry a window says
the address is throttled), while a good key from the same address is never counted, checked or refused.

The app here is the real one with a tiny limit, its limiter counting in Redis when the run has one (CI), in
the process otherwise, on a clock the test moves. Each test sends from an address of its own (the
TestClient's `client`), so counts never mix with another test's, nor with the session client's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.core.auth import generate_key
from app.core.metrics import REGISTRY
from app.core.ratelimit import Decision, RateLimiter, client_block
from app.db import AuditEvent
from tests.procs import api_client, base_env, free_port, purge_redis, running, wait_ready

LIMIT = 3  # failed sign-ins a minute
REDIS_URL = os.environ.get("LOOKALIKE_TEST_REDIS_URL")


class Clock:
    """Seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def random_block() -> str:
    """The first four groups of an IPv6 /64 in the documentation range 2001:db8::/32."""
    return f"2001:db8:{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"


class CountingStore:
    """The limiter's store, with every bucket it is asked about written down."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.buckets: list[str] = []

    def hit(self, bucket: str, *, limit: int, period_s: int) -> Decision | None:
        self.buckets.append(bucket)
        return self.store.hit(bucket, limit=limit, period_s=period_s)


class Throttled:
    """An app with the sign-in limit `rate`, and a client on it from an address of its own."""

    def __init__(self, settings: Any, rate: str) -> None:
        from fastapi.testclient import TestClient

        from app.main import create_app

        self.ip = f"{random_block()}::1"  # a documentation address, in a /64 of its own
        self.clock = Clock()
        limited = settings.model_copy(update={"rate_limit_sign_in_failures": rate})
        self.app = create_app(limited)
        limiter = RateLimiter.from_settings(limited, clock=self.clock)
        self.store = CountingStore(limiter.store)
        self.app.state.rate_limiter = RateLimiter(rates=limiter.rates, store=self.store)
        self.http = TestClient(self.app, client=(self.ip, 50000))

    def other(self, ip: str) -> Any:
        """A client on the same app from another address."""
        from fastapi.testclient import TestClient

        return TestClient(self.app, client=(ip, 50000))


@pytest.fixture
def throttled(settings: Any) -> Iterator[Callable[[str], Throttled]]:
    made: list[Throttled] = []

    def make(rate: str = f"{LIMIT}/minute") -> Throttled:
        made.append(Throttled(settings, rate))
        made[-1].http.__enter__()
        return made[-1]

    yield make
    for one in made:
        one.http.__exit__(None, None, None)


@pytest.fixture
def revoked(make_account: Any, settings: Any) -> str:
    from app.core.db import session_factory, session_scope
    from app.users.service import revoke_key

    key = make_account().key
    with session_scope(session_factory(settings)) as session:
        revoke_key(session, ident=key)
    return key


def bad(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def audit(db: Any, ip: str) -> list[AuditEvent]:
    db.expire_all()
    return list(db.scalars(select(AuditEvent).where(AuditEvent.ip_address == ip).order_by(AuditEvent.id)))


def actions(db: Any, ip: str) -> list[str]:
    return [event.action for event in audit(db, ip)]


def refusals() -> float:
    return REGISTRY.get_sample_value("lookalike_rate_limited_total", {"action": "sign_in_failures"}) or 0.0


def assert_throttled(response: Any, *secrets: str) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.headers["RateLimit-Limit"] == str(LIMIT) and response.headers["RateLimit-Remaining"] == "0"
    assert "www-authenticate" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "too_many_failed_sign_ins", error
    assert f"{LIMIT} failed sign-ins per minute" in error["message"], error
    assert "Retry-After" in error["hint"] and "LOOKALIKE_RATE_LIMIT_SIGN_IN_FAILURES" in error["hint"], error
    for secret in secrets:
        assert secret not in response.text
    return retry_after


def test_failed_sign_ins_past_the_limit_get_429_and_one_audit_entry_a_window(
    throttled: Callable[..., Throttled], revoked: str, db: Any
) -> None:
    app = throttled()
    wrong = generate_key()  # never issued
    refused_before = refusals()

    # Under the limit: the usual 401s, each one recorded.
    for headers in (bad(wrong), {"Authorization": "Basic dXNlcjpwYXNz"}, bad(revoked)):
        response = app.http.get("/v1/me", headers=headers)
        assert response.status_code == 401, response.text
    assert actions(db, app.ip) == ["sign_in_failed"] * LIMIT

    # Past it: 429, whatever the failure, and one entry saying so however many more arrive.
    first = assert_throttled(app.http.get("/v1/me", headers=bad(wrong)), wrong)
    for headers in (bad(generate_key()), bad(revoked), {"Authorization": "Bearer"}, {"Authorization": wrong}) * 3:
        assert_throttled(app.http.get("/v1/subjects", headers=headers), wrong, revoked)
    assert refusals() == refused_before + 13
    events = audit(db, app.ip)
    assert [e.action for e in events] == ["sign_in_failed"] * LIMIT + ["sign_in_throttled"]
    entry = events[-1]
    assert (entry.actor, entry.user_id, entry.target_id) == ("anonymous", None, None)
    assert entry.details == {"limit": LIMIT, "period_s": 60}
    assert 1 <= first <= 60

    # Every bucket counted is the address's: never the key, nor any part of it.
    assert set(app.store.buckets) == {f"sign_in_failures:{client_block(app.ip)}"}

    # The next window starts afresh: 401s again, then one more entry once it is used up.
    app.clock.now += 60
    for _ in range(LIMIT):
        assert app.http.get("/v1/me", headers=bad(wrong)).status_code == 401
    for _ in range(3):
        assert_throttled(app.http.get("/v1/me", headers=bad(wrong)))
    assert actions(db, app.ip) == (["sign_in_failed"] * LIMIT + ["sign_in_throttled"]) * 2


def test_a_good_key_from_a_throttled_address_is_neither_counted_nor_refused(
    throttled: Callable[..., Throttled], account: Any, subject: dict[str, Any], db: Any
) -> None:
    app = throttled()
    for _ in range(LIMIT):
        assert app.http.get("/v1/me", headers=bad(generate_key())).status_code == 401
    assert_throttled(app.http.get("/v1/me", headers=bad(generate_key())))
    asked = len(app.store.buckets)

    # The same address, a good key, every way in: the native API, the polled read, the Replicate API.
    assert app.http.get("/v1/me", headers=account.headers).status_code == 200
    listed = app.http.get("/v1/subjects", headers=account.headers)
    assert listed.status_code == 200 and [s["id"] for s in listed.json()["items"]] == [subject["id"]]
    answer = app.http.get(f"/v1/trainings/{uuid.uuid4()}", headers=account.headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "training_not_found")
    token = {"Authorization": account.headers["Authorization"].replace("Bearer ", "Token ")}
    assert app.http.get("/replicate/v1/account", headers=token).status_code == 200
    # ... and the limiter was not even asked: a good key costs no trip to its store.
    assert len(app.store.buckets) == asked
    assert actions(db, app.ip) == ["sign_in_failed"] * LIMIT + ["sign_in_throttled"]

    # The address is still throttled for bad keys.
    assert_throttled(app.http.get("/v1/me", headers=bad(generate_key())))


def test_a_request_without_a_key_is_a_401_and_not_counted(throttled: Callable[..., Throttled], db: Any) -> None:
    app = throttled()
    for _ in range(3 * LIMIT):
        response = app.http.get("/v1/me")
        assert (response.status_code, response.json()["error"]["code"]) == (401, "missing_api_key")
    assert app.store.buckets == [] and actions(db, app.ip) == []

    # The whole budget of failures is still there ...
    for _ in range(LIMIT):
        assert app.http.get("/v1/me", headers=bad(generate_key())).status_code == 401
    assert_throttled(app.http.get("/v1/me", headers=bad(generate_key())))
    # ... and a throttled address without a key still learns that it sent none.
    response = app.http.get("/v1/me")
    assert (response.status_code, response.json()["error"]["code"]) == (401, "missing_api_key")


def test_every_way_in_counts_and_each_address_has_its_own_budget(throttled: Callable[..., Throttled], db: Any) -> None:
    app = throttled()
    wrong = generate_key()
    # The polled read (app.core.reads, then the ordinary path), the Replicate API's `Token`, the native API.
    assert app.http.get(f"/v1/trainings/{uuid.uuid4()}", headers=bad(wrong)).status_code == 401
    assert app.http.get("/replicate/v1/account", headers={"Authorization": f"Token {wrong}"}).status_code == 401
    assert app.http.post("/v1/subjects", json={"name": "A", "consent": True}, headers=bad(wrong)).status_code == 401

    answer = app.http.get("/replicate/v1/account", headers={"Authorization": f"Token {wrong}"})
    assert answer.status_code == 429, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["Retry-After"]) >= 1
    problem = answer.json()
    assert problem["code"] == "too_many_failed_sign_ins" and problem["hint"] and wrong not in answer.text
    assert_throttled(app.http.get(f"/v1/trainings/{uuid.uuid4()}", headers=bad(wrong)))
    assert actions(db, app.ip) == ["sign_in_failed"] * LIMIT + ["sign_in_throttled"]

    # Another address in the same /64 is the same client: it takes a fresh address for each guess.
    with app.other(app.ip.removesuffix("::1") + "::beef:2") as same_block:
        assert_throttled(same_block.get("/v1/me", headers=bad(wrong)))
    # Another client behind the same app is not throttled by this one's failures.
    other_ip = f"{random_block()}::1"
    with app.other(other_ip) as other:
        assert other.get("/v1/me", headers=bad(wrong)).status_code == 401
    assert actions(db, other_ip) == ["sign_in_failed"]


def test_a_limit_of_zero_turns_it_off(throttled: Callable[..., Throttled], db: Any) -> None:
    app = throttled("0")
    for _ in range(4 * LIMIT):
        assert app.http.get("/v1/me", headers=bad(generate_key())).status_code == 401
    assert actions(db, app.ip) == ["sign_in_failed"] * 4 * LIMIT
    assert app.store.buckets == []


def test_the_openapi_document_declares_the_429_on_every_operation_that_needs_a_key(client: Any) -> None:
    document = client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        for method, op in item.items():
            answers = op["responses"]
            if not op.get("security"):
                assert "429" not in answers, (method, path)
                continue
            assert "failed sign-ins" in answers["429"]["description"], (method, path)
            assert "Retry-After" in answers["429"]["headers"], (method, path)


@pytest.mark.skipif(not REDIS_URL, reason="LOOKALIKE_TEST_REDIS_URL is not set")
def test_two_api_processes_sharing_one_redis_share_one_count_per_address(tmp_path: Path) -> None:
    prefix = f"lookalike-test-sign-in-{uuid.uuid4().hex[:8]}:"
    env = base_env(
        tmp_path / "data", broker_url=REDIS_URL, broker_key_prefix=prefix, rate_limit_sign_in_failures="2/hour"
    )
    other_env = {**env, "LOOKALIKE_PORT": str(free_port())}
    first = api_client(env)  # migrates, and signs in as a new user
    second = httpx.Client(base_url=f"http://127.0.0.1:{other_env['LOOKALIKE_PORT']}", timeout=30)
    wrong = bad(generate_key())
    try:
        with running(env, tmp_path / "api-1.log", "api"), running(other_env, tmp_path / "api-2.log", "api"):
            wait_ready(first)
            wait_ready(second)
            answers = [http.get("/v1/me", headers=wrong).status_code for http in (first, second) * 2]
            # Counted per process, all four would be 401: neither process sees more than two of them.
            assert answers == [401, 401, 429, 429]
            assert second.get("/v1/me", headers=first.headers).status_code == 200  # a good key still signs in
    finally:
        first.close()
        second.close()
        purge_redis(REDIS_URL, prefix)
