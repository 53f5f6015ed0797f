"""The caption each training photo is trained with, the same for the service and `lookalike train`."""

from __future__ import annotations


def training_caption(*, caption: str | None, auto_caption: str | None, trigger: str, class_word: str) -> str:
    """The caption a training run uses: the user's (with the trigger word put first), else the template."""
    if caption:
        if "{trigger}" in caption:
            return caption.replace("{trigger}", trigger)
        if trigger in caption.split():
            return caption
        return f"photo of {trigger} {class_word}, {caption}"
    template = auto_caption or f"photo of {{trigger}} {class_word}"
    return template.replace("{trigger}", trigger)
