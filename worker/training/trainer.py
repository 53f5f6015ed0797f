"""The LoRA training loop, written once for every family.

`train()` takes framed images with captions and face boxes, a config, and hooks (progress,
cache, checkpoints); it knows nothing of the database or the queue, so the Celery task,
the `lookalike train` command and the benchmarks all run this same code.

Speed comes from doing the expensive, constant work once: every image's VAE latent
distribution and every caption's text embedding are computed before the first step
(and kept in storage, so a resumed run skips them), and the text encoders are freed
before training. Each step then only runs the denoiser.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from app.core.storage import Storage
from app.trainings.catalog import Defaults
from worker.training.data import BUCKET_STEP, TrainItem, batch_schedule, bucket_size, face_weights, fit_image, to_pixels
from worker.training.errors import Canceled, Interrupted, TrainingError
from worker.training.families import Family, ModelLoadError, family_class

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    family: str
    source: str  # diffusers folder or Hub id
    steps: int
    learning_rate: float
    rank: int
    resolution: int
    multires: tuple[float, ...] = (1.0,)
    batch_size: int | None = None  # None: from the photo count and GPU memory
    seed: int = 0
    face_weight: float = Defaults.face_weight  # loss weight on the face relative to the rest; 1.0 turns it off
    gradient_checkpointing: bool = False
    checkpoint_every: int = 250
    warmup_steps: int | None = None  # None: 5% of the steps, at most 100
    device: str | None = None  # None: cuda when present, else cpu
    mixed_precision: str = "auto"  # auto | bf16 | fp16 | no
    compile: bool = False  # torch.compile the denoiser (GPU)
    progress_every_s: float = 2.0
    # Steps whose LoRA weights (not the optimizer) are kept for the quality assessment.
    keep_at: tuple[int, ...] = ()
    # Prompts encoded with the captions, before the text encoders are freed, for sampling afterwards.
    extra_prompts: tuple[str, ...] = ()
    # Keep the loaded model in the result (`TrainResult.model`) for sampling; the caller drops it.
    keep_model: bool = False

    def fingerprint(self) -> str:
        """What a checkpoint must match to be resumed (not the progress cadence or the device)."""
        parts = (self.family, self.source, self.steps, self.learning_rate, self.rank, self.resolution)
        parts += (self.multires, self.seed, self.face_weight)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


@dataclass
class Progress:
    step: int
    total_steps: int
    loss: float | None
    eta_seconds: float | None
    seconds_per_step: float | None


@dataclass
class Hooks:
    progress: Callable[[Progress], bool] = lambda _p: True  # False: stop (the run was canceled)
    phase: Callable[[str], None] = lambda _name: None  # "caching", "training"
    # Where the cache and checkpoints live: the training's folder in the service's storage, or the
    # CLI's work folder (a Storage seen `under` that prefix); None keeps nothing (benchmarks).
    store: Storage | None = None
    # True: checkpoint now and stop with Interrupted (the worker is shutting down); read every step.
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class TrainResult:
    lora: dict[str, torch.Tensor]  # peft state dict of the denoiser, CPU float32
    family: str
    rank: int
    alpha: float
    steps: int
    final_loss: float | None
    resumed_from: int
    timings: dict[str, float] = field(default_factory=dict)
    batch_size: int = 1
    buckets: list[tuple[int, int]] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # step -> LoRA, for `keep_at`
    prompt_conds: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # `extra_prompts` encoded
    model: Family | None = None  # the loaded model with its LoRA, when `keep_model`


@dataclass
class _Sample:
    mean: torch.Tensor
    std: torch.Tensor
    weights: torch.Tensor
    caption: int
    size: tuple[int, int]


def pick_device(config: TrainConfig) -> torch.device:
    if config.device:
        return torch.device(config.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device, wanted: str = "auto") -> torch.dtype:
    """bf16 where the GPU has it, fp16 on older GPUs, fp32 on the CPU; `wanted` is auto, bf16, fp16 or no."""
    if device.type != "cuda" or wanted == "no":
        return torch.float32
    if wanted == "fp16" or (wanted == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def choose_batch_size(family: type[Family], items: int, resolution: int, device: torch.device) -> int:
    """Largest batch the family fits on this GPU at this resolution, but at least ~4 steps per epoch."""
    if device.type != "cuda":
        return 1
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    by_memory = family.batch_size_for(gib, resolution)
    return max(1, min(by_memory, items // 4 or 1, 16))


def train(items: list[TrainItem], config: TrainConfig, hooks: Hooks | None = None) -> TrainResult:
    """Train a LoRA on `items`; resumes from the store's latest checkpoint when one matches."""
    hooks = hooks or Hooks()
    if not items:
        raise TrainingError("no_training_photos", "There are no photos to train on.", "Upload photos first.")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    device = pick_device(config)
    dtype = pick_dtype(device, config.mixed_precision)
    torch.manual_seed(config.seed)
    family = load_family(config, device, dtype)
    timings["load"] = time.perf_counter() - started

    hooks.phase("caching")
    t0 = time.perf_counter()
    samples, conds, prompt_conds = _cache(family, items, config, hooks.store)
    family.release_text_encoders()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    timings["cache"] = time.perf_counter() - t0

    batch = config.batch_size or choose_batch_size(type(family), len(items), config.resolution, device)
    groups: dict[tuple[int, int], list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(sample.size, []).append(index)
    schedule = batch_schedule(groups, batch, config.steps, config.seed)

    denoiser = family.denoiser  # the module itself: `family.denoiser` may become its compiled wrapper
    params = add_lora(denoiser, family, config.rank)
    optimization = Optimization.prepare(family, params, config, dtype)
    optimizer, scheduler = optimization.optimizer, optimization.scheduler

    start_step = _resume(config, hooks.store, denoiser, optimizer, scheduler)
    snapshots = _stored_snapshots(config, hooks.store, before=start_step)
    hooks.phase("training")
    t0 = time.perf_counter()
    last_report, loss_window, final_loss = 0.0, [], None
    step_times: list[float] = []
    for step in range(start_step, config.steps):
        if hooks.should_stop():
            saved = config.checkpoint_every and step % config.checkpoint_every == 0
            if step > start_step and not saved:
                _save_checkpoint(config, hooks.store, denoiser, optimizer, scheduler, step)
            raise Interrupted(step)
        t_step = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + step)
        members = [samples[i] for i in schedule[step]]
        latents = torch.cat([family.sample_latents(s.mean, s.std, generator) for s in members])
        weights = torch.cat([s.weights for s in members]).to(device)
        cond = {k: torch.cat([conds[s.caption][k] for s in members]) for k in conds[members[0].caption]}
        loss = optimization.step(latents, cond, weights, generator, number=step + 1)
        done = step + 1
        loss_window.append(loss.item())
        step_times.append(time.perf_counter() - t_step)
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            _save_checkpoint(config, hooks.store, denoiser, optimizer, scheduler, done)
        if done in config.keep_at:
            snapshots[done] = _keep_snapshot(hooks.store, denoiser, done)
        now = time.perf_counter()
        if now - last_report >= config.progress_every_s or done == config.steps:
            final_loss = sum(loss_window) / len(loss_window)
            per_step = sum(step_times[-20:]) / len(step_times[-20:])
            progress = Progress(done, config.steps, final_loss, per_step * (config.steps - done), per_step)
            loss_window, last_report = [], now
            if not hooks.progress(progress):
                raise Canceled(done)
    timings["train"] = time.perf_counter() - t0
    timings["steps"] = float(config.steps - start_step)

    from peft.utils import get_peft_model_state_dict

    state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}
    result = TrainResult(
        snapshots=snapshots,
        prompt_conds=prompt_conds,
        model=family if config.keep_model else None,
        lora=state,
        family=config.family,
        rank=config.rank,
        alpha=float(config.rank),
        steps=config.steps,
        final_loss=final_loss,
        resumed_from=start_step,
        timings=timings,
        batch_size=batch,
        buckets=sorted(groups),
    )
    del family, optimization, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()  # a canceled or finished run leaves the GPU to the next job
    return result


@dataclass
class Optimization:
    """What updates the LoRA, one step at a time; `train()` and bench/gpu.py both run their steps through it."""

    family: Family
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    dtype: torch.dtype

    @classmethod
    def prepare(
        cls, family: Family, params: list[torch.nn.Parameter], config: TrainConfig, dtype: torch.dtype
    ) -> Optimization:
        """Gradient checkpointing, train mode and `torch.compile` (CUDA only) as configured; AdamW with warm-up."""
        denoiser, device = family.denoiser, family.device
        if config.gradient_checkpointing and hasattr(denoiser, "enable_gradient_checkpointing"):
            denoiser.enable_gradient_checkpointing()
        denoiser.train()
        if config.compile and device.type == "cuda":
            family.denoiser = torch.compile(denoiser)
        fused = device.type == "cuda"
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=1e-2, fused=fused)
        warmup = config.warmup_steps if config.warmup_steps is not None else min(100, config.steps // 20)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
        return cls(family, params, optimizer, scheduler, scaler, dtype)

    def step(
        self,
        latents: torch.Tensor,
        cond: dict[str, torch.Tensor],
        weights: torch.Tensor,
        generator: torch.Generator,
        *,
        number: int,
    ) -> torch.Tensor:
        """One update on a ready batch (the family's loss, backward, clipping, the optimizer); its mean loss."""
        device_type = self.family.device.type
        with torch.autocast(device_type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            loss = self.family.loss(latents, cond, weights, generator).mean()
        if not torch.isfinite(loss):
            raise TrainingError(
                "training_diverged",
                f"The loss became {loss.item()} at step {number}.",
                "Lower the learning_rate (try half of it) and start the training again.",
            )
        optimizer, scaler = self.optimizer, self.scaler
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss


def load_family(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> Family:
    try:
        return family_class(config.family).load(config.source, device=device, dtype=dtype)
    except ModelLoadError as exc:
        raise TrainingError(
            "base_model_unavailable", f"The base model {config.source!r} could not be loaded: {exc.reason}.", exc.hint
        ) from exc


def add_lora(denoiser: torch.nn.Module, family: Family, rank: int) -> list[torch.nn.Parameter]:
    """Put the family's LoRA adapter on the frozen denoiser; returns its (fp32) weights, the only trained ones."""
    from peft import LoraConfig

    lora = LoraConfig(
        r=rank,
        lora_alpha=rank,  # scale 1: the learning rate alone sets the step size, whatever the rank
        init_lora_weights="gaussian",
        target_modules=family.lora_targets(),
    )
    denoiser.add_adapter(lora)
    params = [p for p in denoiser.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # LoRA weights train in fp32 even when the base runs in bf16
    return params


# --- caching ---------------------------------------------------------------------------------------


def _cache(
    family: Family, items: list[TrainItem], config: TrainConfig, store: Storage | None
) -> tuple[list[_Sample], list[dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]]:
    """Latent distributions per (image, bucket) and embeddings per caption (and per extra prompt),
    from the store when there."""
    trained = {item.caption for item in items}
    captions = sorted(trained | set(config.extra_prompts))
    caption_index = {c: i for i, c in enumerate(captions)}
    conds: list[dict[str, torch.Tensor] | None] = [None] * len(captions)
    missing = []
    for i, caption in enumerate(captions):
        blob = store.get_or_none(f"cache/text/{_digest(family.name, caption)}.safetensors") if store else None
        if blob is not None:
            conds[i] = load_tensors(blob)
        else:
            missing.append(i)
    if missing:
        encoded = family.encode_prompts([captions[i] for i in missing])
        for i, cond in zip(missing, encoded, strict=True):
            conds[i] = cond
            if store:
                store.put(f"cache/text/{_digest(family.name, captions[i])}.safetensors", save_tensors(cond))

    resolutions = sorted({max(64, round(config.resolution * f / 64) * 64) for f in config.multires})
    samples: list[_Sample] = []
    step = math.lcm(BUCKET_STEP, family.multiple)
    for item in items:
        for resolution in resolutions:
            size = bucket_size(item.image.width / item.image.height, resolution, step)
            name = f"cache/latents/{_digest(family.name, item.key, size)}.safetensors"
            blob = store.get_or_none(name) if store else None
            framed, face = fit_image(item.image, size, item.face_box)
            if blob is not None:
                tensors = load_tensors(blob)
                mean, std = tensors["mean"], tensors["std"]
            else:
                mean, std = family.encode_images(to_pixels(framed))
                if store:
                    store.put(name, save_tensors({"mean": mean.contiguous(), "std": std.contiguous()}))
            factor = size[0] // mean.shape[-1]
            weights = face_weights(size, face, config.face_weight, factor)
            samples.append(_Sample(mean, std, weights, caption_index[item.caption], size))
    extra = {p: conds[caption_index[p]] for p in config.extra_prompts}
    return samples, conds, extra  # type: ignore[return-value]


def _digest(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


# --- checkpoints -----------------------------------------------------------------------------------


def _checkpoint_name(step: int) -> str:
    return f"checkpoints/step-{step:06d}.pt"


def _save_checkpoint(config, store, denoiser, optimizer, scheduler, step: int) -> None:  # noqa: ANN001
    """LoRA weights, optimizer, scheduler, step and RNG state; the store writes it atomically."""
    if store is None:
        return
    from peft.utils import get_peft_model_state_dict

    payload = {
        "fingerprint": config.fingerprint(),
        "step": step,
        "lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(denoiser).items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
        },
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    store.put(_checkpoint_name(step), buffer.getvalue())
    for old in sorted(store.list("checkpoints/"))[:-2]:  # keep the last two
        store.delete(old)
    log.info("checkpoint at step %d", step)


def _snapshot_name(step: int) -> str:
    return f"snapshots/step-{step:06d}.safetensors"


def _keep_snapshot(store: Storage | None, denoiser: torch.nn.Module, step: int) -> dict[str, torch.Tensor]:
    """The LoRA weights at `step`, kept in memory and in the store (a resumed run still has them)."""
    from peft.utils import get_peft_model_state_dict

    # A copy: on the CPU `.float().cpu()` would alias the live weights, which the next steps change.
    state = {k: v.detach().float().cpu().clone().contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}
    if store is not None:
        store.put(_snapshot_name(step), save_tensors(state))
    return state


def _stored_snapshots(config: TrainConfig, store: Storage | None, *, before: int) -> dict[int, dict[str, torch.Tensor]]:
    """Snapshots an earlier attempt kept before the step this run resumes from."""
    if store is None:
        return {}
    kept = {}
    for step in config.keep_at:
        blob = store.get_or_none(_snapshot_name(step)) if step <= before else None
        if blob is not None:
            kept[step] = load_tensors(blob)
    return kept


def _resume(config, store, denoiser, optimizer, scheduler) -> int:  # noqa: ANN001
    """The step to start from: the latest matching checkpoint's, else 0."""
    if store is None:
        return 0
    from peft.utils import set_peft_model_state_dict

    for name in sorted(store.list("checkpoints/"), reverse=True):
        blob = store.get_or_none(name)
        if blob is None:
            continue
        try:
            payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - a torn or foreign file is skipped, not fatal
            log.warning("skipping unreadable checkpoint %s", name)
            continue
        if payload.get("fingerprint") != config.fingerprint():
            log.warning("skipping checkpoint %s from different settings", name)
            continue
        set_peft_model_state_dict(denoiser, payload["lora"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"]["torch"])
        if payload["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng"]["cuda"])
        random.setstate(payload["rng"]["python"])
        log.info("resuming from %s", name)
        return int(payload["step"])
    return 0
