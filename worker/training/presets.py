"""Tiny base models: the real SD1.5, SDXL and FLUX architectures at toy size, random weights.

They are generated on first use into `<data_dir>/models/<preset>` in the diffusers folder
layout and then loaded through the same `from_pretrained` code as a real model, so tests
and a CPU-only install run the whole pipeline with nothing to download. Their images are
noise. Tokenizers are built offline too: a byte-level BPE (CLIP) and a Unigram model (T5)
trained in a second on a small word list, so that common words are one token and made-up
words several, as with the real tokenizers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when a tiny architecture changes, so that stale folders are rebuilt.
TINY_VERSION = 2

# Words the tiny tokenizers learn as single tokens: what captions and prompts are made of.
_WORDS = """
a an the of in on at with and or to for from by photo portrait picture image close up close-up half body full
view frontal three quarter three-quarter profile man woman person boy girl child face smiling smile looking camera
wearing shirt jacket suit dress hat glasses sunglasses hair beard short long black white red blue green brown gray
grey yellow dark light bright soft natural studio outdoor indoor street park beach city mountain forest room office
background standing sitting walking holding coffee cup book phone laptop car bike dog cat flower tree sky sun night
day morning evening sunset lighting cinematic film analog digital high quality detailed sharp focus bokeh lens
35mm 50mm 85mm professional headshot selfie candid casual formal elegant young old happy serious neutral expression
left right front side back top bottom red-carpet astronaut painting drawing oil watercolor sketch style art artist
in the of a an is are was be as it this that his her their he she they we you i me my our your photo of
""".split()


@contextlib.contextmanager
def _folder_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two workers building the same preset wait for each other
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_tiny(name: str, models_dir: Path) -> Path:
    """The folder of tiny preset `name` (tiny-sd15, tiny-sdxl, tiny-flux), built if missing."""
    builders = {"tiny-sd15": _build_sd15, "tiny-sdxl": _build_sdxl, "tiny-flux": _build_flux}
    if name not in builders:
        raise KeyError(name)
    target = models_dir / name
    stamp = target / "lookalike_preset.json"
    if _fresh(stamp):
        return target
    with _folder_lock(target):
        if _fresh(stamp):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
        try:
            builders[name](staging)
            (staging / "lookalike_preset.json").write_text(json.dumps({"preset": name, "version": TINY_VERSION}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)  # readers never see a half-written model
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("built tiny preset %s in %s", name, target)
    return target


def local_source(source: str, *, tiny: bool, models_dir: Path) -> str:
    """Where `from_pretrained` reads a base model: a tiny preset's folder (built on first use), else `source`."""
    if tiny and not source.startswith("/"):
        return str(ensure_tiny(source, models_dir))
    return source


def _fresh(stamp: Path) -> bool:
    try:
        return json.loads(stamp.read_text()).get("version") == TINY_VERSION
    except (OSError, ValueError):
        return False


# --- tokenizers ------------------------------------------------------------------------------------


def _corpus() -> list[str]:
    # Repeat common words so that they merge into single tokens before anything else.
    return [" ".join(_WORDS)] * 20


def _clip_tokenizer():  # noqa: ANN202
    """A CLIPTokenizer from a byte-level BPE vocab.json + merges.txt trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = sorted({chr(c) for c in range(33, 127)})
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=alphabet,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    # CLIP needs every byte (as its unicode stand-in) alone and at a word's end.
    for ch in _bytes_to_unicode():
        for piece in (ch, ch + "</w>"):
            vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    return tokenizer


def _bytes_to_unicode() -> list[str]:
    # GPT-2's printable stand-ins for the 256 byte values, as CLIP's tokenizer uses them.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _t5_tokenizer():  # noqa: ANN202
    """A T5TokenizerFast around a Unigram model trained here."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import T5TokenizerFast

    unigram = Tokenizer(models.Unigram())
    unigram.normalizer = normalizers.NFKC()
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    unigram.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    unigram.train_from_iterator(_corpus(), trainer)
    from tokenizers.processors import TemplateProcessing

    unigram.post_processor = TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", unigram.token_to_id("</s>"))]
    )
    return T5TokenizerFast(
        tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", extra_ids=0
    )


# --- models ----------------------------------------------------------------------------------------


def _seeded() -> None:
    import torch

    torch.manual_seed(0)  # the same random weights on every machine


def _vae(latent_channels: int, **extra: object):  # noqa: ANN202
    from diffusers import AutoencoderKL

    # Four blocks: the real 8x downsampling, at a few thousand parameters.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=64,
        **extra,
    )


def _clip_text(vocab_size: int, *, with_projection: bool = False):  # noqa: ANN202
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _save_tokenizer(tokenizer, folder: Path) -> None:  # noqa: ANN001
    tokenizer.save_pretrained(str(folder))


# SD1.5's and SDXL's noise schedule, as their published scheduler configs give it.
_SD_NOISE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
}
# What the tiny UNets share: two levels, 8x8 latents (64 px), 4 latent channels.
_UNET = {"sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 1, "norm_num_groups": 16}


def _build_sd15(folder: Path) -> None:
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    _seeded()
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(
        **_UNET,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    scheduler = DDPMScheduler(**_SD_NOISE, clip_sample=False)
    pipe = StableDiffusionPipeline(
        vae=_vae(4, scaling_factor=0.18215),
        text_encoder=_clip_text(len(tokenizer)),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)


def _build_sdxl(folder: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    _seeded()
    tokenizer = _clip_tokenizer()
    unet = UNet2DConditionModel(
        **_UNET,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        cross_attention_dim=64,  # both text encoders' hidden states, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled text + six time ids
    )
    scheduler = EulerDiscreteScheduler(**_SD_NOISE, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(4, scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip_text(len(tokenizer)),
        text_encoder_2=_clip_text(len(tokenizer), with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)


def _build_flux(folder: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    _seeded()
    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels, packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,  # as FLUX.1-dev
        axes_dims_rope=(4, 4, 8),
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_heads=4,
            num_layers=2,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        vae=_vae(4, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_clip_text(len(tokenizer)),
        text_encoder_2=t5,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
