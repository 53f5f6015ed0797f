"""Generations, uploaded files, Replicate-style models, and trainings that wait for their photos.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _when(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owner(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=f"fk_{table}_user_id_users", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "replicate_models",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("visibility", sa.String(length=16), nullable=False),
        sa.Column("hardware", sa.String(length=64), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("run_count", sa.Integer(), nullable=False),
        _when("created_at", nullable=False),
        _owner("replicate_models"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replicate_models")),
        sa.UniqueConstraint("user_id", "owner", "name", name="uq_replicate_models_user_owner_name"),
    )
    op.create_index("ix_replicate_models_user_id", "replicate_models", ["user_id"])
    for table in ("trainings", "models"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("replicate_model_id", sa.Uuid(), nullable=True))
            batch.create_foreign_key(
                f"fk_{table}_replicate_model_id_replicate_models",
                "replicate_models",
                ["replicate_model_id"],
                ["id"],
                ondelete="SET NULL",
            )
            batch.create_index(f"ix_{table}_replicate_model_id", ["replicate_model_id"])
    with op.batch_alter_table("trainings") as batch:
        batch.add_column(sa.Column("awaiting_photos", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("client", sa.JSON(), nullable=True))
    op.create_table(
        "files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        _when("created_at", nullable=False),
        _owner("files"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_files")),
    )
    op.create_index("ix_files_user_id_id", "files", ["user_id", "id"])
    op.create_table(
        "generations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("model_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("base_model", sa.String(length=300), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("tiny", sa.Boolean(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("trigger_inserted", sa.Boolean(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("loras", sa.JSON(), nullable=False),
        sa.Column("image_key", sa.String(length=1024), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("sheet_key", sa.String(length=1024), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("logs", sa.Text(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("client", sa.JSON(), nullable=True),
        _when("started_at"),
        _when("finished_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_token", sa.String(length=64), nullable=True),
        _when("heartbeat_at"),
        _when("dispatched_at"),
        sa.Column("resends", sa.Integer(), nullable=False),
        _when("created_at", nullable=False),
        _owner("generations"),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name=op.f("fk_generations_model_id_models"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
    )
    op.create_index("ix_generations_user_id_id", "generations", ["user_id", "id"])
    op.create_index("ix_generations_status", "generations", ["status"])


def downgrade() -> None:
    op.drop_table("generations")
    op.drop_table("files")
    with op.batch_alter_table("trainings") as batch:
        batch.drop_column("client")
        batch.drop_column("awaiting_photos")
    for table in ("models", "trainings"):
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_replicate_model_id")
            batch.drop_constraint(f"fk_{table}_replicate_model_id_replicate_models", type_="foreignkey")
            batch.drop_column("replicate_model_id")
    op.drop_table("replicate_models")
