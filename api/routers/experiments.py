"""Experiments: list, report, chart; admin create and update (Bearer ``VITRINE_ADMIN_TOKEN``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Caller, require_admin, trusted_caller
from api.deps import get_event_store, get_service
from api.routers.images import AUTH_ERRORS
from api.schemas import ErrorOut, IsoTime, ZonedTime
from engine.experiments import (
    ExperimentExists,
    ExperimentLocked,
    UnknownExperiment,
    create_experiment,
    experiment_chart,
    experiment_report,
    list_experiments,
    update_experiment,
)
from engine.experiments.definition import CONVERSIONS, MAX_DAYS, MAX_WEIGHT, NAME_PATTERN, STRATEGIES, UNITS
from engine.experiments.eventstore import EventStore
from engine.serving.service import Service

router = APIRouter(tags=["experiments"])
Trusted = Annotated[Caller, Depends(trusted_caller)]

Name = Annotated[
    str,
    Path(
        pattern=NAME_PATTERN,
        description="experiment name: 1-64 letters, digits, _ . -",
        openapi_examples={"an experiment": {"value": "personalised-vs-popular"}},
    ),
]
AsOf = Annotated[
    IsoTime | None, Query(description="report as of this ISO 8601 time (default: now, or the stop if earlier)")
]
Store = Annotated[EventStore, Depends(get_event_store)]
Served = Annotated[Service, Depends(get_service)]

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


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="1-64 letters, digits, _ . -; unique in the experiment")
    weight: float = Field(1.0, gt=0, le=MAX_WEIGHT, description="share of the traffic, relative to the other variants")
    strategy: Literal[STRATEGIES] = Field("personalised", description="what the variant shows")  # type: ignore[valid-type]
    description: str = Field("", max_length=1000)


class ExperimentIn(BaseModel):
    """An experiment's configuration (``engine.experiments.definition``); the rules between fields, which JSON
    Schema cannot state, are in the descriptions."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="1-64 letters, digits, _ . -")
    description: str = Field("", max_length=1000)
    unit: Literal[UNITS] = "user"  # type: ignore[valid-type]
    salt: str | None = Field(None, min_length=1, max_length=128, description="seeds the assignment (default: name)")
    start: ZonedTime
    stop: ZonedTime = Field(description=f"after start, by at most {MAX_DAYS} days")
    traffic: float = Field(1.0, gt=0, le=1, description="share of units in the experiment")
    conversion: Literal[CONVERSIONS] = "purchase"  # type: ignore[valid-type]
    control: str | None = Field(
        None, pattern=NAME_PATTERN, description="the control variant, one of variants' names (default: the first)"
    )
    msprt_tau: float | None = Field(None, gt=0, description="mixing standard deviation of the always-valid test")
    variants: list[VariantIn] = Field(min_length=2, max_length=26, description="at least two, with distinct names")

    def config(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ExperimentUpdateIn(ExperimentIn):
    name: str | None = Field(None, pattern=NAME_PATTERN, description="the path's name, if given")  # type: ignore[assignment]


ExperimentBody = Annotated[ExperimentIn, Body(openapi_examples={"two arms": {"value": _EXAMPLE}})]
ExperimentUpdateBody = Annotated[ExperimentUpdateIn, Body(openapi_examples={"two arms": {"value": _EXAMPLE}})]


@router.get(
    "/v1/experiments",
    responses=AUTH_ERRORS,
    summary="All experiments, with their resolved configuration (the salts only for the admin token)",
)
def get_experiments(store: Store, who: Trusted) -> list[dict[str, Any]]:
    return published(list_experiments(store), who)


def published(experiments: list[dict[str, Any]], who: Caller) -> list[dict[str, Any]]:
    """Experiments as a caller may read them: a salt decides every unit's variant, so only admins see it."""
    if who.kind == "admin":
        return experiments
    return [{k: v for k, v in e.items() if k != "salt"} for e in experiments]


@router.get(
    "/v1/experiments/{name}/report",
    responses={**AUTH_ERRORS, 404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
    summary="Per-variant results, lifts with 95% intervals, SRM, always-valid p-values, CUPED, daily series",
)
def get_report(name: Name, store: Store, who: Trusted, as_of: AsOf = None) -> dict[str, Any]:
    try:
        report = experiment_report(store, name, as_of=as_of)
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
    return {**report, "experiment": published([report["experiment"]], who)[0]}


@router.get(
    "/v1/experiments/{name}/chart.png",
    response_class=Response,
    responses={**AUTH_ERRORS, 200: {"content": {"image/png": {}}}, 404: {"model": ErrorOut}},
    summary="Cumulative conversion rate per variant at each daily look",
)
def get_chart(name: Name, store: Store, who: Trusted, as_of: AsOf = None) -> Response:
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
def post_experiment(body: ExperimentBody, store: Store, service: Served) -> dict[str, Any]:
    try:
        created = create_experiment(store, body.config())
    except ExperimentExists as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from exc
    service.experiments.changed()
    return created


@router.put(
    "/v1/admin/experiments/{name}",
    dependencies=[Depends(require_admin)],
    responses={
        401: {"model": ErrorOut},
        403: {"model": ErrorOut},
        404: {"model": ErrorOut},
        409: {
            "model": ErrorOut,
            "description": "the change contradicts what exposed units saw (unit, salt, variants), or the body names "
            "another experiment than the path",
        },
        422: {"model": ErrorOut},
    },
    summary="Replace an experiment's configuration (exposed units keep their variants)",
)
def put_experiment(name: Name, body: ExperimentUpdateBody, store: Store, service: Served) -> dict[str, Any]:
    if body.name is not None and body.name != name:
        raise HTTPException(409, f"the body names experiment {body.name!r} but the path names {name!r}")
    try:
        updated = update_experiment(store, name, body.config())
    except UnknownExperiment as exc:
        raise HTTPException(404, str(exc)) from exc
    except ExperimentLocked as exc:
        raise HTTPException(409, str(exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, str(exc)) from exc
    service.experiments.changed()
    return updated
