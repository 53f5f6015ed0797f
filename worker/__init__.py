"""Celery workers: one package per step a user sees (analysis, training, assessment, generation, notify)."""
