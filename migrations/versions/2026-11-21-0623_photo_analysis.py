"""Photo analysis: faces, encodings, duplicate signatures, crops; the subject's identity.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 06:23:10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_PHOTO_COLUMNS = (
    "faces",
    "face_index",
    "encodings",
    "signature",
    "phash",
    "quality",
    "crop_box",
    "square_box",
    "auto_caption",
)


def upgrade() -> None:
    with op.batch_alter_table("photos") as batch:
        batch.add_column(sa.Column("faces", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("face_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("encodings", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("signature", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("quality", sa.Float(), nullable=True))
        batch.add_column(sa.Column("crop_box", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("square_box", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("auto_caption", sa.Text(), nullable=True))
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("identity", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("reviewed_at")
        batch.drop_column("identity")
    with op.batch_alter_table("photos") as batch:
        for name in reversed(_PHOTO_COLUMNS):
            batch.drop_column(name)
