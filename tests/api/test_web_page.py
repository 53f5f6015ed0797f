"""The web page's files as the API serves them, and /v1/base-models, which the page reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).parents[2] / "app" / "web" / "static"


def test_the_page_and_its_files_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    # Every file the page names is served, with its type; nothing comes from another origin.
    names = re.findall(r'(?:src|href)="/ui/([^"]+)"', page.text)
    assert sorted(names) == ["app.css", "app.js", "icon.svg"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)
    types = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
    for name in names:
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(types[name])
        assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize(
    "path", ["/ui/../router.py", "/ui/%2e%2e%2frouter.py", "/ui/..%2F__init__.py", "/ui/missing.js", "/ui/.hidden.js"]
)
def test_only_the_pages_own_files_are_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "error" in response.json()


def test_base_models_list_the_presets_with_their_defaults(client, account):
    assert client.get("/v1/base-models").status_code == 401
    body = client.get("/v1/base-models", headers=account.headers).json()
    models = {m["name"]: m for m in body["items"]}
    assert set(models) == {"sd15", "sdxl", "flux-dev", "tiny-sd15", "tiny-sdxl", "tiny-flux"}
    tiny = models["tiny-sd15"]
    assert tiny["tiny"] and tiny["runnable"] and tiny["reason"] is None
    assert tiny["defaults"] == {
        "steps": 20,
        "learning_rate": 1e-3,
        "rank": 4,
        "resolution": 64,
        "face_weight": 3.0,
        "gradient_checkpointing": False,
    }
    flux = models["flux-dev"]
    assert flux["family"] == "flux" and flux["source"] == "black-forest-labs/FLUX.1-dev"
    assert flux["defaults"]["learning_rate"] == 4e-4 and flux["defaults"]["gradient_checkpointing"] is True
    assert sum(m["default"] for m in models.values()) <= 1


def test_runnable_is_what_starting_a_training_answers(client, account, subject, settings):
    """A model listed as not runnable is refused by POST /v1/trainings with the same reason."""
    models = client.get("/v1/base-models", headers=account.headers).json()["items"]
    for model in models:
        response = client.post(
            "/v1/trainings",
            json={"subject_id": subject["id"], "name": "x", "base_model": model["name"]},
            headers=account.headers,
        )
        if model["runnable"]:
            assert response.json()["error"]["code"] != "gpu_required", model
        else:
            assert response.status_code == 422 and response.json()["error"]["message"] == model["reason"]
    gated = settings.is_embedded_broker and not Path("/proc/driver/nvidia/gpus").is_dir()
    assert {m["name"] for m in models if not m["runnable"]} == ({"sd15", "sdxl", "flux-dev"} if gated else set())
