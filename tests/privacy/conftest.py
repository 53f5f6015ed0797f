"""A user's whole journey through the API, with the in-process worker: what the erasure tests delete."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from app.core.db import session_factory, session_scope
from app.db import Notification
from tests.helpers import fixture_bytes, jpeg_bytes, list_all_photos, wait_for, wait_until_reviewed, zip_bytes
from tests.http_receiver import Receiver, serving
from tests.privacy.scan import emails_to
from tests.trainings.conftest import few_photos_suffice  # noqa: F401 - a fixture for the tests here

WAIT = {"Prefer": "wait=60"}


@dataclass
class Trace:
    """Everything one journey made, by id, and the words that would betray the person."""

    subject_id: str
    subject_name: str
    photos: list[str] = field(default_factory=list)
    trainings: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    generations: list[str] = field(default_factory=list)
    notifications: list[uuid.UUID] = field(default_factory=list)
    training_name: str = ""

    def values(self) -> list[Any]:
        return [
            self.subject_id,
            self.subject_name,
            self.training_name,
            *self.photos,
            *self.trainings,
            *self.models,
            *self.generations,
            *self.notifications,
        ]


@pytest.fixture
def private_webhooks(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Webhooks to the loopback receiver, on the API's settings and the in-process worker's."""
    from app.core.settings import get_settings

    for target in {id(s): s for s in (settings, get_settings())}.values():
        monkeypatch.setattr(target, "webhook_allow_private_targets", True)


@pytest.fixture
def receiver(private_webhooks: None) -> Iterator[Receiver]:
    with serving(path=f"/hooks/{uuid.uuid4().hex[:8]}") as running:
        yield running


def upload_file(client: Any, account: Any) -> str:
    """An image uploaded with POST /v1/files (what img2img starts from)."""
    response = client.post(
        "/v1/files", files={"content": ("start.jpg", jpeg_bytes(64, 64), "image/jpeg")}, headers=account.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def journey(
    client: Any,
    account: Any,
    settings: Any,
    *,
    webhook: str | None = None,
    start_image: str | None = None,
) -> Trace:
    """Create a subject, upload photos (two at once, one in a zip with its caption), train a tiny model
    (with a webhook when given one), wait for its email and webhooks, and generate with it."""
    tag = uuid.uuid4().hex[:8]
    name = f"Person {tag}"
    created = client.post(
        "/v1/subjects", json={"name": name, "class_word": "man", "consent": True}, headers=account.headers
    )
    assert created.status_code == 201, created.text
    trace = Trace(subject_id=created.json()["id"], subject_name=name, training_name=f"portrait-{tag}")
    photos = f"/v1/subjects/{trace.subject_id}/photos"
    pair = [("files", (n, fixture_bytes(n), "image/jpeg")) for n in ("obama.jpg", "obama2.jpg")]
    assert client.post(photos, files=pair, headers=account.headers).status_code == 202
    archive = zip_bytes({"set/obama3.jpg": fixture_bytes("obama3.jpg"), "set/obama3.txt": f"{tag} smiling".encode()})
    zipped = client.post(photos, files=[("files", ("set.zip", archive, "application/zip"))], headers=account.headers)
    assert zipped.status_code == 202 and len(zipped.json()["photos"]) == 1, zipped.text
    reviewed = wait_until_reviewed(client, account, trace.subject_id, 3)
    assert reviewed["report"]["ready_to_train"], reviewed["report"]
    trace.photos = [p["id"] for p in list_all_photos(client, account, trace.subject_id)]

    body = {"subject_id": trace.subject_id, "name": trace.training_name, "base_model": "tiny-sd15", "steps": 2}
    if webhook:
        body["webhook_url"] = webhook
    started = client.post("/v1/trainings", json=body | {"seed": 7}, headers=account.headers)
    assert started.status_code == 202, started.text
    training_id = started.json()["id"]
    trace.trainings.append(training_id)

    def ended() -> dict | None:
        row = client.get(f"/v1/trainings/{training_id}", headers=account.headers).json()
        return row if row["status"] in ("succeeded", "failed", "canceled") else None

    done = wait_for(ended, timeout=180, interval=0.3)
    assert done["status"] == "succeeded", done
    trace.models.append(done["model_id"])

    # The outbox has done its work: the email is in the folder, the webhooks reached the receiver.
    with session_scope(session_factory(settings)) as session:
        rows = session.scalars(select(Notification).where(Notification.training_id == uuid.UUID(training_id)))
        trace.notifications = [r.id for r in rows]
    assert len(trace.notifications) == (3 if webhook else 1)  # the email; training.started and .succeeded
    wait_for(
        lambda: any(
            str(n) in p.read_text() for p in emails_to(settings.outbox_dir, account.email) for n in trace.notifications
        ),
        timeout=60,
    )
    if webhook:
        deliveries = f"/v1/trainings/{training_id}/webhook-deliveries"

        def sent() -> bool:
            rows = client.get(deliveries, headers=account.headers).json()
            return len(rows) == 2 and all(r["status"] == "sent" for r in rows)

        wait_for(sent, timeout=60)

    request = {"model_id": trace.models[0], "prompt": "portrait", "num_outputs": 1, "seed": 3}
    if start_image:
        request |= {"image": start_image, "prompt_strength": 0.5}
    generated = client.post("/v1/generations", json=request, headers=account.headers | WAIT)
    assert generated.status_code == 201 and generated.json()["status"] == "succeeded", generated.text
    trace.generations.append(generated.json()["id"])
    return trace
