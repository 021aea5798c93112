"""Shopper tokens for browsers, and the right to erasure (both for a storefront's back end)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from api.auth import Caller, ShopperTokens, get_tokens, trusted_caller
from api.deps import get_service
from api.routers.images import AUTH_ERRORS
from api.schemas import USER_ID_PATTERN, USER_ID_RULE, ErrorOut
from api.settings import Settings, app_settings
from engine.serving.service import Service

router = APIRouter(prefix="/v1", tags=["privacy"])
UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, description=USER_ID_RULE)]


class TokenIn(BaseModel):
    user_id: str = Field(pattern=USER_ID_PATTERN, max_length=128, description=USER_ID_RULE)
    ttl_seconds: int | None = Field(
        None, ge=60, le=86_400, description="lifetime (default: the server's VITRINE_SHOPPER_TOKEN_SECONDS)"
    )


class TokenOut(BaseModel):
    token: str = Field(description="send as 'Authorization: Bearer <token>' from the shopper's browser")
    expires_at: int = Field(description="UTC epoch seconds")


class ErasureOut(BaseModel):
    erased: bool
    removed: dict[str, int] = Field(description="rows or entries removed, per place")
    detail: str


@router.post(
    "/tokens",
    response_model=TokenOut,
    responses={**AUTH_ERRORS, 422: {"model": ErrorOut}},
    summary="A short-lived shopper token for the shopper's browser: it reads only their set and writes only "
    "their events (service key)",
)
def shopper_token(
    body: TokenIn,
    who: Annotated[Caller, Depends(trusted_caller)],
    service: Annotated[Service, Depends(get_service)],
    tokens: Annotated[ShopperTokens, Depends(get_tokens)],
    settings: Annotated[Settings, Depends(app_settings)],
) -> TokenOut:
    token, expires = tokens.issue(service.pseudonym(body.user_id), body.ttl_seconds or settings.shopper_token_seconds)
    return TokenOut(token=token, expires_at=expires)


@router.delete(
    "/users/{user_id}",
    response_model=ErasureOut,
    responses={**AUTH_ERRORS, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Erase a shopper now: their events, exposures, sessions and cached sets; serving treats them as new "
    "and the next training leaves them out (service key)",
)
def erase(
    user_id: UserId,
    who: Annotated[Caller, Depends(trusted_caller)],
    service: Annotated[Service, Depends(get_service)],
) -> ErasureOut:
    result = service.forget(user_id)
    return ErasureOut(
        erased=True,
        removed=result.removed,
        detail="erased; the serving bundle masks them now and the next `vitrine train` leaves their data out",
    )
