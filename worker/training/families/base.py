"""What every family supplies: loading, prompt and image encoding, the noise scheme, the LoRA targets,
its export names and its memory budget."""

from __future__ import annotations

import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL import Image

log = logging.getLogger(__name__)

Cond = dict[str, torch.Tensor]  # one caption's text conditioning, batch dimension 1


class ModelLoadError(RuntimeError):
    """The base model could not be loaded (missing, not downloadable, or not of this family).

    `reason` and `hint` are for the user: self-contained, never pointing at a log they cannot see.
    """

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def why_not_loaded(source: str, exc: BaseException) -> ModelLoadError:
    """What a failed `from_pretrained` means for the user (the exception itself goes to the worker's log)."""
    from huggingface_hub import errors

    log.warning("could not load %s", source, exc_info=exc)
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, errors.GatedRepoError) for e in chain):
        return ModelLoadError(
            "it is a gated model and this worker has no access to it",
            "Accept the model's licence on huggingface.co with your account, then set HF_TOKEN for the worker.",
        )
    if any(isinstance(e, errors.RepositoryNotFoundError) for e in chain):
        return ModelLoadError(
            "there is no such model on the Hugging Face Hub",
            "Check the name: a preset (sd15, sdxl, flux-dev), an owner/name Hub id, or a diffusers folder's path.",
        )
    offline = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError)
    if any(isinstance(e, offline) for e in chain):
        return ModelLoadError(
            "the worker could not download it and has no copy in its cache",
            "Let the worker reach huggingface.co, or download the model once on the worker "
            "(`hf download NAME`), or put it in a local diffusers folder and use that folder's path.",
        )
    return ModelLoadError(
        "its files could not be read as a diffusers model",
        "Check that the folder (or the worker's Hugging Face cache) holds a complete diffusers model: "
        "model_index.json and a subfolder for each component.",
    )


class Family(ABC):
    """A loaded base model of one family, ready to encode and to compute the training loss."""

    name: ClassVar[str]  # as registered in app.trainings.catalog (pipeline class, defaults, tokenizers)
    denoiser_name: ClassVar[str]  # the pipeline attribute that gets the LoRA: unet or transformer
    kohya_prefix: ClassVar[str] = "lora_unet"
    # Image sides must divide by this (VAE factor, times FLUX's 2x2 packing).
    multiple: ClassVar[int] = 8
    # kohya's `ss_base_model_version` and the `modelspec.architecture` that UIs read.
    base_model_version: ClassVar[str]
    architecture: ClassVar[str]
    # Batch size at 1024 px by GPU memory: (below this many GiB, batch). Estimates, not yet measured:
    # `bench/gpu.py` measures what fits and prints the tuple to put here.
    batch_at_1024: ClassVar[tuple[tuple[float, int], ...]] = ((16, 2), (40, 4), (1e9, 8))

    @classmethod
    def pipeline_class_name(cls) -> str:
        from app.trainings.catalog import FAMILIES

        return FAMILIES[cls.name].pipeline_class

    @classmethod
    def batch_size_for(cls, gib: float, resolution: int) -> int:
        """The largest batch this family fits in `gib` of GPU memory at `resolution` (bf16, checkpointing)."""
        at_1024 = next(size for limit, size in cls.batch_at_1024 if gib < limit)
        return max(1, int(at_1024 * (1024 / max(resolution, 256)) ** 2))

    @classmethod
    def kohya_state_dict(
        cls, modules: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: float
    ) -> dict[str, torch.Tensor]:
        """sd-scripts' keys for each LoRA'd module (path -> (lora_A, lora_B)): the diffusers path, underscored."""
        out: dict[str, torch.Tensor] = {}
        for module, (down, up) in modules.items():
            name = f"{cls.kohya_prefix}_" + module.replace(".", "_")
            out[f"{name}.lora_down.weight"] = down.contiguous()
            out[f"{name}.lora_up.weight"] = up.contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha))
        return out

    def __init__(self, pipe: Any, *, device: torch.device, dtype: torch.dtype) -> None:
        self.pipe, self.device, self.dtype = pipe, device, dtype
        self.vae = pipe.vae
        self.denoiser: torch.nn.Module = getattr(pipe, self.denoiser_name)
        self._img2img: Any = None  # see img2img_pipe

    # --- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: str, *, device: torch.device, dtype: torch.dtype) -> Family:
        """Load from a diffusers folder or Hub id; every weight frozen, the VAE in fp32 where it must be."""
        import diffusers
        import transformers

        diffusers.utils.logging.disable_progress_bar()  # progress is ours to report
        transformers.utils.logging.disable_progress_bar()
        wanted = cls.pipeline_class_name()
        pipeline_cls = getattr(diffusers, wanted)
        found = _pipeline_class(source)
        if found and found != wanted:
            raise ModelLoadError(
                f"it is a {found}, not a {wanted}",
                "Use a base model of the family the training was created for, or start a new training.",
            )
        try:
            pipe = pipeline_cls.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as exc:  # Hub and file errors subclass OSError
            raise why_not_loaded(source, exc) from exc
        pipe.set_progress_bar_config(disable=True)
        for name in ("vae", "unet", "transformer", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        family = cls(pipe, device=device, dtype=dtype)
        family.to(device)
        return family

    @classmethod
    def from_parts(
        cls,
        denoiser: torch.nn.Module,
        *,
        scheduler: Any,
        vae_config: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype,
    ) -> Family:
        """A family around a bare denoiser and noise scheduler, with the VAE's config but no VAE or text encoders:
        enough for `loss` on latents and conditioning made elsewhere (bench/gpu.py, with random full-size models)."""
        from types import SimpleNamespace

        from diffusers.configuration_utils import FrozenDict

        denoiser.requires_grad_(False)
        denoiser.eval()
        parts = SimpleNamespace(vae=SimpleNamespace(config=FrozenDict(vae_config)), scheduler=scheduler)
        setattr(parts, cls.denoiser_name, denoiser)
        return cls(parts, device=device, dtype=dtype)

    def to(self, device: torch.device) -> None:
        for name in ("vae", self.denoiser_name, "text_encoder", "text_encoder_2"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                module.to(device)
        if self.vae_fp32:
            self.vae.to(dtype=torch.float32)

    def release_text_encoders(self) -> None:
        """Drop the text encoders once every caption is encoded: their memory goes to training."""
        for pipe in (self.pipe, self._img2img):
            for name in ("text_encoder", "text_encoder_2"):
                if getattr(pipe, name, None) is not None:
                    setattr(pipe, name, None)

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

    def pipe_inputs(self, cond: Cond, negative: Cond | None, guidance: float) -> dict[str, Any]:
        """The pipeline's arguments for ready text conditioning (its text encoders may be freed)."""
        inputs: dict[str, Any] = {"prompt_embeds": cond["prompt_embeds"].to(self.device, self.dtype)}
        if negative is not None and guidance > 1:
            inputs["negative_prompt_embeds"] = negative["prompt_embeds"].to(self.device, self.dtype)
        inputs["guidance_scale"] = guidance if negative is not None else 1.0
        return inputs

    @torch.no_grad()
    def render(
        self,
        cond: Cond,
        negative: Cond | None,
        *,
        seed: int,
        width: int,
        height: int,
        steps: int,
        guidance: float,
        image: Image.Image | None = None,
        strength: float = 0.8,
    ) -> Image.Image:
        """One image with whatever LoRA the denoiser holds now; a CPU generator, so a seed means the
        same noise on any device. With `image`, image-to-image from it (resized to width x height),
        `strength` being how much of it is noised away (1.0: all of it)."""
        if image is None:
            return self.render_batch(
                [cond], negative, seeds=[seed], width=width, height=height, steps=steps, guidance=guidance
            )[0]
        pipe = self.img2img_pipe()
        args = self._pipe_args(cond, negative, [seed], width=width, height=height, steps=steps, guidance=guidance)
        args |= {"image": image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)}
        args |= {"strength": strength}
        # SD's and SDXL's img2img take their size from the image and refuse width/height.
        accepted = inspect.signature(pipe.__call__).parameters
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = pipe(**{k: v for k, v in args.items() if k in accepted})
        return out.images[0]

    @torch.no_grad()
    def render_batch(
        self,
        conds: Sequence[Cond],
        negative: Cond | None,
        *,
        seeds: Sequence[int],
        width: int,
        height: int,
        steps: int,
        guidance: float,
    ) -> list[Image.Image]:
        """Text-to-image for several prompts in one pipeline call, image i from `seeds[i]`'s own generator:
        the same noise as `render` draws for that seed alone."""
        batched = {key: torch.cat([c[key] for c in conds]) for key in conds[0]}
        many_negative = {key: torch.cat([v] * len(conds)) for key, v in negative.items()} if negative else None
        args = self._pipe_args(
            batched, many_negative, seeds, width=width, height=height, steps=steps, guidance=guidance
        )
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return list(self.pipe(**args).images)

    def _pipe_args(
        self,
        cond: Cond,
        negative: Cond | None,
        seeds: Sequence[int],
        *,
        width: int,
        height: int,
        steps: int,
        guidance: float,
    ) -> dict[str, Any]:
        self.denoiser.eval()
        return {
            **self.pipe_inputs(cond, negative, guidance),
            "num_inference_steps": steps,
            "width": width,
            "height": height,
            "generator": [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            "output_type": "pil",
        }

    def img2img_pipe(self) -> Any:
        """The image-to-image pipeline over the same loaded components (and LoRA adapters), built once."""
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

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
