"""Webhook delivery from the workers: the outbound HTTP call, kept apart from the API."""
