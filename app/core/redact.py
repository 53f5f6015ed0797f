"""API keys never reach a log line: a logging filter that masks anything shaped like one.

The service itself never logs a key, but a client can put one where it gets logged anyway: in a query
string (`?api_key=lk_...`, which uvicorn's access log prints with the request line) or in a URL or
field that ends up in an error message. Keys carry a recognisable prefix, so they are masked by shape.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from app.core.auth import DISPLAY_CHARS, KEY_PREFIX

# A key is the prefix and 43 URL-safe characters; anything longer than the displayed prefix (which
# listings show on purpose, to tell keys apart) is masked down to that prefix.
_KEY = re.compile(re.escape(KEY_PREFIX) + rf"[A-Za-z0-9_\-]{{{DISPLAY_CHARS - len(KEY_PREFIX) + 1},}}")
MASK = "[redacted]"


def redact(text: str) -> str:
    """`text` with every key-shaped string cut to its displayed prefix."""
    return _KEY.sub(lambda m: m.group(0)[:DISPLAY_CHARS] + MASK, text)


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) and KEY_PREFIX in value else value


class RedactKeys(logging.Filter):
    """Masks keys in a record's message and arguments (uvicorn's access log passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _clean(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


_FILTER = RedactKeys()


def install_key_redaction() -> None:
    """Mask keys in uvicorn's access and error logs and in everything the root logger's handlers write."""
    targets: list[Any] = [logging.getLogger(name) for name in ("uvicorn.access", "uvicorn.error", "uvicorn")]
    targets += logging.getLogger().handlers
    for logger_name in ("uvicorn.access", "uvicorn.error"):
        targets += logging.getLogger(logger_name).handlers
    for target in targets:
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)
