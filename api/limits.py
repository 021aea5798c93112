"""Every limit of the service, applied and stated: :func:`install_limits` adds the front door's limits to an app
(:class:`api.middleware.LimitsMiddleware`: body size, rate limits), answers an overloaded generator with 503, and
makes the OpenAPI document state each limit with the configured values (the README has the table, "Limits").

The document is patched where a limit is a setting, which a schema written at import time cannot know: the
largest set, the largest revenue, the window of event times, whether ``at`` is accepted. Error bodies are
:class:`api.schemas.ErrorOut` everywhere, 422 included (the app's validation handler answers that shape).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.middleware import EXEMPT_PATHS, LimitsMiddleware
from api.settings import Settings
from engine.serving.limits import Overloaded, open_rate_limiter

ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
#: Operations that generate (or restore) images, and so pass the admission gate (503 with Retry-After when it is full).
GENERATING = {
    ("get", "/v1/users/{user_id}/image-set"),
    ("get", "/v1/images/{image_id}.png"),
    ("post", "/v1/enhance"),  # the restoration net runs under the same gate
}


def install_limits(app: FastAPI, settings: Settings) -> None:
    """Add the limits middleware and the overload answer to ``app``, and state the limits in its OpenAPI."""
    limiter = open_rate_limiter(
        settings.redis_url,
        rate=settings.rate_limit_per_second,
        burst=settings.rate_limit_burst,
        redis_prefix=settings.redis_prefix,
    )
    app.add_middleware(LimitsMiddleware, max_body_bytes=settings.max_body_bytes, limiter=limiter)

    async def overloaded(request: Request, exc: Exception) -> JSONResponse:
        retry = exc.retry_after if isinstance(exc, Overloaded) else 5
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(retry)})

    app.add_exception_handler(Overloaded, overloaded)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_limits(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error(description: str, *, retry_after: bool | None = None) -> dict[str, Any]:
    """An ErrorOut response; ``retry_after``: with the header, always (True) or at times (False)."""
    out: dict[str, Any] = {"description": description, "content": ERROR}
    if retry_after is not None:
        out["headers"] = {"Retry-After": {**RETRY_AFTER, "required": retry_after}}
    return out


def document_limits(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``schema`` (FastAPI's OpenAPI document), changed in place to state the limits of ``settings``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            responses = op.setdefault("responses", {})
            for response in responses.values():  # FastAPI's default 422 body is not the one this app sends
                for media in response.get("content", {}).values():
                    if media.get("schema", {}).get("$ref") == "#/components/schemas/HTTPValidationError":
                        media["schema"] = {"$ref": "#/components/schemas/ErrorOut"}
            if path not in EXEMPT_PATHS and settings.rate_limit_per_second > 0:
                responses["429"] = _error(
                    f"more than {settings.rate_limit_per_second:g} requests a second (bursts of "
                    f"{settings.rate_limit_burst}) from this client key: its Bearer credential, else its address",
                    retry_after=True,
                )
            if "requestBody" in op:
                responses["413"] = _error(f"the body is larger than {settings.max_body_bytes} bytes")
                responses.setdefault("400", _error("the body is not UTF-8 text"))
            if (method, path) in GENERATING:
                responses["503"] = _error(
                    f"the service is busy ({settings.max_concurrent_generations} generations running and "
                    f"{settings.max_queued_generations} waiting), or a store it needs does not answer",
                    retry_after=False,
                )
            _settings_in_parameters(path, op, settings)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _settings_in_bodies(components, settings)
    return schema


#: Operations whose ``n`` and ``neighbours`` the settings bound (VITRINE_MAX_SET_SIZE, VITRINE_MAX_NEIGHBOURS).
SIZED = {"/v1/users/{user_id}/image-set", "/v1/generate"}


def _settings_in_parameters(path: str, op: dict[str, Any], settings: Settings) -> None:
    if path not in SIZED:
        return
    params = op.get("parameters", [])
    if not settings.client_clock:  # the server's clock decides: `at` is not part of this server's API
        op["parameters"] = params = [p for p in params if p.get("name") != "at"]
    for p in params:
        if p.get("name") == "n":
            p["schema"]["maximum"] = settings.max_set_size
        elif p.get("name") == "neighbours":
            p["schema"]["maximum"] = settings.max_neighbours


def _settings_in_bodies(components: dict[str, Any], settings: Settings) -> None:
    revenue = components.get("PurchaseIn", {}).get("properties", {}).get("revenue")
    if revenue is not None:
        revenue["maximum"] = settings.max_revenue
        revenue["description"] = f"the purchase's revenue, ≥ 0 and at most {settings.max_revenue:g}"
    window = (
        "any time: the server runs with VITRINE_CLIENT_CLOCK (simulations)"
        if settings.client_clock
        else f"at most {settings.event_retention_days} days old and 5 minutes ahead of the server's clock"
    )
    for name, field in (
        ("ItemEventIn", "ts"),
        ("PurchaseIn", "ts"),
        ("ClickIn", "ts"),
        ("SessionEventIn", "timestamp"),
    ):
        prop = components.get(name, {}).get("properties", {}).get(field)
        if prop is not None:
            prop["description"] = f"when it happened, ISO 8601 (default: now; no zone = UTC); {window}"
