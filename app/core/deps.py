"""Request dependencies: the transaction boundary and the authenticated caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request
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


def _current_user(session: DB, authorization: Annotated[str | None, Header()] = None) -> User:
    return authenticate(session, authorization=authorization)


CurrentUser = Annotated[User, Depends(_current_user)]
