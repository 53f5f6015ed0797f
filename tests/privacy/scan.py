"""Looking for what is left of someone: every column of every table, every stored object, every outbox email.

Generic on purpose: tables come from `Base.metadata`, so a table added later is scanned too.
"""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.storage import Storage
from app.db import Base


def needles(*values: Any) -> set[str]:
    """How each value can appear: a uuid with and without dashes (file URLs use the hex), text lowercased."""
    found: set[str] = set()
    for value in values:
        if isinstance(value, uuid.UUID):
            found |= {str(value), value.hex}
        elif isinstance(value, str) and len(value) == 36 and value.count("-") == 4:
            found |= needles(uuid.UUID(value))
        elif value:
            found.add(str(value).lower())
    return found


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return "" if value is None else str(value)


Allowed = Callable[[str, dict[str, Any]], bool]


def rows_naming(session: Session, wanted: set[str], *, allowed: Allowed | None = None) -> list[str]:
    """`table.column = value` for every cell, in every table, that contains one of `wanted`."""
    hits = []
    for table in Base.metadata.sorted_tables:
        for row in session.execute(select(table)).mappings():
            if allowed is not None and allowed(table.name, dict(row)):
                continue
            for column, value in row.items():
                text = _text(value).lower()
                for needle in wanted:
                    if needle in text:
                        hits.append(f"{table.name}.{column} = {text[:120]!r} (names {needle})")
    return hits


def objects_naming(storage: Storage, wanted: set[str]) -> list[str]:
    """Every stored key that contains one of `wanted` (a user's keys start with their id)."""
    return [key for key in storage.list("") if any(n in key.lower() for n in wanted)]


def files_naming(folder: Path, wanted: set[str]) -> list[str]:
    """Every file under `folder` whose name or bytes contain one of `wanted` (emails decoded first)."""
    hits = []
    if not folder.is_dir():
        return hits
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        text = (
            path.as_posix() + "\n" + (email_text(data) if path.suffix == ".eml" else data.decode("latin-1"))
        ).lower()
        hits += [f"{path} names {n}" for n in wanted if n in text]
    return hits


def email_text(data: bytes) -> str:
    """An email's headers and the decoded content of every text part (bodies may be base64 or quoted-printable)."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    parts = [f"{k}: {v}" for k, v in message.items()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(part.get_content())
    return "\n".join(parts)


def emails_to(folder: Path, address: str) -> list[Path]:
    """The outbox's `.eml` files addressed to `address`."""
    found = []
    for path in folder.glob("*.eml") if folder.is_dir() else ():
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if address.lower() in str(message["To"]).lower():
            found.append(path)
    return found
