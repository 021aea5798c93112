"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class NearestItemOut(BaseModel):
    item_id: str
    similarity: float = Field(description="cosine similarity of image features, in [-1, 1]")
    attributes: dict[str, str]
    price: float | None
    url: str
    image_url: str


class GeneratedImageOut(BaseModel):
    image_id: str
    url: str
    slot: int
    condition: dict[str, str] = Field(description="the class and attributes the image was generated for")
    score: float = Field(description="probability of this condition for this shopper")
    nearest_items: list[NearestItemOut]


class ImageSetOut(BaseModel):
    user_id: str
    session_id: str | None
    strategy: str = Field(
        description="personalised (stored shopper) | session (session events folded in) | "
        "cold_start (unknown shopper, no session: popular conditions)"
    )
    bundle_version: str
    images: list[GeneratedImageOut]


class ItemOut(BaseModel):
    item_id: str
    attributes: dict[str, str]
    price: float | None
    has_image: bool
    popularity: float
    image_url: str | None


class HealthOut(BaseModel):
    status: str
    bundle_version: str | None
    detail: str | None = None


class ErrorOut(BaseModel):
    detail: str
    errors: list[dict] | None = None


class SessionEventIn(BaseModel):
    item_id: str = Field(min_length=1, max_length=128)
    event_type: Literal["view", "add_to_cart", "purchase"]
    timestamp: datetime | None = Field(None, description="when it happened, ISO 8601 (default: now; no zone = UTC)")


class SessionEventsIn(BaseModel):
    events: list[SessionEventIn] = Field(min_length=1, max_length=500)


class SessionEventsOut(BaseModel):
    session_id: str
    accepted: int
    session_events: int = Field(description="events this session now holds")
