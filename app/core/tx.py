"""Work tied to a transaction's outcome: after commit (enqueue, delete blobs), after rollback (undo blob writes)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

_COMMIT = "after_commit_hooks"
_ROLLBACK = "after_rollback_hooks"


def after_commit(session: Session, hook: Callable[[], None]) -> None:
    """Run `hook` once the session's transaction has committed."""
    session.info.setdefault(_COMMIT, []).append(hook)


def after_rollback(session: Session, hook: Callable[[], None]) -> None:
    """Run `hook` if the transaction is rolled back (e.g. remove blobs written for rows that never landed)."""
    session.info.setdefault(_ROLLBACK, []).append(hook)


def _run(session: Session, which: str) -> None:
    session.info.pop(_COMMIT if which == _ROLLBACK else _ROLLBACK, None)
    for hook in session.info.pop(which, []):
        try:
            hook()
        except Exception:
            log.exception("%s hook failed", which)


def committed(session: Session) -> None:
    """Run the after-commit hooks and forget the rollback ones."""
    _run(session, _COMMIT)


def rolled_back(session: Session) -> None:
    """Run the after-rollback hooks and forget the commit ones."""
    _run(session, _ROLLBACK)


def commit_now(session: Session) -> None:
    """Commit before the request ends (e.g. to wait for a worker) and run the after-commit hooks."""
    session.commit()
    committed(session)
