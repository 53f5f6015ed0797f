"""Users and keys: what the CLI and the `/v1/me` endpoints do."""

from __future__ import annotations

import contextlib
import re
import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.auth import DISPLAY_CHARS, hash_key, issue_key
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.redact import redact
from app.core.settings import Settings, get_settings
from app.core.storage import Storage
from app.db import ApiKey, User
from app.db.base import utcnow
from app.privacy import erase

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
            f"No API key matches {redact(ident)!r}.",  # a mistyped key is still not echoed
            code="key_not_found",
            hint="`lookalike keys list EMAIL` shows ids and prefixes.",
        )
    if len(matches) > 1:
        raise Conflict(f"{ident!r} matches {len(matches)} keys.", code="ambiguous_key", hint="Revoke by id instead.")
    key = matches[0]
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        record(session, action="key_revoked", user_id=key.user_id, target_type="api_key", target_id=key.id)
    return key


def delete_user(session: Session, *, user: User, storage: Storage, settings: Settings | None = None) -> None:
    """Delete the user, every row that names them, and (after the commit) every stored object and outbox email."""
    erase.erase_user_files(session, user=user, storage=storage, settings=settings or get_settings())
    erase.delete_user_rows(session, user=user)
