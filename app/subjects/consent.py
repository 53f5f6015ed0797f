"""The consent statement a user agrees to before a subject is created, and its version.

Each subject records the version it was created under (`subjects.consent_version`). Changing the
text means a new version: the old text stays the one earlier subjects agreed to.
"""

from __future__ import annotations

from app.core.errors import Unprocessable

CONSENT_VERSION = "2026-12-01"

CONSENT_TEXT = (
    "I confirm that I am the person in these photos, or that I have that person's explicit permission "
    "to upload them and to train a model of their face. I understand that the photos, and the face "
    "measurements taken from them, are biometric data, used only to train and assess this model. "
    "I can delete the photos, the subject and the model at any time, and they are then erased."
)

# What subjects created before statements were versioned record (see the 0007 migration).
UNVERSIONED = "unversioned"


def accepted_version(version: str | None) -> str:
    """The version to record for a request that agreed to `version` (None: the current statement)."""
    if version is None or version == CONSENT_VERSION:
        return CONSENT_VERSION
    raise Unprocessable(
        f"Consent statement version {version!r} is not the current one ({CONSENT_VERSION}).",
        code="consent_version_outdated",
        hint="Fetch GET /v1/consent, show its text to the person giving consent, and send its `version`.",
        details={"current_version": CONSENT_VERSION},
    )
