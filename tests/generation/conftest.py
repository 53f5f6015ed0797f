"""Tiny base models built once per run (`make_lora`, in tests/conftest.py, exports LoRA files from them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def adapter_name(data: bytes) -> str:
    """The adapter name callers give a file: stable per content."""
    return "l" + hashlib.sha256(data).hexdigest()[:16]
