"""One module per model family behind one interface (`Family`); the loop in `worker.training.trainer` is shared."""

from __future__ import annotations

from worker.training.families.base import Family, ModelLoadError


def family_class(name: str) -> type[Family]:
    """The Family subclass for `sd15`, `sdxl` or `flux`."""
    if name == "sd15":
        from worker.training.families.sd15 import SD15

        return SD15
    if name == "sdxl":
        from worker.training.families.sdxl import SDXL

        return SDXL
    if name == "flux":
        from worker.training.families.flux import Flux

        return Flux
    raise KeyError(name)


__all__ = ["Family", "ModelLoadError", "family_class"]
