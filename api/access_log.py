"""The access log: one line per request, with the route's template instead of its path.

A path holds shopper ids (``/v1/users/{user_id}/image-set``) and a query may hold session ids, so neither is
logged: uvicorn's own access log is off (``vitrine serve`` passes ``access_log=False``) and this middleware
logs the method, the matched route template, the status and the time taken.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("vitrine.access")


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "(no route)"
            logger.info("%s %s %d %.1f ms", scope["method"], template, status, 1000 * (time.perf_counter() - started))
