"""The sweep's rule for the outbox: a notification whose message was lost, or whose worker died, is sent again.

- `pending` and due for longer than `requeue_after_s`: its message (the first one, sent after
  the commit that wrote the row, or a retry's delayed one) never arrived. It is sent again and
  its due time moved to now, so the next resend waits another `requeue_after_s`.
- `sending` with a claim older than `notify_claim_s`: the worker died during the attempt. The
  claim is released (the attempt counts) and the row sent again.
Every write is conditional on what the sweep saw, so a worker that finished meanwhile wins.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.queue import enqueue
from app.db import DeliveryStatus, Notification
from app.notify.outbox import DELIVER
from worker.housekeeping.registry import Sweep, rule


@rule("notifications")
def recover_notifications(session: Session, sweep: Sweep) -> Counter[str]:
    counts: Counter[str] = Counter()
    overdue = sweep.ago(sweep.settings.requeue_after_s)
    for (row_id,) in session.execute(
        select(Notification.id).where(
            Notification.status == DeliveryStatus.pending, Notification.next_attempt_at < overdue
        )
    ).all():
        moved = session.execute(
            update(Notification)
            .where(Notification.id == row_id, Notification.status == DeliveryStatus.pending)
            .where(Notification.next_attempt_at < overdue)
            .values(next_attempt_at=sweep.now)
        ).rowcount
        if moved:
            enqueue(session, DELIVER, str(row_id))
            counts["resent"] += 1

    stale = sweep.ago(sweep.settings.notify_claim_s)
    for row in session.execute(
        select(Notification.id, Notification.claim_token).where(
            Notification.status == DeliveryStatus.sending, Notification.claimed_at < stale
        )
    ).all():
        released = session.execute(
            update(Notification)
            .where(Notification.id == row.id, Notification.claim_token == row.claim_token)
            .where(Notification.status == DeliveryStatus.sending)
            .values(status=DeliveryStatus.pending, claim_token=None, next_attempt_at=sweep.now)
        ).rowcount
        if released:
            enqueue(session, DELIVER, str(row.id))
            counts["lost_worker"] += 1
    return counts
