"""The FastAPI application."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__
from app.audit.router import router as audit_router
from app.core import docs, openapi
from app.core.db import check_schema, get_engine, session_factory
from app.core.http_errors import install_error_handlers
from app.core.limits import BodySizeLimit
from app.core.metrics import MetricsMiddleware
from app.core.queue import make_celery
from app.core.reads import Reader
from app.core.redact import install_key_redaction
from app.core.settings import Settings, get_settings
from app.core.storage import get_storage
from app.files.router import router as files_router
from app.generations.router import models_router as model_images_router
from app.generations.router import router as generations_router
from app.health.router import router as health_router
from app.models.router import router as models_router
from app.photos.ingest import allow_pillow_pixels
from app.photos.router import router as photos_router
from app.replicate.app import create_replicate_app
from app.subjects.router import consent_router
from app.subjects.router import router as subjects_router
from app.trainings.base_models import router as base_models_router
from app.trainings.router import router as trainings_router
from app.users.router import router as users_router
from app.web.router import router as web_router

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings`; refuses to start on an unmigrated database."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_schema(app.state.engine)
        app.state.storage.ensure()
        threads = settings.upload_threads or os.cpu_count() or 2
        app.state.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest")
        await app.state.reader.start()
        try:
            yield
        finally:
            await app.state.reader.stop()
            app.state.executor.shutdown(wait=True)

    app = FastAPI(
        title="Lookalike",
        version=__version__,
        description="Train a personal face LoRA from your photos, on hardware you control.",
        lifespan=lifespan,
        docs_url=None,  # app.core.docs serves them with local assets
        redoc_url=None,
    )
    openapi.install(app)
    docs.install(app)
    app.state.settings = settings
    app.state.engine = get_engine(settings)
    app.state.session_factory = session_factory(settings)
    app.state.reader = Reader(app.state.engine)
    app.state.storage = get_storage(settings)
    app.state.celery = make_celery(settings, name="lookalike-api")  # for readiness; tasks go through app.core.queue
    allow_pillow_pixels(settings.max_image_pixels)
    install_key_redaction()  # a key sent in a query string must not reach the access log

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware)
    routers = (
        health_router,
        users_router,
        audit_router,
        consent_router,
        subjects_router,
        photos_router,
        trainings_router,
        base_models_router,
        models_router,
        model_images_router,
        generations_router,
        files_router,
        web_router,
    )
    for router in routers:
        app.include_router(router)
    app.mount("/replicate", create_replicate_app(app.state))
    return app
