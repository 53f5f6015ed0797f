"""`housekeeping.sweep`: run every registered rule, one sweep at a time across all processes.

The lock is a row in the `locks` table taken with a conditional UPDATE, so it holds across
beat processes, workers and machines on Postgres and on SQLite alike. A sweep that dies
holding it only delays the next one until the lock expires.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import session_scope
from app.core.settings import Settings
from app.db import Lock
from app.db.base import utcnow
from worker.housekeeping.registry import Sweep, load_rules

log = logging.getLogger(__name__)

LOCK_NAME = "housekeeping.sweep"


# The sweep task's time limits: past the hard one its process is killed, so a lock held longer
# than that belongs to a dead sweeper.
SOFT_LIMIT_S, HARD_LIMIT_S = 120, 180


def lock_ttl(settings: Settings) -> float:
    """Longer than a sweep may run (its hard time limit), so two never overlap."""
    return max(HARD_LIMIT_S + 20.0, 4 * settings.sweep_interval_s)


def acquire(sessions: sessionmaker[Session], *, holder: str, now: datetime, ttl: float) -> bool:
    """Take the sweep's lock if it is free or expired."""
    with session_scope(sessions) as session:
        taken = session.execute(
            update(Lock)
            .where(Lock.name == LOCK_NAME, or_(Lock.expires_at < now, Lock.holder.is_(None)))
            .values(holder=holder, expires_at=now + timedelta(seconds=ttl))
        ).rowcount
    return bool(taken)


def release(sessions: sessionmaker[Session], *, holder: str, now: datetime) -> None:
    with session_scope(sessions) as session:
        session.execute(
            update(Lock).where(Lock.name == LOCK_NAME, Lock.holder == holder).values(holder=None, last_run_at=now)
        )


def sweep(
    *, sessions: sessionmaker[Session], settings: Settings, now: datetime | None = None
) -> dict[str, dict[str, int]] | None:
    """Run every rule once; returns what each did, or None when another sweep holds the lock.

    `now` is the rules' clock (tests move it); the lock always runs on the real one.
    """
    holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not acquire(sessions, holder=holder, now=utcnow(), ttl=lock_ttl(settings)):
        log.debug("another sweep is running")
        return None
    report: dict[str, dict[str, int]] = {}
    try:
        context = Sweep(now=now or utcnow(), settings=settings)
        for name, rule in load_rules().items():
            try:
                with session_scope(sessions) as session:
                    counts: Counter[str] = rule(session, context)
            except Exception:  # noqa: BLE001 - one broken rule must not stop the others
                log.exception("sweep rule %s failed", name)
                counts = Counter(error=1)
            report[name] = dict(counts)
    finally:
        release(sessions, holder=holder, now=utcnow())
    if any(report.values()):
        log.info("sweep: %s", {k: v for k, v in report.items() if v})
    return report
