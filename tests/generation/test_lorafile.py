"""Reading a LoRA file's header without torch: metadata, keys, family, and the files it refuses."""

from __future__ import annotations

import io
import json
import struct

import pytest

from app.generations.lorafile import LoraFileError, family_of, is_lora, read_header
from tests.helpers import LoraMaker


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_exported_files_tell_their_family(make_lora: LoraMaker, family: str, fmt: str) -> None:
    data = make_lora(family, fmt=fmt)
    meta, keys = read_header(data)
    assert read_header(io.BytesIO(data)) == (meta, keys)
    assert meta["lookalike.family"] == family and meta["lookalike.trigger_word"] == "zorvek"
    assert is_lora(keys) and family_of(meta, keys) == family
    # Without our own key, kohya's version or modelspec's architecture tell; without any metadata, the keys.
    assert family_of({"ss_base_model_version": meta["ss_base_model_version"]}, []) == family
    assert family_of({"modelspec.architecture": meta["modelspec.architecture"]}, []) == family
    _, bare = read_header(make_lora(family, fmt=fmt, meta=False))
    assert family_of({}, bare) == family


def test_family_from_other_tools_metadata_and_keys() -> None:
    assert family_of({"ss_base_model_version": "sdxl_base_v1-0"}, []) == "sdxl"
    assert family_of({"modelspec.architecture": "Flux.1-dev/lora"}, []) == "flux"
    assert family_of({"ss_base_model_version": "sd_v1"}, []) == "sd15"
    # An SD2 file's keys look like SD1.5's: its metadata is trusted over them.
    sd_keys = ["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight"]
    assert family_of({"ss_base_model_version": "sd_v2"}, sd_keys) is None
    assert family_of({}, sd_keys) == "sd15"
    assert family_of({}, ["lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight"]) == "sdxl"
    assert family_of({}, ["lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"]) == "sdxl"
    assert family_of({}, ["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"]) == "flux"
    assert family_of({}, ["transformer.single_transformer_blocks.0.proj_out.lora_A.weight"]) == "flux"
    assert family_of({}, ["model.layers.0.weight"]) is None
    assert not is_lora(["model.layers.0.weight", "unet.conv_in.weight"])


def _with_header(header: bytes, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "too short"),
        (b"PK\x03\x04 a zip file", "over 100 MB"),
        (_with_header(b"{}", 200 * 1024 * 1024), "over 100 MB"),
        (_with_header(b"{not json"), "not valid JSON"),
        (_with_header(b"[1, 2]"), "not a JSON object"),
        (_with_header(b'{"a": {"dtype": "F32", "data_offsets": [0, 4]}}', 500), "cut short"),
        (_with_header(json.dumps({"a": 1}).encode()), "does not describe tensors"),
        (_with_header(b'{"__metadata__": [1]}'), "metadata"),
    ],
)
def test_malformed_files_are_refused(data: bytes, says: str) -> None:
    with pytest.raises(LoraFileError, match=says):
        read_header(data)
    with pytest.raises(ValueError):  # callers may catch it as a ValueError
        read_header(io.BytesIO(data))


def test_a_full_model_is_not_a_lora() -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "unet.conv_in.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
    }
    meta, keys = read_header(_with_header(json.dumps(header).encode()) + b"\0" * 4)
    assert meta == {"format": "pt"} and keys == ["unet.conv_in.weight"] and not is_lora(keys)
