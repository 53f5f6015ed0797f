"""File downloads: a short-lived presigned link where the store can make one (S3), streaming otherwise.

Only for files a user saves (LoRAs, uploaded files). Images stay streamed: the web page fetches them
with the API key and its Content-Security-Policy only lets it talk to its own origin.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import Response, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from app.core.errors import NotFound
from app.core.settings import Settings
from app.core.storage import ObjectNotFound, Storage, content_disposition
from app.db.base import utcnow


def download_response(
    storage: Storage,
    key: str,
    *,
    filename: str,
    content_type: str,
    size_bytes: int | None,
    settings: Settings,
    missing: NotFound,
) -> Response:
    """307 to a presigned link (S3), or the bytes streamed (a folder); `missing` if the object is gone.

    Call it only after the caller's authorization checks: the link itself needs no key.
    """
    if storage.exists(key):
        link = storage.presigned_url(
            key, expires_s=settings.download_link_seconds, filename=filename, content_type=content_type
        )
        if link is not None:
            return Response(
                status_code=status.HTTP_307_TEMPORARY_REDIRECT,
                headers={"Location": link, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
            )
    try:
        chunks = storage.iter_chunks(key)
    except ObjectNotFound:
        raise missing from None
    headers = {"Content-Disposition": content_disposition(filename)}
    if size_bytes is not None:
        headers["Content-Length"] = str(size_bytes)
    return StreamingResponse(chunks, media_type=content_type, headers=headers)


# For the endpoints' `responses=`: what a client may get besides the 200 stream.
REDIRECT = {
    307: {
        "description": "With S3 storage: a presigned link (valid 15 minutes at most) in `Location`; "
        "follow it without the API key.",
        "headers": {"Location": {"schema": {"type": "string"}, "description": "the presigned link"}},
    }
}


class DownloadLink(BaseModel):
    """Where to fetch a file, for a client that cannot follow a redirect with its key (a web page)."""

    url: str = Field(description="a presigned link (S3), or this API's download URL")
    needs_api_key: bool = Field(description="false: fetch `url` as it is; true: send the API key with it")
    expires_at: datetime | None = Field(description="when a presigned link stops working")
    filename: str
    size_bytes: int | None


def download_link(
    storage: Storage,
    key: str,
    *,
    api_url: str,
    filename: str,
    content_type: str,
    size_bytes: int | None,
    settings: Settings,
    missing: NotFound,
) -> DownloadLink:
    """The presigned link where the store makes one, else `api_url` (which streams with the key)."""
    if not storage.exists(key):
        raise missing
    seconds = settings.download_link_seconds
    link = storage.presigned_url(key, expires_s=seconds, filename=filename, content_type=content_type)
    if link is None:
        return DownloadLink(url=api_url, needs_api_key=True, expires_at=None, filename=filename, size_bytes=size_bytes)
    return DownloadLink(
        url=link,
        needs_api_key=False,
        expires_at=utcnow() + timedelta(seconds=seconds),
        filename=filename,
        size_bytes=size_bytes,
    )
