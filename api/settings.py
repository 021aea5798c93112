"""Service settings, read from the environment (prefix ``VITRINE_``) once, through :func:`get_settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import Request
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.serving.image_ids import MIN_KEY_BYTES
from engine.serving.redis_client import DEFAULT_PREFIX, check_prefix


class Settings(BaseSettings):
    # a rejected value is not echoed in the error: the image key and the Redis URL's password are secrets
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="forbid", hide_input_in_errors=True)

    artifacts: Path = Field(Path("data/artifacts"), description="bundle root (the registry's folder)")
    admin_token: str | None = Field(None, description="token for /v1/admin/*; admin endpoints are off without it")
    metrics_token: SecretStr | None = Field(
        None,
        description="Bearer token that reads GET /metrics and nothing else (at least 16 characters; the admin token "
        "reads it too); without either, /metrics answers 403 unless open_access is on",
    )
    service_keys: SecretStr | None = Field(
        None,
        description="comma-separated keys for storefront back ends (server to server; see docs/SECURITY.md); "
        "each at least 16 characters",
    )
    open_access: bool = Field(
        False,
        description="answer requests that carry no credential as if from a back end: local development only, "
        "never on a network",
    )
    shopper_token_seconds: int = Field(3600, ge=60, le=86_400, description="lifetime of a shopper token")
    demo: bool = Field(False, description="serve the storefront demo page and its routes (`vitrine serve --demo`)")
    demo_data: Path = Field(Path("data/demo"), description="with demo: the demo store whose shoppers the page lists")
    max_set_size: int = Field(32, ge=1, le=256)
    max_neighbours: int = Field(20, ge=1, le=100)
    image_cache_size: int = Field(4096, ge=1)
    torch_threads: int | None = Field(1, ge=1, description="torch threads per worker process")
    client_clock: bool = Field(
        False,
        description="accept ?at= (the request's time) on image-set requests: for simulations, never in production",
    )
    redis_url: str | None = Field(
        None,
        description="redis://host:6379/0: session events and image latents shared by every worker and host; "
        "unset, they live in this process (one worker)",
    )
    redis_prefix: str = Field(
        DEFAULT_PREFIX,
        description="with redis_url: what every key starts with (letters, digits, _.:-); deployments that share one "
        "Redis each need their own, and every host of one deployment the same",
    )
    session_ttl_seconds: int = Field(
        86_400, ge=60, description="with redis_url: a session expires this long after its last event"
    )
    image_key: SecretStr | None = Field(
        None,
        description="secret that signs image ids (at least 16 characters; the same on every host); unset, a random "
        "key kept in <artifacts>/.image-key, created once and shared by this host's workers",
    )
    image_ttl_seconds: int = Field(
        7 * 86_400, ge=60, description="with redis_url: an optimised image expires this long after its set was served"
    )
    experiments_refresh_seconds: float = Field(
        1.0,
        ge=0,
        le=60,
        description="an experiment created, changed or stopped by another process or host reaches image sets within "
        "this many seconds (0: the list is read on every request); one written through this process, at once",
    )
    # What one request or one client may ask: each limit, its status code and why, in the README ("Limits")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body in bytes (413 above)")
    rate_limit_per_second: float = Field(
        50.0,
        ge=0,
        description="requests a second per client key (its Bearer credential, else its address), 429 beyond; "
        "0: no rate limit. With redis_url the buckets are shared by every worker and host",
    )
    rate_limit_burst: int = Field(200, ge=1, description="requests a client key may make at once after a quiet spell")
    max_concurrent_generations: int = Field(
        4, ge=1, description="image generations running at once in a worker (fresh image sets and re-rendered images)"
    )
    max_queued_generations: int = Field(
        16, ge=0, description="generations that may wait for a place; any more are refused at once (503, Retry-After)"
    )
    session_memory_bytes: int = Field(
        256 * 2**20,
        ge=2**20,
        description="without redis_url: the memory session events may take in a worker; the least recently used "
        "sessions are dropped beyond it",
    )
    max_revenue: float = Field(1e6, gt=0, le=1e15, description="largest revenue one purchase may carry (422 above)")
    event_retention_days: int = Field(
        365,
        ge=1,
        le=36_500,
        description="events (POST /v1/events, session events) may be at most this old and 5 minutes ahead of the "
        "server's clock (422 outside); with client_clock (simulations) any time is accepted",
    )
    database_url: str = Field(
        "sqlite:///data/events.db",
        description="event store: sqlite:///path.db (WAL) or postgresql+psycopg://user@host:5432/db",
    )

    @property
    def metrics_token_value(self) -> str | None:
        return self.metrics_token.get_secret_value() if self.metrics_token else None

    @property
    def service_key_list(self) -> list[str]:
        if self.service_keys is None:
            return []
        return [k.strip() for k in self.service_keys.get_secret_value().split(",") if k.strip()]

    @field_validator("service_keys")
    @classmethod
    def _keys_long_enough(cls, keys: SecretStr | None) -> SecretStr | None:
        if keys is not None:
            short = [k for k in keys.get_secret_value().split(",") if k.strip() and len(k.strip()) < MIN_KEY_BYTES]
            if short:
                raise ValueError(
                    f"{len(short)} service key(s) shorter than {MIN_KEY_BYTES} characters; make each with "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
                )
        return keys

    @field_validator("redis_prefix")
    @classmethod
    def _a_key_prefix(cls, prefix: str) -> str:
        return check_prefix(prefix)

    @field_validator("image_key", "metrics_token")
    @classmethod
    def _long_enough(cls, key: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().encode()) < MIN_KEY_BYTES:
            what = (info.field_name or "key").replace("_", " ")
            raise ValueError(
                f"the {what} must be at least {MIN_KEY_BYTES} characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return key


@lru_cache
def get_settings() -> Settings:
    """The settings of the environment, read once: what :func:`api.app.create_app` serves with by default."""
    return Settings()


async def app_settings(request: Request) -> Settings:
    """The settings the app answering this request was made with (a dependency of the routes). Not a
    ``dependency_overrides`` entry: FastAPI rebuilds every route's dependency tree on each request while any
    override is set, a fifth of a cached image set's CPU."""
    return request.app.state.settings
