"""The HTTP front door's limits, as one pure-ASGI middleware: request bodies of at most ``max_body_bytes`` (413)
and a token bucket per client key (429 with ``Retry-After``; :mod:`engine.serving.limits`).

The client key is the credential of ``Authorization: Bearer …`` when the request carries one (a storefront's
service key, a shopper's token), else the client's address. Credentials are hashed before they become keys, so
neither this process's memory nor Redis holds them. Behind a proxy, run uvicorn with ``--proxy-headers``
(and ``--forwarded-allow-ips``) so that the address is the client's, not the proxy's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import anyio.to_thread
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.serving.limits import MemoryRateLimiter, RateLimiter

#: Paths no rate limit applies to: a load balancer's health checks must not use up a client's tokens.
EXEMPT_PATHS = frozenset({"/healthz"})


def client_key(scope: Scope) -> str:
    """``cred:<digest>`` for a request with a Bearer credential, else ``ip:<client address>``."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credential = value.partition(b" ")
            if scheme.lower() == b"bearer" and credential.strip():
                return "cred:" + hashlib.sha256(credential.strip()).hexdigest()[:32]
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class LimitsMiddleware:
    """413 for a body over ``max_body_bytes`` (said by its Content-Length, or counted as it arrives); 429 when
    the client's bucket in ``limiter`` is empty (None: no rate limit)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, limiter: RateLimiter | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter

    def _too_large(self) -> str:
        return (
            f"the request body is larger than the {self.max_body_bytes} bytes this service accepts "
            "(VITRINE_MAX_BODY_BYTES); send fewer events per request"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.limiter is not None and scope["path"] not in EXEMPT_PATHS:
            key = client_key(scope)
            if isinstance(self.limiter, MemoryRateLimiter):
                wait = self.limiter.take(key)
            else:  # a shared limiter asks the network: not on the event loop
                wait = await anyio.to_thread.run_sync(self.limiter.take, key)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                body = {"detail": f"too many requests from this client; retry in {retry} s"}
                await JSONResponse(body, status_code=429, headers={"Retry-After": str(retry)})(scope, receive, send)
                return
        length = _content_length(scope.get("headers", ()))
        if length is not None and length > self.max_body_bytes:
            await JSONResponse({"detail": self._too_large()}, status_code=413)(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # FastAPI passes an HTTPException on as it is: a 413
                    raise HTTPException(413, self._too_large())
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:  # a body read outside FastAPI's handling
            if exc.status_code != 413 or started:
                raise
            await JSONResponse({"detail": exc.detail}, status_code=413)(scope, receive, send)
