"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import get_state
from api.schemas import HealthOut
from engine.serving.state import ServingState

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(state: Annotated[ServingState, Depends(get_state)]) -> HealthOut | JSONResponse:
    if state.version is None:
        body = HealthOut(status="no_bundle", bundle_version=None, detail=state.last_error)
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthOut(status="ok", bundle_version=state.version)
