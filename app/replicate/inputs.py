"""File inputs as the `replicate` client sends them: our own file URLs, and data URIs.

The client uploads an open file to POST /v1/files and sends the answer's `urls.get` as the input,
so such a URL is recognised here and read from storage, never fetched over the network. A data
URI is stored as one of the user's files first, so every file input ends up as a file id.
"""

from __future__ import annotations

import base64
import binascii
import io
import mimetypes
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from sqlalchemy.orm import Session

from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.core.storage import Storage
from app.db import UploadedFile, User
from app.files.service import create_file, get_file

PREFIX = "/replicate"
_ID = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
# Ours: this API's file and download URLs, and the native API's content URL.
_FILE_PATH = re.compile(rf"^(?:{PREFIX}/v1/files/(?P<id>{_ID})(?:/download)?|/v1/files/(?P<native>{_ID})/content)/?$")


@dataclass(frozen=True)
class Context:
    """What resolving inputs needs: the caller, where files live, and the URLs that mean this service."""

    session: Session
    user: User
    settings: Settings
    storage: Storage
    origins: tuple[str, ...]  # public_url and the URL the request came to, without a trailing slash

    def api_url(self, path: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}{PREFIX}{path}"


def file_url(settings: Settings, row: UploadedFile) -> str:
    """The `urls.get` of a file: where its owner downloads it, and what the client sends back as an input."""
    return f"{settings.public_url.rstrip('/')}{PREFIX}/v1/files/{row.id.hex}/download"


def our_file_id(value: str, origins: tuple[str, ...]) -> uuid.UUID | None:
    """The file id in one of this service's file URLs; None for any other string."""
    for origin in origins:
        if value.startswith(origin + "/"):
            match = _FILE_PATH.match(urlsplit(value[len(origin) :]).path)
            if match:
                return uuid.UUID(match["id"] or match["native"])
    return None


def is_remote_url(value: Any) -> bool:
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def input_file(ctx: Context, value: Any, *, field: str) -> UploadedFile | None:
    """The file an input names (one of ours, or a data URI stored now); None when it is neither."""
    if not isinstance(value, str):
        raise Unprocessable(
            f"input.{field} must be a file: a URL from POST /v1/files or a data URI.",
            code="invalid_input",
            hint="Pass an open file (the client uploads it for you), or upload it with replicate.files.create.",
        )
    if value.startswith("data:"):
        data, content_type = decode_data_uri(value, field)
        extension = mimetypes.guess_extension(content_type) or ""
        return create_file(
            ctx.session,
            user=ctx.user,
            stream=io.BytesIO(data),
            filename=f"{field}{extension}",
            content_type=content_type,
            metadata={"source": "data_uri", "input": field},
            settings=ctx.settings,
            storage=ctx.storage,
        )
    file_id = our_file_id(value, ctx.origins)
    if file_id is None:
        return None
    return get_file(ctx.session, user=ctx.user, file_id=file_id)


def decode_data_uri(value: str, field: str) -> tuple[bytes, str]:
    """(content, media type) of a `data:[<type>][;base64],<data>` URI (RFC 2397)."""
    header, sep, payload = value[len("data:") :].partition(",")
    media_type = header.split(";")[0].strip() or "text/plain"
    try:
        if not sep:
            raise ValueError("no comma")
        data = base64.b64decode(payload, validate=False) if header.endswith(";base64") else unquote_to_bytes(payload)
    except (ValueError, binascii.Error):
        raise Unprocessable(
            f"input.{field} is not a valid data URI.",
            code="invalid_data_uri",
            hint="Use data:<media type>;base64,<data>, or pass an open file and let the client upload it.",
        ) from None
    return data, media_type
