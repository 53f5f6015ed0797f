"""The two files a trained LoRA ships as.

- diffusers/peft: `unet.<module>.lora_A.weight` / `transformer.<module>.lora_B.weight`, what
  `pipe.load_lora_weights()` reads natively.
- kohya (sd-scripts), what ComfyUI, AUTOMATIC1111/Forge and kohya itself read: `lora_unet_<module
  path with underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`, as the family names
  them (SD1.5 and SDXL: the diffusers module paths; FLUX: the original BFL layout, in its module).

Both files carry metadata: base model, family, trigger word and the training settings, in
kohya's `ss_*` and the `modelspec.*` keys that UIs show.
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

import torch

from worker.training.families import family_class


def metadata(
    *,
    family: str,
    base_model: str,
    trigger_word: str,
    name: str,
    rank: int,
    alpha: float,
    settings: dict[str, Any],
) -> dict[str, str]:
    """String metadata for both files."""
    cls = family_class(family)
    return {
        "format": "pt",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": cls.base_model_version,
        "ss_output_name": name,
        "ss_tag_frequency": json.dumps({"lookalike": {trigger_word: 1}}),
        "modelspec.architecture": cls.architecture,
        "modelspec.title": name,
        "modelspec.trigger_phrase": trigger_word,
        "modelspec.implementation": "https://github.com/huggingface/diffusers",
        "lookalike.base_model": base_model,
        "lookalike.family": family,
        "lookalike.trigger_word": trigger_word,
        "lookalike.training": json.dumps(settings, sort_keys=True),
    }


def diffusers_file(family: str, lora: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """The peft state dict under the pipeline component's prefix, as `save_lora_weights` writes it."""
    prefix = family_class(family).denoiser_name
    tensors = {f"{prefix}.{key}": value for key, value in lora.items()}
    return safetensors_bytes(tensors, meta)


def kohya_file(family: str, lora: dict[str, torch.Tensor], alpha: float, meta: dict[str, str]) -> bytes:
    return safetensors_bytes(kohya_state_dict(family, lora, alpha), meta)


def kohya_state_dict(family: str, lora: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """A peft state dict in sd-scripts' keys, as the family names (and for FLUX fuses) them."""
    return family_class(family).kohya_state_dict(lora_pairs(lora), alpha)


def lora_pairs(lora: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (lora_A, lora_B)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        match = re.fullmatch(r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight", key)
        if not match:
            raise ValueError(f"unexpected LoRA key {key}")
        modules.setdefault(match.group(1), {})[match.group(2)] = value
    return {m: (ab["lora_A"], ab["lora_B"]) for m, ab in sorted(modules.items())}


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64"}


def safetensors_bytes(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> bytes:
    """A .safetensors file whose bytes depend only on its content: the same LoRA is the same file.

    `safetensors.torch.save` writes the metadata in hash-map order, which changes from one call to
    the next; here the header lists the metadata and the tensors sorted by name. Any safetensors
    reader loads it (the format fixes no order).
    """
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {
            "dtype": _DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks)
