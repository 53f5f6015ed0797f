"""Prometheus metrics for the API process."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "lookalike_http_requests_total",
    "HTTP requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "lookalike_http_request_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
PHOTOS_UPLOADED = Counter("lookalike_photos_accepted_total", "Photos accepted by uploads", registry=REGISTRY)
FILES_REJECTED = Counter(
    "lookalike_files_rejected_total", "Uploaded files rejected, by reason", ["code"], registry=REGISTRY
)
# By action only: a label per API key would grow without bound (and keys are never written anywhere).
RATE_LIMITED = Counter(
    "lookalike_rate_limited_total", "Requests refused by a rate limit, by action", ["action"], registry=REGISTRY
)


class MetricsMiddleware:
    """Counts and times requests by route template (not raw path, which would explode label cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # A mounted sub-application (/replicate) matches its own paths: put its mount point back in front.
            root = scope.get("root_path", "")
            mount = root[len(scope.get("app_root_path", root)) :]
            path = getattr(route, "path", None)
            name = mount + path if path else "unmatched"
            REQUESTS.labels(scope["method"], name, str(status)).inc()
            LATENCY.labels(scope["method"], name).observe(time.perf_counter() - start)
