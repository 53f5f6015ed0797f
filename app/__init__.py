"""Lookalike: train a personal face LoRA on hardware you control."""

__version__ = "0.1.0"
