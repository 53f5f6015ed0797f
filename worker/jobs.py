"""What every long job (training, generation) shares: its user-facing error, and the lease's heartbeat."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class JobError(Exception):
    """A failure with a stable code, a message and a hint; never a traceback for the user."""

    def __init__(self, code: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint

    def as_dict(self) -> dict[str, str]:
        """The error as the job row and the API report it."""
        return {"code": self.code, "message": self.message, "hint": self.hint}


class Heartbeat:
    """Renews a job's lease every `every` seconds in a thread while the job runs, even while a model loads.

    `renew()` returns False when the job is no longer this worker's (canceled, deleted, taken over):
    `lost` is then set and the thread stops. An exception in `renew` (a database blip) is logged and
    the next beat tries again.
    """

    def __init__(self, renew: Callable[[], bool], *, every: float, name: str) -> None:
        self.renew, self.every = renew, every
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self.renew():
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database blip must not kill the run; the next beat retries
                log.warning("heartbeat %s failed", self._thread.name, exc_info=True)
