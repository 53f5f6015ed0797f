"""Generation: images from a base model and LoRAs, on a GPU worker that keeps bases loaded between jobs.

`engine.Engine` holds the loaded bases and swaps LoRA adapters on them (`adapters`); `sheet` lays
out the experiments (a LoRA-strength sweep, a prompt matrix); `tasks` runs a queued generation on
the process's engine and `local` is `lookalike generate`.
Nothing here loads weights at import time.
"""
