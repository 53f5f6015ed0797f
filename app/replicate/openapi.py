"""The OpenAPI schema every version answers: the prediction inputs this API accepts, and its output."""

from __future__ import annotations

from typing import Any

from app.generations.params import ASPECT_RATIOS, MAX_OUTPUTS, MAX_SIDE, MIN_SIDE, OUTPUT_FORMATS

# Cog's schema version; the client reads it (>= 0.3.9: an array output is a list, not an iterator).
COG_VERSION = "0.13.0"

_INPUT: dict[str, Any] = {
    "prompt": {"type": "string", "description": "The trigger word is put in front when missing."},
    "negative_prompt": {"type": "string", "description": "Ignored by FLUX (no CFG pass)."},
    "lora_scale": {"type": "number", "minimum": -2, "maximum": 2, "default": 0.8},
    "num_outputs": {"type": "integer", "minimum": 1, "maximum": MAX_OUTPUTS, "default": 1},
    "aspect_ratio": {"type": "string", "enum": [*ASPECT_RATIOS, "custom"], "default": "1:1"},
    "width": {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE},
    "height": {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE},
    "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS), "default": "webp"},
    "output_quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": 90},
    "guidance_scale": {"type": "number", "minimum": 0, "maximum": 30},
    "num_inference_steps": {"type": "integer", "minimum": 1, "maximum": 100},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "description": "Random when omitted."},
    "image": {"type": "string", "format": "uri", "description": "Start image (img2img): a file you uploaded."},
    "prompt_strength": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.8},
    "extra_lora": {
        "type": "string",
        "description": "Another LoRA: a .safetensors URL, a file you uploaded, or owner/name[:version] of yours.",
    },
    "extra_lora_scale": {"type": "number", "minimum": -2, "maximum": 2},
}

INPUT_NAMES = frozenset(_INPUT)


def version_schema() -> dict[str, Any]:
    """A minimal OpenAPI document with the `Input` and `Output` components Replicate's clients look for."""
    properties = {name: {"title": name.replace("_", " ").title(), **spec} for name, spec in _INPUT.items()}
    return {
        "openapi": "3.0.2",
        "info": {"title": "Lookalike LoRA", "version": "1.0.0"},
        "paths": {},
        "components": {
            "schemas": {
                "Input": {"type": "object", "title": "Input", "required": ["prompt"], "properties": properties},
                "Output": {"type": "array", "title": "Output", "items": {"type": "string", "format": "uri"}},
            }
        },
    }
