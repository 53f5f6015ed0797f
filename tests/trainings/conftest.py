"""A subject whose three obama photos are analysed and ready to train (the minimum lowered to 3 for speed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import fixture_bytes, wait_until_reviewed

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")


@pytest.fixture
def few_photos_suffice(settings: Any) -> Iterator[None]:
    saved = settings.min_training_photos
    settings.min_training_photos = 3  # the same object the API and the in-process worker read
    try:
        yield
    finally:
        settings.min_training_photos = saved


@pytest.fixture
def ready_subject(client: Any, account: Any, subject: dict, few_photos_suffice: None) -> dict:
    files = [("files", (name, fixture_bytes(name), "image/jpeg")) for name in PHOTOS]
    response = client.post(f"/v1/subjects/{subject['id']}/photos", files=files, headers=account.headers)
    assert response.status_code == 202, response.text
    reviewed = wait_until_reviewed(client, account, subject["id"], len(PHOTOS))
    assert reviewed["report"]["ready_to_train"], reviewed["report"]
    return subject
