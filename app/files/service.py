"""Uploaded input files: store, read, list, delete. Services flush; the request commits."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import uuid
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.audit.service import record
from app.core.errors import BadRequest, NotFound
from app.core.ids import new_id
from app.core.keys import file_key
from app.core.pagination import keyset
from app.core.settings import Settings
from app.core.storage import Storage
from app.core.tx import after_commit, after_rollback
from app.db import UploadedFile, User
from app.files.schemas import FileRead
from app.generations import lorafile
from app.photos.ingest import ZIP_MAGIC
from app.photos.service import clean_filename

IMAGE_MAGIC = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"RIFF": "image/webp",
}


def kind_of(head: bytes, name: str) -> tuple[str, str]:
    """(kind, content type) from the first bytes: lora, image, zip or other."""
    if head.startswith(ZIP_MAGIC):
        return "zip", "application/zip"
    for magic, ctype in IMAGE_MAGIC.items():
        if head.startswith(magic) and (magic != b"RIFF" or head[8:12] == b"WEBP"):
            return "image", ctype
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypmsf1"):
        return "image", "image/heic"
    if name.lower().endswith(".safetensors") or _looks_like_safetensors(head):
        return "lora", "application/octet-stream"
    guessed = mimetypes.guess_type(name)[0]
    return "other", guessed or "application/octet-stream"


def _looks_like_safetensors(head: bytes) -> bool:
    return len(head) > 9 and head[8:9] == b"{"


def create_file(
    session: Session,
    *,
    user: User,
    stream: BinaryIO,
    filename: str | None,
    content_type: str | None,
    metadata: dict[str, Any] | None,
    settings: Settings,
    storage: Storage,
) -> UploadedFile:
    """Store one upload as it is (up to `max_input_file_bytes`); a LoRA's header is checked on the way in."""
    data = stream.read(settings.max_input_file_bytes + 1)
    name = clean_filename(filename) or "file"
    if not data:
        raise BadRequest(f"{name} is empty.", code="empty_file", hint="Send the file's content in the field.")
    if len(data) > settings.max_input_file_bytes:
        raise BadRequest(
            f"{name} is larger than {settings.max_input_file_bytes // 2**20} MiB.",
            code="file_too_large",
            hint="LoRA files are usually under 500 MiB; upload a smaller file.",
            status=413,
        )
    kind, sniffed = kind_of(data[:16], name)
    meta = dict(metadata or {})
    if kind == "lora":
        try:
            header_meta, keys = lorafile.read_header(data)
        except lorafile.LoraFileError as exc:
            raise BadRequest(
                f"{name} is not a readable .safetensors file: {exc}",
                code="invalid_safetensors",
                hint="Upload the LoRA's .safetensors file as it was saved.",
                status=422,
            ) from None
        if not lorafile.is_lora(keys):
            raise BadRequest(
                f"{name} is a .safetensors file, but not a LoRA (no lora_A/lora_B or lora_down/lora_up weights).",
                code="not_a_lora",
                hint="Upload a LoRA file; full checkpoints are used as base_model, not uploaded.",
                status=422,
            )
        meta.setdefault("family", lorafile.family_of(header_meta, keys))
    file_id = new_id()
    key = file_key(user.id, file_id)
    storage.put(key, data, content_type=sniffed)
    after_rollback(session, lambda: storage.delete(key))
    row = UploadedFile(
        id=file_id,
        user_id=user.id,
        name=name,
        content_type=content_type if content_type and kind == "other" else sniffed,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        key=key,
        meta=meta | {"kind": kind},
    )
    session.add(row)
    session.flush()
    return row


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The multipart `metadata` field: a JSON object, or nothing."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise BadRequest(
            "metadata must be a JSON object.", code="invalid_metadata", hint='e.g. {"purpose": "style LoRA"}'
        )
    return value


def get_file(session: Session, *, user: User, file_id: uuid.UUID) -> UploadedFile:
    row = session.scalar(select(UploadedFile).where(UploadedFile.id == file_id, UploadedFile.user_id == user.id))
    if row is None:
        raise NotFound("No such file.", code="file_not_found", hint="List yours with GET /v1/files.")
    return row


def list_files(session: Session, *, user: User, after: uuid.UUID | None, limit: int) -> list[UploadedFile]:
    query = select(UploadedFile).where(UploadedFile.user_id == user.id)
    return list(session.scalars(keyset(query, UploadedFile.id, after=after, limit=limit)))


def delete_file(session: Session, *, row: UploadedFile, storage: Storage) -> None:
    """Delete the row; the content goes once the deletion has committed."""
    key = row.key
    record(session, action="file_deleted", user_id=row.user_id, target_type="file", target_id=row.id)
    session.delete(row)
    session.flush()
    after_commit(session, lambda: storage.delete(key))


def to_read(row: UploadedFile, settings: Settings) -> FileRead:
    meta = dict(row.meta or {})
    kind = meta.pop("kind", "other")
    return FileRead(
        id=row.id,
        name=row.name,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        kind=kind,
        metadata=meta,
        url=f"{settings.public_url.rstrip('/')}/v1/files/{row.id}/content",
        created_at=row.created_at,
    )
