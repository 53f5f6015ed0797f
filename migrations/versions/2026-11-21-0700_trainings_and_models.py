"""Trainings (the LoRA jobs, with progress and the running worker's lease) and the models they produce.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "trainings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("tiny", sa.Boolean(), nullable=False),
        sa.Column("trigger_word", sa.String(length=64), nullable=False),
        sa.Column("trigger_generated", sa.Boolean(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("validation_prompts", sa.JSON(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2048), nullable=True),
        sa.Column("webhook_events", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("phases", sa.JSON(), nullable=False),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_token", sa.String(length=64), nullable=True),
        _when("heartbeat_at"),
        sa.Column("model_id", sa.Uuid(), nullable=True),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_trainings_subject_id_subjects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_trainings_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trainings")),
    )
    op.create_index(op.f("ix_trainings_user_id"), "trainings", ["user_id"])
    op.create_index("ix_trainings_user_id_status", "trainings", ["user_id", "status"])

    op.create_table(
        "models",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("training_id", sa.Uuid(), nullable=True),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("tiny", sa.Boolean(), nullable=False),
        sa.Column("trigger_word", sa.String(length=64), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("quality", sa.JSON(), nullable=True),
        sa.Column("samples", sa.JSON(), nullable=False),
        _when("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_id"], ["subjects.id"], name=op.f("fk_models_subject_id_subjects"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["training_id"], ["trainings.id"], name=op.f("fk_models_training_id_trainings"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_models_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("training_id", name=op.f("uq_models_training_id")),
    )
    op.create_index(op.f("ix_models_user_id"), "models", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_models_user_id"), table_name="models")
    op.drop_table("models")
    op.drop_index("ix_trainings_user_id_status", table_name="trainings")
    op.drop_index(op.f("ix_trainings_user_id"), table_name="trainings")
    op.drop_table("trainings")
