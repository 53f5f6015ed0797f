"""The LoRA adapters loaded on one base pipeline: loaded once, kept (least recently used out), switched per image.

Swapping a LoRA is choosing which loaded adapters are active and at what scale (`set_adapters`),
never reloading the base. A file that does not fit the base is refused with `lora_mismatch` and
leaves the base as it was.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from app.generations.lorafile import LoraFileError, family_of, is_lora, read_header
from app.trainings.catalog import FAMILIES
from worker.generation.errors import GenerationError
from worker.training.families import Family

log = logging.getLogger(__name__)

FIT_HINT = "Use a base model of the LoRA's family (the one it was trained on), or a LoRA trained for this base model."


@dataclass(frozen=True)
class LoraSource:
    """One LoRA of a request: `name` is stable per file content ("l" + sha256[:16]), the adapter's name."""

    name: str
    scale: float
    read: Callable[[], bytes]  # called only when the adapter is not loaded on the base yet
    label: str | None = None  # what the user calls it, in errors (default: name)

    @property
    def shown(self) -> str:
        return self.label or self.name


def family_label(name: str | None) -> str:
    return FAMILIES[name].label if name in FAMILIES else str(name)


class Adapters:
    """The adapters on `family`'s pipeline, least recently used first, at most `limit` of them."""

    def __init__(self, family: Family, base_name: str, *, limit: int) -> None:
        self.family, self.base_name, self.limit = family, base_name, limit
        self.loaded: OrderedDict[str, bool] = OrderedDict()  # name -> whether it touches a text encoder
        self.active: tuple[tuple[str, float], ...] | None = None  # what the pipeline runs with now
        self.enabled = True

    def ensure(self, sources: Sequence[LoraSource]) -> None:
        """Load each source not loaded yet; the least recently used others make room."""
        wanted = {s.name for s in sources}
        for source in sources:
            if source.name in self.loaded:
                self.loaded.move_to_end(source.name)
                continue
            for old in [n for n in self.loaded if n not in wanted][: max(0, len(self.loaded) - self.limit + 1)]:
                self._delete(old)
            self._load(source)

    def activate(self, names: Sequence[str], scales: Sequence[float]) -> None:
        """Run the next images with exactly these adapters at these scales (none: the base alone)."""
        state = tuple(zip(names, (float(s) for s in scales), strict=True))
        if state == self.active:
            return
        pipe = self.family.pipe
        if not names:
            if self.loaded and self.enabled:
                pipe.disable_lora()
                self.enabled = False
        else:
            if not self.enabled:
                pipe.enable_lora()
                self.enabled = True
            pipe.set_adapters(list(names), adapter_weights=[s for _, s in state])
        self.active = state

    def text_state(self) -> tuple[tuple[str, float], ...]:
        """The active adapters that change the text encoders: prompt encodings depend on these only."""
        return tuple((n, s) for n, s in self.active or () if self.loaded.get(n))

    # --- loading ---------------------------------------------------------------------------------

    def _load(self, source: LoraSource) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load

        data = source.read()
        try:
            meta, keys = read_header(data)
        except LoraFileError as exc:
            raise GenerationError(
                "lora_unreadable",
                f"The LoRA {source.shown} cannot be read: {exc}",
                "Upload the .safetensors file again.",
            ) from exc
        if not is_lora(keys):
            raise GenerationError(
                "not_a_lora",
                f"{source.shown} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up tensors).",
                "Upload a LoRA .safetensors file, not a full model or another kind of adapter.",
            )
        seems = family_of(meta, keys)
        if seems is not None and seems != self.family.name:
            raise self._mismatch(source, seems)
        try:
            state = load(data)
        except SafetensorError as exc:
            raise GenerationError(
                "lora_unreadable", f"The LoRA {source.shown}'s weights cannot be read.", "Upload the file again."
            ) from exc
        try:
            with _peft_notes_off():
                self.family.pipe.load_lora_weights(state, adapter_name=source.name)
        except torch.cuda.OutOfMemoryError:
            self._discard(source.name)
            raise
        except Exception as exc:  # noqa: BLE001 - diffusers and peft fail in many ways on foreign keys and shapes
            log.info("LoRA %s does not load on %s", source.shown, self.base_name, exc_info=exc)
            self._discard(source.name)
            raise self._mismatch(source, seems) from exc
        where = [c for c, names in self.family.pipe.get_list_adapters().items() if source.name in names]
        if not where:  # diffusers skips keys it finds no module for: nothing of the file was used
            self._discard(source.name)
            raise self._mismatch(source, seems)
        self.loaded[source.name] = any(c.startswith("text_encoder") for c in where)
        self.active = None  # loading makes the new adapter active: choose again

    def _mismatch(self, source: LoraSource, seems: str | None) -> GenerationError:
        base = f"the base model {self.base_name} ({family_label(self.family.name)})"
        if seems is not None and seems != self.family.name:
            message = f"The LoRA {source.shown} is for {family_label(seems)}; it cannot run on {base}."
        else:  # its names are this family's (or tell nothing) and its shapes are not: another model's LoRA
            message = f"The LoRA {source.shown} does not fit {base}: its weights do not match the model's layers."
        return GenerationError("lora_mismatch", message, FIT_HINT)

    def _delete(self, name: str) -> None:
        self._discard(name)
        self.loaded.pop(name, None)

    def _discard(self, name: str) -> None:
        """Remove an adapter from every component that has it (a failed load may have left part of it)."""
        pipe = self.family.pipe
        if any(name in names for names in pipe.get_list_adapters().values()):
            with _peft_notes_off():
                pipe.delete_adapters(name)
        self.active = None  # a load, failed or not, may have changed the active set


@contextlib.contextmanager
def _peft_notes_off() -> Iterator[None]:
    """peft's warnings about what is normal here: several adapters on one model, and deleting the active one
    (the failed load's clean-up does too; `activate` chooses the set before every image anyway)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
        yield
