"""Counting a trigger word's tokens with the base model's own tokenizer files, without torch.

The API decides the trigger word before it answers, so it counts with the `tokenizers` package
on the files the worker will load: a local diffusers folder, or the Hugging Face cache this
machine shares with its worker. CLIP's vocab.json + merges.txt are read as a BPE with CLIP's
end-of-word marker (exact for the lowercase made-up words the generator makes); a
`tokenizer.json` (T5's) is read as it is. Tiny presets are not counted: their toy vocabularies
split every made-up word into many pieces, and their images are noise anyway.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from app.trainings.catalog import FAMILIES, BaseModel

log = logging.getLogger(__name__)


def token_counter(base: BaseModel) -> Callable[[str], int] | None:
    """Tokens of a word under the base model's tokenizers (the most any of them takes); None if unreadable here."""
    if base.tiny:
        return None
    root = _model_folder(base.source)
    if root is None:
        return None
    try:
        tokenizers = [_load(root / sub) for sub in FAMILIES[base.family].tokenizers]
    except Exception:  # noqa: BLE001 - files we cannot read mean no count, never a failed request
        log.warning("could not read the tokenizers of %s", base.source, exc_info=True)
        return None
    if any(t is None for t in tokenizers):
        return None

    def count(word: str) -> int:
        return max(len(t.encode(word, add_special_tokens=False).ids) for t in tokenizers)  # type: ignore[union-attr]

    return count


def _model_folder(source: str) -> Path | None:
    """The folder holding the model's files: the source itself, or its latest snapshot in the HF cache."""
    path = Path(source)
    if path.is_absolute():
        return path if path.is_dir() else None
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface"), "hub"
    )
    snapshots = Path(cache) / f"models--{source.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _load(folder: Path):  # noqa: ANN202 - a tokenizers.Tokenizer, imported lazily
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        return None
    bpe = models.BPE.from_file(str(vocab), str(merges), end_of_word_suffix="</w>", unk_token="<|endoftext|>")
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer
