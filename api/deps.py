"""Dependency wiring: handlers get the serving state and settings through these, so tests can override them."""

from __future__ import annotations

from fastapi import Request

from engine.serving import ServingState


def get_state(request: Request) -> ServingState:
    return request.app.state.serving
