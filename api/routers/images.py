"""Personalised image sets and the generated images themselves."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import StringConstraints

from api.deps import Shopper, get_service, path_shopper
from api.schemas import ID_PATTERN, ErrorOut, ExplanationOut, GeneratedImageOut, ImageSetOut, IsoTime, NearestItemOut
from api.settings import Settings, app_settings
from engine.experiments import UnknownExperiment
from engine.experiments.definition import NAME_PATTERN
from engine.serving.enhance import SizeUnavailable
from engine.serving.latents import LatentStoreUnavailable
from engine.serving.service import Service
from engine.serving.types import GeneratedImage, NearestItem, PopularSet, UnknownImage
from features.ids import MAX_ID_LENGTH

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", tags=["images"])

AUTH_ERRORS: dict[int | str, dict] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}}


@router.get(
    "/users/{user_id}/image-set",
    response_model=ImageSetOut,
    responses={**AUTH_ERRORS, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="A personalised set of generated product images, each linked to real catalogue items "
    "(or, in an experiment's popular arm, catalogue photos of popular items); records experiment exposures",
)
def image_set(
    request: Request,
    shopper: Annotated[Shopper, Depends(path_shopper)],
    service: Annotated[Service, Depends(get_service)],
    settings: Annotated[Settings, Depends(app_settings)],
    n: Annotated[int, Query(ge=1, description="number of images")] = 8,
    neighbours: Annotated[int, Query(ge=1, description="nearest catalogue items per image")] = 4,
    session_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    experiment: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, description="serve this experiment only (default: the first running one)"),
    ] = None,
    exposure_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="id of the exposure: a retried request records it once")
    ] = None,
    at: Annotated[
        IsoTime | None,
        Query(description="the request's time, ISO 8601; only when the server runs with VITRINE_CLIENT_CLOCK=1"),
    ] = None,
    classes: Annotated[
        list[Annotated[str, StringConstraints(pattern=r"[^,\s]", max_length=MAX_ID_LENGTH)]] | None,
        Query(
            description="only these classes, in the images and their items (repeat it or separate by commas); "
            "404 for a class the catalogue does not have"
        ),
    ] = None,
    in_stock_only: Annotated[bool, Query(description="attach only items in stock")] = True,
) -> ImageSetOut:
    if n > settings.max_set_size:
        raise HTTPException(422, f"n must be at most {settings.max_set_size}; got {n}")
    if neighbours > settings.max_neighbours:
        raise HTTPException(422, f"neighbours must be at most {settings.max_neighbours}; got {neighbours}")
    if at is not None and not settings.client_clock:
        raise HTTPException(
            422, "at: the request time can only be set when the server runs with VITRINE_CLIENT_CLOCK=1 (simulations)"
        )
    try:
        shown = service.image_set(
            shopper.pseudonym,
            n,
            neighbours=neighbours,
            session_id=session_id,
            at=at,
            experiment=experiment,
            exposure_id=exposure_id,
            classes=_split(classes),
            in_stock_only=in_stock_only,
        )
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
    except ValueError as exc:  # an unknown class, or filters that leave no catalogue item: nothing to show
        raise HTTPException(404, str(exc)) from exc
    base = str(request.base_url).rstrip("/")
    result = shown.images
    if isinstance(result, PopularSet):
        images = [
            GeneratedImageOut(
                image_id=img.image_id,
                url=f"{base}/v1/items/{img.item_id}/image.png",
                slot=img.slot,
                source="catalogue",
                item_id=img.item_id,
                condition=img.condition,
                score=img.score,
                nearest_items=nearest_out(base, img.nearest),
            )
            for img in result.images
        ]
    else:
        images = [
            GeneratedImageOut(
                image_id=img.image_id,
                url=f"{base}/v1/images/{img.image_id}.png",
                slot=img.slot,
                condition=img.condition,
                score=img.score,
                nearest_items=nearest_out(base, img.nearest),
                explanation=_explanation_out(img),
            )
            for img in result.images
        ]
    return ImageSetOut(
        user_id=shopper.user_id,
        session_id=session_id,
        strategy=result.strategy,
        bundle_version=result.bundle_version,
        experiment=shown.experiment,
        variant=shown.variant,
        exposure_id=shown.exposure_id if shown.experiment else None,
        experiment_skipped=shown.experiment_skipped,
        min_pairwise_distance=getattr(result, "min_pairwise_distance", None),
        images=images,
    )


def _split(values: list[str] | None) -> tuple[str, ...] | None:
    if values is None:
        return None
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _explanation_out(img: GeneratedImage) -> ExplanationOut | None:
    e = img.explanation
    if e is None:
        return None
    return ExplanationOut(
        reason=e.reason,
        condition_probability=e.condition_probability,
        condition_support=e.condition_support,
        preference_score=e.preference_score,
        preference_score_unoptimised=e.preference_score_unoptimised,
        realism=e.realism,
        optimised=e.optimised,
        item_ids=[it.item_id for it in img.nearest],
    )


def nearest_out(base: str, nearest: list[NearestItem]) -> list[NearestItemOut]:
    """Catalogue items as the API shows them, with their URLs under ``base``."""
    return [
        NearestItemOut(
            item_id=it.item_id,
            similarity=it.similarity,
            attributes=it.attributes,
            price=it.price,
            url=f"{base}/v1/items/{it.item_id}",
            image_url=f"{base}/v1/items/{it.item_id}/image.png",
            shopper_score=it.shopper_score,
        )
        for it in nearest
    ]


@router.get(
    "/images/{image_id}.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}},
        404: {"model": ErrorOut},
        422: {"model": ErrorOut},
        503: {"model": ErrorOut},
    },
    summary="A generated image, by the signed id an image set gave (regenerated when not cached); 404 for an id "
    "this service did not issue or that expired",
)
def image_png(
    image_id: str,
    service: Annotated[Service, Depends(get_service)],
    size: Annotated[
        int | None,
        Query(
            description="side in pixels: the generator's (64), or 2× / 4× it (128, 256) made by the bundle's "
            "super-resolution; 422 for another size, or for a larger one when the bundle has no sr component"
        ),
    ] = None,
) -> Response:
    try:
        png = service.render_png(image_id, size)
    except UnknownImage as exc:
        raise HTTPException(404, str(exc)) from exc
    except SizeUnavailable as exc:
        raise HTTPException(422, str(exc)) from exc
    except LatentStoreUnavailable as exc:
        logger.error("image %s not rendered: %s", image_id, exc)
        raise HTTPException(
            503, "the store of image latent codes does not answer; retry shortly", headers={"Retry-After": "5"}
        ) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400, immutable"})
