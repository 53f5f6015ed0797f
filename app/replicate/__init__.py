"""A Replicate-compatible HTTP API under /replicate: scripts written for the `replicate` client run unchanged."""
