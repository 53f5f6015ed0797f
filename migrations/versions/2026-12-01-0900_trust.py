"""Trust: the version of the consent statement each subject was created under, and the audit log.

Subjects created before consent statements were versioned keep their `consent_at` and get
`consent_version = "unversioned"`: their owners did consent (`consent: true` was always required),
to a statement we cannot name.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UNVERSIONED = "unversioned"


def upgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("consent_version", sa.String(length=32), nullable=True))
    op.execute(sa.text("UPDATE subjects SET consent_version = :v").bindparams(v=UNVERSIONED))
    with op.batch_alter_table("subjects") as batch:
        batch.alter_column("consent_version", existing_type=sa.String(length=32), nullable=False)

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=True),
        sa.Column("target_id", sa.Uuid(), nullable=True),
        sa.Column("ip_address", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_audit_events_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    # Serves the user's newest-first listing and deleting a user's rows (user_id leads).
    op.create_index("ix_audit_events_user_id_id", "audit_events", ["user_id", "id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("consent_version")
