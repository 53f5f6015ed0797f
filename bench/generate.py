"""What the generation engine costs on the CPU with a tiny preset, and what swapping LoRAs saves.

A 4-step generation through `Engine.generate` (adapters chosen, prompts encoded, one image) against
the bare `Family.render` call on the same loaded base with the same LoRA active (the baseline: the
difference is the engine's own overhead). Then the LoRA swap: switching between two LoRAs already
loaded on the base, and loading a new one (file read, `load_lora_weights`, `set_adapters`), each
against reloading the base (`Family.load` from its folder), all in the same run. The LoRAs are
random rank-4 adapters on every attention and feed-forward layer, exported as the trainer exports them.

Usage: .venv/bin/python bench/generate.py [--base-model tiny-sd15] [--runs 7] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def lora_file(family, seed: int) -> bytes:  # noqa: ANN001 - a loaded Family
    """A random LoRA for the family's denoiser, in the diffusers format the service ships."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from worker.training.export import diffusers_file, metadata

    denoiser = family.denoiser
    denoiser.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=family.lora_targets()), adapter_name="bench")
    generator = torch.Generator().manual_seed(seed)
    for name, param in denoiser.named_parameters():
        if ".bench." in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.2
    lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(denoiser, adapter_name="bench").items()}
    denoiser.delete_adapters("bench")
    meta = metadata(
        family=family.name, base_model="bench", trigger_word="zorvek", name="bench", rank=4, alpha=4, settings={}
    )
    return diffusers_file(family.name, lora, meta)


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="tiny-sd15")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")

    import hashlib

    import torch

    from app.trainings.catalog import resolve
    from worker.generation.engine import Engine, ImageJob, LoraSource
    from worker.training.families import family_class

    family_name = resolve(args.base_model).family

    def source(data: bytes, scale: float = 0.8) -> LoraSource:
        return LoraSource("l" + hashlib.sha256(data).hexdigest()[:16], scale, lambda: data)

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(models_dir=Path(tmp), device="cpu")  # 8 adapters at most: new ones evict, as in service
        job = ImageJob("zorvek person, a photo", None, 1, args.size, args.size, args.steps, 3.0, (0.8,))
        family = engine.base(args.base_model, family_name)  # builds the preset: not measured
        # Every file made before the engine chooses adapters: making one adds and deletes an adapter.
        first, second = source(lora_file(family, 1)), source(lora_file(family, 2))
        fresh = [source(lora_file(family, 100 + i)) for i in range(args.runs)]
        engine.generate(args.base_model, family_name, [first], [job])  # warms the imports and kernels
        engine.generate(args.base_model, family_name, [second], [job])

        engine_s, bare_s, switch_s, new_s, reload_s = [], [], [], [], []
        cond, negative = family.encode_prompts([job.prompt, ""])
        if getattr(family.pipe.config, "force_zeros_for_empty_prompt", False):
            negative = {k: torch.zeros_like(v) for k, v in negative.items()}
        for _ in range(args.runs):  # interleaved, so that a busy machine slows both alike
            started = time.perf_counter()
            engine.generate(args.base_model, family_name, [first], [job])
            engine_s.append(time.perf_counter() - started)
            started = time.perf_counter()  # the same LoRA is still active at the same scale
            family.render(cond, negative, seed=1, width=args.size, height=args.size, steps=args.steps, guidance=3.0)
            bare_s.append(time.perf_counter() - started)
        for i in range(args.runs):
            engine.generate(args.base_model, family_name, [second if i % 2 else first], [job])
            switch_s.append(engine.last.swap_s)
        for i in range(args.runs):
            engine.generate(args.base_model, family_name, [fresh[i]], [job])
            new_s.append(engine.last.swap_s)
        folder = next(iter(engine.bases))[1]
        for _ in range(args.runs):
            started = time.perf_counter()
            family_class(family_name).load(folder, device=torch.device("cpu"), dtype=torch.float32)
            reload_s.append(time.perf_counter() - started)

    reload = median_ms(reload_s)
    print(
        f"Generation on the CPU ({torch.get_num_threads()} threads), {args.base_model}, {args.steps} steps at "
        f"{args.size} px, median of {args.runs} runs (baseline: the bare Family.render; base reload, same run)\n"
    )
    print("| operation | median ms | vs base reload |")
    print("|---|---:|---:|")
    rows = [
        ("Engine.generate, 1 image, LoRA loaded", median_ms(engine_s)),
        ("bare Family.render (baseline)", median_ms(bare_s)),
        ("engine overhead (generate - render)", median_ms(engine_s) - median_ms(bare_s)),
        ("switch between two loaded LoRAs (swap_s)", median_ms(switch_s)),
        ("load a new LoRA (swap_s)", median_ms(new_s)),
        ("reload the base (Family.load)", reload),
    ]
    for label, ms in rows:
        ratio = f"{ms / reload:.3f}x" if "LoRA" in label and "generate" not in label else ""
        print(f"| {label} | {ms:.1f} | {ratio} |")


if __name__ == "__main__":
    main()
