"""Notifications: the transactional outbox of emails and webhooks, their content, signing and target checks."""
