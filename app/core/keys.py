"""Every storage key the service writes, spelled once.

Keys start with `users/{user_id}/`, so everything a user owns is one prefix:

    users/{user}/subjects/{subject}/photos/{photo}/{original|crop|thumb}.{ext}
    users/{user}/trainings/{training}/{cache|checkpoints}/...   (only for resuming a run)
    users/{user}/models/{model}/{lora|lora_kohya}.safetensors
    users/{user}/generations/{generation}/{input.<ext>|output-NN.<ext>|contact_sheet.jpg}
    users/{user}/files/{file}/content
"""

from __future__ import annotations

import uuid

# What a trained LoRA ships as: format -> file name under the model's prefix (or the CLI's output folder).
MODEL_FILES = {"diffusers": "lora.safetensors", "kohya": "lora_kohya.safetensors"}
# The assessment's contact sheet, beside the files; its samples are under "samples/".
SHEET_FILE = "contact_sheet.jpg"
# A training's working files, under its prefix: deleted once the run has ended.
TRAINING_WORK = ("cache/", "checkpoints/", "snapshots/")


def user_prefix(user_id: uuid.UUID) -> str:
    return f"users/{user_id}/"


def subject_prefix(user_id: uuid.UUID, subject_id: uuid.UUID) -> str:
    return f"{user_prefix(user_id)}subjects/{subject_id}/"


def photo_prefix(user_id: uuid.UUID, subject_id: uuid.UUID, photo_id: uuid.UUID) -> str:
    return f"{subject_prefix(user_id, subject_id)}photos/{photo_id}/"


def photo_key(user_id: uuid.UUID, subject_id: uuid.UUID, photo_id: uuid.UUID, variant: str, ext: str) -> str:
    return f"{photo_prefix(user_id, subject_id, photo_id)}{variant}.{ext}"


def training_prefix(user_id: uuid.UUID, training_id: uuid.UUID) -> str:
    return f"{user_prefix(user_id)}trainings/{training_id}/"


def model_prefix(user_id: uuid.UUID, model_id: uuid.UUID) -> str:
    return f"{user_prefix(user_id)}models/{model_id}/"


def generation_prefix(user_id: uuid.UUID, generation_id: uuid.UUID) -> str:
    return f"{user_prefix(user_id)}generations/{generation_id}/"


def file_key(user_id: uuid.UUID, file_id: uuid.UUID) -> str:
    return f"{user_prefix(user_id)}files/{file_id}/content"
