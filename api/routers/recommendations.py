"""A shopper's ranked catalogue items: what Vitrine's recommender serves, the list behind the image sets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from api.deps import Shopper, get_service, path_shopper
from api.routers.images import AUTH_ERRORS
from api.schemas import ID_PATTERN, ErrorOut, ItemOut, RecommendationsOut
from engine.serving.service import Service

router = APIRouter(prefix="/v1", tags=["images"])

MAX_K = 100


@router.get(
    "/users/{user_id}/recommendations",
    response_model=RecommendationsOut,
    responses={**AUTH_ERRORS, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="The shopper's top-k catalogue items as serving ranks them (the bundle's ranker; a session's "
    "events count as the shopper's latest); the same ranking `vitrine evaluate recommenders` measures",
)
def recommendations(
    request: Request,
    shopper: Annotated[Shopper, Depends(path_shopper)],
    service: Annotated[Service, Depends(get_service)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="number of items")] = 12,
    session_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> RecommendationsOut:
    item_ids, ranked_by, version = service.recommended_items(shopper.pseudonym, k, session_id=session_id)
    base = str(request.base_url).rstrip("/")
    items = []
    for item_id in item_ids:
        found = service.item(item_id) or {
            "item_id": item_id,
            "attributes": {},
            "price": None,
            "has_image": False,
            "popularity": 0.0,
        }
        image_url = f"{base}/v1/items/{item_id}/image.png" if found["has_image"] else None
        items.append(ItemOut(**found, image_url=image_url))
    return RecommendationsOut(
        user_id=shopper.user_id,
        session_id=session_id,
        bundle_version=version,
        ranked_by=ranked_by,
        items=items,
    )
