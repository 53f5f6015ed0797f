"""/v1/trainings: start a LoRA training, follow it (JSON or Server-Sent Events), cancel it."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response, StreamingResponse

from app.core.db import session_scope
from app.core.deps import DB, AppSettings, Bearer, CurrentUser, as_user
from app.core.http_ratelimit import RateLimit, RateLimitedRoute
from app.core.openapi import errors
from app.core.pagination import Page, PageParams, next_cursor
from app.core.ratelimit import TRAININGS
from app.db import Training
from app.trainings import service
from app.trainings.schemas import DeliveryRead, TrainingCreate, TrainingRead

router = APIRouter(prefix="/v1/trainings", tags=["trainings"], route_class=RateLimitedRoute)

EVENT_POLL_S = 0.5
KEEPALIVE_S = 15.0


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TrainingRead,
    dependencies=[Depends(RateLimit(TRAININGS))],
    responses=errors(404, 409),
)
def create_training(data: TrainingCreate, session: DB, user: CurrentUser, settings: AppSettings) -> TrainingRead:
    """Queue a training on the subject's selected photos; 409 while another of yours is queued or running."""
    return service.to_read(service.create_training(session, user=user, data=data, settings=settings))


@router.get("", response_model=Page[TrainingRead])
def list_trainings(session: DB, user: CurrentUser, page: Annotated[PageParams, Depends()]) -> Page[TrainingRead]:
    """The caller's trainings, oldest first."""
    rows = service.list_trainings(session, user=user, after=page.after, limit=page.limit)
    return Page(items=[service.to_read(t) for t in rows[: page.limit]], next_cursor=next_cursor(rows, page.limit))


@router.get("/{training_id}", response_model=TrainingRead)
async def get_training(training_id: uuid.UUID, request: Request, _: Bearer) -> Response:
    """The training's status and progress: the call every client polls, one statement from the event loop."""
    authorization = request.headers.get("authorization")
    found = await request.app.state.reader.owned(Training.__table__, authorization=authorization, row_id=training_id)
    if found is None:  # not a good key: the ordinary path words the 401 and records it
        return await as_user(
            request,
            lambda session, user: service.to_read(service.get_training(session, user=user, training_id=training_id)),
        )
    if found.row is None:
        raise service.training_not_found()
    return Response(service.to_read(found.row).model_dump_json(), media_type="application/json")


@router.post("/{training_id}/cancel", response_model=TrainingRead)
def cancel_training(training_id: uuid.UUID, session: DB, user: CurrentUser, settings: AppSettings) -> TrainingRead:
    """Cancel a queued or running training; the worker stops within a few seconds and frees the GPU."""
    training = service.get_training(session, user=user, training_id=training_id)
    return service.to_read(service.cancel_training(session, training=training, settings=settings))


@router.get("/{training_id}/webhook-deliveries", response_model=list[DeliveryRead])
def webhook_deliveries(training_id: uuid.UUID, session: DB, user: CurrentUser) -> list[DeliveryRead]:
    """Every webhook this training sent or is sending, oldest first, with each attempt's answer."""
    training = service.get_training(session, user=user, training_id=training_id)
    return service.deliveries(session, training=training)


@router.get("/{training_id}/events", response_class=StreamingResponse)
def training_events(training_id: uuid.UUID, request: Request, session: DB, user: CurrentUser) -> StreamingResponse:
    """Server-Sent Events: `status` when the status changes, `progress` when the progress does; ends when done."""
    service.get_training(session, user=user, training_id=training_id)  # 404 before the stream starts
    factory = request.app.state.session_factory

    def read() -> dict | None:
        with session_scope(factory) as s:
            row = s.get(Training, training_id)
            return service.to_read(row).model_dump(mode="json") if row is not None else None

    async def stream() -> AsyncIterator[str]:
        last_status, last_progress, counter = None, None, 0
        idle = 0.0
        yield "retry: 2000\n\n"
        while True:
            if await request.is_disconnected():
                return
            body = await anyio.to_thread.run_sync(read)
            if body is None:
                yield "event: deleted\ndata: {}\n\n"
                return
            events = []
            if body["status"] != last_status:
                events.append("status")
            elif body["progress"] != last_progress:
                events.append("progress")
            for kind in events:
                counter += 1
                yield f"id: {counter}\nevent: {kind}\ndata: {json.dumps(body)}\n\n"
                idle = 0.0
            last_status, last_progress = body["status"], body["progress"]
            if body["status"] in service.TERMINAL:
                return
            await anyio.sleep(EVENT_POLL_S)
            idle += EVENT_POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield ": keepalive\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
