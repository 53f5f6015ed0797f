"""Recording audit events in the caller's transaction, and reading a user's own.

The request's actor (`api_key:<display prefix>` and the client's address) is set on the session
when the key is authenticated; the CLI sets `cli`; anything else records as `system`. Services call
`record` next to the change they make, so the entry commits or rolls back with it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import AuditEvent

log = logging.getLogger(__name__)

_ACTOR = "audit_actor"
SYSTEM = "system"
CLI = "cli"
ANONYMOUS = "anonymous"  # a sign-in with a key we do not know: nothing of it is kept
MAX_TEXT = 200


def key_actor(prefix: str) -> str:
    """How an API key appears in the log: its stored display prefix, never the key."""
    return f"api_key:{prefix}"


def set_actor(session: Session, *, actor: str, ip: str | None = None) -> None:
    """Who the session's work is done for, until the session ends."""
    session.info[_ACTOR] = (actor, ip)


def _actor(session: Session) -> tuple[str, str | None]:
    return session.info.get(_ACTOR, (SYSTEM, None))


def _clean(details: dict[str, Any] | None) -> dict[str, Any]:
    # A few plain values only: nothing nested, nothing long (no payloads, no image data).
    out: dict[str, Any] = {}
    for name, value in (details or {}).items():
        if isinstance(value, str):
            out[name] = value[:MAX_TEXT]
        elif value is None or isinstance(value, bool | int | float):
            out[name] = value
        elif isinstance(value, uuid.UUID):
            out[name] = str(value)
    return out


def record(
    session: Session,
    *,
    action: str,
    user_id: uuid.UUID | None,
    target_type: str | None = None,
    target_id: uuid.UUID | None = None,
    details: dict[str, Any] | None = None,
    actor: str | None = None,
) -> AuditEvent:
    """Add an entry to the session's transaction (it is written at the next flush or commit)."""
    who, ip = _actor(session)
    event = AuditEvent(
        user_id=user_id,
        actor=actor or who,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip_address=ip[:64] if ip else None,
        details=_clean(details),
    )
    session.add(event)
    return event


def record_failed_sign_in(
    session: Session,
    *,
    reason: str,
    ip: str | None,
    user_id: uuid.UUID | None = None,
    key_id: uuid.UUID | None = None,
    key_prefix: str | None = None,
) -> None:
    """Record a refused key in its own transaction: the request's is rolled back with the 401."""
    event = AuditEvent(
        user_id=user_id,
        actor=key_actor(key_prefix) if key_prefix else ANONYMOUS,
        action="sign_in_failed",
        target_type="api_key" if key_id else None,
        target_id=key_id,
        ip_address=ip[:64] if ip else None,
        details={"reason": reason},
    )
    _record_apart(session, event)


def record_sign_in_throttled(session: Session, *, ip: str | None, limit: int, period_s: int) -> None:
    """Record, once a window, that failed sign-ins from `ip` are refused unrecorded (429) until it ends."""
    event = AuditEvent(
        user_id=None,
        actor=ANONYMOUS,
        action="sign_in_throttled",
        ip_address=ip[:64] if ip else None,
        details={"limit": limit, "period_s": period_s},
    )
    _record_apart(session, event)


def _record_apart(session: Session, event: AuditEvent) -> None:
    """Write `event` in its own transaction: the request's is rolled back with its refusal."""
    try:
        with Session(bind=session.get_bind()) as own, own.begin():
            own.add(event)
    except Exception:
        # The caller still gets its 401 (or 429); a lost entry is logged, never a 500.
        log.exception("could not record a refused sign-in (%s)", event.action)


def list_events(session: Session, *, user_id: uuid.UUID, before: uuid.UUID | None, limit: int) -> list[AuditEvent]:
    """The user's entries, newest first, fetching one extra row to know if another page follows."""
    query = select(AuditEvent).where(AuditEvent.user_id == user_id)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    return list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
