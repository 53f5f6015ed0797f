"""Rate limits per API key: uploads, trainings and generations answer 429 with Retry-After past their limit.

The app here is the real one with tiny limits; its limiter counts in Redis when the run has one (CI),
in the process otherwise, on a clock the test moves instead of waiting for a window to pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from app.core.metrics import REGISTRY
from app.core.ratelimit import RateLimiter
from tests.helpers import fixture_bytes

LIMITS = {"rate_limit_uploads": "2/minute", "rate_limit_trainings": "1/hour", "rate_limit_generations": "2/minute"}


class Clock:
    """Seconds, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limited(settings: Any, clock: Clock, celery_worker: Any) -> Iterator[Any]:
    """A TestClient on the app with LIMITS, its limiter on `clock`."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    limited_settings = settings.model_copy(update=LIMITS)
    app = create_app(limited_settings)
    app.state.rate_limiter = RateLimiter.from_settings(limited_settings, clock=clock)
    with TestClient(app) as test_client:
        yield test_client


PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")


def photo(index: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    """A one-photo upload; a different photo for each index (the same one twice is a duplicate)."""
    name = PHOTOS[index]
    return [("files", (name, fixture_bytes(name), "image/jpeg"))]


def new_subject(client: Any, account: Any) -> str:
    body = {"name": "Barack", "class_word": "man", "consent": True}
    response = client.post("/v1/subjects", json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def stored_photos(client: Any, account: Any, subject_id: str) -> int:
    response = client.get(f"/v1/subjects/{subject_id}/photos", params={"limit": 100}, headers=account.headers)
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def refusals(action: str) -> float:
    return REGISTRY.get_sample_value("lookalike_rate_limited_total", {"action": action}) or 0.0


def assert_refused(response: Any, action: str, limit: str) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    assert response.headers["RateLimit-Remaining"] == "0"
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert action in error["message"] and limit in error["message"], error
    assert "Retry-After" in error["hint"], error
    return retry_after


def test_an_upload_over_the_limit_is_refused_and_stores_nothing(
    limited: Any, make_account: Any, storage: Any, clock: Clock
) -> None:
    alice = make_account()
    subject_id = new_subject(limited, alice)
    refused_before = refusals("uploads")

    for index, remaining in enumerate(("1", "0")):
        response = limited.post(f"/v1/subjects/{subject_id}/photos", files=photo(index), headers=alice.headers)
        assert response.status_code == 202, response.text
        assert response.headers["RateLimit-Limit"] == "2"
        assert response.headers["RateLimit-Remaining"] == remaining

    response = limited.post(f"/v1/subjects/{subject_id}/photos", files=photo(2), headers=alice.headers)
    assert assert_refused(response, "uploads", "2 uploads per minute") <= 60
    assert refusals("uploads") == refused_before + 1

    # Refused before the body is read: a body that cannot be parsed gets the same 429, not a 400.
    garbage = {"Content-Type": "multipart/form-data; boundary=nothing", **alice.headers}
    response = limited.post(f"/v1/subjects/{subject_id}/photos", content=b"not multipart", headers=garbage)
    assert_refused(response, "uploads", "2 uploads per minute")

    assert stored_photos(limited, alice, subject_id) == 2
    photo_folders = {key.split("/photos/")[1].split("/")[0] for key in storage.list(f"users/{alice.id}/")}
    assert len(photo_folders) == 2

    # Once the window has passed, uploads pass again.
    clock.now += 60
    response = limited.post(f"/v1/subjects/{subject_id}/photos", files=photo(2), headers=alice.headers)
    assert response.status_code == 202, response.text
    assert response.headers["RateLimit-Remaining"] == "1"
    assert stored_photos(limited, alice, subject_id) == 3


def test_each_key_has_its_own_budget(limited: Any, make_account: Any) -> None:
    alice, bob = make_account(), make_account()
    alice_subject, bob_subject = new_subject(limited, alice), new_subject(limited, bob)
    for _ in range(2):
        assert (
            limited.post(f"/v1/subjects/{alice_subject}/photos", files=photo(), headers=alice.headers).status_code
            == 202
        )
    refused = limited.post(f"/v1/subjects/{alice_subject}/photos", files=photo(), headers=alice.headers)
    assert refused.status_code == 429

    response = limited.post(f"/v1/subjects/{bob_subject}/photos", files=photo(), headers=bob.headers)
    assert response.status_code == 202, response.text
    assert response.headers["RateLimit-Remaining"] == "1"


def test_every_training_request_counts_and_is_refused_before_its_body_is_read(limited: Any, account: Any) -> None:
    body = {"subject_id": str(uuid.uuid4()), "name": "face", "base_model": "tiny-sd15"}
    first = limited.post("/v1/trainings", json=body, headers=account.headers)
    assert first.status_code == 404, first.text  # no such subject: it still counts

    response = limited.post("/v1/trainings", json=body, headers=account.headers)
    retry_after = assert_refused(response, "trainings", "1 training per hour")
    assert 3500 <= retry_after <= 3600

    broken = {"Content-Type": "application/json", **account.headers}
    assert limited.post("/v1/trainings", content=b"{not json", headers=broken).status_code == 429


def test_generations_share_one_budget_across_their_endpoints(limited: Any, account: Any) -> None:
    missing = str(uuid.uuid4())
    first = limited.post("/v1/generations", json={"model_id": missing, "prompt": "a photo"}, headers=account.headers)
    assert first.status_code in (404, 422), first.text
    second = limited.post(f"/v1/models/{missing}/image", json={"prompt": "a photo"}, headers=account.headers)
    assert second.status_code in (404, 422), second.text

    response = limited.post(f"/v1/models/{missing}/image", json={"prompt": "a photo"}, headers=account.headers)
    assert_refused(response, "generations", "2 generations per minute")
    response = limited.post("/v1/generations", json={"model_id": missing, "prompt": "a photo"}, headers=account.headers)
    assert_refused(response, "generations", "2 generations per minute")


def test_the_replicate_api_counts_the_same_budgets_and_answers_a_problem(limited: Any, account: Any) -> None:
    token = {"Authorization": account.headers["Authorization"].replace("Bearer ", "Token ")}
    for _ in range(2):
        response = limited.post("/replicate/v1/predictions", json={"version": "nope", "input": {}}, headers=token)
        assert response.status_code != 429, response.text

    response = limited.post("/replicate/v1/predictions", json={"version": "nope", "input": {}}, headers=token)
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "rate_limited" and "2 generations per minute" in problem["detail"]

    # The native API draws on the same budget of the same key.
    response = limited.post("/v1/generations", json={"model_id": str(uuid.uuid4()), "prompt": "x"}, headers=token)
    assert response.status_code == 401  # `Token` is the Replicate clients' scheme only
    response = limited.post(
        "/v1/generations", json={"model_id": str(uuid.uuid4()), "prompt": "x"}, headers=account.headers
    )
    assert response.status_code == 429


def test_requests_without_a_valid_key_are_not_counted(limited: Any, account: Any) -> None:
    subject_id = new_subject(limited, account)
    for _ in range(3):
        response = limited.post(f"/v1/subjects/{subject_id}/photos", files=photo())
        assert response.status_code == 401, response.text
        bad = {"Authorization": "Bearer lk_not-a-key"}
        assert limited.post(f"/v1/subjects/{subject_id}/photos", files=photo(), headers=bad).status_code == 401
    response = limited.post(f"/v1/subjects/{subject_id}/photos", files=photo(), headers=account.headers)
    assert response.status_code == 202, response.text


def test_a_limit_of_zero_turns_it_off(settings: Any, celery_worker: Any, account: Any) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    app = create_app(settings.model_copy(update={**LIMITS, "rate_limit_generations": "0"}))
    with TestClient(app) as client:
        for _ in range(4):
            response = client.post(f"/v1/models/{uuid.uuid4()}/image", json={"prompt": "x"}, headers=account.headers)
            assert response.status_code in (404, 422), response.text
            assert "RateLimit-Limit" not in response.headers


def test_the_openapi_document_declares_the_429(limited: Any) -> None:
    paths = limited.get("/openapi.json").json()["paths"]
    answer = paths["/v1/subjects/{subject_id}/photos"]["post"]["responses"]["429"]
    assert "Retry-After" in answer["headers"]
    assert "for this key" in answer["description"] and "failed sign-ins" in answer["description"]
    # A route without a limit of its own answers 429 only to an address with too many failed sign-ins.
    unlimited = paths["/v1/subjects/{subject_id}/photos"]["get"]["responses"]["429"]["description"]
    assert "for this key" not in unlimited and "failed sign-ins" in unlimited


def test_the_budget_lives_in_redis_when_the_broker_is_redis(settings: Any) -> None:
    from app.core.ratelimit import MemoryStore, RedisStore

    store = RateLimiter.from_settings(settings).store
    assert isinstance(store, RedisStore if settings.broker_url else MemoryStore)
