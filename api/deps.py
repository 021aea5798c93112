"""Dependency wiring: handlers get the serving state and settings through these, so tests can override them."""

from __future__ import annotations

from fastapi import HTTPException, Request

from engine.experiments.eventstore import EventStore
from engine.serving.state import ServingState
from engine.serving.storefront import Storefront


def get_state(request: Request) -> ServingState:
    return request.app.state.serving


def get_event_store(request: Request) -> EventStore:
    store = getattr(request.app.state, "events", None)
    if store is None:
        reason = getattr(request.app.state, "events_error", "it was not opened")
        raise HTTPException(503, f"the event store is unavailable ({reason}); check VITRINE_DATABASE_URL")
    return store


def get_storefront(request: Request) -> Storefront:
    """Image sets with experiments (the event store may be None: then no experiment applies)."""
    return request.app.state.storefront
