"""API keys: random, prefixed, stored only as SHA-256 hashes, revocable."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import key_actor, record, record_failed_sign_in, set_actor
from app.core.errors import Unauthorized
from app.db import ApiKey, User
from app.db.base import utcnow

KEY_PREFIX = "lk_"
DISPLAY_CHARS = 10  # "lk_" plus 7 characters: enough to tell keys apart in a listing
LAST_USED_RESOLUTION = timedelta(minutes=1)


def generate_key() -> str:
    """A new key: 256 random bits, URL-safe, with a recognisable prefix (secret scanners match it)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    # Keys carry 256 bits of entropy, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(session: Session, *, user: User, name: str | None = None) -> tuple[ApiKey, str]:
    """Create a key for `user`; the plain key is returned once and never stored."""
    plain = generate_key()
    row = ApiKey(user=user, prefix=plain[:DISPLAY_CHARS], key_hash=hash_key(plain), name=name)
    session.add(row)
    session.flush()
    record(
        session,
        action="key_created",
        user_id=user.id,
        target_type="api_key",
        target_id=row.id,
        details={"prefix": row.prefix, "name": name},
    )
    return row, plain


def authenticate(session: Session, *, authorization: str | None, ip: str | None = None) -> User:
    """The user behind an `Authorization: Bearer <key>` header, or Unauthorized.

    A refused key is recorded in the audit log (an unknown one without any part of it); an accepted
    one becomes the session's audit actor, with the client's address `ip`.
    """
    hint = "Send `Authorization: Bearer <api key>`; `lookalike users create EMAIL` prints a key."
    if not authorization:
        raise Unauthorized("No API key was sent.", code="missing_api_key", hint=hint)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        record_failed_sign_in(session, reason="malformed_header", ip=ip)
        raise Unauthorized("The Authorization header must be `Bearer <api key>`.", code="invalid_api_key", hint=hint)
    digest = hash_key(token)
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        record_failed_sign_in(session, reason="unknown_key", ip=ip)
        raise Unauthorized("This API key is not valid.", code="invalid_api_key", hint=hint)
    if key.revoked_at is not None:
        record_failed_sign_in(
            session, reason="revoked_key", ip=ip, user_id=key.user_id, key_id=key.id, key_prefix=key.prefix
        )
        raise Unauthorized(
            "This API key has been revoked.",
            code="revoked_api_key",
            hint="Create a new key with `lookalike keys create EMAIL`.",
        )
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        key.last_used_at = now
    set_actor(session, actor=key_actor(key.prefix), ip=ip)
    return key.user
