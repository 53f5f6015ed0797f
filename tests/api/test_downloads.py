"""File downloads: S3 answers a 307 to a short-lived presigned link, the folder backend streams.

The S3 side runs against a real S3-protocol server (moto on loopback); the links are fetched with a
plain HTTP client that has no API key, as a browser or `curl -L` would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from app.core.storage import S3Storage, content_disposition
from tests.helpers import insert_model

NAME = "résumé фото.bin"  # not even Latin-1: a plain header would not encode


def _blob(size: int) -> bytes:
    """Random bytes that no sniffing takes for a LoRA or an image."""
    return b"BLOB-0001" + os.urandom(size)


def _model(settings: Any, storage: Any, account: Any, data: bytes) -> str:
    """A finished model of `account`'s (row and file), as a training leaves it."""
    model_id, _ = insert_model(settings, storage, account.id, data, name="my face")
    return str(model_id)


def _upload(client: TestClient, account: Any, data: bytes, name: str = NAME) -> str:
    response = client.post("/v1/files", files={"content": (name, data)}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _downloads(model_id: str, file_id: str) -> list[str]:
    return [
        f"/v1/models/{model_id}/download?format=diffusers",
        f"/v1/files/{file_id}/content",
        f"/replicate/v1/files/{file_id}/download",
    ]


@pytest.fixture
def s3_app(settings: Any, s3_server: str) -> Iterator[tuple[TestClient, S3Storage]]:
    """An app storing in a fresh bucket of the S3 server, sharing the database of the main one."""
    from app.main import create_app

    bucket = f"dl-{uuid.uuid4().hex[:16]}"
    app = create_app(settings.model_copy(update={"storage_url": f"s3://{bucket}/p", "s3_endpoint_url": s3_server}))
    with TestClient(app) as client:
        yield client, app.state.storage


def test_s3_downloads_redirect_to_a_short_lived_link(s3_app, settings, account) -> None:
    """Each download answers 307 to a presigned link that, fetched without a key, gives the exact bytes."""
    client, s3 = s3_app
    assert isinstance(s3, S3Storage)
    lora, blob = os.urandom(5000), _blob(7000)
    model_id = _model(settings, s3, account, lora)
    file_id = _upload(client, account, blob)
    expected = [
        (lora, 'attachment; filename="my_face-zorvek.safetensors"'),
        (blob, content_disposition(NAME)),
        (blob, content_disposition(NAME)),
    ]
    for path, (data, disposition) in zip(_downloads(model_id, file_id), expected, strict=True):
        response = client.get(path, headers=account.headers, follow_redirects=False)
        assert response.status_code == 307, (path, response.text)
        assert response.headers["cache-control"] == "no-store"
        link = response.headers["location"]
        query = parse_qs(urlparse(link).query)
        assert 1 <= int(query["X-Amz-Expires"][0]) <= 900
        assert "Authorization" not in link and account.key not in link
        fetched = httpx.get(link)  # a plain client: no API key, no cookies
        assert fetched.status_code == 200, fetched.text
        assert fetched.content == data
        assert fetched.headers["content-disposition"] == disposition
    assert content_disposition(NAME).endswith("filename*=UTF-8''r%C3%A9sum%C3%A9%20%D1%84%D0%BE%D1%82%D0%BE.bin")


def test_content_disposition_quotes_safely() -> None:
    """Quotes, backslashes and non-ASCII never break the header: an ASCII fallback plus RFC 5987 UTF-8."""
    assert content_disposition("lora.safetensors") == 'attachment; filename="lora.safetensors"'
    assert content_disposition('a "b"\\c.bin') == (
        "attachment; filename=\"a _b__c.bin\"; filename*=UTF-8''a%20%22b%22%5Cc.bin"
    )
    assert content_disposition("фото.bin").startswith("attachment; filename=\"____.bin\"; filename*=UTF-8''%D1%84")


def test_s3_link_lifetime_follows_the_setting(settings, s3_server, account) -> None:
    """A shorter lifetime from the settings is the one signed into the link."""
    from app.main import create_app

    bucket = f"dl-{uuid.uuid4().hex[:16]}"
    short = settings.model_copy(
        update={"storage_url": f"s3://{bucket}", "s3_endpoint_url": s3_server, "download_link_seconds": 60}
    )
    with TestClient(create_app(short)) as client:
        file_id = _upload(client, account, b"some bytes", name="notes.bin")
        response = client.get(f"/v1/files/{file_id}/content", headers=account.headers, follow_redirects=False)
    assert response.status_code == 307, response.text
    assert parse_qs(urlparse(response.headers["location"]).query)["X-Amz-Expires"] == ["60"]


def test_download_link_lifetime_is_at_most_15_minutes() -> None:
    """The setting refuses links that outlive 15 minutes, or do not live at all."""
    from pydantic import ValidationError

    from app.core.settings import Settings

    assert Settings().download_link_seconds == 900
    for bad in (0, 901, 3600):
        with pytest.raises(ValidationError, match="download_link_seconds"):
            Settings(download_link_seconds=bad)


def test_s3_links_are_signed_for_the_public_endpoint(s3_server: str) -> None:
    """Behind another public address, links name that address; the API still talks to the inner one."""
    store = S3Storage(
        f"pub-{uuid.uuid4().hex[:12]}", endpoint_url=s3_server, public_endpoint_url="https://s3.example.com"
    )
    link = urlparse(store.presigned_url("users/u/a.bin", expires_s=900, filename="a.bin"))
    assert (link.scheme, link.netloc) == ("https", "s3.example.com")
    assert store.client.meta.endpoint_url == s3_server


def test_s3_another_users_download_is_not_found(s3_app, settings, account, make_account) -> None:
    """Someone else's model or file answers 404 in the error shape, with no link."""
    client, s3 = s3_app
    model_id = _model(settings, s3, account, b"lora bytes")
    file_id = _upload(client, account, b"file bytes")
    stranger = make_account()
    for path in _downloads(model_id, file_id):
        response = client.get(path, headers=stranger.headers, follow_redirects=False)
        assert response.status_code == 404, (path, response.text)
        assert "location" not in response.headers
        body = response.json()
        error = body.get("error") or body  # the Replicate routes answer problem details
        assert error["code"] in ("model_not_found", "file_not_found"), body
    for path in _downloads(model_id, file_id):
        assert client.get(path, follow_redirects=False).status_code == 401


def test_s3_missing_object_is_a_clear_404_not_a_dead_link(s3_app, settings, account) -> None:
    """A row whose object is gone answers file_missing instead of redirecting to S3's own 404."""
    client, s3 = s3_app
    model_id = _model(settings, s3, account, b"lora bytes")
    file_id = _upload(client, account, b"file bytes")
    s3.delete_prefix(f"users/{account.id}/")
    for path in _downloads(model_id, file_id)[:2]:
        response = client.get(path, headers=account.headers, follow_redirects=False)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["code"] == "file_missing"


def test_folder_downloads_still_stream(client, settings, storage, account) -> None:
    """With the folder backend, every download answers 200 with the bytes and the file name."""
    lora, blob = os.urandom(3000), _blob(4000)
    model_id = _model(settings, storage, account, lora)
    file_id = _upload(client, account, blob)
    for path, data in zip(_downloads(model_id, file_id), (lora, blob, blob), strict=True):
        response = client.get(path, headers=account.headers, follow_redirects=False)
        assert response.status_code == 200, (path, response.text)
        assert response.content == data
        assert response.headers["content-disposition"].startswith("attachment; filename=")
        assert int(response.headers["content-length"]) == len(data)
    assert client.get(f"/v1/files/{file_id}/content", headers=account.headers).headers[
        "content-disposition"
    ] == content_disposition(NAME)


def test_download_link_is_presigned_with_s3_and_the_api_url_with_a_folder(
    s3_app, client, settings, storage, account, make_account
) -> None:
    """The web page asks where to fetch a LoRA: a link that needs no key (S3), or the download URL (a folder)."""
    s3_client, s3 = s3_app
    lora = os.urandom(3000)
    model_id = _model(settings, s3, account, lora)
    body = s3_client.get(f"/v1/models/{model_id}/download-link", headers=account.headers).json()
    assert body["needs_api_key"] is False and body["size_bytes"] == 3000
    assert body["filename"] == "my_face-zorvek.safetensors"
    assert 1 <= int(parse_qs(urlparse(body["url"]).query)["X-Amz-Expires"][0]) <= 900
    fetched = httpx.get(body["url"])  # no key
    assert fetched.status_code == 200 and fetched.content == lora
    stranger = make_account()
    refused = s3_client.get(f"/v1/models/{model_id}/download-link", headers=stranger.headers)
    assert refused.status_code == 404 and "url" not in refused.text

    folder_id = _model(settings, storage, account, lora)
    body = client.get(f"/v1/models/{folder_id}/download-link?format=diffusers", headers=account.headers).json()
    assert body["needs_api_key"] is True and body["expires_at"] is None
    path = urlparse(body["url"])
    assert path.path == f"/v1/models/{folder_id}/download" and path.query == "format=diffusers"
    assert client.get(f"{path.path}?{path.query}", headers=account.headers).content == lora
    missing = client.get(f"/v1/models/{folder_id}/download-link?format=kohya", headers=account.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_missing"
