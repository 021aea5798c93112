"""Who is calling: service keys, shopper tokens and the admin token (``docs/SECURITY.md``).

- A **service key** (``VITRINE_SERVICE_KEYS``) is for a storefront's back end, server to server: it reads any
  shopper's set, posts any shopper's events, reads experiment reports, mints shopper tokens and erases shoppers.
- A **shopper token** is for the shopper's browser: short-lived, signed by the server, scoped to one shopper.
  It reads only that shopper's set and recommendations and writes only their events and sessions.
- The **admin token** (``VITRINE_ADMIN_TOKEN``) does everything a service key does, plus the admin routes
  (experiments' configuration with their salts, reloads).

Every credential travels as ``Authorization: Bearer <credential>``. A token carries the shopper's pseudonym,
never the id the shop sent; it is ``st1.<payload>.<tag>``, the tag an HMAC-SHA256 of the payload under a key
derived from the image key (so every host that shares the image key verifies every token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Request

from api.settings import Settings, app_settings

TOKEN_PREFIX = "st1."
MAX_TOKEN_SECONDS = 24 * 3600
BEARER = {"WWW-Authenticate": "Bearer"}
CREDENTIAL = "Bearer <service key, shopper token or admin token>"


@dataclass(frozen=True)
class Caller:
    """``kind``: service (a storefront back end, or any caller on an open server), shopper or admin."""

    kind: Literal["service", "shopper", "admin"]
    pseudonym: str | None = None  # a shopper token's shopper

    @property
    def trusted(self) -> bool:
        return self.kind in ("service", "admin")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))


class ShopperTokens:
    """Issues and verifies shopper tokens under a key derived from the server's image key."""

    def __init__(self, image_key: bytes) -> None:
        self._key = hmac.new(image_key, b"vitrine shopper tokens v1", hashlib.sha256).digest()

    def _tag(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:16])

    def issue(self, pseudonym: str, ttl_seconds: int, *, now: float | None = None) -> tuple[str, int]:
        expires = int((now if now is not None else time.time()) + ttl_seconds)
        payload = _b64(json.dumps({"sub": pseudonym, "exp": expires}, separators=(",", ":")).encode())
        return f"{TOKEN_PREFIX}{payload}.{self._tag(payload)}", expires

    def verify(self, token: str, *, now: float | None = None) -> str | None:
        """The token's pseudonym, or None when the token is malformed, forged or expired."""
        body = token.removeprefix(TOKEN_PREFIX)
        payload, _, tag = body.partition(".")
        if not payload or not hmac.compare_digest(tag.encode(), self._tag(payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
            subject, expires = str(claims["sub"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        return subject if expires > (now if now is not None else time.time()) else None


async def get_tokens(request: Request) -> ShopperTokens:
    return request.app.state.tokens


async def caller(
    settings: Annotated[Settings, Depends(app_settings)],
    tokens: Annotated[ShopperTokens, Depends(get_tokens)],
    authorization: Annotated[
        str | None, Header(description="Bearer <service key | shopper token | admin token>")
    ] = None,
) -> Caller:
    """The caller's credential: 401 when it is missing (on a server that is not open) or not valid."""
    if not authorization:
        if settings.open_access:
            return Caller("service")
        raise HTTPException(
            401,
            "send a service key (back ends) or a shopper token (browsers) as 'Authorization: Bearer <credential>'",
            headers=BEARER,
        )
    credential = authorization.removeprefix("Bearer ").strip()
    if settings.admin_token and hmac.compare_digest(credential.encode(), settings.admin_token.encode()):
        return Caller("admin")
    if any(hmac.compare_digest(credential.encode(), key.encode()) for key in settings.service_key_list):
        return Caller("service")
    if credential.startswith(TOKEN_PREFIX):
        pseudonym = tokens.verify(credential)
        if pseudonym is not None:
            return Caller("shopper", pseudonym)
        raise HTTPException(401, "the shopper token is not valid or has expired; get a new one", headers=BEARER)
    raise HTTPException(401, "the credential is not a valid service key or shopper token", headers=BEARER)


async def trusted_caller(who: Annotated[Caller, Depends(caller)]) -> Caller:
    """A service key or the admin token (403 for a shopper token)."""
    if not who.trusted:
        raise HTTPException(403, "this needs a service key: a shopper token reads only its own shopper's data")
    return who


async def require_admin(
    settings: Annotated[Settings, Depends(app_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """401 without a Bearer token, 403 with a wrong one; 403 for everyone when no admin token is configured."""
    if not settings.admin_token:
        raise HTTPException(403, "admin endpoints are off: set VITRINE_ADMIN_TOKEN on the server to enable them")
    if not authorization or not authorization.startswith("Bearer "):
        raise HTTPException(401, "send the admin token as 'Authorization: Bearer <token>'", headers=BEARER)
    if not hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), settings.admin_token.encode()):
        raise HTTPException(403, "the admin token is not valid")


def owns(who: Caller, candidates: list[str]) -> None:
    """403 unless a shopper token's shopper is the one named (by any of their pseudonyms)."""
    if who.kind == "shopper" and who.pseudonym not in candidates:
        raise HTTPException(403, "a shopper token reads and writes only its own shopper's data")
