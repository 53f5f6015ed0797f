"""`notify.deliver` end to end: outbox rows sent to a real SMTP server and a real HTTP receiver on loopback,
retried, given up on, never sent twice, shown through the API, and sent again by the housekeeping sweep.

Rows are written by the outbox functions on real Training rows (or inserted directly) and `deliver` is
called in the test. The broker is the one thing replaced: `queue.send` (messages sent after a commit) and
the Celery client `deliver` sends its delayed retries with are captured, so the in-process worker never
delivers a row behind the test's back. Retries are made due by moving `next_attempt_at` into the past.
"""

from __future__ import annotations

import email
import email.policy
import json
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core import queue
from app.core.db import session_factory, session_scope
from app.core.settings import get_settings
from app.db import DeliveryAttempt, DeliveryStatus, Notification, Subject, Training, TrainingStatus, User
from app.db.base import utcnow
from app.notify import outbox
from app.notify.webhooks import new_secret, verify
from tests.http_receiver import serving
from tests.smtp import smtp_server
from tests.trainings.conftest import few_photos_suffice, ready_subject  # noqa: F401 - fixtures for the cancel test
from worker.housekeeping.sweep import sweep
from worker.notify import tasks
from worker.notify.tasks import deliver

DELIVER = "notify.deliver"
FAILURE = {
    "code": "out_of_memory",
    "message": "The GPU ran out of memory at step 40.",
    "hint": "Lower the resolution to 512 or the batch size to 1, then start it again.",
}


# --- the broker, captured -----------------------------------------------------------------


@dataclass
class Broker:
    """What would have reached the broker: after-commit sends, and `deliver`'s delayed retries."""

    sent: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    retries: list[tuple[str, tuple[str, ...], float | None]] = field(default_factory=list)

    def send_task(self, name: str, args: Any = None, countdown: float | None = None, **_: Any) -> None:
        self.retries.append((name, tuple(args or ()), countdown))

    def delivers(self) -> list[str]:
        return [args[0] for name, args in self.sent if name == DELIVER]


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    captured = Broker()
    monkeypatch.setattr(queue, "send", lambda name, *args: captured.sent.append((name, args)))
    monkeypatch.setattr(tasks, "get_client", lambda: captured)
    return captured


@pytest.fixture
def sessions(settings: Any) -> sessionmaker[Session]:
    return session_factory(settings)


# --- rows -----------------------------------------------------------------------------------


def _subject(sessions: sessionmaker[Session], account: Any) -> uuid.UUID:
    with session_scope(sessions) as session:
        row = Subject(user_id=account.id, name="Ada", class_word="woman", consent_at=utcnow(), consent_version="test")
        session.add(row)
        session.flush()
        return row.id


def _training(sessions: sessionmaker[Session], account: Any, **values: Any) -> Training:
    """A training row added directly (so no training.run message is sent)."""
    subject_id = _subject(sessions, account)
    with session_scope(sessions) as session:
        row = Training(
            user_id=account.id,
            subject_id=subject_id,
            name="portrait",
            base_model="tiny-sd15",
            family="sd15",
            tiny=True,
            trigger_word="zorvek",
            trigger_generated=False,
            params={"steps": 20, "learning_rate": 5e-3, "rank": 4, "resolution": 64, "seed": 11},
            progress={},
            phases={},
            **({"status": TrainingStatus.training} | values),
        )
        session.add(row)
        session.flush()
        return row


def _give_secret(sessions: sessionmaker[Session], account: Any) -> str:
    secret = new_secret()
    with session_scope(sessions) as session:
        session.get(User, account.id).webhook_secret = secret
    return secret


def _queue(sessions: sessionmaker[Session], training_id: uuid.UUID, write: Callable[[Session, Training], None]) -> None:
    """Run an outbox function on the training, in a transaction of its own, as the event would."""
    with session_scope(sessions) as session:
        write(session, session.get(Training, training_id))


def _rows(sessions: sessionmaker[Session], training_id: uuid.UUID, channel: str | None = None) -> list[Notification]:
    with session_scope(sessions) as session:
        query = select(Notification).where(Notification.training_id == training_id)
        if channel:
            query = query.where(Notification.channel == channel)
        return list(session.scalars(query.order_by(Notification.created_at, Notification.id)))


def _row(sessions: sessionmaker[Session], row_id: uuid.UUID) -> Notification:
    with session_scope(sessions) as session:
        return session.get(Notification, row_id)


def _attempts(sessions: sessionmaker[Session], row_id: uuid.UUID) -> list[DeliveryAttempt]:
    with session_scope(sessions) as session:
        query = select(DeliveryAttempt).where(DeliveryAttempt.notification_id == row_id)
        return list(session.scalars(query.order_by(DeliveryAttempt.at, DeliveryAttempt.id)))


def _make_due(sessions: sessionmaker[Session], row_id: uuid.UUID) -> None:
    """The retry's wait is over (without waiting for it)."""
    with session_scope(sessions) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == row_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


def _email_row(sessions: sessionmaker[Session], account: Any, **values: Any) -> uuid.UUID:
    """A due email row for a failed training, written by `training_ended` as the failure would."""
    training = _training(sessions, account, status=TrainingStatus.failed, error=FAILURE, **values)

    def end(session: Session, row: Training) -> None:
        outbox.training_ended(session, row, get_settings())

    _queue(sessions, training.id, end)
    (row,) = _rows(sessions, training.id, outbox.EMAIL)
    return row.id


def _send(row_id: uuid.UUID, sessions: sessionmaker[Session], storage: Any, settings: Any) -> str:
    return deliver(row_id, sessions=sessions, storage=storage, settings=settings)


def _parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


# --- emails ---------------------------------------------------------------------------------


def test_email_451_is_retried_then_sent_with_one_message_id(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    row_id = _email_row(sessions, account)
    assert broker.delivers() == [str(row_id)]  # the outbox sent it after its commit
    with smtp_server("451 try later") as (url, inbox):
        smtp = settings.model_copy(update={"smtp_url": url})

        before = utcnow()
        assert _send(row_id, sessions, storage, smtp) == "retry"
        row = _row(sessions, row_id)
        assert row.status == DeliveryStatus.pending and row.attempts == 1 and row.claim_token is None
        assert row.next_attempt_at > utcnow()
        assert row.next_attempt_at >= before + timedelta(seconds=settings.notify_retry_s)
        assert "451" in row.last_error and "try later" in row.last_error
        (first,) = _attempts(sessions, row_id)
        assert (first.outcome, first.status_code) == ("retry", 451)
        assert broker.retries == [(DELIVER, (str(row_id),), settings.notify_retry_s)]
        assert inbox.accepted == [] and len(inbox.tried) == 1

        assert _send(row_id, sessions, storage, smtp) == "not due yet"  # the retry waits for its time
        _make_due(sessions, row_id)
        assert _send(row_id, sessions, storage, smtp) == "sent"

    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.sent and row.attempts == 2 and row.sent_at is not None
    assert [(a.outcome, a.status_code) for a in _attempts(sessions, row_id)] == [("retry", 451), ("sent", 250)]
    (message,) = inbox.accepted
    assert _parse(message)["Message-ID"] == f"<{row_id}@lookalike>"
    assert _parse(inbox.tried[0])["Message-ID"] == f"<{row_id}@lookalike>"  # the same on every attempt
    assert len(broker.retries) == 1  # a sent email schedules nothing more


def test_email_550_fails_at_once(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    row_id = _email_row(sessions, account)
    with smtp_server("550 no such mailbox") as (url, inbox):
        assert _send(row_id, sessions, storage, settings.model_copy(update={"smtp_url": url})) == "failed"
    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.failed and row.attempts == 1 and row.sent_at is None
    assert "550" in row.last_error
    assert [(a.outcome, a.status_code) for a in _attempts(sessions, row_id)] == [("failed", 550)]
    assert inbox.accepted == [] and broker.retries == []


def test_email_lands_in_the_outbox_folder_by_default(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker, tmp_path: Any
) -> None:
    row_id = _email_row(sessions, account)
    local = settings.model_copy(update={"smtp_url": None, "data_dir": tmp_path})
    assert _send(row_id, sessions, storage, local) == "sent"
    (eml,) = local.outbox_dir.glob("*.eml")
    parsed = _parse(eml.read_bytes())
    assert parsed["Message-ID"] == f"<{row_id}@lookalike>" and parsed["To"] == account.email
    assert _row(sessions, row_id).status == DeliveryStatus.sent


def test_failed_training_email_says_what_went_wrong_and_what_to_do(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    row_id = _email_row(sessions, account)
    training_id = _row(sessions, row_id).training_id
    with smtp_server() as (url, inbox):
        assert _send(row_id, sessions, storage, settings.model_copy(update={"smtp_url": url})) == "sent"
    (raw,) = inbox.accepted
    parsed = _parse(raw)
    assert parsed["To"] == account.email and parsed["Subject"] == 'Training "portrait" failed'
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    for body in (text, html):
        assert FAILURE["message"] in body and FAILURE["hint"] in body and FAILURE["code"] in body
        assert f"/v1/trainings/{training_id}" in body


def test_an_email_is_never_sent_twice(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    with smtp_server() as (url, inbox):
        smtp = settings.model_copy(update={"smtp_url": url})

        # The same message twice (a duplicate delivery): the second finds it sent.
        row_id = _email_row(sessions, account)
        assert _send(row_id, sessions, storage, smtp) == "sent"
        assert _send(row_id, sessions, storage, smtp) == "already sent"
        assert len(inbox.accepted) == 1 and _row(sessions, row_id).attempts == 1

        # Two workers at once on the same pending row, a few times over: one sends, one finds it taken.
        for _ in range(3):
            inbox.accepted.clear()
            row_id = _email_row(sessions, account)
            start = threading.Barrier(2)

            def race(row_id: uuid.UUID = row_id, start: threading.Barrier = start) -> str:
                start.wait()
                return _send(row_id, sessions, storage, smtp)

            with ThreadPoolExecutor(2) as pool:
                outcomes = sorted(f.result() for f in [pool.submit(race), pool.submit(race)])
            assert outcomes[1] == "sent" and outcomes[0] in ("already sending", "already sent"), outcomes
            assert len(inbox.accepted) == 1
            assert _parse(inbox.accepted[0])["Message-ID"] == f"<{row_id}@lookalike>"
            row = _row(sessions, row_id)
            assert row.status == DeliveryStatus.sent and row.attempts == 1
            assert len(_attempts(sessions, row_id)) == 1


@pytest.fixture
def private_ok(settings: Any) -> Any:
    """Delivery settings that let webhooks reach the loopback receiver."""
    return settings.model_copy(update={"webhook_allow_private_targets": True, "webhook_timeout_s": 5.0})


def _webhook_training(sessions: sessionmaker[Session], account: Any, url: str, **values: Any) -> Training:
    return _training(sessions, account, webhook_url=url, **values)


def _webhook(sessions: sessionmaker[Session], training_id: uuid.UUID, event: str) -> uuid.UUID:
    before = {r.id for r in _rows(sessions, training_id, outbox.WEBHOOK)}
    _queue(sessions, training_id, lambda session, row: outbox.training_webhook(session, row, event))
    (new,) = [r.id for r in _rows(sessions, training_id, outbox.WEBHOOK) if r.id not in before]
    return new


def test_webhook_500_then_200_is_retried_with_the_same_id_and_signed(
    private_ok: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    secret = _give_secret(sessions, account)
    with serving(500, 200, path="/hooks/lookalike") as receiver:
        training = _webhook_training(sessions, account, receiver.url)
        row_id = _webhook(sessions, training.id, "training.succeeded")
        assert broker.delivers() == [str(row_id)]

        assert _send(row_id, sessions, storage, private_ok) == "retry"
        row = _row(sessions, row_id)
        assert row.status == DeliveryStatus.pending and row.attempts == 1 and row.next_attempt_at > utcnow()
        assert row.last_error.startswith("HTTP 500")
        assert broker.retries == [(DELIVER, (str(row_id),), private_ok.notify_retry_s)]

        _make_due(sessions, row_id)
        assert _send(row_id, sessions, storage, private_ok) == "sent"

    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.sent and row.attempts == 2 and row.sent_at is not None
    assert [(a.outcome, a.status_code) for a in _attempts(sessions, row_id)] == [("retry", 500), ("sent", 200)]
    assert len(receiver.received) == 2
    for path, headers, body in receiver.received:
        assert path == "/hooks/lookalike"
        assert headers["webhook-id"] == str(row_id)  # the same on both attempts
        assert verify(secret, headers, body)
        assert not verify(new_secret(), headers, body)
        sent = json.loads(body)
        assert sent["type"] == "training.succeeded" and sent["data"]["id"] == str(training.id)
    assert receiver.received[0][2] == receiver.received[1][2]  # the same bytes each time


def test_webhook_gives_up_after_the_last_attempt(
    private_ok: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    _give_secret(sessions, account)
    two_tries = private_ok.model_copy(update={"notify_max_attempts": 2})
    with serving(502, 502, 200, path="/hooks/lookalike") as receiver:
        training = _webhook_training(sessions, account, receiver.url)
        row_id = _webhook(sessions, training.id, "training.succeeded")
        assert _send(row_id, sessions, storage, two_tries) == "retry"
        _make_due(sessions, row_id)
        assert _send(row_id, sessions, storage, two_tries) == "failed"
        _make_due(sessions, row_id)
        assert _send(row_id, sessions, storage, two_tries) == "already failed"
    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.failed and row.attempts == 2 and "gave up after 2 attempts" in row.last_error
    assert [(a.outcome, a.status_code) for a in _attempts(sessions, row_id)] == [("retry", 502), ("failed", 502)]
    assert len(receiver.received) == 2 and len(broker.retries) == 1


def test_webhook_410_disables_the_trainings_webhook(
    private_ok: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    _give_secret(sessions, account)
    with serving(410, path="/hooks/lookalike") as receiver:
        events = ["training.started", "training.progress", "training.succeeded"]
        training = _webhook_training(sessions, account, receiver.url, webhook_events=events)
        gone = _webhook(sessions, training.id, "training.started")
        waiting = [_webhook(sessions, training.id, e) for e in events[1:]]
        unrelated = _email_row(sessions, account)  # another training's email: not touched

        assert _send(gone, sessions, storage, private_ok) == "failed"
        assert len(receiver.received) == 1

        row = _row(sessions, gone)
        assert row.status == DeliveryStatus.failed and "410" in row.last_error
        assert [(a.outcome, a.status_code) for a in _attempts(sessions, gone)] == [("failed", 410)]
        with session_scope(sessions) as session:
            assert session.get(Training, training.id).webhook_disabled_at is not None
        for row_id in waiting:
            row = _row(sessions, row_id)
            assert row.status == DeliveryStatus.failed and "410" in row.last_error
            assert _attempts(sessions, row_id) == []
            assert _send(row_id, sessions, storage, private_ok) == "already failed"
        assert _row(sessions, unrelated).status == DeliveryStatus.pending
        assert broker.retries == []

        # Nothing more is queued for it, and nothing more reaches the receiver.
        _queue(sessions, training.id, lambda session, row: outbox.training_webhook(session, row, "training.succeeded"))
        assert len(_rows(sessions, training.id, outbox.WEBHOOK)) == 3
        assert len(receiver.received) == 1


def test_loopback_webhook_is_refused_at_delivery_when_private_targets_are_not_allowed(
    settings: Any, private_ok: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    _give_secret(sessions, account)
    strict = settings.model_copy(update={"webhook_allow_private_targets": False})
    with serving(path="/hooks/lookalike") as receiver:
        training = _webhook_training(sessions, account, receiver.url)
        row_id = _webhook(sessions, training.id, "training.succeeded")
        assert _send(row_id, sessions, storage, strict) == "failed"
        assert receiver.received == []
    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.failed and "loopback" in row.last_error
    [attempt] = _attempts(sessions, row_id)
    assert attempt.outcome == "failed" and attempt.status_code is None and "loopback" in attempt.error
    assert broker.retries == []


# --- the API --------------------------------------------------------------------------------


def test_webhook_secret_is_shown_once_and_rotates(client: Any, account: Any, sessions: sessionmaker[Session]) -> None:
    me = client.get("/v1/me", headers=account.headers)
    assert me.status_code == 200 and me.json()["has_webhook_secret"] is False

    first = client.post("/v1/me/webhook-secret", headers=account.headers)
    assert first.status_code == 201, first.text
    assert first.json()["secret"].startswith("whsec_") and first.json()["replaced"] is False

    second = client.post("/v1/me/webhook-secret", headers=account.headers)
    assert second.status_code == 201, second.text
    assert second.json()["replaced"] is True
    assert second.json()["secret"].startswith("whsec_") and second.json()["secret"] != first.json()["secret"]
    with session_scope(sessions) as session:
        assert session.get(User, account.id).webhook_secret == second.json()["secret"]

    me = client.get("/v1/me", headers=account.headers).json()
    assert me["has_webhook_secret"] is True and not {"secret", "webhook_secret"} & set(me)


def _start(client: Any, account: Any, subject_id: str, **extra: Any) -> Any:
    body = {"subject_id": subject_id, "name": "portrait", "base_model": "tiny-sd15", "steps": 6, "seed": 7} | extra
    return client.post("/v1/trainings", json=body, headers=account.headers)


def test_training_webhook_needs_a_secret_and_a_permitted_url(
    client: Any, account: Any, subject: dict, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "webhook_allow_private_targets", False)
    missing = _start(client, account, subject["id"], webhook_url="https://hooks.example.com/x")
    assert missing.status_code == 422, missing.text
    assert missing.json()["error"]["code"] == "webhook_secret_missing"
    assert "/v1/me/webhook-secret" in missing.json()["error"]["hint"]

    assert client.post("/v1/me/webhook-secret", headers=account.headers).status_code == 201
    refused = _start(client, account, subject["id"], webhook_url="http://127.0.0.1:9/x")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "webhook_url_refused"
    assert "loopback" in refused.json()["error"]["message"]
    assert client.get("/v1/trainings", headers=account.headers).json()["items"] == []


def test_webhook_deliveries_list_attempts_to_their_owner_only(
    client: Any,
    account: Any,
    make_account: Any,
    private_ok: Any,
    sessions: sessionmaker[Session],
    storage: Any,
    broker: Broker,
) -> None:
    _give_secret(sessions, account)
    with serving(503, path="/hooks/lookalike") as receiver:
        training = _webhook_training(sessions, account, receiver.url, status=TrainingStatus.failed, error=FAILURE)
        started = _webhook(sessions, training.id, "training.started")
        assert _send(started, sessions, storage, private_ok) == "retry"
        _make_due(sessions, started)
        assert _send(started, sessions, storage, private_ok) == "sent"
        _queue(sessions, training.id, lambda session, row: outbox.training_ended(session, row, private_ok))
    (ended,) = [r.id for r in _rows(sessions, training.id, outbox.WEBHOOK) if r.id != started]
    assert len(_rows(sessions, training.id, outbox.EMAIL)) == 1  # not a webhook: not listed

    response = client.get(f"/v1/trainings/{training.id}/webhook-deliveries", headers=account.headers)
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert first["id"] == str(started) and first["event"] == "training.started" and first["url"] == receiver.url
    assert first["status"] == "sent" and first["sent_at"] and first["next_attempt_at"] is None
    assert [(a["outcome"], a["status_code"]) for a in first["attempts"]] == [("retry", 503), ("sent", 200)]
    assert first["attempts"][0]["error"].startswith("HTTP 503")
    assert all(a["duration_ms"] is not None and a["at"] for a in first["attempts"])
    assert second["id"] == str(ended) and second["event"] == "training.failed"
    assert second["status"] == "pending" and second["next_attempt_at"] and second["attempts"] == []

    stranger = make_account()
    other = client.get(f"/v1/trainings/{training.id}/webhook-deliveries", headers=stranger.headers)
    assert other.status_code == 404 and other.json()["error"]["code"] == "training_not_found"


def test_cancel_queues_one_canceled_webhook_and_no_email(
    client: Any,
    account: Any,
    ready_subject: dict,  # noqa: F811 - the fixture imported above
    settings: Any,
    storage: Any,
    sessions: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The API's settings and the in-process worker's may be two objects: allow loopback on both.
    for target in {id(s): s for s in (settings, get_settings())}.values():
        monkeypatch.setattr(target, "webhook_allow_private_targets", True)
    secret = client.post("/v1/me/webhook-secret", headers=account.headers).json()["secret"]
    # From here on nothing reaches the worker: the training stays queued, the webhook waits for us.
    captured = Broker()
    monkeypatch.setattr(queue, "send", lambda name, *args: captured.sent.append((name, args)))
    monkeypatch.setattr(tasks, "get_client", lambda: captured)

    with serving(path="/hooks/lookalike") as receiver:
        created = _start(client, account, ready_subject["id"], webhook_url=receiver.url)
        assert created.status_code == 202, created.text
        training_id = created.json()["id"]
        assert captured.sent == [("training.run", (training_id,))]

        canceled = client.post(f"/v1/trainings/{training_id}/cancel", headers=account.headers)
        assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"

        rows = _rows(sessions, uuid.UUID(training_id))
        assert [(r.channel, r.event, r.status) for r in rows] == [("webhook", "training.canceled", "pending")]
        assert captured.delivers() == [str(rows[0].id)]

        assert _send(rows[0].id, sessions, storage, settings) == "sent"
        [(_, headers, body)] = receiver.received
    assert verify(secret, headers, body)
    sent = json.loads(body)
    assert sent["type"] == "training.canceled"
    assert sent["data"]["id"] == training_id and sent["data"]["status"] == "canceled"


# --- the housekeeping sweep ------------------------------------------------------------------


def _sweep(sessions: sessionmaker[Session], settings: Any, now: datetime) -> dict[str, int]:
    report = sweep(sessions=sessions, settings=settings, now=now)
    assert report is not None, "the sweep's lock was held"
    return report["notifications"]


def _insert(sessions: sessionmaker[Session], account: Any, **values: Any) -> uuid.UUID:
    """An email row inserted directly (no message sent): the one whose message was lost."""
    with session_scope(sessions) as session:
        row = Notification(
            user_id=account.id,
            channel=outbox.EMAIL,
            event="training.failed",
            target=account.email,
            payload={"training_id": str(uuid.uuid4()), "name": "portrait", "error": FAILURE, "link": "http://x/t"},
            **values,
        )
        session.add(row)
        session.flush()
        return row.id


def test_sweep_sends_a_lost_pending_notification_again(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker, tmp_path: Any
) -> None:
    wait = timedelta(seconds=settings.requeue_after_s)
    due = utcnow() - wait - timedelta(seconds=30)
    row_id = _insert(sessions, account, next_attempt_at=due)

    assert _sweep(sessions, settings, due + wait - timedelta(seconds=1)) == {}
    assert broker.delivers() == []

    now = utcnow()
    assert _sweep(sessions, settings, now) == {"resent": 1}
    assert broker.delivers() == [str(row_id)]
    row = _row(sessions, row_id)
    assert row.status == DeliveryStatus.pending and row.next_attempt_at == now and row.attempts == 0

    assert _sweep(sessions, settings, now + wait - timedelta(seconds=1)) == {}  # the next resend waits again
    assert broker.delivers() == [str(row_id)]

    local = settings.model_copy(update={"smtp_url": None, "data_dir": tmp_path})
    assert _send(row_id, sessions, storage, local) == "sent"
    assert len(list(local.outbox_dir.glob("*.eml"))) == 1


def test_sweep_releases_a_stale_claim_and_leaves_a_fresh_one(
    settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker, tmp_path: Any
) -> None:
    claim = timedelta(seconds=settings.notify_claim_s)
    now = utcnow()
    stale = _insert(
        sessions,
        account,
        status=DeliveryStatus.sending,
        attempts=1,
        claim_token="dead-worker",
        claimed_at=now - claim - timedelta(seconds=5),
        next_attempt_at=now - claim - timedelta(seconds=5),
    )
    fresh = _insert(
        sessions,
        account,
        status=DeliveryStatus.sending,
        attempts=1,
        claim_token="busy-worker",
        claimed_at=now,
        next_attempt_at=now,
    )

    assert _sweep(sessions, settings, now) == {"lost_worker": 1}
    assert broker.delivers() == [str(stale)]
    released = _row(sessions, stale)
    assert released.status == DeliveryStatus.pending and released.claim_token is None
    assert released.next_attempt_at == now and released.attempts == 1
    kept = _row(sessions, fresh)
    assert kept.status == DeliveryStatus.sending and kept.claim_token == "busy-worker" and kept.claimed_at == now

    local = settings.model_copy(update={"smtp_url": None, "data_dir": tmp_path})
    assert _send(stale, sessions, storage, local) == "sent"
    assert _row(sessions, stale).attempts == 2
    assert len(list(local.outbox_dir.glob("*.eml"))) == 1
    assert _send(fresh, sessions, storage, local) == "already sending"

    # Still within its claim a moment later: the busy worker's row is not taken from it.
    assert _sweep(sessions, settings, now + claim - timedelta(seconds=1)) == {}
    assert _row(sessions, fresh).claim_token == "busy-worker"
    assert broker.delivers() == [str(stale)]


def test_an_email_written_while_its_user_is_erased_does_not_survive(
    client: Any, settings: Any, sessions: sessionmaker[Session], storage: Any, account: Any, broker: Broker
) -> None:
    """The worker claims the email, the user deletes their account (the erasure purges the outbox folder
    after its commit, before the email exists), then the worker writes it: it must remove what it wrote."""
    row_id = _email_row(sessions, account)
    local = settings.model_copy(update={"smtp_url": None})
    claim = tasks._claim(row_id, sessions)
    assert client.delete("/v1/me", headers=account.headers).status_code == 204
    assert _row(sessions, row_id) is None
    assert tasks._attempt(claim, sessions=sessions, storage=storage, settings=local) == "sent"
    left = [p.name for p in local.outbox_dir.glob("*.eml") if account.email.encode() in p.read_bytes()]
    assert left == []
