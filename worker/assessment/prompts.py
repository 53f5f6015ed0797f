"""The fixed prompt set every checkpoint is sampled with.

Four prompts with the trigger word (a close-up portrait, a half-body scene, two styles) show
whether the face comes through in different framings and looks; the training's own
`validation_prompts` follow; two prompts without the trigger word show whether the LoRA
paints the subject onto everyone (identity bleed). Seeds are fixed per prompt, so the rows of
the contact sheet differ only by the checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.generations.params import with_trigger

SUBJECT, BLEED = "subject", "bleed"
FIRST_SEED = 1000

SUBJECT_PROMPTS = (
    ("close-up", "a close-up portrait photo of {trigger} {class_word}, looking at the camera, soft window light"),
    ("half-body", "a half-body photo of {trigger} {class_word} standing in a city street, daylight"),
    ("painting", "an oil painting portrait of {trigger} {class_word}, classical style, detailed brushwork"),
    ("sketch", "a pencil sketch portrait of {trigger} {class_word}, black and white"),
)
BLEED_PROMPTS = (
    ("no trigger", "a photo of a {class_word}"),
    ("no trigger, outdoors", "a portrait photo of a {class_word} in a park, smiling"),
)


@dataclass(frozen=True)
class PromptSpec:
    label: str  # the contact sheet's column title
    text: str
    kind: str  # subject | bleed
    seed: int


def prompt_set(trigger: str, class_word: str, validation_prompts: Sequence[str] = ()) -> list[PromptSpec]:
    """Every prompt a checkpoint is sampled with, in contact-sheet order."""
    words = {"trigger": trigger, "class_word": class_word}
    specs = [PromptSpec(label, text.format(**words), SUBJECT, 0) for label, text in SUBJECT_PROMPTS]
    specs += [
        PromptSpec(f"yours {i + 1}", with_trigger(p, trigger, class_word)[0], SUBJECT, 0)
        for i, p in enumerate(validation_prompts)
    ]
    specs += [PromptSpec(label, text.format(**words), BLEED, 0) for label, text in BLEED_PROMPTS]
    return [PromptSpec(s.label, s.text, s.kind, FIRST_SEED + i) for i, s in enumerate(specs)]


def keep_points(steps: int, fractions: Sequence[float] = (0.4, 0.6, 0.8, 1.0)) -> tuple[int, ...]:
    """The steps whose weights are assessed: 40, 60, 80 and 100 % of the run."""
    return tuple(sorted({max(1, round(steps * f)) for f in fractions}))
