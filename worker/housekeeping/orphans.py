"""The sweep's orphan rule: stored objects no row owns (see `app.privacy.orphans`), at most once an hour.

Listing the whole store is the costly part (one LIST request per 1,000 objects on S3), so the rule
runs when an hour has passed on the sweep's clock since it last ran, as recorded in the `locks` row
`storage.orphans` (the sweep's own lock keeps two sweeps from running it at once).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.core.storage import get_storage
from app.db import Lock
from app.privacy.orphans import purge_orphans
from worker.housekeeping.registry import Sweep, rule

EVERY = timedelta(hours=1)
STATE = "storage.orphans"  # the `locks` row that remembers the last run
_NEVER = datetime(2000, 1, 1, tzinfo=UTC)  # `expires_at` is required; this row is never held


@rule("orphans")
def orphans(session: Session, sweep: Sweep) -> Counter[str]:
    state = session.get(Lock, STATE)
    if state is None:
        state = Lock(name=STATE, holder=None, expires_at=_NEVER)
        session.add(state)
    if state.last_run_at is not None and sweep.now - state.last_run_at < EVERY:
        return Counter()
    state.last_run_at = sweep.now
    return purge_orphans(session, get_storage(sweep.settings), now=sweep.now)
