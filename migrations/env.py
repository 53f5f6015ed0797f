"""Alembic environment: the URL comes from the config (set by `lookalike migrate`) or the settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from app.core.db import normalize_url
from app.core.settings import get_settings
from app.db import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url or url == "sqlite://":
        url = get_settings().resolved_database_url
    return normalize_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # Plain engine, no pool: a one-shot run that leaves no connection behind.
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # render_as_batch lets ALTER-style migrations work on SQLite too.
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
