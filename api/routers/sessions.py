"""Session events: what the shopper does now shapes their next image set."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path

from api.auth import Caller, caller
from api.deps import get_service
from api.routers.events import event_limits
from api.routers.images import AUTH_ERRORS
from api.schemas import ID_PATTERN, ErrorOut, SessionEventsIn, SessionEventsOut
from api.settings import Settings, app_settings
from engine.serving.service import Service
from engine.serving.sessions import SessionEvent, SessionStoreUnavailable
from engine.serving.types import UnknownItems

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post(
    "/{session_id}/events",
    response_model=SessionEventsOut,
    responses={
        **AUTH_ERRORS,
        404: {"model": ErrorOut, "description": "an item_id that names no item of the serving catalogue"},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
    summary="Record session events; the next image set for this session reflects them (a shopper token links "
    "the session to its shopper, so that erasing the shopper erases it too)",
)
def post_events(
    body: SessionEventsIn,
    session_id: Annotated[str, Path(pattern=ID_PATTERN)],
    service: Annotated[Service, Depends(get_service)],
    who: Annotated[Caller, Depends(caller)],
    settings: Annotated[Settings, Depends(app_settings)],
) -> SessionEventsOut:
    now = datetime.now(UTC)
    limits = event_limits(settings)
    events = []
    for i, e in enumerate(body.events):
        moment = _utc(e.timestamp, f"events[{i}]") if e.timestamp else now
        ts = moment.timestamp()
        if (limits.earliest is not None and ts < limits.earliest) or (limits.latest is not None and ts > limits.latest):
            raise HTTPException(
                422,
                f"events[{i}]: timestamp {moment.isoformat()} lies outside the accepted window: at most "
                f"{settings.event_retention_days} days old and 5 minutes ahead of the server's clock",
            )
        events.append(SessionEvent(item_id=e.item_id, event_type=e.event_type, timestamp=moment))
    try:
        # a shopper token names the shopper: the session is linked to them, and their precomputed sets dropped
        total = service.add_session_events(session_id, events, owner=who.pseudonym)
    except UnknownItems as exc:  # ids that name nothing, as GET /v1/items/{item_id} answers them
        raise HTTPException(404, str(exc)) from exc
    except SessionStoreUnavailable as exc:
        logger.error("session %s: events not stored: %s", session_id, exc)
        raise HTTPException(
            503,
            "the session store does not answer, so these events were not stored; retry shortly",
            headers={"Retry-After": "5"},
        ) from exc
    return SessionEventsOut(session_id=session_id, accepted=len(events), session_events=total)


def _utc(moment: datetime, where: str) -> datetime:
    """Timestamps without a zone are taken as UTC (documented in the schema); 422 for a moment so near year 1
    or 9999 that it has no UTC date-time."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise HTTPException(422, f"{where}: timestamp {moment.isoformat()} is out of range") from None
