"""Request dependencies: the transaction boundary and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.auth import authenticate
from app.core.db import session_scope
from app.core.settings import Settings
from app.core.storage import Storage
from app.db import User


def _db(request: Request) -> Iterator[Session]:
    """One session per request: commit when the handler returns, roll back if it raises.

    Hooks registered with `after_commit` (enqueueing tasks, deleting blobs) run only after
    a successful commit, and before the response is sent, so a client that reads right
    after a 202 sees the rows and the queued work.
    """
    with session_scope(request.app.state.session_factory) as session:
        yield session


# scope="function": the code after `yield` runs before the response goes out.
DB = Annotated[Session, Depends(_db, scope="function")]


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _storage(request: Request) -> Storage:
    return request.app.state.storage


AppSettings = Annotated[Settings, Depends(_settings)]
AppStorage = Annotated[Storage, Depends(_storage)]


# Declares the bearer scheme in the OpenAPI document (Swagger UI's Authorize button, generated clients).
# It never refuses by itself: `authenticate` reads the header and words each refusal.
BEARER = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="lk_…",
    description="An API key: `lookalike users create EMAIL` prints one. Send `Authorization: Bearer <key>`.",
    auto_error=False,
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


def _current_user(request: Request, session: DB, _: Bearer) -> User:
    authorization = request.headers.get("authorization")
    return authenticate(session, authorization=authorization, ip=request.client.host if request.client else None)


CurrentUser = Annotated[User, Depends(_current_user)]
