"""The reasons analysis gives for a photo's verdict: stable codes, plain-language messages.

Clients key on `code`; `message` is for people who have never trained a model. A reason is
either a warning (the photo is used, but a better one would help) or a rejection (the photo
is not used for training).
"""

from __future__ import annotations

from typing import Any

ACCEPTED, WARNING, REJECTED = "accepted", "warning", "rejected"

# code: (severity, message template)
CATALOGUE: dict[str, tuple[str, str]] = {
    "no_face": (REJECTED, "We could not find a face in this photo. Use a photo where your face is clearly visible."),
    "multiple_faces": (
        WARNING,
        "This photo shows {count} faces; we will train on the one that matches your other photos. "
        "A photo of you alone works better.",
    ),
    "different_person": (
        REJECTED,
        "This looks like a different person from the rest of the photos (face distance {distance:.2f}; "
        "the same person is usually under {threshold:.2f}). Remove it, or check that it is really you.",
    ),
    "face_too_small": (
        REJECTED,
        "The face is only {size} pixels wide, too small to learn from. Use a closer or higher-resolution photo.",
    ),
    "low_resolution": (
        WARNING,
        "The face is small ({size} pixels wide), so it will look soft after training. "
        "A closer or higher-resolution photo is better.",
    ),
    "too_blurry": (REJECTED, "The face is too blurry to learn from. Use a sharper photo."),
    "blurry": (WARNING, "The face is blurry: use a sharper photo if you have one."),
    "too_dark": (WARNING, "The face is too dark. Use a photo taken in better light."),
    "overexposed": (WARNING, "The face is washed out by too much light. Use a photo without harsh light or flash."),
    "face_cut_off": (
        WARNING,
        "Part of the face is cut off by the edge of the photo. Use a photo with the whole head in it.",
    ),
    "black_and_white": (
        WARNING,
        "This is a black-and-white photo; too many of them make the model lose your colouring.",
    ),
    "duplicate": (
        REJECTED,
        "This is nearly the same picture as another of your photos ({other}); only the better copy is used.",
    ),
    "analysis_failed": (
        REJECTED,
        "{detail} Upload the photo again; if it fails again, use another copy of it (for example re-saved "
        "or exported again from your phone).",
    ),
}

# Reasons that depend on the other photos of the subject; the subject review recomputes them.
SUBJECT_CODES = frozenset({"different_person", "duplicate"})


def reason(code: str, **params: Any) -> dict[str, Any]:
    """A reason as stored and served: `{"code", "message"}` plus the numbers behind it."""
    _, template = CATALOGUE[code]
    entry: dict[str, Any] = {"code": code, "message": template.format(**params)}
    entry.update({k: v for k, v in params.items() if isinstance(v, int | float | str)})
    return entry


def verdict(reasons: list[dict[str, Any]]) -> str:
    """The worst severity among the reasons."""
    severities = {CATALOGUE[r["code"]][0] for r in reasons if r["code"] in CATALOGUE}
    if REJECTED in severities:
        return REJECTED
    if WARNING in severities:
        return WARNING
    return ACCEPTED
