"""Catalogue items: metadata and photos."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from fastapi.responses import FileResponse

from api.deps import get_service
from api.schemas import ErrorOut, ItemOut
from engine.serving.service import Service
from features.ids import MAX_ID_LENGTH

router = APIRouter(prefix="/v1/items", tags=["items"])

ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="a catalogue item id")]


@router.get("/{item_id}", response_model=ItemOut, responses={404: {"model": ErrorOut}})
def item(item_id: ItemId, request: Request, service: Annotated[Service, Depends(get_service)]) -> ItemOut:
    found = service.item(item_id)
    if found is None:
        raise HTTPException(404, f"no item {item_id!r} in the serving catalogue")
    base = str(request.base_url).rstrip("/")
    return ItemOut(**found, image_url=f"{base}/v1/items/{item_id}/image.png" if found["has_image"] else None)


@router.get("/{item_id}/image.png", response_class=FileResponse, responses={404: {"model": ErrorOut}})
def item_image(item_id: ItemId, service: Annotated[Service, Depends(get_service)]) -> FileResponse:
    path = service.item_image_path(item_id)
    if path is None:
        raise HTTPException(404, f"no image for item {item_id!r}")
    return FileResponse(path)
