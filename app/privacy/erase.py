"""Erasure: every row and every stored object a user or a subject leaves behind, found and removed.

Rows go in the request's transaction; stored objects (a user's whole prefix, or a subject's photos,
trainings, models and generations) and the `.eml` copies of their emails in the outbox folder go
once it has committed, so a rollback loses nothing. A worker still running a deleted job finds its
row gone at its next write, stops, and removes what it wrote (see `worker.training.tasks`).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from app.core.db import flush_deleted
from app.core.keys import file_key, generation_prefix, model_prefix, subject_prefix, training_prefix, user_prefix
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_commit
from app.db import (
    AuditEvent,
    Base,
    DeliveryAttempt,
    Generation,
    Model,
    Notification,
    Photo,
    Subject,
    Training,
    UploadedFile,
    User,
)

log = logging.getLogger(__name__)

EMAIL = "email"  # app.notify.outbox.EMAIL, spelled here so that this module stays import-light
# A file URL of this service (`.../v1/files/{hex}/download`): how a Replicate-style training names its zip.
_FILE_URL = re.compile(r"/v1/files/([0-9a-f]{32})/download")


def delete_user_rows(session: Session, *, user: User) -> None:
    """Every row that names the user, in any table (tables added later included), then the user."""
    user_id = user.id
    session.execute(
        delete(DeliveryAttempt).where(
            DeliveryAttempt.notification_id.in_(select(Notification.id).where(Notification.user_id == user_id))
        )
    )
    # Children before parents; each table with a `user_id` holds rows the user owns.
    order = {table: index for index, table in enumerate(Base.metadata.sorted_tables)}
    owned = [m.class_ for m in Base.registry.mappers if "user_id" in m.local_table.c and m.class_ is not User]
    for cls in sorted(owned, key=lambda c: order[c.__table__], reverse=True):
        session.execute(delete(cls).where(cls.user_id == user_id))
    session.execute(delete(User).where(User.id == user_id))
    session.flush()


def erase_user_files(session: Session, *, user: User, storage: Storage, settings: Settings) -> None:
    """After the commit: the user's prefix in the store and their emails in the outbox folder."""
    prefix, address = user_prefix(user.id), user.email
    sent = email_ids(session, Notification.user_id == user.id)
    engine = session.get_bind().engine

    def erase() -> None:
        storage.delete_prefix(prefix)
        purge_outbox(settings.outbox_dir, addresses={address}, notification_ids=sent)
        flush_deleted(engine)

    after_commit(session, erase)


@dataclass
class Footprint:
    """What a subject's deletion takes with it: the person's photos and everything made from their face."""

    photos: list[uuid.UUID] = field(default_factory=list)
    trainings: list[uuid.UUID] = field(default_factory=list)
    models: list[uuid.UUID] = field(default_factory=list)
    generations: list[uuid.UUID] = field(default_factory=list)
    files: list[uuid.UUID] = field(default_factory=list)
    notifications: list[uuid.UUID] = field(default_factory=list)

    def ids(self) -> list[uuid.UUID]:
        return [*self.photos, *self.trainings, *self.models, *self.generations, *self.files, *self.notifications]


def subject_footprint(session: Session, *, subject: Subject) -> Footprint:
    """The subject's photos, its trainings, the models they made, the generations that used those
    models or started from one of the photos, the uploaded zips its trainings were made from, and
    the notifications about them."""
    user_id = subject.user_id
    found = Footprint()
    found.photos = list(session.scalars(select(Photo.id).where(Photo.subject_id == subject.id)))
    trainings = list(session.scalars(select(Training).where(Training.subject_id == subject.id)))
    found.trainings = [t.id for t in trainings]
    found.files = _input_files(session, user_id, trainings)
    model_of = [Model.subject_id == subject.id]
    if found.trainings:
        model_of.append(Model.training_id.in_(found.trainings))
    found.models = list(session.scalars(select(Model.id).where(Model.user_id == user_id, or_(*model_of))))
    generations: list[uuid.UUID] = []
    if found.models:
        models = {str(m) for m in found.models}
        rows = session.execute(
            select(Generation.id, Generation.model_id, Generation.loras).where(Generation.user_id == user_id)
        )
        generations = [g.id for g in rows if _uses(g.model_id, g.loras, models)]
    found.generations = list(dict.fromkeys([*generations, *started_from(session, found.photos)]))
    if found.trainings:
        found.notifications = list(
            session.scalars(select(Notification.id).where(Notification.training_id.in_(found.trainings)))
        )
    return found


def started_from(session: Session, photo_ids: list[uuid.UUID]) -> list[uuid.UUID]:
    """The generations whose img2img start image is a copy of one of these photos."""
    if not photo_ids:
        return []
    return list(session.scalars(select(Generation.id).where(Generation.start_photo_id.in_(photo_ids))))


def delete_subject_rows(session: Session, *, subject: Subject, found: Footprint) -> None:
    """The footprint's rows and the subject's, children first."""
    user_id = subject.user_id
    if found.notifications:
        session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.notification_id.in_(found.notifications)))
        session.execute(delete(Notification).where(Notification.id.in_(found.notifications)))
    if found.generations:
        session.execute(delete(Generation).where(Generation.id.in_(found.generations)))
    if found.models:
        session.execute(delete(Model).where(Model.id.in_(found.models)))
    # A running training finds its row gone at its next write, stops and removes what it wrote.
    session.execute(delete(Training).where(Training.subject_id == subject.id))
    session.execute(delete(Photo).where(Photo.subject_id == subject.id))
    if found.files:
        session.execute(delete(UploadedFile).where(UploadedFile.user_id == user_id, UploadedFile.id.in_(found.files)))
    # The user's own log forgets what happened to things that no longer exist.
    targets = [subject.id, *found.ids()]
    session.execute(delete(AuditEvent).where(AuditEvent.user_id == user_id, AuditEvent.target_id.in_(targets)))
    session.execute(delete(Subject).where(Subject.id == subject.id))
    session.flush()


def erase_subject_files(
    session: Session, *, subject: Subject, found: Footprint, storage: Storage, settings: Settings
) -> None:
    """After the commit: the footprint's stored objects and the emails about its trainings."""
    user_id = subject.user_id
    prefixes = [subject_prefix(user_id, subject.id)]
    prefixes += [training_prefix(user_id, t) for t in found.trainings]
    prefixes += [model_prefix(user_id, m) for m in found.models]
    prefixes += [generation_prefix(user_id, g) for g in found.generations]
    keys = [file_key(user_id, f) for f in found.files]
    sent = set(map(str, found.notifications))
    engine = session.get_bind().engine

    def erase() -> None:
        for prefix in prefixes:
            storage.delete_prefix(prefix)
        for key in keys:
            storage.delete(key)
        purge_outbox(settings.outbox_dir, addresses=set(), notification_ids=sent)
        flush_deleted(engine)

    after_commit(session, erase)


def email_ids(session: Session, *where: Any) -> set[str]:
    """The ids of the emails in the outbox table matching `where` (each email's Message-ID holds its id)."""
    return {str(i) for i in session.scalars(select(Notification.id).where(Notification.channel == EMAIL, *where))}


def purge_outbox(folder: Path, *, addresses: set[str], notification_ids: Iterable[str]) -> int:
    """Remove the `.eml` files sent to one of `addresses` or whose Message-ID names one of the notifications.

    Only for the embedded mode's outbox folder: an email handed to an SMTP server is beyond reach.
    """
    if not folder.is_dir():
        return 0
    wanted = {a.strip().lower() for a in addresses}
    ids = set(notification_ids)
    removed = 0
    for path in folder.glob("*.eml"):
        try:
            with path.open("rb") as fh:
                headers = BytesHeaderParser().parse(fh)
        except OSError:
            continue  # removed meanwhile
        to = {addr.strip().lower() for _, addr in getaddresses(headers.get_all("To", []))}
        message_id = str(headers.get("Message-ID", ""))
        if to & wanted or any(i in message_id for i in ids):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def training_input_files(training: Training) -> list[uuid.UUID]:
    """The uploaded files a Replicate-style training was made from (its `input_images` zip)."""
    found = []
    for value in ((training.client or {}).get("input") or {}).values():
        if isinstance(value, str):
            found += [uuid.UUID(m) for m in _FILE_URL.findall(value)]
    return found


def _input_files(session: Session, user_id: uuid.UUID, trainings: list[Training]) -> list[uuid.UUID]:
    ids = {f for t in trainings for f in training_input_files(t)}
    if not ids:
        return []
    query = select(UploadedFile.id).where(UploadedFile.user_id == user_id, UploadedFile.id.in_(ids))
    return list(session.scalars(query))


def _uses(model_id: uuid.UUID | None, loras: Any, models: set[str]) -> bool:
    if model_id is not None and str(model_id) in models:
        return True
    return any(isinstance(x, dict) and x.get("kind") == "model" and str(x.get("id")) in models for x in loras or ())
