"""Fixtures for the sweep's tests: captured messages and the run's sessions."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.core import queue
from app.core.db import session_factory

Sent = list[tuple[str, tuple[str, ...]]]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Sent:
    """Every message sent during the test, captured instead of reaching the broker."""
    messages: Sent = []
    monkeypatch.setattr(queue, "send", lambda name, *args: messages.append((name, args)))
    return messages


@pytest.fixture
def sessions(settings: Any) -> sessionmaker[Session]:
    return session_factory(settings)
