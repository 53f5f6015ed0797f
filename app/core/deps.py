"""Request dependencies: the transaction boundary and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Annotated, TypeVar

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.core.auth import authenticate
from app.core.db import session_scope
from app.core.http_ratelimit import throttle_failed_sign_in
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


# Plain attribute reads: async, so FastAPI does not send them to its thread pool.
async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _storage(request: Request) -> Storage:
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


def sign_in(request: Request, session: Session, authorization: str | None) -> User:
    """`authenticate` the request's key; refused keys are throttled per client address (`throttle_failed_sign_in`).

    Every way in calls this: the native API, the Replicate-compatible one (which passes its `Token` scheme
    as `Bearer`) and `as_user`. A key that authenticates never reaches the limiter (no trip to Redis).
    """
    ip = request.client.host if request.client else None
    throttle = partial(throttle_failed_sign_in, request.app.state)
    return authenticate(session, authorization=authorization, ip=ip, throttle=throttle)


def _current_user(request: Request, session: DB, _: Bearer) -> User:
    return sign_in(request, session, request.headers.get("authorization"))


CurrentUser = Annotated[User, Depends(_current_user)]


T = TypeVar("T")


async def as_user(request: Request, work: Callable[[Session, User], T]) -> T:
    """Authenticate, run `work(session, user)` and commit, in one trip to the thread pool.

    For the reads clients poll (GET /v1/trainings/{id}): declared as `DB` and `CurrentUser`, the
    session, the key check, the handler and the commit are four trips, and under load each waits its
    turn for a thread and the GIL (a p99 ten times the median). Declare `Bearer` on the route too, so
    the document shows the scheme.
    """

    def run() -> T:
        with session_scope(request.app.state.session_factory) as session:
            user = sign_in(request, session, request.headers.get("authorization"))
            return work(session, user)

    return await anyio.to_thread.run_sync(run)
