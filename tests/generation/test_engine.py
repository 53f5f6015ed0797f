"""The generation engine on the tiny presets: seeds, LoRA swaps without reloading, eviction, mismatches, img2img."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load

from tests.generation.conftest import adapter_name
from tests.helpers import LoraMaker
from worker.generation.engine import Engine, GenerationError, ImageJob, LoraSource, encode_output
from worker.training.export import safetensors_bytes


def _source(data: bytes, scale: float = 1.0, label: str | None = None) -> LoraSource:
    return LoraSource(adapter_name(data), scale, lambda: data, label)


def _job(seed: int = 1, *scales: float, size: int = 64, **extra: object) -> ImageJob:
    return ImageJob("zorvek person, a photo", None, seed, size, size, 3, 3.0, tuple(scales), **extra)  # type: ignore[arg-type]


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Engine:
    return Engine(models_dir=models_dir, device="cpu", max_bases=3)


def test_seeds_scales_and_swaps_on_one_loaded_base(engine: Engine, make_lora: LoraMaker) -> None:
    """Same seed, same image; a LoRA at 0.0 is the base alone; swapping LoRAs never reloads the base."""
    first, second = make_lora("sd15", seed=1), make_lora("sd15", seed=2, fmt="kohya")
    (plain,) = engine.generate("tiny-sd15", "sd15", [], [_job(1)])
    base = engine.base("tiny-sd15", "sd15")
    (again,) = engine.generate("tiny-sd15", "sd15", [], [_job(1)])
    assert np.array_equal(_pixels(plain), _pixels(again)) and engine.last.load_s == 0
    (other_seed,) = engine.generate("tiny-sd15", "sd15", [], [_job(2)])
    assert not np.array_equal(_pixels(plain), _pixels(other_seed))

    seen: list[int] = []
    off, on, on_again = engine.generate(
        "tiny-sd15", "sd15", [_source(first)], [_job(1, 0.0), _job(1, 1.0), _job(1, 1.0)],
        each=lambda i, _img: seen.append(i),
    )  # fmt: skip
    assert seen == [0, 1, 2] and len(engine.last.render_s) == 3 and engine.last.load_s == 0
    assert np.array_equal(_pixels(off), _pixels(plain))
    assert np.abs(_pixels(on) - _pixels(plain)).mean() > 1
    assert np.array_equal(_pixels(on), _pixels(on_again))

    (swapped,) = engine.generate("tiny-sd15", "sd15", [_source(second)], [_job(1, 1.0)])
    assert engine.base("tiny-sd15", "sd15") is base and engine.last.load_s == 0
    assert not np.array_equal(_pixels(swapped), _pixels(on))
    # Back to the first LoRA: already loaded, so the file is not read again; then the base alone again.
    unreadable = LoraSource(adapter_name(first), 1.0, lambda: pytest.fail("read again"))
    (back,) = engine.generate("tiny-sd15", "sd15", [unreadable], [_job(1, 1.0)])
    assert np.array_equal(_pixels(back), _pixels(on))
    (alone,) = engine.generate("tiny-sd15", "sd15", [], [_job(1)])
    assert np.array_equal(_pixels(alone), _pixels(plain))
    # Both together, each at its own scale; the default scale is the source's own.
    (both,) = engine.generate("tiny-sd15", "sd15", [_source(first, 0.5), _source(second, 0.5)], [_job(1)])
    assert not np.array_equal(_pixels(both), _pixels(on))


class Stop(Exception):  # noqa: N818 - stands for the task's Canceled: whatever tick raises goes through
    pass


def test_tick_stops_between_images(engine: Engine) -> None:
    calls: list[int] = []

    def tick() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    made: list[int] = []
    with pytest.raises(Stop):
        engine.generate(
            "tiny-sd15", "sd15", [], [_job(1), _job(2), _job(3)], each=lambda i, _img: made.append(i), tick=tick
        )
    assert made == [0]


def test_adapters_beyond_the_limit_are_unloaded(models_dir: Path, make_lora: LoraMaker) -> None:
    engine = Engine(models_dir=models_dir, device="cpu", max_adapters=2)
    files = [make_lora("sd15", seed=s) for s in (1, 2, 3)]
    for data in files:
        engine.generate("tiny-sd15", "sd15", [_source(data)], [_job(1, 1.0, size=32)])
    adapters = engine.bases[next(iter(engine.bases))].adapters
    assert list(adapters.loaded) == [adapter_name(files[1]), adapter_name(files[2])]
    names = engine.base("tiny-sd15", "sd15").pipe.get_list_adapters()["unet"]
    assert sorted(names) == sorted(adapters.loaded)


def test_a_lora_of_another_family_is_refused_and_the_base_stays_usable(engine: Engine, make_lora: LoraMaker) -> None:
    (before,) = engine.generate("tiny-sd15", "sd15", [], [_job(1)])
    with pytest.raises(GenerationError) as caught:
        engine.generate("tiny-sd15", "sd15", [_source(make_lora("sdxl"), label="her.safetensors")], [_job(1, 1.0)])
    assert caught.value.code == "lora_mismatch"
    assert "her.safetensors" in caught.value.message and "SDXL" in caught.value.message
    # Without metadata the keys tell (SDXL's second transformer block); a FLUX file's keys too.
    for family, word in (("sdxl", "SDXL"), ("flux", "FLUX")):
        with pytest.raises(GenerationError, match=word):
            engine.generate("tiny-sd15", "sd15", [_source(make_lora(family, meta=False))], [_job(1, 1.0)])
    # A file that claims to be SD1.5 and is not: loading fails, and the half-loaded adapter goes.
    wrong = make_lora("sdxl", meta=False)
    renamed = {k.replace("transformer_blocks.1", "transformer_blocks.0"): v for k, v in load(wrong).items()}
    lying = safetensors_bytes(renamed, {"lookalike.family": "sd15"})
    with pytest.raises(GenerationError) as caught:
        engine.generate("tiny-sd15", "sd15", [_source(lying)], [_job(1, 1.0)])
    assert caught.value.code == "lora_mismatch" and "do not match" in caught.value.message
    on_base = engine.base("tiny-sd15", "sd15").pipe.get_list_adapters()
    assert adapter_name(lying) not in {n for names in on_base.values() for n in names}
    (after,) = engine.generate("tiny-sd15", "sd15", [], [_job(1)])
    assert np.array_equal(_pixels(before), _pixels(after)) and engine.last.load_s == 0
    with pytest.raises(GenerationError) as caught:
        engine.generate("tiny-sd15", "sd15", [_source(b"not a safetensors file")], [_job(1)])
    assert caught.value.code == "lora_unreadable" and set(caught.value.as_dict()) == {"code", "message", "hint"}


def test_sdxl_and_flux_with_a_lora_and_img2img(engine: Engine, make_lora: LoraMaker) -> None:
    init = Image.new("RGB", (96, 80), "red")
    for family in ("sdxl", "flux"):
        lora = _source(make_lora(family))
        off, on, again = engine.generate(
            f"tiny-{family}", family, [lora], [_job(3, 0.0), _job(3, 1.0), _job(3, 1.0)]
        )  # fmt: skip
        assert np.array_equal(_pixels(on), _pixels(again)) and not np.array_equal(_pixels(on), _pixels(off))
        (plain,) = engine.generate(f"tiny-{family}", family, [], [_job(3)])
        assert np.array_equal(_pixels(off), _pixels(plain))
    # img2img: the init image is resized to the requested size; strength matters; seeds repeat.
    jobs = [_job(3, 1.0, image=init, strength=0.5), _job(3, 1.0, image=init, strength=0.5)]
    jobs.append(_job(3, 1.0, image=init, strength=1.0))
    half, half_again, full = engine.generate("tiny-flux", "flux", [_source(make_lora("flux"))], jobs)
    assert half.size == (64, 64) and np.array_equal(_pixels(half), _pixels(half_again))
    assert not np.array_equal(_pixels(half), _pixels(full))
    (sd_img,) = engine.generate("tiny-sd15", "sd15", [], [_job(1, image=init, strength=0.75)])
    assert sd_img.size == (64, 64)
    with pytest.raises(GenerationError, match="no denoising step"):
        engine.generate("tiny-sd15", "sd15", [], [_job(1, image=init, strength=0.1)])


def test_least_recently_used_base_is_evicted(models_dir: Path) -> None:
    engine = Engine(models_dir=models_dir, device="cpu", max_bases=1)
    engine.generate("tiny-sd15", "sd15", [], [_job(1, size=32)])
    assert engine.last.load_s > 0
    engine.generate("tiny-flux", "flux", [], [_job(1, size=32)])
    assert [key[0] for key in engine.bases] == ["flux"]
    engine.generate("tiny-sd15", "sd15", [], [_job(1, size=32)])
    assert [key[0] for key in engine.bases] == ["sd15"] and engine.last.load_s > 0
    budget = Engine(models_dir=models_dir, device="cpu", max_bases=3, budget_bytes=1)
    budget.base("tiny-sd15", "sd15")
    budget.base("tiny-sdxl", "sdxl")
    assert [key[0] for key in budget.bases] == ["sdxl"]  # over budget: only the newest stays
    with pytest.raises(GenerationError) as caught:
        budget.base("tiny-sd15", "flux")
    assert caught.value.code == "base_model_mismatch"
    with pytest.raises(GenerationError) as caught:
        budget.base("no such model", "sd15")
    assert caught.value.code == "unknown_base_model"


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_encode_output(fmt: str) -> None:
    image = Image.new("RGB", (64, 48), "teal")
    data = encode_output(image, fmt, 90)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.size == (64, 48) and decoded.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    assert not decoded.info.get("exif")
    if fmt != "png":
        assert len(encode_output(image, fmt, 10)) <= len(data)
    with pytest.raises(ValueError):
        encode_output(image, "gif", 90)
