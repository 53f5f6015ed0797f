"""FLUX.1: CLIP (pooled) + T5 conditioning, 2x2-packed latents and rectified-flow matching."""

from __future__ import annotations

import math
from typing import ClassVar

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
    pipeline_class_name: ClassVar[str] = "FluxPipeline"
    denoiser_name = "transformer"
    multiple = 16

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
