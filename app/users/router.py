from __future__ import annotations

import uuid
from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from app.core.deps import DB, AppStorage, CurrentUser
from app.users import service

router = APIRouter(prefix="/v1/me", tags=["users"])


class UserRead(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


@router.get("", response_model=UserRead)
def read_me(user: CurrentUser) -> UserRead:
    """The owner of the API key."""
    return UserRead(id=user.id, email=user.email, created_at=user.created_at)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
def delete_me(session: DB, user: CurrentUser, storage: AppStorage) -> Response:
    """Delete the account, everything it owns and every stored file. This cannot be undone."""
    service.delete_user(session, user=user, storage=storage)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
