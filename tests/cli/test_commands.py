"""The `lookalike` command: migrations, users and keys."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import main
from app.core import db as core_db
from app.core.settings import get_settings
from app.main import create_app


@pytest.fixture
def runner(settings):
    return CliRunner()


def test_users_create_prints_a_working_key_once(runner, client):
    result = runner.invoke(main, ["users", "create", "Ada@Example.com"])
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("lk_")
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    listing = runner.invoke(main, ["users", "list"])
    assert "ada@example.com" in listing.stdout and "keys=1" in listing.stdout
    assert key not in listing.stdout


def test_duplicate_and_invalid_emails_fail_clearly(runner):
    assert runner.invoke(main, ["users", "create", "bo@example.com"]).exit_code == 0
    again = runner.invoke(main, ["users", "create", "bo@example.com"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(main, ["users", "create", "not-an-email"])
    assert bad.exit_code == 1 and "not an email" in bad.output


def test_keys_create_list_and_revoke(runner, client):
    runner.invoke(main, ["users", "create", "cy@example.com"])
    created = runner.invoke(main, ["keys", "create", "cy@example.com", "--name", "laptop"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/me", headers=headers).status_code == 200
    listing = runner.invoke(main, ["keys", "list", "cy@example.com"]).stdout
    assert "laptop" in listing and key[:10] in listing and key not in listing
    revoked = runner.invoke(main, ["keys", "revoke", key[:10]])
    assert revoked.exit_code == 0, revoked.output
    assert client.get("/v1/me", headers=headers).json()["error"]["code"] == "revoked_api_key"
    assert "revoked" in runner.invoke(main, ["keys", "list", "cy@example.com"]).stdout
    missing = runner.invoke(main, ["keys", "revoke", "lk_doesnotx"])
    assert missing.exit_code == 1 and "No API key" in missing.output


def _unmigrated(tmp_path, monkeypatch):
    """Point the process at an empty SQLite database for one test."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("LOOKALIKE_DATABASE_URL", url)
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    return url


@pytest.fixture
def fresh_db(tmp_path, monkeypatch, settings):
    url = _unmigrated(tmp_path, monkeypatch)
    yield url
    monkeypatch.undo()
    get_settings.cache_clear()


def test_unmigrated_database_is_refused_until_migrate(fresh_db, tmp_path, runner):
    """The app and the CLI refuse an empty database with a message naming the fix."""
    with pytest.raises(core_db.SchemaOutOfDate, match="lookalike migrate"), TestClient(create_app(get_settings())):
        pass
    refused = runner.invoke(main, ["serve"])
    assert refused.exit_code == 1 and "Run `lookalike migrate`" in refused.output
    assert runner.invoke(main, ["users", "create", "x@example.com"]).exit_code == 1

    migrated = runner.invoke(main, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    assert "revision" in migrated.output
    tables = {r[0] for r in sqlite3.connect(tmp_path / "fresh.db").execute("select name from sqlite_master")}
    assert {"users", "api_keys", "subjects", "photos", "alembic_version"} <= tables
    with TestClient(create_app(get_settings())) as client:
        assert client.get("/readyz").status_code == 200


def test_migrations_downgrade_and_upgrade_again(fresh_db):
    """Every migration can be undone and redone."""
    core_db.migrate(fresh_db, "head")
    engine = core_db.make_engine(fresh_db)
    assert core_db.current_revision(engine) == core_db.head_revision()
    from alembic import command

    command.downgrade(core_db.alembic_config(fresh_db), "base")
    assert core_db.current_revision(engine) is None
    core_db.migrate(fresh_db, "head")
    assert core_db.current_revision(engine) == core_db.head_revision()
    engine.dispose()
