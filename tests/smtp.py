"""A real SMTP server on loopback (aiosmtpd) that answers DATA with scripted replies, then 250."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiosmtpd.controller import Controller


class ScriptedInbox:
    """Answers DATA with the scripted replies in turn (then 250), keeping what it accepted."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.tried: list[bytes] = []
        self.accepted: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []  # (sender, recipients) of each accepted message

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.tried.append(envelope.content)
        reply = self.replies.pop(0) if self.replies else "250 OK"
        if reply.startswith("250"):
            self.accepted.append(envelope.content)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return reply


@contextmanager
def smtp_server(*replies: str) -> Iterator[tuple[str, ScriptedInbox]]:
    """`smtp://127.0.0.1:PORT` and its inbox, for the duration of the block."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = ScriptedInbox(list(replies))
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", inbox
    finally:
        controller.stop()
