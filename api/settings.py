"""Service settings, read from the environment (prefix ``VITRINE_``) once, through :func:`get_settings`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine.serving.image_ids import MIN_KEY_BYTES


class Settings(BaseSettings):
    # a rejected value is not echoed in the error: the image key and the Redis URL's password are secrets
    model_config = SettingsConfigDict(env_prefix="VITRINE_", extra="forbid", hide_input_in_errors=True)

    artifacts: Path = Field(Path("data/artifacts"), description="bundle root (the registry's folder)")
    admin_token: str | None = Field(None, description="token for /v1/admin/*; admin endpoints are off without it")
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
    database_url: str = Field(
        "sqlite:///data/events.db",
        description="event store: sqlite:///path.db (WAL) or postgresql+psycopg://user@host:5432/db",
    )

    @field_validator("image_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(
                f"the image key must be at least {MIN_KEY_BYTES} characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
