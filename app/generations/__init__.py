"""Generating images with trained LoRAs: requests, the prompt policy, and their records."""
