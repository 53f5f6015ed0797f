"""Sampling several prompts in one pipeline call (the assessment's batches) on the tiny presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.trainings import catalog
from worker.sampling import SampleRequest, render_all
from worker.training.families import family_class
from worker.training.presets import local_source

PROMPTS = ["zorvek person, a photo", "a photo of a cat", "zorvek person, an oil painting"]


@pytest.mark.parametrize("preset", ["tiny-sd15", "tiny-sdxl", "tiny-flux"])
def test_a_batch_draws_what_each_seed_draws_alone(preset: str, models_dir: Path) -> None:
    """Each image of a batch comes from its own seed's generator: the same picture as a render of it alone."""
    base = catalog.resolve(preset)
    source = local_source(base.name, tiny=True, models_dir=models_dir)
    family = family_class(base.family).load(source, device=torch.device("cpu"), dtype=torch.float32)
    sampling = catalog.sampling_for(base.family, tiny=True)
    assert sampling.batch >= len(PROMPTS)
    conds = dict(zip(PROMPTS, family.encode_prompts(PROMPTS), strict=True))
    negative = family.encode_prompts([sampling.negative_prompt])[0] if base.family != catalog.FLUX else None
    requests = [SampleRequest(prompt, seed, 64, 64) for seed, prompt in enumerate(PROMPTS, start=7)]
    calls: list[int] = []

    together = render_all(family, requests, conds, sampling, negative=negative, before=lambda: calls.append(1))
    alone = [
        family.render(
            conds[r.prompt],
            negative,
            seed=r.seed,
            width=64,
            height=64,
            steps=sampling.steps,
            guidance=sampling.guidance,
        )
        for r in requests
    ]

    assert len(calls) == 1  # one pipeline call for the three
    pixels = [np.asarray(image, dtype=np.int16) for image in together]
    for batched, single in zip(pixels, alone, strict=True):
        assert np.abs(batched - np.asarray(single, dtype=np.int16)).max() <= 2
    assert np.abs(pixels[0] - pixels[1]).mean() > 5  # three different pictures, not one repeated


def test_requests_of_other_sizes_and_beyond_the_batch_go_in_further_calls(models_dir: Path) -> None:
    base = catalog.resolve("tiny-sd15")
    family = family_class(base.family).load(
        local_source(base.name, tiny=True, models_dir=models_dir), device=torch.device("cpu"), dtype=torch.float32
    )
    sampling = catalog.Sampling(2, 1.0, batch=2)
    conds = dict(zip(PROMPTS, family.encode_prompts(PROMPTS), strict=True))
    requests = [SampleRequest(p, 1, 64, 64) for p in PROMPTS] + [SampleRequest(PROMPTS[0], 1, 64, 96)]
    calls: list[int] = []
    images = render_all(family, requests, conds, sampling, before=lambda: calls.append(1))
    assert len(calls) == 3  # 64x64: 2 + 1; 64x96: 1
    assert [image.size for image in images] == [(64, 64)] * 3 + [(64, 96)]
