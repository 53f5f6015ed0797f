"""Rate limits on routes: declared as a dependency, applied before the body is read, refused with 429.

A route declares its limit with `dependencies=[RateLimit(UPLOADS)]`; its router's `route_class=RateLimitedRoute`
applies that limit ahead of FastAPI's body parsing (FastAPI reads a body before it solves dependencies), so an
upload over the limit is neither read nor stored. Every request counts, whatever its answer. The counting itself
is `app.core.ratelimit`, which workers may import; this half is web-only, like `app.core.http_errors`.

Failed sign-ins are throttled per client address by `throttle_failed_sign_in`, which `authenticate` calls for
each refused key (and never for an accepted one).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State

from app.audit.service import record_sign_in_throttled
from app.core.auth import hash_key
from app.core.errors import AppError
from app.core.metrics import RATE_LIMITED
from app.core.openapi import RETRY_AFTER, errors
from app.core.ratelimit import ACTIONS, SIGN_IN_FAILURES, Decision, RateLimiter
from app.db import ApiKey

for _action in (*ACTIONS, SIGN_IN_FAILURES):
    RATE_LIMITED.labels(_action)  # every action's series exists from the start, at 0

_limiter_lock = threading.Lock()


def limiter_for(state: State) -> RateLimiter:
    """The app's limiter, made from its settings on first use (a test may set `state.rate_limiter`)."""
    with _limiter_lock:
        limiter = getattr(state, "rate_limiter", None)
        if limiter is None:
            limiter = state.rate_limiter = RateLimiter.from_settings(state.settings)
        return limiter


class RateLimited(AppError):
    status = 429
    code = "rate_limited"


_CHECKED = "lookalike.rate_limit_checked"


class RateLimit:
    """A route's limit: `dependencies=[RateLimit(UPLOADS)]` on a router with `route_class=RateLimitedRoute`."""

    def __init__(self, action: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown rate-limited action {action!r}")
        self.action = action

    async def __call__(self, request: Request) -> None:
        # The limit was applied before the body was read; a router without the route class would apply it
        # only after reading the body (and could not send Retry-After), so that mistake fails loudly.
        if not request.scope.get(_CHECKED):
            raise RuntimeError(
                f"{request.url.path} declares a rate limit: its router needs route_class=RateLimitedRoute"
            )


def _action_of(dependencies: Sequence[Any] | None) -> str | None:
    for dep in dependencies or ():
        if isinstance(getattr(dep, "dependency", None), RateLimit):
            return dep.dependency.action
    return None


# The 429 in the OpenAPI document, in the one error shape, with its Retry-After header.
TOO_MANY_REQUESTS: dict[str, Any] = {
    **errors(429)[429],
    "headers": {"Retry-After": RETRY_AFTER},
}


class RateLimitedRoute(APIRoute):
    """Applies a route's `RateLimit` before FastAPI reads the body, so a refused upload is never read or stored."""

    # The Authorization schemes whose key is counted: those the router's own authentication accepts, so
    # that a request it answers 401 is not counted (and never answered 429 instead).
    schemes: tuple[str, ...] = ("bearer",)

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if _action_of(kwargs.get("dependencies")):
            responses = dict(kwargs.get("responses") or {})
            responses[429] = {**TOO_MANY_REQUESTS, **responses.get(429, {})}
            kwargs["responses"] = responses
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = _action_of(self.dependencies)
        if action is None:
            return handler

        async def limited(request: Request) -> Response:
            authorization = request.headers.get("authorization")
            decision = await run_in_threadpool(_check, request.app.state, authorization, self.schemes, action)
            request.scope[_CHECKED] = True
            if decision is not None and not decision.allowed:
                return await _refuse(request, action, decision)
            response = await handler(request)
            if decision is not None:
                response.headers.update(decision.headers())
            return response

        return limited


class ReplicateRateLimitedRoute(RateLimitedRoute):
    """The Replicate-compatible API's: its clients send `Bearer <key>`, older ones `Token <key>`."""

    schemes = ("bearer", "token")


def _check(state: State, authorization: str | None, schemes: tuple[str, ...], action: str) -> Decision | None:
    limiter = limiter_for(state)
    if limiter.rates.get(action) is None:
        return None
    key_id = _key_id(state, authorization, schemes)
    # No valid key: nothing to count against, and the route's own authentication answers 401.
    return None if key_id is None else limiter.hit(action, key_id)


def _key_id(state: State, authorization: str | None, schemes: tuple[str, ...]) -> uuid.UUID | None:
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() not in schemes or not token:
        return None
    with state.session_factory() as session:
        return session.scalar(select(ApiKey.id).where(ApiKey.key_hash == hash_key(token), ApiKey.revoked_at.is_(None)))


async def _refuse(request: Request, action: str, decision: Decision) -> Response:
    RATE_LIMITED.labels(action).inc()
    rate = limiter_for(request.app.state).rates[action]
    assert rate is not None
    error = RateLimited(
        f"Too many {action}: this API key may make {rate.describe(action)}.",
        hint=f"Try again in {decision.reset_s} seconds (the Retry-After header). "
        f"The operator sets this limit with LOOKALIKE_RATE_LIMIT_{action.upper()}.",
    )
    # The app's own handler writes the error, so /replicate answers a problem document like its other errors.
    handler = next(
        (request.app.exception_handlers[c] for c in type(error).__mro__ if c in request.app.exception_handlers), None
    )
    if handler is None:
        raise error
    response = await handler(request, error)
    response.headers.update({"Retry-After": str(decision.reset_s), **decision.headers()})
    return response


class TooManyFailedSignIns(AppError):
    status = 429
    code = "too_many_failed_sign_ins"


def throttle_failed_sign_in(state: State, session: Session, ip: str | None) -> None:
    """`authenticate`'s throttle: count a refused key against the client's address `ip`; past the limit, refuse
    it with 429 instead of recording it (the window's first refusal records that the address is throttled)."""
    limiter = limiter_for(state)
    decision = limiter.fail_sign_in(ip)
    rate = limiter.rates.get(SIGN_IN_FAILURES)
    if decision is None or decision.allowed or rate is None:
        return
    RATE_LIMITED.labels(SIGN_IN_FAILURES).inc()
    if decision.first_refused:
        record_sign_in_throttled(session, ip=ip, limit=rate.limit, period_s=rate.period_s)
    error = TooManyFailedSignIns(
        f"Too many failed sign-ins from your address: it may send {rate.describe('failed sign-ins')}.",
        hint=f"Check the API key you send (`Authorization: Bearer <api key>`; `lookalike keys create EMAIL` makes "
        f"a new one), then try again in {decision.reset_s} seconds (the Retry-After header). A valid key is "
        "not refused by this limit. The operator sets it with LOOKALIKE_RATE_LIMIT_SIGN_IN_FAILURES.",
    )
    error.headers = {"Retry-After": str(decision.reset_s), **decision.headers()}
    raise error
