"""Shared plumbing: settings, database, storage, errors, auth, queue, metrics."""
