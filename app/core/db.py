"""Engine, sessions and the schema check; the one place that knows which database we run on."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from app.core.settings import Settings, get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for Postgres whatever spelling the user gave."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _ensure_sqlite_folder(url: str) -> None:
    """SQLite creates the file but not its folder: a fresh data dir must work out of the box."""
    path = make_url(url).database
    if url.startswith("sqlite") and path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    # WAL lets the API read while the worker writes; busy_timeout waits instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Deleted rows are overwritten with zeros in the file instead of left in free pages: a deleted
    # person's email, captions and face encodings must not be readable from the file afterwards.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`, tuned for the backend."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        _ensure_sqlite_folder(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=20, max_overflow=10)
    event.listen(engine, "checkin", _stamp_checkin)
    event.listen(engine, "checkout", _ping_if_idle)
    return engine


def flush_deleted(engine: Engine) -> None:
    """After an erasure on SQLite: copy the write-ahead log into the file and empty it.

    With `secure_delete` the file's freed space is zeroed, but until a checkpoint the log still holds
    the pages as they were before the delete. A checkpoint waits for readers (busy_timeout); if one
    keeps it from finishing, the log is emptied at a later one, and this is logged.
    """
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        busy, _log_frames, _copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
    if busy:
        log.warning("the SQLite write-ahead log could not be emptied after an erasure (a reader was busy)")


# A connection the pool hands out is checked with a round trip only when it sat idle this long: a
# server restart or a dropped connection shows up then, and a busy API (connections never idle) does
# not pay SQLAlchemy's pre-ping on every request (a fifth of a one-row read's round trips).
IDLE_PING_S = 2.0


def _stamp_checkin(_dbapi_conn, record) -> None:  # noqa: ANN001
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_conn, record, _proxy) -> None:  # noqa: ANN001
    if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_S:
        return
    try:
        cur = dbapi_conn.cursor()
        cur.execute("SELECT 1")
        cur.close()
        dbapi_conn.rollback()
    except Exception as exc:  # the pool discards this connection and checks out another
        raise DisconnectionError("the pooled connection is gone") from exc


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = make_engine(url)
        return _ENGINES[url]


def get_engine(settings: Settings | None = None) -> Engine:
    """The process-wide engine for the configured database."""
    return engine_for((settings or get_settings()).resolved_database_url)


def session_factory(settings: Settings | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(settings), expire_on_commit=False, autoflush=True)


def dispose_engines() -> None:
    """Forget pooled connections; each forked worker calls this so no socket is shared across processes."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            engine.dispose(close=False)
        _ENGINES.clear()


@contextmanager
def session_scope(factory: Callable[[], Session] | None = None) -> Iterator[Session]:
    """Open a session, commit on success, roll back on error: the task-side transaction boundary."""
    from app.core.tx import committed, rolled_back

    session = (factory or session_factory())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        rolled_back(session)
        raise
    finally:
        session.close()
    committed(session)


def retry_db(fn: Callable[[], T], *, attempts: int = 5, delay: float = 0.2) -> T:
    """Run a short transaction again when the database connection was lost (a restart, a killed backend).

    Only for work that is safe to repeat: conditional updates and reads. A commit whose answer was
    lost may have happened; `fn` must tell (see the training's final write).
    """
    for attempt in range(attempts):
        try:
            return fn()
        except DBAPIError as exc:
            lost = isinstance(exc, OperationalError) or exc.connection_invalidated
            if not lost or attempt == attempts - 1:
                raise
            log.warning("database connection lost (%s); trying again", type(exc.orig).__name__)
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")


def retried(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a function that runs its own short, repeatable transaction with `retry_db`."""
    from functools import wraps

    @wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> T:
        return retry_db(lambda: fn(*args, **kwargs))

    return wrapper


# --- schema -----------------------------------------------------------------------------


def alembic_config(url: str):  # noqa: ANN201
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


class SchemaOutOfDate(RuntimeError):
    pass


def check_schema(engine: Engine) -> None:
    """Refuse to run against a database that `lookalike migrate` has not brought to head."""
    head, current = head_revision(), current_revision(engine)
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no schema yet" if current is None else f"is at revision {current}, not {head}"
        raise SchemaOutOfDate(f"The database {where} {state}. Run `lookalike migrate` to bring it up to date.")


def migrate(url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to `revision`."""
    from alembic import command

    _ensure_sqlite_folder(normalize_url(url))
    command.upgrade(alembic_config(url), revision)


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
