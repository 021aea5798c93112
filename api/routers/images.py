"""Personalised image sets and the generated images themselves."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import Response

from api.deps import get_state
from api.schemas import ErrorOut, GeneratedImageOut, ImageSetOut, NearestItemOut
from api.settings import Settings, get_settings
from engine.personaliser import UnknownImage
from engine.serving import ServingState

router = APIRouter(prefix="/v1", tags=["images"])

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
UserId = Annotated[str, Path(pattern=ID_PATTERN, description="shopper id: 1-128 letters, digits or _.:@-")]


@router.get(
    "/users/{user_id}/image-set",
    response_model=ImageSetOut,
    responses={422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="A personalised set of generated product images, each linked to real catalogue items",
)
def image_set(
    request: Request,
    user_id: UserId,
    state: Annotated[ServingState, Depends(get_state)],
    settings: Annotated[Settings, Depends(get_settings)],
    n: Annotated[int, Query(ge=1, description="number of images")] = 8,
    neighbours: Annotated[int, Query(ge=1, description="nearest catalogue items per image")] = 4,
    session_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> ImageSetOut:
    if n > settings.max_set_size:
        raise HTTPException(422, f"n must be at most {settings.max_set_size}; got {n}")
    if neighbours > settings.max_neighbours:
        raise HTTPException(422, f"neighbours must be at most {settings.max_neighbours}; got {neighbours}")
    result = state.image_set(user_id, n, neighbours=neighbours, session_id=session_id)
    base = str(request.base_url).rstrip("/")
    return ImageSetOut(
        user_id=result.user_id,
        session_id=session_id,
        strategy=result.strategy,
        bundle_version=result.bundle_version,
        images=[
            GeneratedImageOut(
                image_id=img.image_id,
                url=f"{base}/v1/images/{img.image_id}.png",
                slot=img.slot,
                condition=img.condition,
                score=img.score,
                nearest_items=[
                    NearestItemOut(
                        item_id=it.item_id,
                        similarity=it.similarity,
                        attributes=it.attributes,
                        price=it.price,
                        url=f"{base}/v1/items/{it.item_id}",
                        image_url=f"{base}/v1/items/{it.item_id}/image.png",
                    )
                    for it in img.nearest
                ],
            )
            for img in result.images
        ],
    )


@router.get(
    "/images/{image_id}.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
    summary="A generated image (regenerated from its id when not cached)",
)
def image_png(image_id: str, state: Annotated[ServingState, Depends(get_state)]) -> Response:
    try:
        png = state.personaliser.render_png(image_id)
    except UnknownImage as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400, immutable"})
