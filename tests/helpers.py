"""Helpers shared by tests: fixture files, generated images and archives, polling."""

from __future__ import annotations

import io
import stat
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"

# `make_lora(family, seed=0, strength=1.0, fmt="diffusers", meta=True)` (tests/conftest.py): a LoRA file's bytes.
LoraMaker = Callable[..., bytes]


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until `predicate` returns something truthy; fail with its last value after `timeout`."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        time.sleep(interval)
        value = predicate()
    return value


def list_all_photos(client: Any, account: Any, subject_id: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"/v1/subjects/{subject_id}/photos", params=params, headers=account.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if not cursor:
            return items


def wait_until_analyzed(client: Any, account: Any, subject_id: str, count: int, timeout: float = 60) -> list[dict]:
    """Wait until `count` photos of the subject have left `pending`."""

    def done() -> list[dict] | None:
        photos = list_all_photos(client, account, subject_id)
        finished = [p for p in photos if p["status"] != "pending"]
        return photos if len(photos) >= count and len(finished) == len(photos) else None

    return wait_for(done, timeout=timeout)


def wait_until_reviewed(client: Any, account: Any, subject_id: str, count: int, timeout: float = 90) -> dict:
    """Wait until `count` photos are analysed and the subject review has run after the last one."""

    def report() -> dict:
        return client.get(f"/v1/subjects/{subject_id}/report", headers=account.headers).json()

    def done() -> dict | None:
        # Report, photos, report: the photos are the review's own only if no review ran in between.
        before = report()
        photos = list_all_photos(client, account, subject_id)
        after = report()
        if len(photos) < count or any(p["status"] == "pending" for p in photos):
            return None
        reviewed = after["reviewed_at"]
        last = max((p["analyzed_at"] for p in photos if p["analyzed_at"]), default=None)
        if reviewed is None or reviewed != before["reviewed_at"]:
            return None
        if last is not None and _instant(reviewed) < _instant(last):
            return None
        return {"report": after, "photos": {p["filename"]: p for p in photos}}

    return wait_for(done, timeout=timeout, interval=0.2)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def jpeg_bytes(
    width: int = 320,
    height: int = 240,
    *,
    color: tuple[int, int, int] = (200, 120, 80),
    exif: Image.Exif | None = None,
    quality: int = 90,
    **save: Any,
) -> bytes:
    """A JPEG with a gradient (so encoders have something to do), optionally with EXIF."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    img = Image.blend(img, Image.new("RGB", (width, height), color), 0.5)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, exif=exif or Image.Exif(), **save)
    return out.getvalue()


def png_bytes(width: int = 200, height: int = 150, mode: str = "RGB") -> bytes:
    img = Image.new(mode, (width, height), (10, 200, 30) if mode == "RGB" else (10, 200, 30, 128))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def zip_bytes(
    entries: dict[str, bytes], *, symlinks: dict[str, str] | None = None, compression: int = zipfile.ZIP_DEFLATED
) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()


def insert_model(
    settings: Any, storage: Any, user_id: Any, data: bytes, *, name: str = "me", **columns: Any
) -> tuple[uuid.UUID, str]:
    """A finished tiny-sd15 model of `user_id` (its row and its diffusers file), as a training leaves it.

    `columns` set or override the row's other columns (e.g. `files`, `replicate_model_id`).
    Returns the model's id and its file's storage key.
    """
    from app.core.db import session_factory, session_scope
    from app.core.keys import model_prefix
    from app.db import Model

    model_id = uuid.uuid4()
    key = model_prefix(user_id, model_id) + "lora.safetensors"
    storage.put(key, data)
    row = {
        "id": model_id,
        "user_id": user_id,
        "name": name,
        "base_model": "tiny-sd15",
        "family": "sd15",
        "tiny": True,
        "trigger_word": "zorvek",
        "rank": 4,
        "files": {"diffusers": {"key": key, "size_bytes": len(data)}},
    }
    with session_scope(session_factory(settings)) as session:
        session.add(Model(**(row | columns)))
    return model_id, key
