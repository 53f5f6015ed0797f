"""Settings that make recovery quick enough to watch in a test, and direct reads of a stack's database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

# Leases of seconds instead of a minute; the sweep every second; checkpoints every 100 steps.
FAST = {
    "training_lease_s": 6,
    "training_heartbeat_s": 1,
    "training_progress_s": 0.2,
    "sweep_interval_s": 1,
    "requeue_after_s": 5,
    "checkpoint_every": 100,
    "min_training_photos": 3,
    "analysis_time_limit_s": 20,
}
STEPS = 1500  # tiny-sd15 at 64 px: about 20 ms a step on 2 cores, so half a minute to kill it in


def db_row(database_url: str, table: str, row_id: str, *columns: str) -> dict[str, Any]:
    """Columns of one row, read straight from the stack's database (what the API does not show)."""
    from app.core.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            hex_id = row_id.replace("-", "")
            where = "id = :id" if engine.dialect.name == "postgresql" else "id = :id OR id = :hex"
            row = conn.execute(
                text(f"SELECT {', '.join(columns)} FROM {table} WHERE {where}"), {"id": row_id, "hex": hex_id}
            ).one()
            return dict(row._mapping)
    finally:
        engine.dispose()


@pytest.fixture
def fast() -> dict[str, Any]:
    return dict(FAST)


def assert_resumed(steps: list[int], floor: int) -> None:
    """Steps seen after a restart: never below `floor`, and rising once the new worker reports.

    The first readings may still be the dead worker's last report (above the checkpoint it resumes from).
    """
    assert steps and min(steps) >= floor, (floor, steps[:20])
    fresh = next((i for i, s in enumerate(steps) if s != steps[0]), len(steps))
    assert steps[fresh:] == sorted(steps[fresh:]), steps
