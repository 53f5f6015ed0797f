"""FLUX.1: CLIP (pooled) + T5 conditioning, 2x2-packed latents and rectified-flow matching.

Its kohya file uses the original BFL layout, where q, k and v (and, in single blocks, the MLP
input) are one fused linear: their LoRAs are fused as a rank-stacked `lora_down` and a
block-diagonal `lora_up`, which is exact, and which diffusers' converter recognises and splits back.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from worker.training.families.base import Cond, Family, weighted_mse

# Every linear layer of the double- and single-stream blocks that the kohya/BFL format can name;
# the final `proj_out` and the embedders stay frozen.
FLUX_TARGETS = (
    r"(transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|to_add_out)"
    r"|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)))"
    r"|(single_transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v)|proj_mlp|proj_out))"
)
# ai-toolkit trains FLUX.1-dev with the distilled guidance input at 1; the LoRA then works across CFG values.
TRAIN_GUIDANCE = 1.0
T5_TOKENS = 512  # FLUX.1-dev's sequence length; the tiny preset's T5 takes the same


class Flux(Family):
    name = "flux"
    denoiser_name = "transformer"
    multiple = 16
    base_model_version: ClassVar[str] = "flux1"
    architecture: ClassVar[str] = "flux-1-dev/lora"
    batch_at_1024: ClassVar[tuple[tuple[float, int], ...]] = ((48, 1), (100, 2), (1e9, 4))

    @classmethod
    def kohya_state_dict(
        cls, modules: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float
    ) -> dict[str, torch.Tensor]:
        """The original BFL layout that ComfyUI and Forge read (fused q/k/v, see `bfl_kohya`)."""
        return bfl_kohya(modules, alpha)

    def __init__(self, pipe, *, device: torch.device, dtype: torch.dtype) -> None:  # noqa: ANN001
        super().__init__(pipe, device=device, dtype=dtype)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.scheduler_config = pipe.scheduler.config

    def lora_targets(self) -> str:
        return FLUX_TARGETS

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> list[Cond]:
        out = []
        for caption in captions:
            embeds, pooled, _ = self.pipe.encode_prompt(
                caption, prompt_2=caption, device=self.device, max_sequence_length=T5_TOKENS
            )
            out.append({"prompt_embeds": embeds.to(self.dtype).cpu(), "pooled": pooled.to(self.dtype).cpu()})
        return out

    def pipe_inputs(self, cond: Cond, negative: Cond | None, guidance: float) -> dict[str, Any]:
        """FLUX.1-dev is guidance-distilled: the guidance is an input of the model, with no negative pass."""
        return {
            "prompt_embeds": cond["prompt_embeds"].to(self.device, self.dtype),
            "pooled_prompt_embeds": cond["pooled"].to(self.device, self.dtype),
            "guidance_scale": guidance,
        }

    def sigmas(self, batch: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """Logit-normal noise levels, shifted towards noise for larger images as FLUX samples them."""
        u = torch.sigmoid(torch.randn(batch, generator=generator, device=self.device))
        c = self.scheduler_config
        slope = (c.max_shift - c.base_shift) / (c.max_image_seq_len - c.base_image_seq_len)
        mu = c.base_shift + slope * (seq_len - c.base_image_seq_len)
        return math.exp(mu) / (math.exp(mu) + (1 / u - 1))

    def loss(
        self, latents: torch.Tensor, cond: Cond, weights: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        from diffusers import FluxPipeline

        batch, channels, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        sigma = self.sigmas(batch, (h // 2) * (w // 2), generator)
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * latents + s * noise
        packed = FluxPipeline._pack_latents(noisy.to(self.dtype), batch, channels, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, self.device, self.dtype)
        embeds = cond["prompt_embeds"].to(self.device, self.dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=self.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((batch,), TRAIN_GUIDANCE, device=self.device, dtype=torch.float32)
        pred = self.denoiser(
            hidden_states=packed,
            timestep=sigma.to(self.dtype),
            guidance=guidance,
            pooled_projections=cond["pooled"].to(self.device, self.dtype),
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        pred = FluxPipeline._unpack_latents(pred, h * self.vae_scale, w * self.vae_scale, self.vae_scale)
        return weighted_mse(pred, noise - latents, weights)  # the flow's velocity


# --- kohya/BFL export ------------------------------------------------------------------------------

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


def bfl_kohya(modules: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float) -> dict[str, torch.Tensor]:
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
