"""Email delivery: to the outbox folder by default, to a real SMTP server when configured."""

from __future__ import annotations

import email
from collections.abc import Iterator

import pytest

from app.core.mail import build_message, send_email
from app.core.settings import Settings
from tests.smtp import ScriptedInbox
from tests.smtp import smtp_server as serve_smtp


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, ScriptedInbox]]:
    with serve_smtp() as running:
        yield running


def test_outbox_by_default(tmp_path):
    settings = Settings(data_dir=tmp_path)
    where = send_email(
        build_message(to="ada@example.com", subject="Your model is ready", text="Trigger: zxq"), settings
    )
    files = list(settings.outbox_dir.glob("*.eml"))
    assert [str(f) for f in files] == [where]
    parsed = email.message_from_bytes(files[0].read_bytes())
    assert parsed["To"] == "ada@example.com" and parsed["Subject"] == "Your model is ready"
    assert "Trigger: zxq" in parsed.get_payload()


def test_smtp_when_configured(tmp_path, smtp_server):
    url, inbox = smtp_server
    settings = Settings(data_dir=tmp_path, smtp_url=url)
    message = build_message(to="bo@example.com", subject="Hello", text="plain", html="<p>rich</p>")
    send_email(message, settings)
    (content,) = inbox.accepted
    ((sender, recipients),) = inbox.envelopes
    assert recipients == ["bo@example.com"] and "lookalike@localhost" in sender
    assert b"<p>rich</p>" in content
    assert not settings.outbox_dir.exists()


def test_bad_smtp_url(tmp_path):
    with pytest.raises(ValueError, match="smtp://"):
        send_email(build_message(to="a@b.c", subject="s", text="t"), Settings(data_dir=tmp_path, smtp_url="http://x"))
