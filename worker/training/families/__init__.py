"""One module per model family behind one interface (`Family`); the loop in `worker.training.trainer` is shared.

A family is known by name to the API through `app.trainings.catalog.register_family` and to the
worker through `register` here; nothing else tests a family's name.
"""

from __future__ import annotations

from importlib import import_module

from worker.training.families.base import Family, ModelLoadError

_BUILT_IN = {
    "sd15": "worker.training.families.sd15:SD15",
    "sdxl": "worker.training.families.sdxl:SDXL",
    "flux": "worker.training.families.flux:Flux",
}
_REGISTERED: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Make a Family subclass available by its `name` (usable as a class decorator)."""
    _REGISTERED[cls.name] = cls
    return cls


def family_class(name: str) -> type[Family]:
    """The Family subclass registered under `name`; the built-in ones are imported on first use."""
    if name not in _REGISTERED and name in _BUILT_IN:
        module, attr = _BUILT_IN[name].split(":")
        register(getattr(import_module(module), attr))
    return _REGISTERED[name]


__all__ = ["Family", "ModelLoadError", "family_class", "register"]
