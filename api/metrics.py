"""``GET /metrics``: the service's series in Prometheus's text format (``docs/OPERATIONS.md`` lists them).

- :class:`HttpMetrics`, a pure-ASGI middleware, counts every request and its time by method, the matched route's
  *template* (``/v1/users/{user_id}/image-set``, never the path: paths hold shopper ids) and status class
  (``2xx`` … ``5xx``). A request answered before routing (an unknown path, a 429 or 413 from the front door's
  limits) has the route ``(no route)``.
- The serving layer's series (image sets by strategy, set-cache and precomputed-set hits, the admission gate)
  come from :class:`engine.serving.metrics.ServingMetrics`, registered in the same registry.
- Who may read them: the metrics token (``VITRINE_METRICS_TOKEN``, a scrape credential that can do nothing else)
  or the admin token; anyone on a server with ``VITRINE_OPEN_ACCESS``; no one (403) when neither token is set.
  The series hold no shopper data, but they tell an outsider the traffic and how near the service is to its
  limits, so they are not open on a listener that browsers reach.
- Several workers: with ``PROMETHEUS_MULTIPROC_DIR`` set (``vitrine serve --workers N`` sets it), every worker
  writes its values to files there and ``/metrics`` answers the sum over all workers, whichever one serves it.
"""

from __future__ import annotations

import hmac
import os
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import BEARER
from api.schemas import ErrorOut
from api.settings import Settings, app_settings
from engine.serving.metrics import LATENCY_BUCKETS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
NO_ROUTE = "(no route)"


def multiprocess_dir() -> str | None:
    """The folder where workers share their values, or None: each process answers its own."""
    return os.environ.get(MULTIPROC_ENV) or None


def new_registry() -> CollectorRegistry:
    """A registry for one app: its series, and this process's CPU and memory (one process's view only)."""
    registry = CollectorRegistry()
    if multiprocess_dir() is None:
        ProcessCollector(registry=registry)
    return registry


def process_stopped() -> None:
    """Under a shared folder, drop this worker's gauges from the sums (the lifespan calls it on shutdown)."""
    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.mark_process_dead(os.getpid(), folder)


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class HttpMetrics:
    """Counts each HTTP request and its time in ``registry``, labelled by method, route template and status class."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        labels = ["method", "route", "status_class"]
        self.requests = Counter(
            "vitrine_http_requests", "HTTP requests answered, by route template and status class", labels,
            registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "vitrine_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route template and status class",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before its answer starts

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or NO_ROUTE
            labels = {"method": scope["method"], "route": route, "status_class": _status_class(status)}
            self.requests.labels(**labels).inc()
            self.seconds.labels(**labels).observe(time.perf_counter() - started)


async def may_read_metrics(
    settings: Annotated[Settings, Depends(app_settings)],
    authorization: Annotated[str | None, Header(description="Bearer <metrics token | admin token>")] = None,
) -> None:
    """Anyone on an open server; else the metrics token or the admin token (401 without one, 403 with another)."""
    if settings.open_access:
        return
    tokens = [t.encode() for t in (settings.metrics_token_value, settings.admin_token) if t]
    if not tokens:
        raise HTTPException(
            403, "metrics are off: set VITRINE_METRICS_TOKEN on the server and give it to the scraper as its Bearer"
        )
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "send the metrics token as 'Authorization: Bearer <token>'", headers=BEARER)
    credential = authorization.removeprefix("Bearer ").strip().encode()
    if not any(hmac.compare_digest(credential, t) for t in tokens):
        raise HTTPException(403, "the credential is not the metrics token or the admin token")


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}, "description": "the series"},
        401: {"model": ErrorOut, "description": "no Bearer credential"},
        403: {"model": ErrorOut, "description": "not the metrics or admin token, or metrics are off (no token set)"},
    },
    dependencies=[Depends(may_read_metrics)],
    summary="Request latency, set-cache hits and the admission gate in Prometheus's text format (docs/OPERATIONS.md)",
)
async def metrics(request: Request) -> Response:
    folder = multiprocess_dir()
    if folder is None:
        registry = request.app.state.metrics_registry
    else:  # the sum over every worker's files, read afresh at each scrape
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
