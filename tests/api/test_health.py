"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app


def test_healthz_needs_no_key(client):
    """Liveness answers without authentication."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_database_storage_and_broker(client):
    """Readiness reports each dependency."""
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {"database": "ok", "storage": "ok", "broker": "ok"}


def test_readyz_reports_an_unreachable_broker(settings):
    """A broker that cannot be reached makes the service unready, with the reason."""
    broken = create_app(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    with TestClient(broken) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"].startswith("error")


def test_metrics_count_requests_by_route(client, account, subject):
    """Prometheus metrics label requests by route template, not raw path."""
    client.get(f"/v1/subjects/{subject['id']}", headers=account.headers)
    text = client.get("/metrics").text
    assert 'lookalike_http_requests_total{method="GET",route="/v1/subjects/{subject_id}",status="200"}' in text
    assert "lookalike_http_request_seconds_bucket" in text


def test_unknown_route_answers_in_the_error_shape(client):
    """Even the framework's own 404 uses the error shape."""
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
