"""The contact sheet: rows are checkpoints, columns are prompts, each cell labelled with its score."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

CELL = 192
LABEL_W = 120
HEADER_H = 40
CAPTION_H = 22
BACKGROUND, INK, MUTED, CHOSEN, FLAGGED = "#ffffff", "#111111", "#555555", "#1a7f37", "#b42318"


@dataclass(frozen=True)
class Cell:
    image: Image.Image
    caption: str  # "likeness 74", "no face", "copy of IMG_1.jpg"
    flagged: bool = False


@dataclass(frozen=True)
class Row:
    label: str  # "step 600"
    note: str  # "likeness 74 · kept"
    cells: Sequence[Cell]
    chosen: bool = False


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the bitmap font has one size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def contact_sheet(columns: Sequence[str], rows: Sequence[Row], *, quality: int = 88) -> bytes:
    """A JPEG of every sample, laid out checkpoint by prompt."""
    width = LABEL_W + CELL * len(columns)
    height = HEADER_H + (CELL + CAPTION_H) * len(rows)
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font, small = _font(14), _font(12)
    for c, title in enumerate(columns):
        draw.text((LABEL_W + c * CELL + 6, 12), _fit(draw, title, font, CELL - 12), fill=INK, font=font)
    for r, row in enumerate(rows):
        top = HEADER_H + r * (CELL + CAPTION_H)
        draw.text((8, top + 8), row.label, fill=CHOSEN if row.chosen else INK, font=font)
        for i, line in enumerate(row.note.split("\n")):
            draw.text((8, top + 30 + 16 * i), _fit(draw, line, small, LABEL_W - 12), fill=MUTED, font=small)
        for c, cell in enumerate(row.cells):
            left = LABEL_W + c * CELL
            thumb = cell.image.convert("RGB")
            factor = (CELL - 4) / max(thumb.size)
            # Tiny samples are shown enlarged with their pixels kept sharp.
            resample = Image.Resampling.NEAREST if factor > 1 else Image.Resampling.LANCZOS
            thumb = thumb.resize((round(thumb.width * factor), round(thumb.height * factor)), resample)
            sheet.paste(thumb, (left + (CELL - thumb.width) // 2, top + (CELL - thumb.height) // 2))
            colour = FLAGGED if cell.flagged else MUTED
            caption = _fit(draw, cell.caption, small, CELL - 8)
            draw.text((left + 4, top + CELL + 4), caption, fill=colour, font=small)
        if row.chosen:
            draw.rectangle((LABEL_W - 2, top, width - 1, top + CELL + CAPTION_H - 2), outline=CHOSEN, width=3)
    out = io.BytesIO()
    sheet.save(out, "JPEG", quality=quality)
    return out.getvalue()
