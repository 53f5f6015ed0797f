"""The two files a trained LoRA ships as.

- diffusers/peft: `unet.<module>.lora_A.weight` / `transformer.<module>.lora_B.weight`, what
  `pipe.load_lora_weights()` reads natively.
- kohya (sd-scripts), what ComfyUI, AUTOMATIC1111/Forge and kohya itself read: `lora_unet_<module
  path with underscores>.lora_down.weight` / `.lora_up.weight` / `.alpha`. SD1.5 and SDXL use the
  diffusers module names (all three tools map them). FLUX uses the original BFL layout, where
  q, k and v (and, in single blocks, the MLP input) are one fused linear: their LoRAs are fused
  as a rank-stacked `lora_down` and a block-diagonal `lora_up`, which is exact, and which
  diffusers' converter recognises and splits back.

Both files carry metadata: base model, family, trigger word and the training settings, in
kohya's `ss_*` and the `modelspec.*` keys that UIs show.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from safetensors.torch import save as save_tensors

ARCHITECTURE = {
    "sd15": ("sd_v1", "stable-diffusion-v1/lora"),
    "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base/lora"),
    "flux": ("flux1", "flux-1-dev/lora"),
}
PREFIX = {"sd15": "unet", "sdxl": "unet", "flux": "transformer"}


def metadata(
    *, family: str, base_model: str, trigger_word: str, name: str, rank: int, alpha: float, settings: dict[str, Any]
) -> dict[str, str]:
    """String metadata for both files."""
    version, architecture = ARCHITECTURE[family]
    return {
        "format": "pt",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": version,
        "ss_output_name": name,
        "ss_tag_frequency": json.dumps({"lookalike": {trigger_word: 1}}),
        "modelspec.architecture": architecture,
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
    prefix = PREFIX[family]
    tensors = {f"{prefix}.{key}": value.contiguous() for key, value in lora.items()}
    return save_tensors(tensors, metadata=meta)


def kohya_file(family: str, lora: dict[str, torch.Tensor], alpha: float, meta: dict[str, str]) -> bytes:
    return save_tensors(kohya_state_dict(family, lora, alpha), metadata=meta)


def kohya_state_dict(family: str, lora: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """Rename (and for FLUX fuse) a peft state dict into sd-scripts' keys."""
    modules = _pairs(lora)
    if family == "flux":
        return _flux_kohya(modules, alpha)
    out: dict[str, torch.Tensor] = {}
    for module, (down, up) in modules.items():
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_down.weight"] = down.contiguous()
        out[f"{name}.lora_up.weight"] = up.contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def _pairs(lora: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (lora_A, lora_B)."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in lora.items():
        match = re.fullmatch(r"(.+)\.(lora_A|lora_B)(?:\.default)?\.weight", key)
        if not match:
            raise ValueError(f"unexpected LoRA key {key}")
        modules.setdefault(match.group(1), {})[match.group(2)] = value
    return {m: (ab["lora_A"], ab["lora_B"]) for m, ab in sorted(modules.items())}


# FLUX: diffusers module -> BFL module, for the layers that map one to one.
_FLUX_SINGLE = {
    "attn.to_out.0": "img_attn_proj",
    "attn.to_add_out": "txt_attn_proj",
    "ff.net.0.proj": "img_mlp_0",
    "ff.net.2": "img_mlp_2",
    "ff_context.net.0.proj": "txt_mlp_0",
    "ff_context.net.2": "txt_mlp_2",
    "norm1.linear": "img_mod_lin",
    "norm1_context.linear": "txt_mod_lin",
}
# ...and the fused ones: BFL module -> the diffusers modules stacked in it, in order.
_FLUX_FUSED_DOUBLE = {
    "img_attn_qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn_qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}
_FLUX_FUSED_SINGLE = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}


def _flux_kohya(modules: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def put(name: str, down: torch.Tensor, up: torch.Tensor, module_alpha: float) -> None:
        out[f"lora_unet_{name}.lora_down.weight"] = down.contiguous()
        out[f"lora_unet_{name}.lora_up.weight"] = up.contiguous()
        out[f"lora_unet_{name}.alpha"] = torch.tensor(float(module_alpha))

    blocks = sorted({int(m.split(".")[1]) for m in modules if m.startswith("transformer_blocks.")})
    singles = sorted({int(m.split(".")[1]) for m in modules if m.startswith("single_transformer_blocks.")})
    for i in blocks:
        base = f"transformer_blocks.{i}."
        for diffusers_name, bfl in _FLUX_SINGLE.items():
            if base + diffusers_name in modules:
                put(f"double_blocks_{i}_{bfl}", *modules[base + diffusers_name], alpha)
                used.add(base + diffusers_name)
        for bfl, parts in _FLUX_FUSED_DOUBLE.items():
            _fuse(modules, [base + p for p in parts], f"double_blocks_{i}_{bfl}", alpha, put, used)
    for i in singles:
        base = f"single_transformer_blocks.{i}."
        if base + "proj_out" in modules:
            put(f"single_blocks_{i}_linear2", *modules[base + "proj_out"], alpha)
            used.add(base + "proj_out")
        if base + "norm.linear" in modules:
            put(f"single_blocks_{i}_modulation_lin", *modules[base + "norm.linear"], alpha)
            used.add(base + "norm.linear")
        for bfl, parts in _FLUX_FUSED_SINGLE.items():
            _fuse(modules, [base + p for p in parts], f"single_blocks_{i}_{bfl}", alpha, put, used)
    left = sorted(set(modules) - used)
    if left:
        raise ValueError(f"no kohya name for FLUX modules {left[:5]}")
    return out


def _fuse(modules, parts: list[str], name: str, alpha: float, put, used: set[str]) -> None:  # noqa: ANN001
    """Stack the downs and make the ups block-diagonal: (B1 A1 x, B2 A2 x, ...) == blockdiag(B) @ cat(A) x."""
    present = [p for p in parts if p in modules]
    if not present:
        return
    if len(present) != len(parts):
        raise ValueError(f"{name} needs LoRAs on all of {parts}; only {present} were trained")
    downs = [modules[p][0] for p in parts]
    ups = [modules[p][1] for p in parts]
    down = torch.cat(downs, dim=0)
    up = torch.block_diag(*ups)
    # The fused rank is n times larger; scale alpha alike so alpha/rank (the LoRA scale) is unchanged.
    put(name, down, up, alpha * len(parts))
    used.update(parts)
