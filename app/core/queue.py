"""Celery configuration shared by the API (which only sends task names) and the workers.

The broker carries job ids only; the database row is the truth about each job.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from sqlalchemy.orm import Session

from app.core import fs_transport
from app.core.settings import Settings, get_settings
from app.core.tx import after_commit

log = logging.getLogger(__name__)

fs_transport.install()  # atomic message files for the embedded broker

CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"

# Task names the API enqueues; the worker registers functions under the same names.
ANALYZE_PHOTO = "photos.analyze"
TRAIN_MODEL = "training.run"
GENERATE = "generation.run"
SWEEP = "housekeeping.sweep"

TASK_ROUTES = {
    "photos.*": {"queue": CPU_QUEUE},
    "notify.*": {"queue": CPU_QUEUE},
    "housekeeping.*": {"queue": CPU_QUEUE},
    "training.*": {"queue": GPU_QUEUE},
    "generation.*": {"queue": GPU_QUEUE},
}

# Redis redelivers an unacknowledged message after this long; with acks_late it must exceed
# the longest task (a training run), or a long job would be started twice.
VISIBILITY_TIMEOUT_S = 12 * 3600


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything Celery needs, derived from our settings."""
    transport_options: dict[str, Any] = {}
    if settings.is_embedded_broker:
        folder = settings.queue_dir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(exist_ok=True)
        transport_options = {
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.02,  # a free worker waits up to this for its next message; idle: ~1% of a core
        }
    else:
        transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
        if settings.broker_key_prefix:
            transport_options["global_keyprefix"] = settings.broker_key_prefix
    return {
        "broker_url": settings.resolved_broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": CPU_QUEUE,
        "task_queues": tuple(Queue(q, Exchange(q, type="direct"), routing_key=q) for q in (CPU_QUEUE, GPU_QUEUE)),
        "task_default_exchange": CPU_QUEUE,
        "task_default_routing_key": CPU_QUEUE,
        "task_routes": TASK_ROUTES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": 300,
        "task_time_limit": 360,
        "worker_hijack_root_logger": False,
        # The filesystem transport has no broadcast; remote control needs it.
        "worker_enable_remote_control": not settings.is_embedded_broker,
        "worker_send_task_events": False,
        "timezone": "UTC",
        # Celery beat (`lookalike beat`, or inside `lookalike serve`) sends only the sweep. A sweep
        # message older than one interval is dropped: the next one is already on its way.
        "beat_scheduler": "celery.beat:Scheduler",  # one interval job: nothing worth a schedule file
        "beat_schedule": {
            SWEEP: {
                "task": SWEEP,
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s},
            }
        },
    }


def make_celery(settings: Settings, name: str = "lookalike") -> Celery:
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


_client: Celery | None = None
_client_lock = threading.Lock()


def get_client() -> Celery:
    """The API's Celery instance: it sends tasks by name and never imports the worker code."""
    global _client
    with _client_lock:
        if _client is None:
            _client = make_celery(get_settings(), name="lookalike-api")
        return _client


def reset_client() -> None:
    global _client
    with _client_lock:
        _client = None


def send(task_name: str, *args: str) -> None:
    """Send a task now. Prefer `after_commit` so a worker never sees an uncommitted row."""
    get_client().send_task(task_name, args=list(args))


def enqueue(session: Session, task_name: str, *args: str) -> None:
    """Send a task after the commit that created the rows it reads."""
    after_commit(session, lambda: send(task_name, *args))
