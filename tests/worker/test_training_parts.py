"""The trainer's parts on their own: buckets, face weights, batch order, export, trigger words, the catalogue."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from app.trainings import catalog, trigger
from worker.training.data import batch_schedule, bucket_size, face_weights
from worker.training.export import kohya_state_dict, lora_pairs


def test_bucket_sizes_keep_area_and_aspect() -> None:
    assert bucket_size(1.0, 1024) == (1024, 1024)
    w, h = bucket_size(0.8, 1024)  # a portrait crop
    assert (w, h) == (896, 1152) and w % 64 == 0 and h % 64 == 0
    assert bucket_size(1.49, 512)[0] > bucket_size(1.49, 512)[1]
    assert bucket_size(1.0, 64) == (64, 64)


def test_face_weights_favour_the_face_and_keep_the_mean() -> None:
    weights = face_weights((512, 512), (192, 128, 320, 288), 3.0, 8)
    assert weights.shape == (1, 1, 64, 64)
    assert weights.mean().item() == pytest.approx(1.0, abs=1e-5)
    face, corner = weights[0, 0, 26, 32].item(), weights[0, 0, 2, 2].item()
    assert face / corner == pytest.approx(3.0, rel=0.05)
    assert torch.equal(face_weights((512, 512), (192, 128, 320, 288), 1.0, 8), torch.ones(1, 1, 64, 64))
    assert torch.equal(face_weights((512, 512), None, 3.0, 8), torch.ones(1, 1, 64, 64))


def test_batch_schedule_is_deterministic_and_covers_each_epoch() -> None:
    groups = {(512, 512): [0, 1, 2, 3, 4], (448, 576): [5, 6]}
    schedule = batch_schedule(groups, 2, 8, seed=3)
    assert schedule == batch_schedule(groups, 2, 8, seed=3)
    assert schedule != batch_schedule(groups, 2, 8, seed=4)
    first_epoch = schedule[:4]  # 3 batches from the square bucket + 1 from the portrait one
    assert sorted(i for b in first_epoch for i in b) == list(range(7))
    assert all(set(b) <= set(groups[(512, 512)]) or set(b) <= set(groups[(448, 576)]) for b in schedule)


def _lora(modules: dict[str, tuple[int, int]], rank: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    out = {}
    for name, (n_in, n_out) in modules.items():
        out[f"{name}.lora_A.weight"] = torch.randn(rank, n_in)
        out[f"{name}.lora_B.weight"] = torch.randn(n_out, rank)
    return out


def test_kohya_sd_keys() -> None:
    lora = _lora({"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32)})
    out = kohya_state_dict("sd15", lora, 4.0)
    name = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert set(out) == {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"}
    assert out[f"{name}.alpha"].item() == 4.0


def test_kohya_flux_fusion_is_exact() -> None:
    """The fused qkv LoRA applies exactly the same update as the three separate ones."""
    dim, mlp = 16, 64
    parts = {f"single_transformer_blocks.0.attn.to_{x}": (dim, dim) for x in "qkv"}
    parts["single_transformer_blocks.0.proj_mlp"] = (dim, mlp)
    parts["single_transformer_blocks.0.proj_out"] = (dim + mlp, dim)
    parts |= {
        f"transformer_blocks.0.attn.{x}": (dim, dim)
        for x in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj")
    }
    lora = _lora(parts)
    out = kohya_state_dict("flux", lora, 4.0)
    down = out["lora_unet_single_blocks_0_linear1.lora_down.weight"]
    up = out["lora_unet_single_blocks_0_linear1.lora_up.weight"]
    alpha = out["lora_unet_single_blocks_0_linear1.alpha"].item()
    fused_delta = (alpha / down.shape[0]) * up @ down
    separate = [lora[f"{m}.lora_B.weight"] @ lora[f"{m}.lora_A.weight"] for m in list(parts)[:4]]
    torch.testing.assert_close(fused_delta, torch.cat(separate), rtol=1e-5, atol=1e-5)
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in out
    assert "lora_unet_double_blocks_0_txt_attn_qkv.lora_up.weight" in out
    assert "lora_unet_single_blocks_0_linear2.alpha" in out
    with pytest.raises(ValueError, match="needs LoRAs on all"):
        kohya_state_dict("flux", _lora({"single_transformer_blocks.0.attn.to_q": (dim, dim)}), 4.0)
    assert len(lora_pairs(lora)) == len(parts)


@pytest.mark.slow
def test_kohya_flux_file_loads_in_diffusers_at_full_width(tmp_path: Path) -> None:
    """diffusers' kohya-FLUX converter knows only FLUX.1's real widths (3072): one block each at that width."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from worker.training.export import diffusers_file, kohya_file
    from worker.training.families.flux import FLUX_TARGETS
    from worker.training.presets import ensure_tiny

    torch.manual_seed(0)
    wide = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )
    wide.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=FLUX_TARGETS))
    for name, param in wide.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.02)
    lora = {k: v.detach().clone() for k, v in get_peft_model_state_dict(wide).items()}
    wide.delete_adapters("default")
    tiny = FluxPipeline.from_pretrained(ensure_tiny("tiny-flux", Path(tempfile.mkdtemp(dir=tmp_path))))
    pipe = FluxPipeline(**{**tiny.components, "transformer": wide})
    pipe.set_progress_bar_config(disable=True)

    def image():  # noqa: ANN202
        generator = torch.Generator().manual_seed(0)
        return pipe("photo", num_inference_steps=1, height=64, width=64, output_type="np", generator=generator).images

    base = image()
    images = {}
    for fmt, blob in (("diffusers", diffusers_file("flux", lora, {})), ("kohya", kohya_file("flux", lora, 4.0, {}))):
        (tmp_path / f"{fmt}.safetensors").write_bytes(blob)
        pipe.load_lora_weights(str(tmp_path), weight_name=f"{fmt}.safetensors", adapter_name=fmt)
        images[fmt] = image()
        pipe.delete_adapters(fmt)
    assert abs(images["diffusers"] - base).max() > 1e-3
    assert abs(images["kohya"] - images["diffusers"]).max() < 1e-5


def test_trigger_words() -> None:
    word = trigger.generate(seed=1, taken=set())
    assert trigger.VALID.match(word) and 5 <= len(word) <= 9 and not trigger.is_common(word)
    assert trigger.generate(seed=1, taken={word}) != word  # unique per user
    assert trigger.generate(seed=1, taken=set()) == word  # deterministic
    short = trigger.generate(seed=1, taken=set(), count_tokens=len, max_tokens=5)  # "tokens" = letters here
    assert len(short) <= 5
    fewest = trigger.generate(seed=1, taken=set(), count_tokens=len, max_tokens=1)  # unreachable: fewest wins
    assert len(fewest) == 5
    assert trigger.is_common("sks") and trigger.is_common("Photo")


def test_catalog(tmp_path: Path) -> None:
    from worker.training.presets import ensure_tiny

    assert catalog.resolve("sdxl").family == "sdxl" and not catalog.resolve("sdxl").tiny
    assert catalog.resolve("flux-dev").defaults.multires == (0.5, 0.75, 1.0)
    assert catalog.resolve("tiny-flux").tiny and catalog.resolve("tiny-flux").defaults.steps == 20
    assert catalog.resolve("someone/my-sdxl-finetune").family == "sdxl"
    assert catalog.resolve("someone/flux-schnell-thing").family == "flux"
    folder = ensure_tiny("tiny-sdxl", tmp_path)
    local = catalog.resolve(str(folder))
    assert (local.family, local.tiny) == ("sdxl", True)
    for bad in ("not a model", str(tmp_path / "missing"), "../etc"):
        with pytest.raises(catalog.UnknownBaseModel):
            catalog.resolve(bad)
    assert catalog.default_base_model("sd15") == "sd15"


def test_held_out_photos_leave_enough_to_train() -> None:
    import numpy as np

    from app.core.settings import Settings
    from worker.assessment.prompts import keep_points
    from worker.training.pipeline import TrainPhoto, hold_out

    def photos(n: int, *, encoded: bool = True) -> list[TrainPhoto]:
        enc = np.zeros(128, dtype=np.float32) if encoded else None
        return [TrainPhoto(f"p{i}", None, None, None, None, lambda: None, lambda: b"", enc) for i in range(n)]

    settings = Settings(min_training_photos=10, assessment_holdout=2, assessment_holdout_from=12)
    trained, held = hold_out(photos(12), settings)
    assert len(trained) == 10 and [p.key for p in held] == ["p3", "p9"]  # spread through the list
    assert set(p.key for p in trained).isdisjoint(p.key for p in held)
    assert hold_out(photos(11), settings)[1] == []  # too few to spare two
    assert hold_out(photos(12), settings.model_copy(update={"min_training_photos": 11}))[1] == []  # never below
    assert hold_out(photos(30, encoded=False), settings)[1] == []  # no encodings: nothing to compare with
    assert keep_points(1000) == (400, 600, 800, 1000) and keep_points(2) == (1, 2)
