"""SDXL: two CLIP text encoders (penultimate states concatenated, pooled from the second) and size/crop time ids."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from worker.training.families.base import Cond
from worker.training.families.sd15 import SD15


class SDXL(SD15):
    name = "sdxl"
    base_model_version: ClassVar[str] = "sdxl_base_v1-0"
    architecture: ClassVar[str] = "stable-diffusion-xl-v1-base/lora"
    batch_at_1024: ClassVar[tuple[tuple[float, int], ...]] = ((24, 1), (48, 2), (100, 4), (1e9, 8))

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> list[Cond]:
        out = []
        for caption in captions:
            embeds, _, pooled, _ = self.pipe.encode_prompt(
                caption, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=False
            )
            out.append({"prompt_embeds": embeds.to(self.dtype).cpu(), "pooled": pooled.to(self.dtype).cpu()})
        return out

    def pipe_inputs(self, cond: Cond, negative: Cond | None, guidance: float) -> dict[str, Any]:
        inputs = super().pipe_inputs(cond, negative, guidance)
        inputs["pooled_prompt_embeds"] = cond["pooled"].to(self.device, self.dtype)
        if "negative_prompt_embeds" in inputs:
            inputs["negative_pooled_prompt_embeds"] = negative["pooled"].to(self.device, self.dtype)  # type: ignore[index]
        return inputs

    def unet_kwargs(self, cond: Cond, latents: torch.Tensor) -> dict:
        batch, _, h, w = latents.shape
        size = self.vae_scale * h, self.vae_scale * w
        # original size, crop top-left, target size: crops are already framed, so no crop offset.
        time_ids = torch.tensor([[*size, 0, 0, *size]], device=self.device, dtype=self.dtype).repeat(batch, 1)
        return {
            "encoder_hidden_states": cond["prompt_embeds"].to(self.device, self.dtype),
            "added_cond_kwargs": {"text_embeds": cond["pooled"].to(self.device, self.dtype), "time_ids": time_ids},
        }

    @property
    def vae_scale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)
