"""A generation through the running service, against the bare pipeline call, on the CPU with a tiny preset.

Starts `lookalike serve` (embedded defaults: SQLite, folder storage, the filesystem queue; API and
worker) on a temporary data folder, adds two models of a tiny-sd15 LoRA each (random rank-4 weights,
exported as a training exports them), and times `POST /v1/generations` with `Prefer: wait` from the
request to the answer with its outputs: first with the same model every time, then alternating
the two models (a LoRA swap between requests). The baseline, in the same run, is the bare
`Family.render` call in this process on the same base, size and steps. The difference is what the
service adds: HTTP, the database rows, the queue, the worker's claim, storing the image, the wait's polling.

Usage: .venv/bin/python bench/generate_api.py [--runs 9] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate import lora_file  # noqa: E402 - bench/ is on the path only now
from upload import machine, start_server, stop_server, wait_ready  # noqa: E402


def add_models(data_dir: Path, family, count: int) -> list[str]:  # noqa: ANN001 - a loaded Family
    """`count` tiny-sd15 models of the bench user, as a finished training leaves them."""
    os.environ["LOOKALIKE_DATA_DIR"] = str(data_dir)
    from sqlalchemy import select

    from app.core.db import session_factory, session_scope
    from app.core.keys import model_prefix
    from app.core.settings import get_settings
    from app.core.storage import get_storage
    from app.db import Model, User

    settings = get_settings()
    storage = get_storage(settings)
    ids = []
    with session_scope(session_factory(settings)) as session:
        user = session.scalar(select(User).where(User.email == "bench@example.com"))
        for seed in range(count):
            model_id = uuid.uuid4()
            data = lora_file(family, seed)
            key = model_prefix(user.id, model_id) + "lora.safetensors"
            storage.put(key, data)
            session.add(
                Model(
                    id=model_id,
                    user_id=user.id,
                    name=f"bench {seed}",
                    base_model="tiny-sd15",
                    family="sd15",
                    tiny=True,
                    trigger_word="zorvek",
                    rank=4,
                    files={"diffusers": {"key": key, "size_bytes": len(data)}},
                )
            )
            ids.append(str(model_id))
    return ids


def generate(client: httpx.Client, model_id: str, steps: int, seed: int) -> tuple[float, dict]:
    body = {"model_id": model_id, "prompt": "zorvek portrait", "seed": seed, "num_inference_steps": steps}
    started = time.perf_counter()
    response = client.post("/v1/generations", json=body, headers={"Prefer": "wait=60"})
    elapsed = time.perf_counter() - started
    generation = response.json()
    if response.status_code != 201 or generation["status"] != "succeeded":
        raise RuntimeError(f"generation did not succeed: {response.status_code} {response.text[:500]}")
    return elapsed, generation["metrics"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import torch

    from worker.training.families import family_class
    from worker.training.presets import ensure_tiny

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))  # the server's worker needs the other half
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
        data = Path(tmp)
        source = ensure_tiny("tiny-sd15", data / "models")
        family = family_class("sd15").load(str(source), device=torch.device("cpu"), dtype=torch.float32)
        proc, base, key, _log = start_server(data)
        try:
            wait_ready(proc, base)
            models = add_models(data, family, 2)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=90) as client:
                generate(client, models[0], args.steps, 0)  # the worker loads the base once
                generate(client, models[1], args.steps, 0)
                same = [generate(client, models[0], args.steps, i) for i in range(args.runs)]
                swapped = [generate(client, models[i % 2], args.steps, i) for i in range(args.runs)]
        finally:
            stop_server(proc)

        cond = family.encode_prompts(["zorvek portrait"])[0]
        negative = family.encode_prompts([""])[0]
        bare = []
        for i in range(args.runs):
            started = time.perf_counter()
            family.render(cond, negative, seed=i, width=64, height=64, steps=args.steps, guidance=3.0)
            bare.append(time.perf_counter() - started)

    def med(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    api_same, api_swap = med([s for s, _ in same]), med([s for s, _ in swapped])
    worker_same = med([m["predict_time"] for _, m in same])
    swap_s = med([m["lora_swap_time"] for _, m in swapped])
    baseline = med(bare)
    print(f"machine: {machine()}; tiny-sd15, {args.steps} steps at 64x64, median of {args.runs} requests")
    print()
    print("| path | median ms | over the bare call |")
    print("|---|---:|---:|")
    print(f"| bare `Family.render` in-process (baseline) | {baseline:.1f} | |")
    print(f"| worker's `predict_time` (same model each time) | {worker_same:.1f} | +{worker_same - baseline:.1f} |")
    print(f"| `POST /v1/generations` + `Prefer: wait`, same model | {api_same:.1f} | +{api_same - baseline:.1f} |")
    print(
        f"| `POST /v1/generations` + `Prefer: wait`, models alternating | {api_swap:.1f} | +{api_swap - baseline:.1f} |"
    )
    print(f"| of which the LoRA swap (worker's `lora_swap_time`) | {swap_s:.1f} | |")
    print(f"\nimages per minute through the API, alternating models: {60_000 / api_swap:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
