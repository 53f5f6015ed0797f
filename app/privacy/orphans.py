"""Stored objects that no row owns any more, found and deleted.

Deletions remove their objects after their commit, a worker that finds its row deleted removes what it
wrote, and an export cut short by an error removes its files. A process killed at the wrong moment
(SIGKILL, the machine lost) can do none of these, and what it wrote would stay: a photo of a deleted
person, a half-exported LoRA. The housekeeping sweep therefore lists the store at most once an hour
(`worker.housekeeping.orphans`) and deletes each prefix below whose row is gone:

    users/{user}/                                      the user
    users/{user}/subjects/{subject}/photos/{photo}/    the photo
    users/{user}/{trainings|models|generations|files}/{id}/

only once the newest object under it is `GRACE` old. Objects are written before their row commits: an
upload stores the photo, then commits; a training exports its model's files and samples, then adds
the model's row. A key of any other shape is left alone.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.storage import Storage
from app.db import Base, Generation, Model, Photo, Training, UploadedFile, User

log = logging.getLogger(__name__)

GRACE = timedelta(hours=24)
ROOT = "users/"

_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_USER = re.compile(rf"users/({_ID})/")
_OWNED = re.compile(rf"users/{_ID}/(?:subjects/{_ID}/(photos)/({_ID})|(trainings|models|generations|files)/({_ID}))/")
_TABLES: dict[str, type[Base]] = {
    "photos": Photo,
    "trainings": Training,
    "models": Model,
    "generations": Generation,
    "files": UploadedFile,
}
_CHUNK = 500  # ids per `IN (...)`


def find_orphans(session: Session, storage: Storage, *, now: datetime, grace: timedelta = GRACE) -> list[str]:
    """The prefixes whose row is gone and whose newest object is older than `now - grace`."""
    newest: dict[str, datetime] = {}  # prefix -> when its newest object was written
    owner: dict[str, tuple[str, uuid.UUID]] = {}  # prefix -> (kind, row id)
    for key, modified in storage.list_modified(ROOT):
        for prefix, kind, ident in _prefixes(key):
            if prefix not in newest or modified > newest[prefix]:
                newest[prefix] = modified
            owner[prefix] = (kind, ident)
    cutoff = now - grace
    old = {prefix: owner[prefix] for prefix, at in newest.items() if at < cutoff}
    missing = _missing_rows(session, old.values())
    gone_users = {prefix for prefix, row in old.items() if row[0] == "users" and row in missing}
    # Under a gone user, the user's prefix is the one to delete.
    return sorted(
        prefix
        for prefix, row in old.items()
        if row in missing and (row[0] == "users" or not any(prefix.startswith(u) for u in gone_users))
    )


def purge_orphans(session: Session, storage: Storage, *, now: datetime, grace: timedelta = GRACE) -> Counter[str]:
    """Delete what `find_orphans` finds; counts the prefixes and their objects."""
    counts: Counter[str] = Counter()
    for prefix in find_orphans(session, storage, now=now, grace=grace):
        removed = storage.delete_prefix(prefix)
        log.warning("deleted %d stored objects under %s: no row owns them (left by a killed process?)", removed, prefix)
        counts["prefixes"] += 1
        counts["objects"] += removed
    return counts


def _prefixes(key: str) -> list[tuple[str, str, uuid.UUID]]:
    """The ownable prefixes `key` lies under: the user's, and the row's when the key has a known shape."""
    user = _USER.match(key)
    if user is None:
        return []
    found = [(user.group(0), "users", uuid.UUID(user.group(1)))]
    owned = _OWNED.match(key)
    if owned is not None:
        kind, ident = (owned.group(1), owned.group(2)) if owned.group(1) else (owned.group(3), owned.group(4))
        found.append((owned.group(0), kind, uuid.UUID(ident)))
    return found


def _missing_rows(session: Session, rows: Iterable[tuple[str, uuid.UUID]]) -> set[tuple[str, uuid.UUID]]:
    """Which of these (kind, id) have no row."""
    wanted: dict[str, set[uuid.UUID]] = {}
    for kind, ident in rows:
        wanted.setdefault(kind, set()).add(ident)
    missing: set[tuple[str, uuid.UUID]] = set()
    for kind, ids in wanted.items():
        table = User if kind == "users" else _TABLES[kind]
        listed = sorted(ids)
        present: set[uuid.UUID] = set()
        for start in range(0, len(listed), _CHUNK):
            present |= set(session.scalars(select(table.id).where(table.id.in_(listed[start : start + _CHUNK]))))
        missing |= {(kind, ident) for ident in ids - present}
    return missing
