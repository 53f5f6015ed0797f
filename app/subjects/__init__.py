"""Subjects: the people models are trained on."""
