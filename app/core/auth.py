"""API keys: random, prefixed, stored only as SHA-256 hashes, revocable."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, joinedload

from app.audit.service import key_actor, record, record_failed_sign_in, set_actor
from app.core.errors import Unauthorized
from app.core.tx import after_commit
from app.db import ApiKey, User
from app.db.base import utcnow

log = logging.getLogger(__name__)

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


# Called with the session and the client's address before a refused key is recorded: it counts the
# failure, and raises (a 429) instead when the address has failed too often (app.core.http_ratelimit).
Throttle = Callable[[Session, str | None], None]


def authenticate(
    session: Session, *, authorization: str | None, ip: str | None = None, throttle: Throttle | None = None
) -> User:
    """The user behind an `Authorization: Bearer <key>` header, or Unauthorized.

    A refused key is recorded in the audit log (an unknown one without any part of it); an accepted
    one becomes the session's audit actor, with the client's address `ip`. With `throttle`, each refused
    key is first counted against `ip`, which may refuse it unrecorded; an accepted key never reaches it,
    and a request without any key is neither counted nor recorded.
    """
    hint = "Send `Authorization: Bearer <api key>`; `lookalike users create EMAIL` prints a key."
    if not authorization:
        raise Unauthorized("No API key was sent.", code="missing_api_key", hint=hint)
    token = bearer_token(authorization)
    if token is None:
        if throttle:
            throttle(session, ip)
        record_failed_sign_in(session, reason="malformed_header", ip=ip)
        raise Unauthorized("The Authorization header must be `Bearer <api key>`.", code="invalid_api_key", hint=hint)
    digest = hash_key(token)
    # The key and its user in one round trip: this runs on every request.
    key = session.scalar(select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.key_hash == digest))
    if key is None or not hmac.compare_digest(key.key_hash, digest):
        if throttle:
            throttle(session, ip)
        record_failed_sign_in(session, reason="unknown_key", ip=ip)
        raise Unauthorized("This API key is not valid.", code="invalid_api_key", hint=hint)
    if key.revoked_at is not None:
        if throttle:
            throttle(session, ip)
        record_failed_sign_in(
            session, reason="revoked_key", ip=ip, user_id=key.user_id, key_id=key.id, key_prefix=key.prefix
        )
        raise Unauthorized(
            "This API key has been revoked.",
            code="revoked_api_key",
            hint="Create a new key with `lookalike keys create EMAIL`.",
        )
    now = utcnow()
    if use_is_due(key.id, key.last_used_at, now):
        # Written after the request's commit, in a transaction of its own: in the request's, every
        # concurrent request of this key would queue on the row's lock once a minute (seen under load
        # as a p99 of 0.8 s on a one-row read).
        bind = session.get_bind()
        after_commit(session, lambda: touch(bind, key.id, now))
    set_actor(session, actor=key_actor(key.prefix), ip=ip)
    return key.user


def bearer_token(authorization: str | None) -> str | None:
    """The key in an `Authorization: Bearer <key>` header; None when there is none or the scheme differs."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def use_is_due(key_id: uuid.UUID, last_used_at: datetime | None, now: datetime) -> bool:
    """Whether this request records the key's `last_used_at`: stale by a minute, and first in this process."""
    return (last_used_at is None or now - last_used_at > LAST_USED_RESOLUTION) and _due(key_id)


_TOUCHED: dict[uuid.UUID, float] = {}  # key id -> when this process last wrote its last_used_at
_TOUCHED_LOCK = threading.Lock()


def _due(key_id: uuid.UUID) -> bool:
    """Whether this request is the one in this process to record the key's use (once a resolution)."""
    now = time.monotonic()
    with _TOUCHED_LOCK:
        if now - _TOUCHED.get(key_id, float("-inf")) < LAST_USED_RESOLUTION.total_seconds():
            return False
        _TOUCHED[key_id] = now
        return True


def touch(bind: Engine | Connection, key_id: uuid.UUID, now: datetime) -> None:
    stale = or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < now - LAST_USED_RESOLUTION)
    try:
        with Session(bind) as s, s.begin():
            s.execute(update(ApiKey).where(ApiKey.id == key_id, stale).values(last_used_at=now))
    except DBAPIError as exc:  # a convenience for `keys list`, never worth failing a request over
        log.warning("could not record the use of key %s: %s", key_id, exc)
