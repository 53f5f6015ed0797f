"""The sweep's retention rule: `LOOKALIKE_RETENTION_DAYS` after a training ends, its photos, cache and
checkpoints go (see `app.privacy.retention`); the model and its samples stay."""

from __future__ import annotations

from collections import Counter

from sqlalchemy.orm import Session

from app.core.storage import get_storage
from app.privacy.retention import purge_expired
from worker.housekeeping.registry import Sweep, rule


@rule("retention")
def retention(session: Session, sweep: Sweep) -> Counter[str]:
    """Purge what ended trainings no longer need, on the sweep's clock."""
    return purge_expired(session, now=sweep.now, settings=sweep.settings, storage=get_storage(sweep.settings))
