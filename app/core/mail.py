"""Outgoing email: SMTP in production, `.eml` files in the outbox folder by default."""

from __future__ import annotations

import os
import smtplib
import ssl
import tempfile
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from urllib.parse import unquote, urlparse

from app.core.ids import new_id
from app.core.settings import Settings

DEFAULT_SENDER = "Lookalike <lookalike@localhost>"


def build_message(
    *, to: str, subject: str, text: str, html: str | None = None, sender: str | None = None
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender or DEFAULT_SENDER
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="lookalike")
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    return message


def send_email(message: EmailMessage, settings: Settings) -> str:
    """Deliver `message`; returns where it went (an SMTP host or an outbox file path)."""
    if settings.smtp_url:
        return _send_smtp(message, settings.smtp_url)
    return str(_write_outbox(message, settings.outbox_dir))


def _write_outbox(message: EmailMessage, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{new_id()}.eml"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(message.as_bytes())
    os.replace(tmp, target)  # a reader never sees half a message
    return target


def _send_smtp(message: EmailMessage, url: str) -> str:
    """`smtp://[user:pass@]host[:port]` (STARTTLS when offered) or `smtps://…` (implicit TLS)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("smtp", "smtps"):
        raise ValueError(f"LOOKALIKE_SMTP_URL {url!r}: use smtp://host:port or smtps://host:port")
    host = parsed.hostname or "localhost"
    if parsed.scheme == "smtps":
        client: smtplib.SMTP = smtplib.SMTP_SSL(
            host, parsed.port or 465, timeout=30, context=ssl.create_default_context()
        )
    else:
        client = smtplib.SMTP(host, parsed.port or 25, timeout=30)
    with client:
        if parsed.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=ssl.create_default_context())
        if parsed.username:
            client.login(unquote(parsed.username), unquote(parsed.password or ""))
        client.send_message(message)
    return f"{host}:{parsed.port or (465 if parsed.scheme == 'smtps' else 25)}"
