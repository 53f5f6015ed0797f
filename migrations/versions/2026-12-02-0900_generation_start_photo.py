"""Generations remember the photo their img2img start image was copied from (`start_photo_id`).

Deleting that photo, or its subject, then deletes the generation with its stored objects. No foreign
key: the deleting code removes the generations itself (a cascade would drop the row and leave the
copy of the face in storage). Generations made before this revision have no `start_photo_id`: which
photo their start image came from was never recorded.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("start_photo_id", sa.Uuid(), nullable=True))
    op.create_index("ix_generations_start_photo_id", "generations", ["start_photo_id"])


def downgrade() -> None:
    op.drop_index("ix_generations_start_photo_id", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("start_photo_id")
