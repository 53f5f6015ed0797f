"""What every family supplies: loading, prompt and image encoding, the noise scheme and the LoRA targets."""

from __future__ import annotations

import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch

log = logging.getLogger(__name__)

Cond = dict[str, torch.Tensor]  # one caption's text conditioning, batch dimension 1


class ModelLoadError(RuntimeError):
    """The base model could not be loaded (missing, not downloadable, or not of this family)."""


class Family(ABC):
    """A loaded base model of one family, ready to encode and to compute the training loss."""

    name: ClassVar[str]
    pipeline_class_name: ClassVar[str]
    denoiser_name: ClassVar[str]  # the pipeline attribute that gets the LoRA: unet or transformer
    kohya_prefix: ClassVar[str] = "lora_unet"
    # Latent side must divide by this (VAE factor, times FLUX's 2x2 packing).
    multiple: ClassVar[int] = 8

    def __init__(self, pipe: Any, *, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe, self.device, self.dtype = pipe, device, dtype
        self.vae = pipe.vae
        self.denoiser: torch.nn.Module = getattr(pipe, self.denoiser_name)

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: str, *, device: torch.device, dtype: torch.dtype) -> Family:
        """Load from a diffusers folder or Hub id; every weight frozen, the VAE in fp32 where it must be."""
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()  # progress is ours to report
        transformers.utils.logging.disable_progress_bar()
        pipeline_cls = getattr(diffusers, cls.pipeline_class_name)
        found = _pipeline_class(source)
        if found and found != cls.pipeline_class_name:
            raise ModelLoadError(f"{source} is a {found}, not a {cls.pipeline_class_name}")
        try:
            pipe = pipeline_cls.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError, EnvironmentError) as exc:  # noqa: UP024 - Hub errors subclass OSError
            raise ModelLoadError(f"could not load {source}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        for name in ("vae", "unet", "transformer", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        family = cls(pipe, device=device, dtype=dtype)
        family.to(device)
        return family

    def to(self, device: torch.device) -> None:
        for name in ("vae", self.denoiser_name, "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                module.to(device)
        if self.vae_fp32:
            self.vae.to(dtype=torch.float32)

    def release_text_encoders(self) -> None:
        """Drop the text encoders once every caption is encoded: their memory goes to training."""
        for name in ("text_encoder", "text_encoder_2"):
            if getattr(self.pipe, name, None) is not None:
                setattr(self.pipe, name, None)

    @property
    def vae_fp32(self) -> bool:
        # SD/SDXL VAEs overflow in fp16 (diffusers' `force_upcast`); bf16 is fine.
        return self.dtype == torch.float16 and bool(getattr(self.vae.config, "force_upcast", True))

    # --- what a family defines -------------------------------------------------------------------

    @abstractmethod
    def lora_targets(self) -> list[str] | str:
        """peft `target_modules` for the denoiser."""

    @abstractmethod
    def encode_prompts(self, captions: list[str]) -> list[Cond]:
        """Text conditioning for each caption (CPU tensors, batch dimension 1)."""

    @abstractmethod
    def loss(
        self, latents: torch.Tensor, cond: Cond, weights: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-sample training loss for scaled latents (B, C, h, w) with per-pixel `weights` (B, 1, h, w)."""

    def scale_latents(self, sample: torch.Tensor) -> torch.Tensor:
        config = self.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        return (sample - shift) * config.scaling_factor

    # --- shared ----------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The VAE's latent distribution (mean, std) for pixels in [-1, 1], on the CPU."""
        vae_dtype = next(self.vae.parameters()).dtype
        dist = self.vae.encode(pixels.to(self.device, vae_dtype)).latent_dist
        return dist.mean.float().cpu(), dist.std.float().cpu()

    def sample_latents(self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A fresh draw from the cached distribution, scaled for the denoiser."""
        mean, std = mean.to(self.device), std.to(self.device)
        noise = torch.randn(mean.shape, generator=generator, device=self.device, dtype=mean.dtype)
        return self.scale_latents(mean + std * noise)


def _pipeline_class(source: str) -> str | None:
    """The pipeline class a local folder declares; None for a Hub id (checked when it loads)."""
    index = Path(source) / "model_index.json"
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text()).get("_class_name")
    except ValueError:
        return None


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, each latent pixel weighted (the face-weighted loss)."""
    err = (pred.float() - target.float()) ** 2
    return (err * weights).mean(dim=(1, 2, 3))
