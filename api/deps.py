"""Dependency wiring: handlers get the service, the event store, settings and the calling shopper through
these, so tests can override them. They are ``async``, like those of :mod:`api.auth`, because they do no I/O:
FastAPI runs a plain ``def`` dependency in a worker thread, a hop per dependency per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request

from api.auth import Caller, caller, owns
from api.schemas import USER_ID_PATTERN, USER_ID_RULE
from engine.experiments.eventstore import EventStore
from engine.serving.service import Service


async def get_service(request: Request) -> Service:
    """The one serving object: image sets (with experiments), images, items, sessions, reloads."""
    return request.app.state.service


async def get_event_store(request: Request) -> EventStore:
    store = getattr(request.app.state, "events", None)
    if store is None:
        reason = getattr(request.app.state, "events_error", "it was not opened")
        raise HTTPException(503, f"the event store is unavailable ({reason}); check VITRINE_DATABASE_URL")
    return store


@dataclass(frozen=True)
class Shopper:
    """The shopper a request names: the id the shop sent (echoed back, never stored) and its pseudonym."""

    user_id: str
    pseudonym: str


async def path_shopper(
    user_id: Annotated[str, Path(pattern=USER_ID_PATTERN, description=USER_ID_RULE)],
    who: Annotated[Caller, Depends(caller)],
    service: Annotated[Service, Depends(get_service)],
) -> Shopper:
    """The path's shopper, pseudonymised; 403 when a shopper token names another shopper."""
    owns(who, service.identities.pseudonyms.candidates(user_id))
    return Shopper(user_id, service.pseudonym(user_id))
