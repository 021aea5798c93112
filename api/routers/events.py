"""Shopper events for experiments: clicks, add_to_cart, purchases (with revenue) and views, idempotent by id."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from api.auth import Caller, caller, owns
from api.deps import get_event_store, get_service
from api.routers.images import AUTH_ERRORS
from api.schemas import USER_ID_PATTERN, USER_ID_RULE, ErrorOut, IsoTime
from api.settings import Settings, app_settings
from engine.experiments.eventstore import BadEvents, EventConflict, EventStore, ingest_events
from engine.experiments.ingest import EventLimits
from engine.serving.service import Service
from features.ids import MAX_ID_LENGTH

router = APIRouter(prefix="/v1", tags=["events"])

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]


#: The rules that tie fields together, in the schema itself: whose action it was, and what a click names.
_SOMEONE: list[JsonValue] = [
    {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
    {"required": ["session_id"], "properties": {"session_id": {"type": "string"}}},
]
_SOMETHING_CLICKED: list[JsonValue] = [
    {"required": ["image_id"], "properties": {"image_id": {"type": "string"}}},
    {"required": ["item_id"], "properties": {"item_id": {"type": "string"}}},
]
#: The window of accepted times; api.limits states the configured days in the OpenAPI document.
TS_RULE = (
    "when it happened, ISO 8601 (default: now; no zone = UTC); at most VITRINE_EVENT_RETENTION_DAYS days old and "
    "5 minutes ahead of the server's clock (any time when the server runs with VITRINE_CLIENT_CLOCK)"
)


class _EventIn(BaseModel):
    """What every event carries: its id, time and whose action it was (a user_id, a session_id, or both)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": _SOMEONE})

    client_event_id: Id = Field(
        description="unique per event, chosen by the client; resending the same event is a no-op, reusing the id "
        "for a different event is a conflict (409)"
    )
    ts: IsoTime | None = Field(None, description=TS_RULE)
    user_id: str | None = Field(
        None,
        pattern=USER_ID_PATTERN,
        max_length=MAX_ID_LENGTH,
        description=f"{USER_ID_RULE}; stored only as its pseudonym. With a shopper token: that shopper's id, or none",
    )
    session_id: Id | None = None

    @model_validator(mode="after")
    def _someone(self) -> Self:
        if self.user_id is None and self.session_id is None:
            raise ValueError("an event needs a user_id or a session_id (or both)")
        return self


class ItemEventIn(_EventIn):
    """A view or an add_to_cart of a catalogue item."""

    kind: Literal["view", "add_to_cart"]
    item_id: Id = Field(description="the catalogue item")
    image_id: Id | None = Field(None, description="the image the item was reached from, if any")


class PurchaseIn(_EventIn):
    """A purchase of a catalogue item, with its revenue."""

    kind: Literal["purchase"]
    item_id: Id = Field(description="the catalogue item bought")
    image_id: Id | None = Field(None, description="the image the item was reached from, if any")
    # the maximum is a setting (VITRINE_MAX_REVENUE); api.limits states it in the OpenAPI document
    revenue: float = Field(ge=0, description="the purchase's revenue, ≥ 0 and at most VITRINE_MAX_REVENUE")


class ClickIn(_EventIn):
    """A click on an image of a set (image_id), or on an item shown with it (item_id), or both."""

    model_config = ConfigDict(json_schema_extra={"allOf": [{"anyOf": _SOMEONE}, {"anyOf": _SOMETHING_CLICKED}]})

    kind: Literal["click"]
    image_id: Id | None = Field(None, description="the image clicked")
    item_id: Id | None = Field(None, description="the item clicked")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.image_id is None and self.item_id is None:
            raise ValueError("a click event needs the image_id clicked (or the item_id)")
        return self


EventIn = Annotated[ItemEventIn | PurchaseIn | ClickIn, Field(discriminator="kind")]


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
    responses={
        **AUTH_ERRORS,
        409: {"model": ErrorOut, "description": "a client_event_id sent before with a different event; nothing stored"},
        422: {"model": ErrorOut},
    },
    summary="Record a batch of events, all or nothing; resent events (same client_event_id, same event) are "
    "reported as duplicates, not stored twice",
)
def post_events(
    body: EventsIn,
    store: Annotated[EventStore, Depends(get_event_store)],
    service: Annotated[Service, Depends(get_service)],
    who: Annotated[Caller, Depends(caller)],
    settings: Annotated[Settings, Depends(app_settings)],
) -> EventsOut | JSONResponse:
    records = []
    for event in body.events:
        record = event.model_dump(exclude_none=True)
        if event.user_id is not None:  # only the pseudonym is stored
            owns(who, service.identities.pseudonyms.candidates(event.user_id))
            record["user_id"] = service.pseudonym(event.user_id)
        elif who.pseudonym is not None:  # a shopper token's events are its shopper's
            record["user_id"] = who.pseudonym
        records.append(record)
    try:
        result = ingest_events(store, records, limits=event_limits(settings))
    except (BadEvents, EventConflict) as exc:
        errors = [{"index": i, "client_event_id": cid, "msg": msg} for i, cid, msg in exc.errors]
        status = 409 if isinstance(exc, EventConflict) else 422
        return JSONResponse({"detail": str(exc), "errors": errors}, status_code=status)
    return EventsOut(
        stored=result.stored,
        duplicates=result.duplicates,
        results=[
            EventResult(client_event_id=e.client_event_id, status="stored" if new else "duplicate")
            for e, new in zip(body.events, result.new, strict=True)
        ],
    )


def event_limits(settings: Settings) -> EventLimits:
    """The revenue limit and the window of event times, now; no window when the client's clock is the clock."""
    retention = None if settings.client_clock else settings.event_retention_days
    return EventLimits.around(retention_days=retention, max_revenue=settings.max_revenue)
