"""Email delivery: to the outbox folder by default, to a real SMTP server when configured."""

from __future__ import annotations

import email
import socket

import pytest
from aiosmtpd.controller import Controller

from app.core.mail import build_message, send_email
from app.core.settings import Settings


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802, ANN001, ANN201
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content))
        return "250 OK"


@pytest.fixture
def smtp_server():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()


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
    ((sender, recipients, content),) = inbox.messages
    assert recipients == ["bo@example.com"] and "lookalike@localhost" in sender
    assert b"<p>rich</p>" in content
    assert not settings.outbox_dir.exists()


def test_bad_smtp_url(tmp_path):
    with pytest.raises(ValueError, match="smtp://"):
        send_email(build_message(to="a@b.c", subject="s", text="t"), Settings(data_dir=tmp_path, smtp_url="http://x"))
