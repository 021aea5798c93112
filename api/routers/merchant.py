"""The merchant's tools (a service key): images of a product the catalogue lacks, and tags for a product photo."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from api.auth import trusted_caller
from api.deps import get_service
from api.routers.images import nearest_out
from api.schemas import ErrorOut, NearestItemOut
from api.settings import Settings, app_settings
from engine.serving.products import UnknownAttributes
from engine.serving.service import Service
from engine.serving.tagging import IMAGE_TYPES, BadImage
from features.ids import MAX_ID_LENGTH

# a service key or the admin token: these are the merchant's tools, not the shopper's
router = APIRouter(prefix="/v1", tags=["merchant"], dependencies=[Depends(trusted_caller)])

#: The query parameters of /v1/generate that are not attributes; every other one names an attribute.
GENERATE_OPTIONS = frozenset({"n", "seed", "neighbours", "in_stock_only"})
MAX_TOP_K = 50
IMAGE_FIELD = "image"
ERRORS: dict[int | str, dict] = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 422: {"model": ErrorOut}}


class ProductImageOut(BaseModel):
    image_id: str
    url: str = Field(description="the PNG, rendered again from the signed id when it is not cached")
    slot: int
    judged: dict[str, float] = Field(
        description="per attribute, the probability the bundle's classifier gives the requested value on this image"
    )
    nearest_items: list[NearestItemOut] = Field(description="the nearest real catalogue items by image features")


class NewProductOut(BaseModel):
    condition: dict[str, str]
    in_catalogue: bool = Field(description="whether any catalogue item has exactly this combination")
    catalogue_items: int = Field(description="how many catalogue items have exactly this combination")
    seed: int
    bundle_version: str
    grounded_within_class: bool = Field(
        description="true: the nearest items are of the requested class; false: none of that class passed the "
        "stock filter, so every class was searched"
    )
    images: list[ProductImageOut]


class GuessOut(BaseModel):
    value: str
    probability: float


class TagsOut(BaseModel):
    bundle_version: str
    attributes: dict[str, list[GuessOut]] = Field(description="per attribute, the top_k values, most probable first")


AttributeValue = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_LENGTH)]


@router.get(
    "/generate",
    response_model=NewProductOut,
    responses={**ERRORS, 404: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Images of a product with the attribute values asked for, in the catalogue or not, each with the nearest "
    "real catalogue items; one query parameter per attribute of the catalogue (422 lists the known values)",
)
def generate(
    request: Request,
    service: Annotated[Service, Depends(get_service)],
    settings: Annotated[Settings, Depends(app_settings)],
    class_: Annotated[AttributeValue, Query(alias="class", description="the product's class, e.g. coat")] = None,
    colour: Annotated[AttributeValue, Query(description="its colour")] = None,
    pattern: Annotated[AttributeValue, Query(description="its pattern")] = None,
    n: Annotated[int, Query(ge=1, description="number of images")] = 4,
    seed: Annotated[int, Query(ge=0, le=2**63 - 1, description="the same seed gives the same images")] = 0,
    neighbours: Annotated[int, Query(ge=1, description="nearest catalogue items per image")] = 4,
    in_stock_only: Annotated[bool, Query(description="attach only items in stock")] = True,
) -> NewProductOut | JSONResponse:
    if n > settings.max_set_size:
        raise HTTPException(422, f"n must be at most {settings.max_set_size}; got {n}")
    if neighbours > settings.max_neighbours:
        raise HTTPException(422, f"neighbours must be at most {settings.max_neighbours}; got {neighbours}")
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in GENERATE_OPTIONS:
            continue
        if name in values:
            raise HTTPException(422, f"{name}: give one value (a product has one {name})")
        if not value or len(value) > MAX_ID_LENGTH:
            raise HTTPException(422, f"{name}: a value of 1 to {MAX_ID_LENGTH} characters")
        values[name] = value
    personaliser = service.personaliser
    try:
        result = personaliser.new_product_images(
            values, n, seed=seed, neighbours=neighbours, in_stock_only=in_stock_only
        )
    except UnknownAttributes as exc:
        errors = [{"loc": ["query"], "msg": p, "type": "unknown_attribute"} for p in exc.problems]
        return JSONResponse({"detail": str(exc), "errors": errors}, status_code=422)
    except ValueError as exc:  # no catalogue item passes the stock filter, or a combination ids cannot name
        raise HTTPException(404, str(exc)) from exc
    base = str(request.base_url).rstrip("/")
    return NewProductOut(
        condition=result.condition,
        in_catalogue=result.in_catalogue,
        catalogue_items=result.catalogue_items,
        seed=result.seed,
        bundle_version=result.bundle_version,
        grounded_within_class=result.grounded_within_class,
        images=[
            ProductImageOut(
                image_id=img.image_id,
                url=f"{base}/v1/images/{img.image_id}.png",
                slot=img.slot,
                judged=img.judged,
                nearest_items=nearest_out(base, img.nearest),
            )
            for img in result.images
        ],
    )


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": f"the photo: the body itself, or the form field '{IMAGE_FIELD}'",
        "content": {
            **{media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES.values()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [IMAGE_FIELD],
                    "properties": {IMAGE_FIELD: {"type": "string", "format": "binary"}},
                    # the form is read for its one file; Starlette takes at most 4 other fields, each one text part
                    "maxProperties": 5,
                    "additionalProperties": {"type": "string"},
                }
            },
        },
    }
}


async def _image_bytes(request: Request) -> bytes:
    """The uploaded photo: the body (image/png or image/jpeg) or the multipart form's ``image`` file."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media in IMAGE_TYPES.values():
        return await request.body()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            part = form.get(IMAGE_FIELD)
            if not isinstance(part, UploadFile):
                raise HTTPException(422, f"the form has no file in the field '{IMAGE_FIELD}'; send the photo there")
            return await part.read()
    raise HTTPException(
        415,
        f"send the photo as the body with Content-Type {' or '.join(IMAGE_TYPES.values())}, or as the file "
        f"'{IMAGE_FIELD}' of a multipart/form-data body; got {media or 'no Content-Type'}",
    )


@router.post(
    "/tag",
    response_model=TagsOut,
    responses={
        **ERRORS,
        400: {"model": ErrorOut, "description": "the image is empty"},
        415: {"model": ErrorOut, "description": "the body is neither a PNG or JPEG nor a multipart form"},
        503: {"model": ErrorOut, "description": "no bundle is serving yet"},
    },
    openapi_extra=_IMAGE_BODY,
    summary="A product photo's class, colour and pattern (each attribute of the catalogue), the top_k values with "
    "their probabilities, from the bundle's classifier",
)
async def tag(
    request: Request,
    service: Annotated[Service, Depends(get_service)],
    top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K, description="values per attribute")] = 3,
) -> TagsOut:
    data = await _image_bytes(request)
    if not data:
        raise HTTPException(400, "the image is empty; send a PNG or JPEG file")
    personaliser = service.personaliser
    try:
        tags = await run_in_threadpool(personaliser.tagger.tag_bytes, data, top_k)
    except BadImage as exc:
        raise HTTPException(422, str(exc)) from exc
    return TagsOut(
        bundle_version=personaliser.version,
        attributes={
            attr: [GuessOut(value=g.value, probability=g.probability) for g in guesses]
            for attr, guesses in tags.items()
        },
    )
