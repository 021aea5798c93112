"""The storefront demo page: plain HTML and JavaScript over the public API, no build step.

``GET /demo`` serves ``api/static/demo.html``: choose or type a shopper, see their set (the variant of the
running experiment, if any) with each image's "shop similar" items, click, add to cart or buy (events sent
to ``POST /v1/events``), and watch the experiment's report and chart update.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from api.deps import get_service
from engine.serving.service import Service

router = APIRouter(tags=["demo"])


@router.get("/demo", response_class=HTMLResponse, summary="The storefront demo page", include_in_schema=False)
def demo_page() -> HTMLResponse:
    html = resources.files("api").joinpath("static/demo.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/demo/users.json", summary="Shoppers the serving model knows, for the demo page's picker")
def demo_users(
    service: Annotated[Service, Depends(get_service)],
    k: Annotated[int, Query(ge=1, le=200)] = 24,
) -> list[str]:
    return service.known_users(k)
