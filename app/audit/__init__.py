"""The audit log: who did what that matters, when, from where; never secrets or image data."""
