"""The storefront demo page: plain HTML and JavaScript over the public API, no build step. Off unless the server
runs with ``--demo`` (``VITRINE_DEMO=1``), which ``make demo`` passes: its routes then answer, else 404.

``GET /demo`` serves ``api/static/demo.html``: choose or type a shopper, see their set (the variant of the
running experiment, if any) with each image's "shop similar" items, click, add to cart or buy (events sent
to ``POST /v1/events`` with the shopper token the page got from ``POST /demo/token``), and watch the
experiment's report and chart update. The demo routes play the storefront's back end: a real storefront mints
shopper tokens with its service key (``POST /v1/tokens``) and reads reports with it.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from api.auth import Caller, ShopperTokens, get_tokens
from api.deps import get_event_store, get_service
from api.routers.experiments import AsOf, Name, published
from api.routers.privacy import TokenIn, TokenOut
from api.settings import Settings, app_settings
from engine.experiments import UnknownExperiment, experiment_chart, experiment_report, list_experiments
from engine.experiments.eventstore import EventStore
from engine.serving.privacy import shoppers_known_to
from engine.serving.service import Service


async def demo_only(settings: Annotated[Settings, Depends(app_settings)]) -> None:
    if not settings.demo:
        raise HTTPException(404, "the demo is off; run the server with `vitrine serve --demo` to turn it on")


router = APIRouter(prefix="/demo", tags=["demo"], dependencies=[Depends(demo_only)], include_in_schema=False)
READER = Caller("service")  # what the page may read: the experiments without their salts


@router.get("", response_class=HTMLResponse, summary="The storefront demo page")
def demo_page() -> HTMLResponse:
    html = resources.files("api").joinpath("static/demo.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("/users.json", summary="Demo store shoppers the serving model knows, for the page's picker")
def demo_users(
    service: Annotated[Service, Depends(get_service)],
    settings: Annotated[Settings, Depends(app_settings)],
    k: Annotated[int, Query(ge=1, le=200)] = 24,
) -> list[str]:
    try:
        return shoppers_known_to(settings.demo_data, service.identities.pseudonyms, service.personaliser.knows, k)
    except (FileNotFoundError, ValueError) as exc:
        raise HTTPException(404, f"no demo shoppers: {exc}") from exc


@router.post("/token", response_model=TokenOut, summary="A shopper token for the page (demo only)")
def demo_token(
    body: TokenIn,
    service: Annotated[Service, Depends(get_service)],
    tokens: Annotated[ShopperTokens, Depends(get_tokens)],
    settings: Annotated[Settings, Depends(app_settings)],
) -> TokenOut:
    token, expires = tokens.issue(service.pseudonym(body.user_id), settings.shopper_token_seconds)
    return TokenOut(token=token, expires_at=expires)


@router.get("/experiments", summary="The experiments, without their salts")
def demo_experiments(store: Annotated[EventStore, Depends(get_event_store)]) -> list[dict[str, Any]]:
    return published(list_experiments(store), READER)


@router.get("/experiments/{name}/report", summary="An experiment's report, without its salt")
def demo_report(
    name: Name, store: Annotated[EventStore, Depends(get_event_store)], as_of: AsOf = None
) -> dict[str, Any]:
    try:
        report = experiment_report(store, name, as_of=as_of)
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
    return {**report, "experiment": published([report["experiment"]], READER)[0]}


@router.get("/experiments/{name}/chart.png", response_class=Response, summary="An experiment's chart")
def demo_chart(name: Name, store: Annotated[EventStore, Depends(get_event_store)], as_of: AsOf = None) -> Response:
    try:
        return Response(experiment_chart(store, name, as_of=as_of), media_type="image/png")
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
