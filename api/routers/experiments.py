"""Experiments: list, report, chart; admin create and update (Bearer ``VITRINE_ADMIN_TOKEN``)."""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, HTTPException, Path, Query
from fastapi.responses import Response

from api.deps import get_event_store
from api.schemas import ErrorOut
from api.settings import Settings, get_settings
from engine.experiments import (
    ExperimentExists,
    UnknownExperiment,
    create_experiment,
    experiment_chart,
    experiment_report,
    list_experiments,
    update_experiment,
)
from engine.experiments.definition import NAME_PATTERN
from engine.experiments.eventstore import EventStore

router = APIRouter(tags=["experiments"])

Name = Annotated[str, Path(pattern=NAME_PATTERN, description="experiment name: 1-64 letters, digits, _ . -")]
AsOf = Annotated[
    datetime | None, Query(description="report as of this ISO 8601 time (default: now, or the stop if earlier)")
]
Store = Annotated[EventStore, Depends(get_event_store)]

_EXAMPLE = {
    "name": "personalised-vs-popular",
    "unit": "user",
    "salt": "pvp-1",
    "start": "2024-05-01T00:00:00Z",
    "stop": "2024-06-01T00:00:00Z",
    "traffic": 1.0,
    "conversion": "purchase",
    "variants": [
        {"name": "control", "weight": 1, "strategy": "popular"},
        {"name": "treatment", "weight": 1, "strategy": "personalised"},
    ],
}
ExperimentBody = Annotated[dict[str, Any], Body(openapi_examples={"two arms": {"value": _EXAMPLE}})]


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """401 without a Bearer token, 403 with a wrong one; 403 for everyone when no admin token is configured."""
    if not settings.admin_token:
        raise HTTPException(403, "admin endpoints are off: set VITRINE_ADMIN_TOKEN on the server to enable them")
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(
            401, "send the admin token as 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    if not hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), settings.admin_token.encode()):
        raise HTTPException(403, "the admin token is not valid")


@router.get("/v1/experiments", summary="All experiments, with their resolved configuration")
def get_experiments(store: Store) -> list[dict[str, Any]]:
    return list_experiments(store)


@router.get(
    "/v1/experiments/{name}/report",
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    summary="Per-variant results, lifts with 95% intervals, SRM, always-valid p-values, CUPED, daily series",
)
def get_report(name: Name, store: Store, as_of: AsOf = None) -> dict[str, Any]:
    try:
        return experiment_report(store, name, as_of=as_of)
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get(
    "/v1/experiments/{name}/chart.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
    summary="Cumulative conversion rate per variant at each daily look",
)
def get_chart(name: Name, store: Store, as_of: AsOf = None) -> Response:
    try:
        return Response(experiment_chart(store, name, as_of=as_of), media_type="image/png")
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post(
    "/v1/admin/experiments",
    status_code=201,
    dependencies=[Depends(require_admin)],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 409: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    summary="Create an experiment (unknown keys are errors)",
)
def post_experiment(body: ExperimentBody, store: Store) -> dict[str, Any]:
    try:
        return create_experiment(store, body)
    except ExperimentExists as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from exc


@router.put(
    "/v1/admin/experiments/{name}",
    dependencies=[Depends(require_admin)],
    responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    summary="Replace an experiment's configuration (exposed units keep their variants)",
)
def put_experiment(name: Name, body: ExperimentBody, store: Store) -> dict[str, Any]:
    try:
        return update_experiment(store, name, body)
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from exc
