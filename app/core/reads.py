"""Owned-row reads answered on the event loop: the key check and the row in one statement.

The call every client polls (GET /v1/trainings/{id}) must stay fast while many clients poll it. On
the ordinary path a read is four round trips (BEGIN, the key, the row, COMMIT) through the ORM, in a
thread-pool trip that waits its turn for a thread and the GIL. Here it is one statement: on Postgres
sent from the event loop by psycopg itself, on a small asyncio pool of autocommit connections (no
BEGIN, no COMMIT); on SQLite run through SQLAlchemy in one thread trip. SQLAlchemy's asyncio layer
was tried first: it halves the reads a second psycopg alone manages (bench/reads.py).

The statement is built once per table with SQLAlchemy, so its columns follow the models, and it is
compiled for psycopg; rows come back with the table's column names as attributes either way.

Only the answer for a good key is built here. A missing, malformed, unknown or revoked key goes the
ordinary way (`app.core.auth.authenticate`), which words the 401 and writes the audit entry, so a
refusal has one implementation.
"""

from __future__ import annotations

import hmac
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import anyio
import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, Select, Table, and_, bindparam, select

from app.core import auth
from app.db import ApiKey
from app.db.base import utcnow

log = logging.getLogger(__name__)

_KEYS = ApiKey.__table__
# Labelled: the owned table has columns of the same names (id, user_id, created_at).
_KEY_COLUMNS = (
    _KEYS.c.id.label("key_id"),
    _KEYS.c.key_hash.label("key_hash"),
    _KEYS.c.revoked_at.label("key_revoked_at"),
    _KEYS.c.last_used_at.label("key_last_used_at"),
)
POOL_MIN, POOL_MAX = 2, 8  # a read holds a connection for a fraction of a millisecond

# A row of an owned table: its columns as attributes (a psycopg named tuple, or a SQLAlchemy Row).
OwnedRow = Any


@dataclass(frozen=True)
class Owned:
    """What a key that authenticated asked for: the row when it is its user's, else None."""

    row: OwnedRow | None


def owned_row_query(table: Table) -> Select[Any]:
    """The key whose hash is `:digest`, and the row `:row_id` of `table` if the key's user owns it.

    A left join: an unknown key gives no row at all; someone else's row, or none, gives the key with
    nulls. The owned table needs `id` and `user_id` columns, and none named like the key's labels.
    """
    owned = and_(table.c.id == bindparam("row_id"), table.c.user_id == _KEYS.c.user_id)
    return (
        select(*_KEY_COLUMNS, *table.c)
        .select_from(_KEYS.outerjoin(table, owned))
        .where(_KEYS.c.key_hash == bindparam("digest"))
    )


class Reader:
    """Runs owned-row statements: psycopg on an asyncio pool for Postgres, a worker thread for SQLite."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pool: AsyncConnectionPool | None = None
        self._queries: dict[str, tuple[Select[Any], str]] = {}

    async def start(self) -> None:
        """Open the pool, on the event loop that will use it (the app's lifespan)."""
        if self.engine.dialect.name != "postgresql":
            return
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._pool = AsyncConnectionPool(
            url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            # application_name: the pool's connections are told apart in pg_stat_activity.
            kwargs={"autocommit": True, "row_factory": namedtuple_row, "application_name": "lookalike-reads"},
            name="owned-reads",
            open=False,
        )
        await self._pool.open()

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def owned(self, table: Table, *, authorization: str | None, row_id: uuid.UUID) -> Owned | None:
        """The authenticated key and its owned row; None when the key does not authenticate."""
        token = auth.bearer_token(authorization)
        if token is None:
            return None
        digest = auth.hash_key(token)
        found = await self._first(table, {"digest": digest, "row_id": row_id})
        if found is None or found.key_revoked_at is not None or not hmac.compare_digest(found.key_hash, digest):
            return None
        now = utcnow()
        if auth.use_is_due(found.key_id, found.key_last_used_at, now):  # once a minute per process
            await anyio.to_thread.run_sync(auth.touch, self.engine, found.key_id, now)
        return Owned(row=found if found.id is not None else None)

    def _query(self, table: Table) -> tuple[Select[Any], str]:
        if table.name not in self._queries:
            query = owned_row_query(table)
            self._queries[table.name] = (query, str(query.compile(dialect=self.engine.dialect)))
        return self._queries[table.name]

    async def _first(self, table: Table, params: dict[str, Any]) -> Any:
        query, sql = self._query(table)
        if self._pool is None:
            return await anyio.to_thread.run_sync(self._first_sync, query, params)
        for attempt in (1, 2):
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(sql, params)
                    return await cursor.fetchone()
            except psycopg.OperationalError as exc:
                # The server restarted or dropped our connections: the pool throws the broken one
                # away on return; drop the other idle ones too, and try once more on a fresh one.
                if attempt == 2:
                    raise
                log.warning("database connection lost (%s); trying again", exc)
                await self._pool.check()
        raise AssertionError("unreachable")

    def _first_sync(self, query: Select[Any], params: dict[str, Any]) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(query, params).first()
