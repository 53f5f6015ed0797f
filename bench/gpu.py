"""GPU training step: full-size SDXL and FLUX.1-dev at 1024 px, LoRA rank 16, through the trainer's own step.

No weights can be downloaded, so the denoisers are built from their published configs (kept in
bench/configs/, laid out as on the Hub) with random weights, in bf16 on the GPU; latents and text
embeddings of the right shapes stand in for the VAE and the text encoders, which the trainer runs
once before the first step anyway. Everything else is the trainer's: the family's LoRA targets
(`add_lora`), the family's loss, and `Optimization` (gradient checkpointing and `torch.compile` as
configured, autocast, backward, clipping, fused AdamW with its warm-up schedule).

Per family, eager then compiled, with gradient checkpointing off and on, batch sizes 1, 2, 4, ...
until one does not fit (compiled: batch 1 and the largest that fit eagerly, since each new shape
compiles again): seconds per step (median after warm-up; compilation lands in the warm-up column),
peak GPU memory, and from one eager step under torch's FLOP counter the model FLOPs per step, the
FLOP/s reached and the share of the card's bf16 dense peak (MFU). Then the targets, and the
`batch_at_1024` tuple that the measured memory supports on common cards.

Everything need not fit in one run: each family gets a share of --time-budget, and a configuration
that would not finish in what is left (from the last step time, plus a guess at compile time) is
listed as skipped. With --json the results are rewritten after every configuration, so a run that
is killed still leaves what it measured.

Usage:
  .venv/bin/python bench/gpu.py --json $OUT/gpu.json   # on a GPU; stays within --time-budget (480 s)
  .venv/bin/python bench/gpu.py --tiny                 # the same code on the CPU with the tiny presets' configs
  .venv/bin/python bench/gpu.py --meta                 # no GPU: the full-size models' FLOPs from shapes alone
Options: --families sdxl,flux  --steps N  --warmup N  --max-batch N  --time-budget S  --json PATH
         --checkpointing both|on|off  --compile both|on|off  --resolution PX  --rank R  --peak-tflops T
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

CONFIGS = ROOT / "bench" / "configs"
CLIP_TOKENS = 77
# bf16 dense tensor-core peaks (TFLOP/s) from NVIDIA's data sheets; the first name found in the device's wins.
BF16_PEAK_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0))
# What cards of 16, 24, 32, 40, 48, 80, 94 and 141 GB report as total memory (GiB), rounded down.
CARD_GIB = (15.5, 23.5, 31.0, 39.0, 47.0, 78.0, 92.0, 139.0)
MEMORY_HEADROOM = 0.9  # of a card's memory a batch may plan to use (allocator slack, the VAE, CUDA context)
MAX_BATCH = 16  # what choose_batch_size allows


def _sdxl_text(config: Any, batch: int) -> dict[str, torch.Tensor]:
    """Both CLIPs' penultimate states concatenated (77 tokens) and the second one's pooled output."""
    pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim  # minus 6 time ids
    return {
        "prompt_embeds": torch.randn(batch, CLIP_TOKENS, config.cross_attention_dim),
        "pooled": torch.randn(batch, pooled),
    }


def _flux_text(config: Any, batch: int) -> dict[str, torch.Tensor]:
    """T5's 512 token states and CLIP's pooled output."""
    from worker.training.families.flux import T5_TOKENS

    return {
        "prompt_embeds": torch.randn(batch, T5_TOKENS, config.joint_attention_dim),
        "pooled": torch.randn(batch, config.pooled_projection_dim),
    }


@dataclass(frozen=True)
class Spec:
    family: str
    label: str
    configs: Path  # the published configs, Hub layout
    tiny: str  # the tiny preset of the same architecture
    target_s: float  # seconds per step at batch 1 on an H100
    reference: str
    text: Callable[[Any, int], dict[str, torch.Tensor]]  # stand-in text conditioning for a batch
    budget_share: float  # of the time budget
    compile_reserve_s: float  # a guess at compiling its training step (a GPU was never lent to measure it)


SPECS = {
    "sdxl": Spec("sdxl", "SDXL", CONFIGS / "sdxl", "tiny-sdxl", 0.30, "SimpleTuner reports 0.61", _sdxl_text, 0.4, 90),
    "flux": Spec("flux", "FLUX.1-dev", CONFIGS / "flux-dev", "tiny-flux", 0.9, "", _flux_text, 0.6, 150),
}


@dataclass
class Row:
    family: str
    checkpointing: bool
    compile: bool
    batch: int
    status: str = "ok"  # ok | oom | error: ... | skipped: ...
    s_per_step: float | None = None  # median of the timed steps
    warmup_s: float | None = None  # all warm-up steps together: compilation lands here
    peak_gib: float | None = None  # torch.cuda.max_memory_allocated over the warm-up and timed steps
    flops: float | None = None  # model FLOPs per step (forward + backward)
    tflops_per_s: float | None = None
    mfu: float | None = None  # of the card's bf16 dense peak
    step_times: list[float] = field(default_factory=list)


@dataclass
class FamilyResult:
    family: str
    label: str
    source: str
    build_s: float = 0.0
    model_gib: float | None = None  # the denoiser and its LoRA, before the first step
    parameters: int = 0
    lora_parameters: int = 0
    flops_per_sample: float | None = None
    flops_counted: str = ""  # how: one eager step (no checkpointing) or, failing that, the meta device
    rows: list[Row] = field(default_factory=list)


# --- building ------------------------------------------------------------------------------------------------


def build(spec: Spec, folder: Path, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    """The family around a denoiser with random weights, made from `folder`'s configs in `dtype` on `device`."""
    import diffusers

    from worker.training.families import family_class

    cls = family_class(spec.family)
    config = json.loads((folder / cls.denoiser_name / "config.json").read_text())
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 where it runs: a 12 B model never exists in fp32
    try:
        with torch.device(device):
            denoiser = getattr(diffusers, config["_class_name"]).from_config(config)
    finally:
        torch.set_default_dtype(previous)
    scheduler = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    return cls.from_parts(denoiser, scheduler=scheduler, vae_config=vae_config, device=device, dtype=dtype)


def stand_ins(family, spec: Spec, batch: int, resolution: int) -> tuple[torch.Tensor, dict, torch.Tensor]:  # noqa: ANN001
    """Scaled latents and face weights on the device, text conditioning on the CPU in the model's dtype: what the
    trainer's loop hands to a step (it keeps the cached embeddings on the CPU)."""
    vae = family.vae.config
    side = resolution // 2 ** (len(vae.block_out_channels) - 1)
    latents = torch.randn(batch, vae.latent_channels, side, side, device=family.device)
    weights = torch.ones(batch, 1, side, side, device=family.device)
    cond = {k: v.to(family.dtype) for k, v in spec.text(family.denoiser.config, batch).items()}
    return latents, cond, weights


# --- measuring -----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(optimization, spec: Spec, row: Row, args: argparse.Namespace) -> Row:  # noqa: ANN001
    """Warm-up and timed steps at `row.batch`; a batch that does not fit ends as status "oom"."""
    family = optimization.family
    device = family.device
    latents, cond, weights = stand_ins(family, spec, row.batch, args.resolution)
    generator = torch.Generator(device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup = args.warmup + (1 if row.compile else 0)  # a compiled model's second step may still compile
    times = []
    try:
        for i in range(warmup + args.steps):
            generator.manual_seed(i)
            _sync(device)
            t0 = time.perf_counter()
            loss = optimization.step(latents, cond, weights, generator, number=i + 1)
            loss.item()  # the trainer reads every step's loss
            _sync(device)
            times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        row.status = "oom"
    except Exception as exc:  # noqa: BLE001 - one failing configuration must not cost the rest of the table
        row.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    if row.status == "ok":
        row.warmup_s = sum(times[:warmup])
        row.step_times = times[warmup:]
        row.s_per_step = statistics.median(row.step_times)
        if device.type == "cuda":
            row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def count_flops(optimization, spec: Spec, args: argparse.Namespace) -> float:  # noqa: ANN001
    """FLOPs of one eager step at batch 1 (forward and backward; torch counts matmuls, convolutions, attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    family = optimization.family
    latents, cond, weights = stand_ins(family, spec, 1, args.resolution)
    generator = torch.Generator(device=family.device).manual_seed(0)
    # The counter knows the GPU attention kernels but not the CPU's fused one; its plain-math form it counts.
    plain = sdpa_kernel(SDPBackend.MATH) if family.device.type == "cpu" else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter, plain:
        optimization.step(latents, cond, weights, generator, number=0).item()
    return float(counter.get_total_flops())


def meta_flops(spec: Spec, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The model FLOPs of one step at batch 1 on the meta device: shapes only, no memory, no GPU. It checks
    that the stand-ins fit the full-size configs and gives the FLOP column before any GPU run. The family's
    loss and its backward, not the whole trainer step: the step's loss check needs real numbers."""
    from torch.utils.flop_counter import FlopCounterMode

    from worker.training.trainer import add_lora

    meta = torch.device("meta")
    family = build(spec, folder, meta, torch.bfloat16)
    parameters = sum(p.numel() for p in family.denoiser.parameters())
    params = add_lora(family.denoiser, family, args.rank)
    family.denoiser.train()
    latents, cond, weights = stand_ins(family, spec, 1, args.resolution)
    with FlopCounterMode(display=False) as counter:
        family.loss(latents, cond, weights, None).mean().backward()  # no generator exists on the meta device
    return {
        "family": spec.family,
        "label": spec.label,
        "parameters": parameters,
        "lora_parameters": sum(p.numel() for p in params),
        "flops_per_sample": float(counter.get_total_flops()),
    }


def bench_family(
    spec: Spec, folder: Path, args: argparse.Namespace, deadline: float, result: FamilyResult, save: Callable[[], None]
) -> None:
    """Every configuration of one family into `result`, calling `save` after each (a run cut short keeps them)."""
    from app.trainings.catalog import FAMILIES
    from worker.training.trainer import Optimization, TrainConfig, add_lora, pick_dtype

    device = torch.device(args.device)
    dtype = pick_dtype(device)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    family = build(spec, folder, device, dtype)
    if args.resolution % family.multiple:
        raise SystemExit(f"--resolution must be a multiple of {family.multiple} for {spec.label}")
    module = family.denoiser
    result.parameters = sum(p.numel() for p in module.parameters())
    params = add_lora(module, family, args.rank)
    _sync(device)
    result.build_s = time.perf_counter() - t0
    result.lora_parameters = sum(p.numel() for p in params)
    if device.type == "cuda":
        result.model_gib = torch.cuda.memory_allocated(device) / 2**30
    defaults = FAMILIES[spec.family].defaults
    base = TrainConfig(
        family=spec.family,
        source=result.source,
        steps=defaults.steps,
        learning_rate=defaults.learning_rate,
        rank=args.rank,
        resolution=args.resolution,
        device=str(device),
    )
    fitted: dict[bool, int] = {}  # checkpointing -> the largest batch that fit eagerly
    eager_s: dict[bool, float] = {}  # checkpointing -> eager seconds per step at batch 1
    compile_s = spec.compile_reserve_s if device.type == "cuda" else 0.0
    for compiled in args.compile_modes:
        for checkpointing in args.checkpointing_modes:
            if compiled and device.type != "cuda":
                continue  # said once in the notes: the trainer compiles only on CUDA
            if compiled and False in args.compile_modes and checkpointing not in fitted:
                row = Row(spec.family, checkpointing, compiled, 1, status="skipped: batch 1 did not fit eagerly")
                result.rows.append(row)
                continue
            if compiled:  # each new shape compiles again: batch 1 and the largest that fit eagerly
                batches = sorted({1, fitted.get(checkpointing, 1)})
            else:
                batches = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= args.max_batch]
            if module.is_gradient_checkpointing:
                module.disable_gradient_checkpointing()
            family.denoiser = module
            if compiled:
                torch._dynamo.reset()  # a fresh compile per configuration, timed in its warm-up
            config = replace(base, gradient_checkpointing=checkpointing, compile=compiled)
            optimization = Optimization.prepare(family, params, config, dtype)
            last: Row | None = None
            for batch in batches:
                row = Row(spec.family, checkpointing, compiled, batch)
                result.rows.append(row)
                per_step = (
                    last.s_per_step * batch / last.batch
                    if last
                    else eager_s.get(checkpointing, eager_s.get(False, 0.0)) * batch
                )
                need = (args.warmup + args.steps) * per_step + (compile_s if compiled else 0.0)
                if need > deadline - time.perf_counter():
                    row.status = "skipped: time budget"
                    save()
                    continue
                measure(optimization, spec, row, args)
                _report(row)
                if row.status == "ok" and not compiled:
                    fitted[checkpointing] = batch
                    eager_s.setdefault(checkpointing, row.s_per_step or 0.0)
                    if batch == 1 and not checkpointing and result.flops_per_sample is None:
                        with contextlib.suppress(torch.OutOfMemoryError):  # then the meta device counts them
                            result.flops_per_sample = count_flops(optimization, spec, args)
                            result.flops_counted = "one eager step at batch 1"
                _fill_flops(result, args)
                save()
                if row.status != "ok":
                    break
                last = row
            optimization.optimizer.zero_grad(set_to_none=True)
            del optimization
            family.denoiser = module
            _free(device)
    del family, module, params
    _free(device)
    if device.type == "cuda":
        torch._dynamo.reset()
    if result.flops_per_sample is None:  # no eager step without checkpointing's recompute fit: count from shapes
        result.flops_per_sample = meta_flops(spec, folder, args)["flops_per_sample"]
        result.flops_counted = "the meta device: no eager step without checkpointing ran"
    _fill_flops(result, args)
    save()


def _fill_flops(result: FamilyResult, args: argparse.Namespace) -> None:
    for row in result.rows:
        if row.status != "ok" or result.flops_per_sample is None or not row.s_per_step:
            continue
        row.flops = result.flops_per_sample * row.batch  # every op is per sample
        row.tflops_per_s = row.flops / row.s_per_step / 1e12
        if args.device.startswith("cuda") and args.peak_tflops:
            row.mfu = row.tflops_per_s / args.peak_tflops


def _report(row: Row) -> None:
    what = f"{row.family} ckpt={'on' if row.checkpointing else 'off'} compile={'on' if row.compile else 'off'}"
    timing = f"{row.s_per_step:.4f} s/step, warm-up {row.warmup_s:.1f} s" if row.s_per_step else ""
    print(f"  {what} batch {row.batch}: {row.status} {timing}", file=sys.stderr, flush=True)


# --- what it means -------------------------------------------------------------------------------------------


def peak_tflops(device_name: str) -> float | None:
    """The card's bf16 dense peak, known for H100 (SXM, PCIe, NVL), H200 and A100."""
    return next((tflops for name, tflops in BF16_PEAK_TFLOPS if name in device_name), None)


def recommend(rows: list[Row]) -> dict[str, Any] | None:
    """`batch_at_1024` from peak memory against batch size (checkpointing on, eager), extrapolated to common cards."""
    points = [(r.batch, r.peak_gib) for r in rows if r.checkpointing and not r.compile and r.status == "ok"]
    points = [(b, gib) for b, gib in points if gib is not None]
    if len(points) < 2:
        return None
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_g = sum(g for _, g in points) / n
    slope = sum((b - mean_b) * (g - mean_g) for b, g in points) / sum((b - mean_b) ** 2 for b, _ in points)
    intercept = mean_g - slope * mean_b

    def fits(gib: float) -> int:
        sizes = [b for b in (1, 2, 4, 8, 16) if b <= MAX_BATCH and intercept + slope * b <= MEMORY_HEADROOM * gib]
        return max(sizes, default=1)  # the trainer never goes below 1

    table: list[tuple[float, int]] = []
    for card, next_card in zip(CARD_GIB, (*CARD_GIB[1:], 1e9), strict=True):
        size = fits(card)
        if table and table[-1][1] == size:
            table[-1] = (next_card, size)
        else:
            table.append((next_card, size))
    return {"gib_at_batch": {"base": intercept, "per_image": slope}, "batch_at_1024": table}


def _si(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= factor:
            return f"{value / factor:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def table(results: list[FamilyResult], on_gpu: bool) -> list[str]:
    lines = [
        "| model | grad. checkpointing | torch.compile | batch | s/step | s/image | warm-up s | peak GiB | "
        "FLOP/step | FLOP/s | MFU | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        for r in result.rows:
            per_image = r.s_per_step / r.batch if r.s_per_step else None
            peak = _num(r.peak_gib, ".1f") if on_gpu else "n/a (CPU)"
            mfu = "n/a" if r.mfu is None else f"{100 * r.mfu:.1f}%"
            flops_per_s = _si(r.tflops_per_s * 1e12 if r.tflops_per_s else None, "FLOP/s")
            lines.append(
                f"| {result.label} | {'on' if r.checkpointing else 'off'} | {'on' if r.compile else 'off'} | "
                f"{r.batch} | {_num(r.s_per_step, '.4f')} | {_num(per_image, '.4f')} | {_num(r.warmup_s, '.1f')} | "
                f"{peak} | {_si(r.flops, 'FLOP')} | {flops_per_s} | {mfu} | {r.status} |"
            )
    return lines


def targets(results: list[FamilyResult], device_name: str, on_gpu: bool) -> list[dict[str, Any]]:
    out = []
    for result in results:
        spec = SPECS[result.family]
        ones = [r for r in result.rows if r.batch == 1 and r.status == "ok"]
        best = min(ones, key=lambda r: r.s_per_step or 1e9, default=None)
        if not on_gpu:
            verdict = "not judged (CPU, tiny presets)"
        elif best is None:
            verdict = "MISS (nothing measured at batch 1)"
        else:
            verdict = "PASS" if best.s_per_step <= spec.target_s else "MISS"
            if "H100" not in device_name:
                verdict += f" (the target is for an H100; this is {device_name})"
        out.append(
            {
                "family": result.family,
                "label": result.label,
                "target_s_per_step": spec.target_s,
                "reference": spec.reference,
                "best_s_per_step_at_batch_1": best.s_per_step if best else None,
                "best_config": None if best is None else {"checkpointing": best.checkpointing, "compile": best.compile},
                "verdict": verdict,
            }
        )
    return out


# --- the run -------------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny presets' configs on the CPU (tests, no GPU)")
    parser.add_argument("--meta", action="store_true", help="only the model FLOPs, counted on the meta device")
    parser.add_argument("--families", default="sdxl,flux")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration (3; tiny 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compiled: one more)")
    parser.add_argument("--max-batch", type=int, default=None, help="largest batch tried (16; tiny 2)")
    parser.add_argument("--time-budget", type=float, default=480.0, help="seconds; later configurations are skipped")
    parser.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--compile", choices=("both", "on", "off"), default="both")
    parser.add_argument("--resolution", type=int, default=None, help="pixels (1024; tiny 64)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's bf16 dense peak, if not known")
    parser.add_argument("--device", default=None, help="cuda (default) or, with --tiny, cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 3)
    args.max_batch = args.max_batch or (2 if args.tiny else MAX_BATCH)
    args.resolution = args.resolution or (64 if args.tiny else 1024)
    args.device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    modes = {"both": (False, True), "on": (True,), "off": (False,)}
    args.checkpointing_modes, args.compile_modes = modes[args.checkpointing], modes[args.compile]
    args.family_names = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in args.family_names if f not in SPECS]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(SPECS)}")
    if not args.tiny and not args.meta and args.device == "cpu":
        parser.error("the full-size models need a CUDA GPU (FLUX.1-dev alone is 24 GB in bf16); use --tiny on a CPU")
    return args


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = parse(argv)
    if args.meta:
        return main_meta(args)
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        device_name = torch.cuda.get_device_name(device)
        args.peak_tflops = args.peak_tflops or peak_tflops(device_name)
        total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    else:
        device_name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        total_gib = None
    import diffusers
    import peft

    notes = []
    if not on_gpu:
        notes.append("CPU, tiny presets: not a GPU figure. Peak memory and MFU are n/a on the CPU.")
        if True in args.compile_modes:
            notes.append("torch.compile rows not run: the trainer compiles the denoiser only on CUDA.")
    deadline_end = started + args.time_budget
    shares = [SPECS[f].budget_share for f in args.family_names]
    results: list[FamilyResult] = []

    def save() -> None:
        if args.json:  # after every configuration: a run cut short still leaves what it measured
            args.json.write_text(json.dumps(_payload(args, results, notes, device_name, total_gib, on_gpu, started)))

    with tempfile.TemporaryDirectory(prefix="lk-bench-gpu-") as models:
        for index, name in enumerate(args.family_names):
            spec = SPECS[name]
            share = sum(shares[: index + 1]) / sum(shares)
            deadline = started + args.time_budget * share if index + 1 < len(shares) else deadline_end
            if time.perf_counter() > deadline_end - 10:
                notes.append(f"{spec.label}: skipped, the time budget ({args.time_budget:.0f} s) ran out.")
                continue
            if args.tiny:
                from worker.training.presets import ensure_tiny

                folder = ensure_tiny(spec.tiny, Path(models))
            else:
                folder = spec.configs
            print(f"{spec.label}: building from {folder}", file=sys.stderr, flush=True)
            source = spec.tiny if args.tiny else str(folder.relative_to(ROOT))
            results.append(FamilyResult(spec.family, spec.label, source))
            bench_family(spec, folder, args, deadline, results[-1], save)
    if any(r.status.startswith("skipped") for res in results for r in res.rows):
        notes.append(f"Rows marked skipped did not fit in the time budget ({args.time_budget:.0f} s, --time-budget).")
    payload = _payload(args, results, notes, device_name, total_gib, on_gpu, started)
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2))
    _print(payload, results, on_gpu, torch.__version__, diffusers.__version__, peft.__version__)
    return 0


def main_meta(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="lk-bench-gpu-") as models:
        counted = []
        for name in args.family_names:
            spec = SPECS[name]
            if args.tiny:
                from worker.training.presets import ensure_tiny

                folder = ensure_tiny(spec.tiny, Path(models))
            else:
                folder = spec.configs
            counted.append(meta_flops(spec, folder, args))
    what = "tiny presets" if args.tiny else "published configs"
    size = f"{args.resolution} px, LoRA rank {args.rank}"
    print(f"\n## Model FLOPs per training step at batch 1, {size} ({what}, counted on the meta device)")
    print("| model | parameters | LoRA parameters | FLOP/step (forward + backward) |\n|---|---:|---:|---:|")
    for c in counted:
        print(
            f"| {c['label']} | {_count(c['parameters'])} | {_count(c['lora_parameters'])} | "
            f"{_si(c['flops_per_sample'], 'FLOP')} |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": True,
                    "tiny": args.tiny,
                    "resolution": args.resolution,
                    "rank": args.rank,
                    "families": counted,
                },
                indent=2,
            )
        )
    return 0


def _payload(args, results, notes, device_name, total_gib, on_gpu, started) -> dict[str, Any]:  # noqa: ANN001
    recommended = {}
    for result in results:
        rec = recommend(result.rows) if on_gpu and args.resolution == 1024 else None
        recommended[result.family] = rec
    return {
        "device": device_name,
        "device_gib": total_gib,
        "tiny": args.tiny,
        "resolution": args.resolution,
        "rank": args.rank,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_tflops": args.peak_tflops,
        "torch": torch.__version__,
        "seconds": time.perf_counter() - started,
        "families": [asdict(r) for r in results],
        "targets": targets(results, device_name, on_gpu),
        "recommended": recommended,
        "notes": list(notes),
    }


def _print(payload: dict[str, Any], results: list[FamilyResult], on_gpu: bool, *versions: str) -> None:
    kind = "bf16" if on_gpu else "fp32, CPU, tiny presets, not a GPU figure"
    print(
        f"\n## LoRA training step: {payload['device']}, {kind}, {payload['resolution']} px, rank {payload['rank']}"
        f" (torch {versions[0]}, diffusers {versions[1]}, peft {versions[2]})"
    )
    print(
        f"median of {payload['steps']} steps after {payload['warmup']} warm-up (compiled: one more); "
        f"{payload['seconds']:.0f} s in all\n"
    )
    for line in table(results, on_gpu):
        print(line)
    print()
    for r in results:
        flops = _si(r.flops_per_sample, "FLOP")
        extra = f" (from {r.flops_counted})" if r.flops_counted else ""
        model = f", {r.model_gib:.1f} GiB on the GPU with its LoRA" if r.model_gib is not None else ""
        print(
            f"- {r.label} ({r.source}): {_count(r.parameters)} parameters{model}, LoRA {_count(r.lora_parameters)}; "
            f"built in {r.build_s:.1f} s; model FLOPs per image and step {flops}{extra}"
        )
    print("\nTargets (seconds per step at batch 1, on an H100):")
    for t in payload["targets"]:
        best = _num(t["best_s_per_step_at_batch_1"], ".4f")
        ref = f", {t['reference']}" if t["reference"] else ""
        print(f"- {t['label']}: best {best} s against <= {t['target_s_per_step']}{ref}: {t['verdict']}")
    print(
        "\n`batch_at_1024` from the measured memory (checkpointing on, eager; "
        f"a batch may plan on {MEMORY_HEADROOM:.0%} of a card):"
    )
    for r in results:
        rec = payload["recommended"].get(r.family)
        if rec is None:
            why = "n/a on the CPU" if not on_gpu else "needs 1024 px and two batch sizes that fit with checkpointing"
            print(f"- {r.label}: {why}")
            continue
        fit = rec["gib_at_batch"]
        print(
            f"- {r.label}: peak = {fit['base']:.1f} + {fit['per_image']:.2f} x batch GiB; "
            f"batch_at_1024 = {_tuple(rec['batch_at_1024'])}"
        )
    for note in payload["notes"]:
        print(f"\nNote: {note}")


def _tuple(entries: list[tuple[float, int]]) -> str:
    def limit(value: float) -> str:
        return "1e9" if value >= 1e9 else f"{value:g}"

    return "(" + ", ".join(f"({limit(gib)}, {size})" for gib, size in entries) + ")"


if __name__ == "__main__":
    raise SystemExit(main())
