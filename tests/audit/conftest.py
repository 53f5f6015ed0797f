"""The trainings' ready subject (three analysed photos, the minimum lowered to 3) for the audit tests."""

from tests.trainings.conftest import few_photos_suffice, ready_subject  # noqa: F401 - fixtures
