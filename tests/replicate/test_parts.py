"""The pure parts of the Replicate-compatible API: trainer names, file URLs, data URIs, resolutions."""

from __future__ import annotations

import uuid

import pytest

from app.core.errors import Unprocessable
from app.replicate.inputs import decode_data_uri, our_file_id
from app.replicate.trainings import _largest, base_model_of


@pytest.mark.parametrize(
    ("trainer", "base"),
    [
        ("lookalike/lora-trainer:tiny-sd15", "tiny-sd15"),
        ("lookalike/lora-trainer:stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-base-1.0"),
        ("ostris/flux-dev-lora-trainer:26dce37a", "flux-dev"),
        ("replicate/fast-flux-trainer:8b10794", "flux-dev"),
        ("someone/my-sdxl-trainer:1", "sdxl"),
        ("someone/stable-diffusion-lora:1", "sd15"),
    ],
)
def test_the_trainer_picks_the_base_model(trainer: str, base: str) -> None:
    head, _, version = trainer.partition(":")
    owner, name = head.split("/")
    assert base_model_of(owner, name, version) == base


def test_an_unknown_trainer_is_refused() -> None:
    with pytest.raises(Unprocessable) as refused:
        base_model_of("someone", "upscaler", "1")
    assert refused.value.code == "unknown_trainer" and "lookalike/lora-trainer" in refused.value.hint


def test_our_file_urls_and_only_ours() -> None:
    ident = uuid.uuid4()
    origins = ("http://lookalike.example/base", "http://127.0.0.1:8000")
    for url in (
        f"http://lookalike.example/base/replicate/v1/files/{ident.hex}/download",
        f"http://lookalike.example/base/replicate/v1/files/{ident}",
        f"http://127.0.0.1:8000/v1/files/{ident}/content?x=1",
    ):
        assert our_file_id(url, origins) == ident, url
    for url in (
        f"https://elsewhere.example/replicate/v1/files/{ident.hex}/download",
        f"http://lookalike.example/base/replicate/v1/files/{ident.hex}/other",
        f"http://lookalike.example/replicate/v1/files/{ident.hex}",  # not under the public URL's path
    ):
        assert our_file_id(url, origins) is None, url


def test_data_uris() -> None:
    assert decode_data_uri("data:image/png;base64,aGVsbG8=", "image") == (b"hello", "image/png")
    assert decode_data_uri("data:,a%20b", "image") == (b"a b", "text/plain")
    with pytest.raises(Unprocessable):
        decode_data_uri("data:image/png;base64", "image")


def test_resolution_lists_take_the_largest() -> None:
    assert _largest("512,768,1024") == 1024 and _largest(768) == 768 and _largest("512") == "512"
    assert _largest("a,b") == "a,b"  # left for the validation to name
