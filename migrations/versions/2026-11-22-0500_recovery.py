"""Recovery: when each job was last sent to the broker, analysis claims, lost workers, the sweep's lock.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:00:00
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("trainings") as batch:
        batch.add_column(_when("dispatched_at"))
        batch.add_column(sa.Column("resends", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("lost_workers", sa.Integer(), nullable=False, server_default="0"))
    op.create_index("ix_trainings_status", "trainings", ["status"])
    with op.batch_alter_table("photos") as batch:
        batch.add_column(_when("dispatched_at"))
        batch.add_column(sa.Column("resends", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(_when("analysis_started_at"))
    op.create_index("ix_photos_status", "photos", ["status"])
    locks = op.create_table(
        "locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        _when("expires_at", nullable=False),
        _when("last_run_at"),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    # The row exists from the start, so taking the lock is always one conditional UPDATE.
    free = datetime(2000, 1, 1, tzinfo=UTC)
    op.bulk_insert(locks, [{"name": "housekeeping.sweep", "holder": None, "expires_at": free, "last_run_at": None}])


def downgrade() -> None:
    op.drop_table("locks")
    op.drop_index("ix_photos_status", table_name="photos")
    with op.batch_alter_table("photos") as batch:
        batch.drop_column("analysis_started_at")
        batch.drop_column("resends")
        batch.drop_column("dispatched_at")
    op.drop_index("ix_trainings_status", table_name="trainings")
    with op.batch_alter_table("trainings") as batch:
        batch.drop_column("lost_workers")
        batch.drop_column("resends")
        batch.drop_column("dispatched_at")
