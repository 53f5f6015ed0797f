"""A subject whose three obama photos are analysed and ready to train (the minimum lowered to 3 for speed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import fixture_bytes, wait_until_reviewed

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")


@pytest.fixture
def few_photos_suffice(settings: Any) -> Iterator[None]:
    from app.core.settings import get_settings

    # The API reads the app's settings, the in-process worker get_settings(): after another test has
    # cleared that cache they are two objects, so set both.
    targets = {id(s): s for s in (settings, get_settings())}.values()
    saved = [(s, s.min_training_photos) for s in targets]
    for s, _ in saved:
        s.min_training_photos = 3
    try:
        yield
    finally:
        for s, value in saved:
            s.min_training_photos = value


@pytest.fixture
def ready_subject(client: Any, account: Any, subject: dict, few_photos_suffice: None) -> dict:
    files = [("files", (name, fixture_bytes(name), "image/jpeg")) for name in PHOTOS]
    response = client.post(f"/v1/subjects/{subject['id']}/photos", files=files, headers=account.headers)
    assert response.status_code == 202, response.text
    reviewed = wait_until_reviewed(client, account, subject["id"], len(PHOTOS))
    assert reviewed["report"]["ready_to_train"], reviewed["report"]
    return subject
