"""Dependency wiring: handlers get the service, the event store and settings through these, so tests can
override them."""

from __future__ import annotations

from fastapi import HTTPException, Request

from engine.experiments.eventstore import EventStore
from engine.serving.service import Service


def get_service(request: Request) -> Service:
    """The one serving object: image sets (with experiments), images, items, sessions, reloads."""
    return request.app.state.service


def get_event_store(request: Request) -> EventStore:
    store = getattr(request.app.state, "events", None)
    if store is None:
        reason = getattr(request.app.state, "events_error", "it was not opened")
        raise HTTPException(503, f"the event store is unavailable ({reason}); check VITRINE_DATABASE_URL")
    return store
