"""The FastAPI application. ``create_app()`` builds it; the lifespan loads the serving bundle.

Nothing is loaded at import time. Errors never surface as a bare 500: bad input is a 4xx that says what
to fix, a missing bundle is a 503, and an unexpected failure is logged with an id and answered 503.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.access_log import AccessLog
from api.auth import ShopperTokens
from api.limits import install_limits
from api.metrics import HttpMetrics, new_registry, process_stopped
from api.metrics import router as metrics_router
from api.routers import (
    admin,
    demo,
    enhance,
    events,
    experiments,
    health,
    images,
    items,
    merchant,
    privacy,
    recommendations,
    sessions,
)
from api.schemas import USER_ID_RULE
from api.settings import Settings, get_settings
from engine.experiments.eventstore import EventStore, StoreError, StoreUnavailable
from engine.serving.config import PersonaliserConfig
from engine.serving.image_ids import load_or_create_key
from engine.serving.latents import open_latent_store
from engine.serving.metrics import ServingMetrics
from engine.serving.precomputed_store import open_precomputed_store
from engine.serving.privacy import SessionOwners
from engine.serving.service import Service, SharedState, configure_runtime
from engine.serving.sessions import open_session_store
from engine.serving.types import NoBundle

logger = logging.getLogger("vitrine.api")


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
    msg = str(error.get("msg"))
    if error.get("type") == "string_pattern_mismatch" and str(where).endswith("user_id"):
        msg = f"not a valid {USER_ID_RULE}"  # say the rule, not the regular expression
    return f"{where}: {msg}" if where else msg


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    registry = new_registry()  # GET /metrics: the HTTP series and the service's, this app's own
    serving_metrics = ServingMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        configure_runtime(settings.torch_threads)
        if not (settings.service_key_list or settings.open_access or settings.demo):
            logger.warning("no VITRINE_SERVICE_KEYS: only shopper tokens and the admin token can call the API")
        if settings.open_access:
            logger.warning("VITRINE_OPEN_ACCESS is on: requests without a credential act as a back end")
        try:  # experiments and events need the store; image sets must keep serving without it
            app.state.events = EventStore(settings.database_url)
        except (StoreError, ValueError) as exc:
            app.state.events = None
            app.state.events_error = str(exc)
            logger.error("event store unavailable: %s", exc)
        image_key = settings.image_key.get_secret_value().encode() if settings.image_key else None
        image_key = image_key or load_or_create_key(settings.artifacts)
        app.state.tokens = ShopperTokens(image_key)  # signed under a key derived from the image key
        service = Service(
            settings.artifacts,
            config=PersonaliserConfig(
                max_set_size=settings.max_set_size,
                max_neighbours=settings.max_neighbours,
                max_concurrent_generations=settings.max_concurrent_generations,
                max_queued_generations=settings.max_queued_generations,
                cache_size=settings.image_cache_size,
            ),
            shared=SharedState(
                events=app.state.events,
                # in Redis with redis_url (shared by every worker), else in this process; see open_session_store
                sessions=open_session_store(
                    settings.redis_url,
                    ttl_seconds=settings.session_ttl_seconds,
                    memory_bytes=settings.session_memory_bytes,
                    redis_prefix=settings.redis_prefix,
                ),
                # optimised images' latent codes: in Redis with redis_url, else in this process
                latents=open_latent_store(
                    settings.redis_url, ttl_seconds=settings.image_ttl_seconds, redis_prefix=settings.redis_prefix
                ),
                image_key=image_key,
                owners=SessionOwners.open(
                    settings.redis_url, ttl_seconds=settings.session_ttl_seconds, redis_prefix=settings.redis_prefix
                ),
                # sets `vitrine batch image-sets` made in advance: in Redis with redis_url, else the artifacts' SQLite
                precomputed=open_precomputed_store(
                    settings.artifacts, settings.redis_url, redis_prefix=settings.redis_prefix
                ),
            ),
            metrics=serving_metrics,
            experiments_refresh_seconds=settings.experiments_refresh_seconds,
            warm_up=True,  # a bundle makes sets before it serves; then the heap leaves the collector's full passes
        )
        service.load_current()
        app.state.service = service
        yield
        if app.state.events is not None:
            app.state.events.close()
        process_stopped()

    app = FastAPI(
        title="Vitrine",
        version="0.1.0",
        description="Personalised product images: generated for each shopper, linked to real catalogue items.",
        lifespan=lifespan,
    )
    app.state.settings = settings  # the routes' api.settings.app_settings
    app.state.metrics_registry = registry
    install_limits(app, settings)  # body size, rate limits, overload answers, and the limits in the OpenAPI

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        return JSONResponse(
            {"detail": "; ".join(_describe(e) for e in exc.errors()), "errors": errors}, status_code=422
        )

    @app.exception_handler(NoBundle)
    async def no_bundle(request: Request, exc: NoBundle) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        # the database lost its connection, filled its disk or timed out on a lock: the transaction was rolled
        # back, so a client may resend the same request (events are idempotent by client_event_id)
        logger.error("event store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            {"detail": f"{exc}; nothing of it was stored, retry shortly"}, status_code=503, headers={"Retry-After": "5"}
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        logger.exception("unexpected error %s on %s %s", error_id, request.method, request.url.path)
        return JSONResponse(
            {
                "detail": f"the service could not answer this request (error id {error_id}); "
                "it has been logged, please retry"
            },
            status_code=503,
        )

    app.include_router(health.router)
    app.include_router(images.router)
    app.include_router(enhance.router)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    app.include_router(sessions.router)
    app.include_router(experiments.router)
    app.include_router(events.router)
    app.include_router(admin.router)
    app.include_router(privacy.router)
    app.include_router(merchant.router)
    app.include_router(demo.router)
    app.include_router(metrics_router)
    app.add_middleware(AccessLog)
    app.add_middleware(HttpMetrics, registry=registry)
    return app
