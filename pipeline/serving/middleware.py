"""The shape the API's plain ASGI middlewares share (body limit, body timeout, request metrics).

Plain ASGI, not Starlette's ``BaseHTTPMiddleware``: that runs every request through an extra task and a pair of
memory streams, which cost more event-loop time than the whole /predict route."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """Wraps an ASGI app; HTTP requests go through ``handle``, other scopes (lifespan) pass straight through."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
