"""Stable Diffusion 1.5: one CLIP text encoder, DDPM noise with epsilon (or v) prediction, min-SNR weighting."""

from __future__ import annotations

from typing import ClassVar

import torch

from worker.training.families.base import Cond, Family, weighted_mse

# The UNet's attention and feed-forward layers: what kohya's default LoRA trains in each transformer block.
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
MIN_SNR_GAMMA = 5.0  # Hang et al. 2023; the diffusers examples' recommended value


class SD15(Family):
    name = "sd15"
    denoiser_name = "unet"
    base_model_version: ClassVar[str] = "sd_v1"
    architecture: ClassVar[str] = "stable-diffusion-v1/lora"

    def __init__(self, pipe, *, device: torch.device, dtype: torch.dtype) -> None:  # noqa: ANN001
        super().__init__(pipe, device=device, dtype=dtype)
        from diffusers import DDPMScheduler

        # Training always uses the DDPM forward process the model was trained with.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.prediction_type = self.noise_scheduler.config.prediction_type
        alphas = self.noise_scheduler.alphas_cumprod.to(device)
        self.snr = alphas / (1 - alphas)

    def lora_targets(self) -> list[str]:
        return UNET_TARGETS

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> list[Cond]:
        out = []
        for caption in captions:
            embeds, _ = self.pipe.encode_prompt(caption, self.device, 1, False)
            out.append({"prompt_embeds": embeds.to(self.dtype).cpu()})
        return out

    def unet_kwargs(self, cond: Cond, latents: torch.Tensor) -> dict:
        return {"encoder_hidden_states": cond["prompt_embeds"].to(self.device, self.dtype)}

    def loss(
        self, latents: torch.Tensor, cond: Cond, weights: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        batch = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=self.device)
        t = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (batch,), generator=generator, device=self.device
        )
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        pred = self.denoiser(noisy.to(self.dtype), t, **self.unet_kwargs(cond, latents), return_dict=False)[0]
        if self.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, t)
        else:
            target = noise
        per_sample = weighted_mse(pred, target, weights)
        # min-SNR-gamma: easy (low-noise) timesteps stop dominating the gradient.
        snr = self.snr[t]
        clipped = torch.clamp(snr, max=MIN_SNR_GAMMA)
        weight = clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr
        return per_sample * weight
