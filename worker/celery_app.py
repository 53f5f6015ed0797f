"""The worker's Celery app: `celery -A worker.celery_app worker -Q cpu` (or `lookalike worker`)."""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_process_init

from app.core.db import dispose_engines
from app.core.queue import ANALYZE_PHOTO, make_celery
from app.core.settings import get_settings
from app.photos.ingest import allow_pillow_pixels
from worker import lifecycle  # noqa: F401 - connects the shutdown event that long tasks watch
from worker.libraries import quiet_warnings

log = logging.getLogger(__name__)
quiet_warnings()  # the libraries' notices are nothing for an operator; the pool processes inherit this


def create_worker_app() -> Celery:
    settings = get_settings()
    allow_pillow_pixels(settings.max_image_pixels)  # stored images passed the API's bound already
    app = make_celery(settings, name="lookalike-worker")
    # Task modules import torch & co. lazily inside the tasks that need them.
    app.conf.include = [
        "worker.analysis.tasks",
        "worker.training.tasks",
        "worker.generation.tasks",
        "worker.housekeeping.tasks",
        "worker.notify.tasks",
    ]
    # Past the hard limit the pool process is killed; the sweep treats an older claim as a dead worker's.
    limit = settings.analysis_time_limit_s
    app.conf.task_annotations = {ANALYZE_PHOTO: {"time_limit": limit, "soft_time_limit": 0.8 * limit}}
    return app


celery_app = create_worker_app()
app = celery_app


@worker_process_init.connect
def _fresh_connections(**_: object) -> None:
    # A forked child must not reuse the parent's pooled database sockets.
    dispose_engines()
