"""Users and keys: what the CLI and the `/v1/me` endpoints do."""

from __future__ import annotations

import contextlib
import re
import uuid

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from app.core.auth import DISPLAY_CHARS, hash_key, issue_key
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.keys import user_prefix
from app.core.storage import Storage
from app.core.tx import after_commit
from app.db import ApiKey, Photo, Subject, User
from app.db.base import utcnow

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create_user(session: Session, *, email: str) -> tuple[User, str]:
    """A new user and their first API key (returned in plain text once)."""
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise Unprocessable(f"{email!r} is not an email address.", code="invalid_email")
    if session.scalar(select(User).where(User.email == email)):
        raise Conflict(
            f"A user with the email {email} already exists.",
            code="user_exists",
            hint="Use `lookalike keys create EMAIL` for another key.",
        )
    user = User(email=email)
    session.add(user)
    session.flush()
    _, plain = issue_key(session, user=user, name="default")
    return user, plain


def get_user_by_email(session: Session, *, email: str) -> User:
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"No user with the email {email}.", code="user_not_found")
    return user


def list_users(session: Session) -> list[tuple[User, int]]:
    """Every user with their number of active keys."""
    active = func.count(ApiKey.id).filter(ApiKey.revoked_at.is_(None))
    rows = session.execute(
        select(User, active).outerjoin(ApiKey, ApiKey.user_id == User.id).group_by(User.id).order_by(User.created_at)
    )
    return [(user, count) for user, count in rows]


def create_key(session: Session, *, email: str, name: str | None = None) -> tuple[ApiKey, str]:
    return issue_key(session, user=get_user_by_email(session, email=email), name=name)


def list_keys(session: Session, *, email: str) -> list[ApiKey]:
    user = get_user_by_email(session, email=email)
    return list(session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)))


def revoke_key(session: Session, *, ident: str) -> ApiKey:
    """Revoke a key by its id, its displayed prefix, or the key itself."""
    conditions = [ApiKey.key_hash == hash_key(ident)]
    if len(ident) == DISPLAY_CHARS:
        conditions.append(ApiKey.prefix == ident)
    with contextlib.suppress(ValueError):
        conditions.append(ApiKey.id == uuid.UUID(ident))
    matches = list(session.scalars(select(ApiKey).where(or_(*conditions))))
    if not matches:
        raise NotFound(
            f"No API key matches {ident!r}.",
            code="key_not_found",
            hint="`lookalike keys list EMAIL` shows ids and prefixes.",
        )
    if len(matches) > 1:
        raise Conflict(f"{ident!r} matches {len(matches)} keys.", code="ambiguous_key", hint="Revoke by id instead.")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def delete_user(session: Session, *, user: User, storage: Storage) -> None:
    """Delete the user, every row they own, and (after the commit) every stored object."""
    session.execute(delete(Photo).where(Photo.user_id == user.id))
    session.execute(delete(Subject).where(Subject.user_id == user.id))
    session.execute(delete(ApiKey).where(ApiKey.user_id == user.id))
    session.delete(user)
    session.flush()
    prefix = user_prefix(user.id)
    after_commit(session, lambda: storage.delete_prefix(prefix))
