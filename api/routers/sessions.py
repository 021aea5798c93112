"""Session events: what the shopper does now shapes their next image set."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from api.deps import get_service
from api.routers.images import ID_PATTERN
from api.schemas import ErrorOut, SessionEventsIn, SessionEventsOut
from engine.serving.service import Service
from engine.serving.sessions import SessionEvent, SessionStoreUnavailable
from engine.serving.types import UnknownItems

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post(
    "/{session_id}/events",
    response_model=SessionEventsOut,
    responses={422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Record session events; the next image set for this session reflects them",
)
def post_events(
    body: SessionEventsIn,
    session_id: Annotated[str, Path(pattern=ID_PATTERN)],
    service: Annotated[Service, Depends(get_service)],
) -> SessionEventsOut:
    now = datetime.now(UTC)
    events = [
        SessionEvent(item_id=e.item_id, event_type=e.event_type, timestamp=_utc(e.timestamp) if e.timestamp else now)
        for e in body.events
    ]
    try:
        total = service.add_session_events(session_id, events)
    except UnknownItems as exc:
        raise HTTPException(422, str(exc)) from exc
    except SessionStoreUnavailable as exc:
        logger.error("session %s: events not stored: %s", session_id, exc)
        raise HTTPException(
            503,
            "the session store does not answer, so these events were not stored; retry shortly",
            headers={"Retry-After": "5"},
        ) from exc
    return SessionEventsOut(session_id=session_id, accepted=len(events), session_events=total)


def _utc(moment: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC (documented in the schema)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
