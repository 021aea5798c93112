"""Shopper events for experiments: clicks, add_to_cart, purchases (with revenue) and views, idempotent by id."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import get_event_store
from api.schemas import ErrorOut
from engine.experiments.eventstore import BadEvents, EventStore, ingest_events
from features.ids import MAX_ID_LENGTH

router = APIRouter(prefix="/v1", tags=["events"])

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_event_id: Id = Field(description="unique per event, chosen by the client; resending it is a no-op")
    kind: Literal["view", "click", "add_to_cart", "purchase"]
    ts: datetime | None = Field(None, description="when it happened, ISO 8601 (default: now; no zone = UTC)")
    user_id: Id | None = None
    session_id: Id | None = None
    item_id: Id | None = Field(None, description="required for view, add_to_cart and purchase")
    image_id: Id | None = Field(None, description="the image clicked (click events)")
    revenue: float | None = Field(None, description="purchases only, ≥ 0")


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=1000)


class EventResult(BaseModel):
    client_event_id: str
    status: Literal["stored", "duplicate"]


class EventsOut(BaseModel):
    stored: int
    duplicates: int
    results: list[EventResult]


@router.post(
    "/events",
    response_model=EventsOut,
    responses={422: {"model": ErrorOut}},
    summary="Record a batch of events; duplicates (same client_event_id) are reported, not stored twice",
)
def post_events(body: EventsIn, store: Annotated[EventStore, Depends(get_event_store)]) -> EventsOut | JSONResponse:
    try:
        result = ingest_events(store, [e.model_dump(exclude_none=True) for e in body.events])
    except BadEvents as exc:
        errors = [{"index": i, "client_event_id": cid, "msg": msg} for i, cid, msg in exc.errors]
        return JSONResponse({"detail": str(exc), "errors": errors}, status_code=422)
    return EventsOut(
        stored=result.stored,
        duplicates=result.duplicates,
        results=[
            EventResult(client_event_id=e.client_event_id, status="stored" if new else "duplicate")
            for e, new in zip(body.events, result.new, strict=True)
        ],
    )
