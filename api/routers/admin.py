"""Admin: switch to the promoted bundle without stopping the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from api.auth import require_admin
from api.deps import get_service
from api.schemas import ErrorOut
from engine.artifacts.registry import BundleRefused
from engine.serving.service import Service

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


class ReloadOut(BaseModel):
    previous: str | None
    serving: str


@router.post(
    "/reload",
    response_model=ReloadOut,
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 409: {"model": ErrorOut}},
    summary="Load the registry's CURRENT bundle (after `vitrine promote`); requests in flight finish on the old one",
)
def reload(service: Annotated[Service, Depends(get_service)]) -> ReloadOut:
    previous = service.version
    try:
        serving = service.reload()
    except BundleRefused as exc:
        raise HTTPException(409, f"{exc}; still serving {previous}") from exc
    return ReloadOut(previous=previous, serving=serving)
