"""Training speed on the CPU with the tiny presets.

1. Seconds per step: this trainer (latents and text embeddings cached before the first step,
   text encoders freed) against a plain diffusers+peft loop that encodes the image with the
   VAE and the caption with the text encoder(s) at every step, as the diffusers DreamBooth-LoRA
   examples do without `--cache_latents`. Same model, same LoRA, same loss, same images.
2. `POST /v1/trainings` to `succeeded` for a 20-step run against `lookalike serve` on the
   embedded defaults, split into queue wait, preparing, training and assessing.

Usage: .venv/bin/python bench/train.py [--steps 60] [--resolution 64] [--skip-api]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT / "tests" / "fixtures"
PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg")
PRESETS = ("tiny-sd15", "tiny-sdxl", "tiny-flux")


def _items():  # noqa: ANN202
    from PIL import Image

    from worker.training.data import TrainItem

    return [
        TrainItem(name, Image.open(FIXTURES / name).convert("RGB"), f"photo of zorvek man, {i}", (200, 150, 500, 500))
        for i, name in enumerate(PHOTOS)
    ]


def ours(preset: str, steps: int, resolution: int, models: Path) -> dict[str, float]:
    from app.trainings.catalog import resolve
    from worker.training.presets import ensure_tiny
    from worker.training.trainer import TrainConfig, train

    base = resolve(preset)
    config = TrainConfig(
        family=base.family,
        source=str(ensure_tiny(preset, models)),
        steps=steps,
        learning_rate=1e-3,
        rank=4,
        resolution=resolution,
        batch_size=1,
        progress_every_s=1e9,
    )
    result = train(_items(), config)
    t = result.timings
    return {"s_per_step": t["train"] / t["steps"], "load": t["load"], "cache": t["cache"]}


def plain(preset: str, steps: int, resolution: int, models: Path) -> dict[str, float]:
    """The baseline: encode image and caption at every step (no cache), everything else the same."""
    import torch
    from peft import LoraConfig

    from app.trainings.catalog import Defaults, resolve
    from worker.training.data import bucket_size, face_weights, fit_image, to_pixels
    from worker.training.families import family_class
    from worker.training.presets import ensure_tiny

    base = resolve(preset)
    family = family_class(base.family).load(
        str(ensure_tiny(preset, models)), device=torch.device("cpu"), dtype=torch.float32
    )
    family.denoiser.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=family.lora_targets())
    )
    params = [p for p in family.denoiser.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    items = _items()
    family.denoiser.train()
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        item = items[step % len(items)]
        generator = torch.Generator().manual_seed(step)
        size = bucket_size(item.image.width / item.image.height, resolution)
        framed, face = fit_image(item.image, size, item.face_box)
        mean, std = family.encode_images(to_pixels(framed))  # every step
        cond = family.encode_prompts([item.caption])[0]  # every step
        latents = family.sample_latents(mean, std, generator)
        weights = face_weights(size, face, Defaults.face_weight, size[0] // mean.shape[-1])
        loss = family.loss(latents, cond, weights, generator).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    warm = times[len(times) // 5 :]
    return {"s_per_step": sum(warm) / len(warm)}


def compare(steps: int, resolution: int) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    models = Path(tempfile.mkdtemp(prefix="lk-bench-models-"))
    print(f"## seconds per step, CPU ({os.cpu_count()} cores), batch 1, {resolution} px, {steps} steps")
    print("| preset | plain loop (s/step) | ours, cached (s/step) | speed-up | our one-off caching (s) |")
    print("|---|---|---|---|---|")
    for preset in PRESETS:
        ours(preset, 5, resolution, models)  # warm up: build the preset, first-call costs
        a = plain(preset, steps, resolution, models)
        b = ours(preset, steps, resolution, models)
        print(
            f"| {preset} | {a['s_per_step']:.4f} | {b['s_per_step']:.4f} | "
            f"{a['s_per_step'] / b['s_per_step']:.2f}x | {b['cache']:.2f} |"
        )
    shutil.rmtree(models, ignore_errors=True)


# --- end to end through the API --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _at(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def api_runs(steps: int) -> None:
    import httpx

    data = Path(tempfile.mkdtemp(prefix="lk-bench-train-"))
    env = os.environ | {
        "LOOKALIKE_DATA_DIR": str(data),
        "LOOKALIKE_MIN_TRAINING_PHOTOS": "3",
        "LOOKALIKE_PORT": str(_free_port()),
        "LOOKALIKE_LOG_LEVEL": "WARNING",
    }
    for key in ("LOOKALIKE_DATABASE_URL", "LOOKALIKE_BROKER_URL", "LOOKALIKE_STORAGE_URL"):
        env.pop(key, None)
    cli = [sys.executable, "-m", "app.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    out = subprocess.run([*cli, "users", "create", "bench@example.com"], env=env, check=True, capture_output=True)
    key = next(w for w in out.stdout.decode().split() if w.startswith("lk_"))
    server = subprocess.Popen([*cli, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{env['LOOKALIKE_PORT']}"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            deadline = time.time() + 60
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.time() > deadline:
                    raise SystemExit("the service did not start")
                time.sleep(0.2)
            subject = http.post("/v1/subjects", json={"name": "B", "class_word": "man", "consent": True}).json()
            files = [("files", (n, (FIXTURES / n).read_bytes(), "image/jpeg")) for n in PHOTOS]
            http.post(f"/v1/subjects/{subject['id']}/photos", files=files).raise_for_status()
            while not http.get(f"/v1/subjects/{subject['id']}/report").json()["ready_to_train"]:
                time.sleep(0.2)
            print(f"\n## POST /v1/trainings to succeeded, {steps} steps, `lookalike serve` on the embedded defaults")
            print("| run | preset | total (s) | queue wait | preparing | training | assessing | outside steps |")
            print("|---|---|---|---|---|---|---|---|")
            for run, preset in enumerate([*PRESETS, *PRESETS], start=1):
                t0 = time.time()
                body = {"subject_id": subject["id"], "name": "b", "base_model": preset, "steps": steps}
                created = http.post("/v1/trainings", json=body)
                created.raise_for_status()
                tid = created.json()["id"]
                while (t := http.get(f"/v1/trainings/{tid}").json())["status"] not in ("succeeded", "failed"):
                    time.sleep(0.05)
                total = time.time() - t0
                if t["status"] != "succeeded":
                    raise SystemExit(f"{preset}: {t['error']}")
                p = t["phases"]
                queue = _at(p["preparing"]) - _at(t["created_at"])
                prep = _at(p["training"]) - _at(p["preparing"])
                training = _at(p["assessing"]) - _at(p["training"])
                assess = _at(t["finished_at"]) - _at(p["assessing"])
                print(
                    f"| {run} | {preset} | {total:.2f} | {queue:.2f} | {prep:.2f} | {training:.2f} | {assess:.2f} | "
                    f"{total - training:.2f} |"
                )
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--skip-api", action="store_true")
    args = parser.parse_args()
    compare(args.steps, args.resolution)
    if not args.skip_api:
        api_runs(20)


if __name__ == "__main__":
    main()
