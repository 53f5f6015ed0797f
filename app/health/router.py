from __future__ import annotations

import logging

from celery import Celery
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.core.db import check_schema, ping
from app.core.metrics import REGISTRY

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _check_broker(celery: Celery) -> None:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=3)


@router.get(
    "/readyz",
    responses={503: {"description": "A dependency is not reachable; `checks` says which"}},
)
def readyz(request: Request) -> JSONResponse:
    """Database (migrated), storage and broker all reachable."""
    state = request.app.state
    checks = {
        "database": lambda: (ping(state.engine), check_schema(state.engine)),
        "storage": state.storage.check,
        "broker": lambda: _check_broker(state.celery),
    }
    results: dict[str, str] = {}
    for name, check in checks.items():
        try:
            check()
            results[name] = "ok"
        except Exception as exc:  # readiness reports every failure rather than raising
            log.warning("readiness check %s failed: %s", name, exc)
            results[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    ready = all(v == "ok" for v in results.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": results}, status_code=200 if ready else 503
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
