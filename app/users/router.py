from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel, Field

from app.audit.service import record
from app.core.deps import DB, AppStorage, CurrentUser
from app.notify.webhooks import new_secret
from app.users import service

router = APIRouter(prefix="/v1/me", tags=["users"])


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime
    has_webhook_secret: bool = Field(description="whether webhooks can be signed (the secret itself is shown once)")


class WebhookSecret(BaseModel):
    secret: str = Field(description="whsec_...: verify each webhook's signature with it; shown only this once")
    replaced: bool = Field(description="true when an earlier secret existed and no longer signs anything")


@router.get("", response_model=UserRead)
def read_me(user: CurrentUser) -> UserRead:
    """The owner of the API key."""
    return UserRead(
        id=user.id, email=user.email, created_at=user.created_at, has_webhook_secret=bool(user.webhook_secret)
    )


@router.post("/webhook-secret", status_code=status.HTTP_201_CREATED, response_model=WebhookSecret)
def rotate_webhook_secret(session: DB, user: CurrentUser) -> WebhookSecret:
    """Create the secret that signs your webhooks (Standard Webhooks), or replace it: from now on every
    delivery, retries of earlier events included, is signed with the new one."""
    replaced = bool(user.webhook_secret)
    user.webhook_secret = new_secret()
    session.flush()
    return WebhookSecret(secret=user.webhook_secret, replaced=replaced)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def delete_me(session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """Delete the account, everything it owns and every stored file. This cannot be undone."""
    service.delete_user(session, user=user, storage=storage)
    # Kept without anything that points back at the person (their entries go with them, and so do their
    # id, key prefix and address): only that an account was deleted, and when.
    event = record(session, action="user_deleted", user_id=None, target_type="user", actor="erased")
    event.ip_address = None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
