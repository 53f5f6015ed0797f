"""Where a generation's LoRA bytes come from: the user's models and files in storage, or a URL.

A URL is checked again here (its DNS may have changed since the request), fetched from the
addresses that check returned with no redirect followed, bounded in size and time, and kept in
a cache folder on the worker keyed by the URL, so a style LoRA used every day is fetched once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.settings import Settings
from app.core.storage import ObjectNotFound, Storage
from app.generations import lorafile
from app.notify.webhooks import TargetRefused, check_target
from worker.generation.adapters import LoraSource
from worker.generation.errors import GenerationError
from worker.notify.http import HttpFailure, get


def lora_sources(loras: list[dict[str, Any]], *, storage: Storage, settings: Settings) -> list[LoraSource]:
    """One engine source per LoRA entry of a generation (see `Generation.loras`), at the entry's scale."""
    return [_source(entry, float(entry["scale"]), storage, settings) for entry in loras]


def _source(entry: dict[str, Any], scale: float, storage: Storage, settings: Settings) -> LoraSource:
    if entry["kind"] == "url":
        url = entry["url"]
        name = "u" + hashlib.sha256(url.encode()).hexdigest()[:24]
        return LoraSource(name=name, scale=scale, read=lambda: fetch(url, settings))
    key = entry["key"]

    def read() -> bytes:
        try:
            return storage.get(key)
        except ObjectNotFound:
            raise GenerationError(
                "lora_unreadable",
                f"The LoRA {entry['name']} is no longer in storage (it was deleted).",
                "Use another model or upload the file again.",
            ) from None

    return LoraSource(name=entry["adapter"], scale=scale, read=read)


def cache_dir(settings: Settings) -> Path:
    return settings.data_dir / "cache" / "loras"


def fetch(url: str, settings: Settings, *, http_get: Callable[..., tuple[int, bytes]] = get) -> bytes:
    """The LoRA at `url`, from the worker's cache or downloaded (at most `max_input_file_bytes`)."""
    folder = cache_dir(settings)
    cached = folder / (hashlib.sha256(url.encode()).hexdigest() + ".safetensors")
    if cached.is_file():
        return cached.read_bytes()
    try:
        addresses = check_target(url, allow_private=settings.lora_allow_private_urls, label="the LoRA url")
        status, data = http_get(
            url, timeout=settings.lora_fetch_timeout_s, max_bytes=settings.max_input_file_bytes, addresses=addresses
        )
    except TargetRefused as exc:
        raise GenerationError("lora_download_failed", exc.reason, "Use a public https URL.") from None
    except HttpFailure as exc:
        raise GenerationError(
            "lora_download_failed", f"The LoRA at {url} could not be downloaded: {exc.reason}.", _HINT
        ) from None
    if status != 200:
        raise GenerationError(
            "lora_download_failed", f"The LoRA at {url} could not be downloaded: the server answered {status}.", _HINT
        )
    if len(data) > settings.max_input_file_bytes:
        raise GenerationError(
            "lora_download_failed",
            f"The LoRA at {url} is larger than {settings.max_input_file_bytes // 2**20} MiB.",
            "Use a smaller LoRA file.",
        )
    try:
        _meta, keys = lorafile.read_header(data)
    except lorafile.LoraFileError as exc:
        raise GenerationError(
            "lora_unreadable", f"The file at {url} is not a .safetensors file: {exc}", _HINT
        ) from None
    if not lorafile.is_lora(keys):
        raise GenerationError("lora_unreadable", f"The file at {url} is not a LoRA.", _HINT)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, cached)  # another worker reading the cache never sees half a file
    return data


_HINT = "Check that the URL downloads the .safetensors file itself (not a web page), or upload it with POST /v1/files."
