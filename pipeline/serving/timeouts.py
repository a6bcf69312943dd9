"""Requests that stall are closed after ``serve.body_timeout_seconds``: a client that opens a connection and
sends its headers slowly (or not at all), or less body than its Content-Length, would otherwise hold a
connection and a task for ever (uvicorn times out idle kept-alive connections, not a request being received).

Two halves, one limit: ``header_timeout_protocol`` (uvicorn's HTTP protocol with a deadline from the first byte
of a request to the end of its headers; closed with a 408) and ``BodyTimeout`` (ASGI middleware with a deadline
from the end of the headers to the end of the body; 408 and ``Connection: close``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import HTTPException
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.serving.middleware import HttpMiddleware


class BodyTimedOut(HTTPException):
    """Raised from the request stream, so FastAPI passes it through its body parsing as the 408 it is."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            status_code=408,
            detail=f"the request body did not arrive within {seconds:g}s (serve.body_timeout_seconds)",
            headers={"Connection": "close"},
        )


class BodyTimeout(HttpMiddleware):
    """Bounds the time to receive a request's whole body, from the moment its headers are in."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        seconds: float = scope["app"].state.cfg.serve.body_timeout_seconds
        deadline = asyncio.get_running_loop().time() + seconds
        received = False

        async def timed() -> Message:
            nonlocal received
            if received:  # after the body, receive() waits for the client to go away: not bounded
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimedOut(seconds) from None
            received = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)


STALLED_HEADERS = b"the request headers did not arrive in time (serve.body_timeout_seconds)"


def header_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing a connection whose request headers are not complete within
    ``seconds`` of its first byte (or of the connection, for a connection that sends nothing)."""

    class HeaderTimeout(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:  # a kept-alive connection's next request
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._stalled)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _stalled(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            self.transport.write(head + b"content-length: %d\r\n\r\n" % len(STALLED_HEADERS) + STALLED_HEADERS)
            self.transport.close()

    return HeaderTimeout
