"""Liveness and readiness."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from api.deps import get_service
from api.schemas import HealthOut
from engine.serving.service import Service

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def healthz(service: Annotated[Service, Depends(get_service)]) -> HealthOut | JSONResponse:
    # a host that only a balancer's health checks reach still follows a promotion (and erasures made elsewhere)
    service.follow_pointer()
    if service.version is None:
        body = HealthOut(status="no_bundle", bundle_version=None, detail=service.last_error)
        return JSONResponse(body.model_dump(), status_code=503)
    return HealthOut(status="ok", bundle_version=service.version)
