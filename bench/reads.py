"""The polled read (an API key and its training in one statement) through each database layer.

Seeds a fresh Postgres database like bench/load.py, then runs app.core.reads' statement for the
training, from 1, 4 and 16 concurrent tasks on one event loop, through:

  * SQLAlchemy's asyncio engine (psycopg underneath), autocommit: the first design, measured;
  * psycopg's AsyncConnection directly, on psycopg_pool, autocommit: what app.core.reads uses.

    .venv/bin/python bench/reads.py [--reads 4000] [--database postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.load import create_database, drop_database, run, seed  # noqa: E402


async def measure(read: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> tuple[float, float, float]:
    """Reads a second, p50 and p99 in ms."""
    latencies: list[float] = []

    async def loop(n: int) -> None:
        for _ in range(n):
            t0 = time.perf_counter()
            row = await read()
            assert row is not None and row.id is not None
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(loop(total // concurrency) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return len(latencies) / elapsed, 1000 * latencies[len(latencies) // 2], 1000 * latencies[int(len(latencies) * 0.99)]


async def compare(url: str, key: str, training_id: str, total: int) -> None:
    from psycopg.rows import namedtuple_row
    from psycopg_pool import AsyncConnectionPool
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.ext.asyncio import create_async_engine

    from app.core.auth import hash_key
    from app.core.reads import POOL_MAX, owned_row_query
    from app.db import Training

    query = owned_row_query(Training.__table__)
    sql = str(query.compile(dialect=postgresql.psycopg.dialect()))
    params = {"digest": hash_key(key), "row_id": uuid.UUID(training_id)}

    engine = create_async_engine(
        url.replace("postgresql://", "postgresql+psycopg://"), pool_size=16, isolation_level="AUTOCOMMIT"
    )

    async def with_sqlalchemy() -> Any:
        async with engine.connect() as conn:
            return (await conn.execute(query, params)).first()

    pool = AsyncConnectionPool(
        url, min_size=2, max_size=POOL_MAX, kwargs={"autocommit": True, "row_factory": namedtuple_row}, open=False
    )
    await pool.open()

    async def with_psycopg() -> Any:
        async with pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    print(f"{total} reads each, one process, one event loop (psycopg pool of {POOL_MAX})")
    print(f"  {'layer':<34} {'tasks':>5} {'reads/s':>9} {'p50 ms':>7} {'p99 ms':>7}")
    for name, read in (("SQLAlchemy asyncio engine", with_sqlalchemy), ("psycopg + psycopg_pool", with_psycopg)):
        await measure(read, 200, 4)  # warm: connections open, statements prepared
        for concurrency in (1, 4, 16):
            rate, p50, p99 = await measure(read, total, concurrency)
            print(f"  {name:<34} {concurrency:>5} {rate:>9.0f} {p50:>7.2f} {p99:>7.2f}")
    await engine.dispose()
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=4000)
    parser.add_argument("--database", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    args = parser.parse_args()
    name = create_database(args.database)
    url = args.database.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="lookalike-reads-") as tmp:
            env = {**os.environ, "LOOKALIKE_DATA_DIR": tmp, "LOOKALIKE_DATABASE_URL": url}
            run(env, "migrate")
            key = run(env, "users", "create", "reads@example.com").strip().splitlines()[-1]
            _, training_id = seed(env, key)
        asyncio.run(compare(url, key, training_id, args.reads))
    finally:
        drop_database(args.database, name)


if __name__ == "__main__":
    main()
