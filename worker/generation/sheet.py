"""The contact sheet of an experiment: a LoRA-strength sweep (columns are scales) or a prompt matrix
(columns are the matrix values), one row per seed; the assessment's sheet layout, reused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

from worker.assessment.sheet import Cell, Row, contact_sheet

# What the columns are, shown beside the first row.
COLUMNS_ARE = {"sweep": "columns:\nLoRA scale", "matrix": "columns:\nprompt values"}


def grid_sheet(columns: Sequence[str], seeds: Sequence[int], images: Sequence[Image.Image], *, note: str = "") -> bytes:
    """A JPEG with `images` laid out row by row: every column of the first seed, then of the next."""
    if not columns or len(images) != len(columns) * len(seeds):
        raise ValueError(f"{len(images)} images for {len(columns)} columns x {len(seeds)} seeds")
    width = len(columns)
    rows = [
        Row(
            label=f"seed {seed}",
            note=note if r == 0 else "",
            cells=[
                Cell(image, column) for image, column in zip(images[r * width : (r + 1) * width], columns, strict=True)
            ],
        )
        for r, seed in enumerate(seeds)
    ]
    return contact_sheet(list(columns), rows)


def experiment_sheet(kind: str, plan: Mapping[str, Any], images: Sequence[Image.Image]) -> bytes:
    """The sheet of a stored plan (a generation's params: "images", each with its seed and label, seed by seed)."""
    planned = plan["images"]
    seeds = list(dict.fromkeys(int(item["seed"]) for item in planned))
    columns = [str(item["label"]) for item in planned[: len(planned) // max(1, len(seeds))]]
    return grid_sheet(columns, seeds, images, note=COLUMNS_ARE.get(kind, ""))


def scale_label(scale: float) -> str:
    """A sweep column's title as the plan writes it: "0", "0.2", "1.2"."""
    return f"{scale:g}"
