"""Photo restoration for a storefront's back end: a merchant's photo in, the same photo restored out."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.auth import Caller, trusted_caller
from api.deps import get_service
from api.schemas import ErrorOut
from engine.serving.enhance import MAX_ENHANCE_PIXELS, NotAnImage, SizeUnavailable
from engine.serving.service import Service

router = APIRouter(prefix="/v1", tags=["images"])

_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}


@router.post(
    "/enhance",
    response_class=Response,
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        200: {"content": {"image/png": {}}, "description": "the restored photo, as PNG, of the same size"},
        422: {"model": ErrorOut, "description": "not a readable image, too large, or no restoration net"},
        503: {"model": ErrorOut},
    },
    summary="Restore a catalogue photo (denoise, remove JPEG blocking, sharpen mild blur) with the bundle's "
    f"restoration net; the body is the photo's bytes (PNG, JPEG, WebP), at most {MAX_ENHANCE_PIXELS:,} pixels "
    "(service key)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"image/png": _IMAGE_BODY, "image/jpeg": _IMAGE_BODY, "image/webp": _IMAGE_BODY},
        }
    },
)
async def enhance(
    request: Request,
    who: Annotated[Caller, Depends(trusted_caller)],
    service: Annotated[Service, Depends(get_service)],
) -> Response:
    data = await request.body()
    try:  # the net runs in a worker thread: the event loop keeps answering other requests meanwhile
        png = await run_in_threadpool(service.enhance_png, data)
    except (NotAnImage, SizeUnavailable) as exc:
        raise HTTPException(422, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
