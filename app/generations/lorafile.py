"""What a LoRA file says about itself: its metadata, its keys and the model family it was trained for.

Pure Python, no torch or safetensors: the API reads an uploaded file's header with it before any
worker loads the weights. A `.safetensors` file starts with an 8-byte little-endian length and a
JSON header naming every tensor (and, under `__metadata__`, string metadata); the weights follow.
"""

from __future__ import annotations

import json
import re
import struct
from typing import BinaryIO

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit: a longer "header" is not one
SD15, SDXL, FLUX = "sd15", "sdxl", "flux"


class LoraFileError(ValueError):
    """The file cannot be read as a LoRA; the message is for the user."""


def read_header(source: bytes | BinaryIO) -> tuple[dict[str, str], list[str]]:
    """(metadata, tensor names) from a .safetensors file's bytes or a binary file object at its start."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source[:8])
        length = _length(data)
        raw = bytes(source[8 : 8 + length])
    else:
        length = _length(source.read(8))
        raw = source.read(length)
    if len(raw) < length:
        raise LoraFileError("The file is cut short: its header promises more bytes than it holds.")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise LoraFileError("The file's header is not valid JSON: it is not a .safetensors file.") from exc
    if not isinstance(header, dict):
        raise LoraFileError("The file's header is not a JSON object: it is not a .safetensors file.")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict):
        raise LoraFileError("The file's metadata is not a JSON object.")
    if not all(isinstance(v, dict) and "dtype" in v and "data_offsets" in v for v in header.values()):
        raise LoraFileError("The file's header does not describe tensors: it is not a .safetensors file.")
    return {str(k): str(v) for k, v in meta.items()}, list(header)


def _length(prefix: bytes) -> int:
    if len(prefix) < 8:
        raise LoraFileError("The file is too short to be a .safetensors file.")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER_BYTES:
        raise LoraFileError("The file's header is over 100 MB: it is not a .safetensors file.")
    if length < 2:
        raise LoraFileError("The file's header is empty: it is not a .safetensors file.")
    return length


_LORA_KEY = re.compile(r"\.(lora_A|lora_B|lora_down|lora_up)(\.[\w-]+)?\.weight$|\.lora\.(up|down)\.weight$")


def is_lora(keys: list[str]) -> bool:
    """Whether the tensors are LoRA pairs (peft's lora_A/lora_B or kohya's lora_down/lora_up)."""
    return any(_LORA_KEY.search(key) for key in keys)


# Metadata values that name a family we do not serve: trust them over the keys (SD2's look like SD1.5's).
_UNSUPPORTED = re.compile(r"sd_?v?2|stable-diffusion-v2|sd_?3|stable-diffusion-3|svd|cascade", re.IGNORECASE)


def family_of(metadata: dict[str, str], keys: list[str]) -> str | None:
    """sd15, sdxl or flux: from our own metadata, else kohya's or modelspec's, else the keys; None if unknown."""
    ours = metadata.get("lookalike.family", "").strip().lower()
    if ours in (SD15, SDXL, FLUX):
        return ours
    for field in ("ss_base_model_version", "modelspec.architecture"):
        named = _from_version(metadata.get(field, ""))
        if named != "":
            return named
    return _from_keys(keys)


def _from_version(value: str) -> str | None:
    """The family a version string names; "" when it says nothing, None when it names one we do not serve."""
    value = value.strip().lower()
    if not value:
        return ""
    if "flux" in value:
        return FLUX
    if "xl" in value:  # sdxl_base_v1-0, stable-diffusion-xl-v1-base/lora (Pony and Illustrious say the same)
        return SDXL
    if _UNSUPPORTED.search(value):
        return None
    if re.search(r"sd_?v?1|stable-diffusion-v1", value):
        return SD15
    return ""


# FLUX: diffusers' transformer prefix and block names, kohya/BFL's double and single blocks.
_FLUX_KEYS = re.compile(
    r"^transformer\.|single_transformer_blocks|(^|_|\.)(double|single)_blocks[._]\d|lora_transformer_"
)
# SDXL: a second text encoder, the pooled-text/time embedding, or a second transformer block inside a
# UNet attention (SDXL stacks 2 and 10; SD1.5 has one per attention everywhere), in either naming.
_SDXL_KEYS = re.compile(r"text_encoder_2|lora_te2_|add_embedding|transformer_blocks[._][1-9]")
_SD_KEYS = re.compile(r"^(unet\.|text_encoder\.|lora_unet_|lora_te_|lora_te1_)")


def _from_keys(keys: list[str]) -> str | None:
    if any(_FLUX_KEYS.search(key) for key in keys):
        return FLUX
    if any(_SDXL_KEYS.search(key) for key in keys):
        return SDXL
    if any(_SD_KEYS.search(key) for key in keys):
        return SD15
    return None
