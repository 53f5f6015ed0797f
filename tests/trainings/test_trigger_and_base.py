"""The trigger word is decided once, by the API, with the model's own tokenizer; what cannot run is refused up front."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.core.errors import Unprocessable
from app.core.settings import Settings
from app.trainings import catalog, trigger
from app.trainings.tokens import token_counter


def test_api_counts_tokens_as_the_models_tokenizers_do(settings: Any, tmp_path: Path) -> None:
    """Counted without torch from vocab.json + merges.txt (CLIP) and tokenizer.json (T5), exactly as transformers."""
    from transformers import AutoTokenizer

    from worker.training.presets import ensure_tiny

    folder = tmp_path / "flux-like"
    shutil.copytree(ensure_tiny("tiny-flux", settings.resolved_models_dir), folder)
    (folder / "lookalike_preset.json").unlink()  # a local model folder, not a test preset: it is counted
    base = catalog.resolve(str(folder))
    assert (base.family, base.tiny) == ("flux", False)
    count = token_counter(base)
    assert count is not None
    reference = [AutoTokenizer.from_pretrained(folder, subfolder=s) for s in ("tokenizer", "tokenizer_2")]
    words = list(itertools.islice(trigger.candidates(seed=5), 40)) + ["zorvek", "photo", "nanoul"]
    for word in words:
        expected = max(len(t(word, add_special_tokens=False).input_ids) for t in reference)
        assert count(word) == expected, word


def test_tiny_presets_and_unreachable_models_are_not_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert token_counter(catalog.resolve("tiny-sd15")) is None
    assert token_counter(catalog.resolve("stabilityai/stable-diffusion-xl-base-1.0")) is None


def test_generated_word_fits_the_budget_when_one_can() -> None:
    """The first candidate within the budget wins, even when most are over it; failing all, the fewest tokens."""
    word = trigger.generate(seed=3, taken=set(), count_tokens=lambda w: 2 if w.endswith("sh") else 5)
    assert word.endswith("sh")
    fewest = trigger.generate(seed=3, taken=set(), count_tokens=lambda w: 4 + len(w) % 2)
    assert len(fewest) % 2 == 0


def test_full_size_model_without_a_gpu_is_refused_in_embedded_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.trainings.service import check_runnable

    monkeypatch.setattr(catalog, "gpu_present", lambda: False)
    embedded = Settings(data_dir=tmp_path, broker_url=None)  # whatever the environment says
    with pytest.raises(Unprocessable) as refused:
        check_runnable(catalog.resolve("sdxl"), embedded)
    assert refused.value.code == "gpu_required" and "tiny-sd15" in refused.value.hint
    check_runnable(catalog.resolve("tiny-sdxl"), embedded)  # test models run anywhere
    # With a broker, workers run elsewhere and may have GPUs: the API cannot know, so it queues.
    check_runnable(catalog.resolve("sdxl"), Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0"))
    monkeypatch.setattr(catalog, "gpu_present", lambda: True)
    check_runnable(catalog.resolve("sdxl"), embedded)
