"""/v1/me/audit: the caller's own audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from app.audit import service
from app.audit.schemas import AuditEventRead
from app.core.deps import DB, CurrentUser
from app.core.pagination import Page, PageParams, next_cursor

router = APIRouter(prefix="/v1/me", tags=["users"])


@router.get("/audit", response_model=Page[AuditEventRead])
def list_audit(session: DB, user: CurrentUser, page: Annotated[PageParams, Depends()]) -> Page[AuditEventRead]:
    """What was done with your account, newest first: sign-ins refused, keys, deletions, downloads, jobs."""
    rows = service.list_events(session, user_id=user.id, before=page.after, limit=page.limit)
    items = [AuditEventRead.model_validate(row, from_attributes=True) for row in rows[: page.limit]]
    return Page(items=items, next_cursor=next_cursor(rows, page.limit))
