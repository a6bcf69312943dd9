"""How failures become HTTP answers: a readable 422 for a bad request (a JSON body with a key given twice is one:
which value was meant?), 404/503 for a missing model, 413 for a body too large to be a valid request (refused as
soon as that is known: from its Content-Length, else while it streams in), 408 for one that stalls
(``timeouts``), 429 for too many version loads or explanations, 503 for a full inference queue."""

import json
import math
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.types import Message, Receive, Scope, Send

from pipeline.config import ServeConfig
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.serving.batcher import QueueFull
from pipeline.serving.explainer import ExplainBusy
from pipeline.serving.middleware import HttpMiddleware
from pipeline.serving.store import LoadThrottled, ModelNotFound
from pipeline.serving.timeouts import BodyTimeout

DUPLICATE_KEY = "duplicate key"
QUEUE_RETRY_SECONDS = 1  # Retry-After for a full queue: a batch takes well under a second


def install(app: FastAPI) -> None:
    """Register the body-size limit and timeout and the exception handlers on ``app``."""
    app.add_middleware(BodyLimit)
    app.add_middleware(BodyTimeout)
    app.add_exception_handler(RequestValidationError, bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(LoadThrottled, throttled)  # type: ignore[arg-type]
    app.add_exception_handler(ExplainBusy, throttled)  # type: ignore[arg-type]
    app.add_exception_handler(QueueFull, busy)  # type: ignore[arg-type]
    app.add_exception_handler(PipelineError, user_error)  # type: ignore[arg-type]


def max_body_bytes(serve: ServeConfig) -> int:
    """The largest body a valid request can have, with a generous allowance for JSON escaping."""
    return serve.max_texts * (serve.max_chars * 6 + 16) + 4096


class BodyTooLarge(HTTPException):
    """Raised from the request stream, so FastAPI passes it through its body parsing as the 413 it is."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail, headers={"Connection": "close"})


class BodyLimit(HttpMiddleware):
    """The body-size limit as ASGI middleware: 413 from the Content-Length before anything is read, and a byte
    counter on the stream itself, so a chunked body (no Content-Length) is cut off at the limit, not read whole.

    The 413 closes the connection (``Connection: close``), so the server stops reading the rest of the body."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        serve: ServeConfig = scope["app"].state.cfg.serve
        limit = max_body_bytes(serve)
        why = f"({serve.max_texts} texts of {serve.max_chars} characters at most)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = JSONResponse(
                status_code=413,
                content={"detail": f"request body too large: {int(length)} bytes > {limit} {why}"},
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(f"request body too large: more than {limit} bytes {why}")
            return message

        await self.app(scope, counted, send)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice (json.loads would keep the last one silently)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise json.JSONDecodeError(f"{DUPLICATE_KEY} {key[:40]!r}", "", 0)
        found[key] = value
    return found


class StrictJSONRequest(Request):
    """A request whose JSON body is refused (422) when an object repeats a key, instead of being read as one of
    its possible meanings, and when it cannot be read at all (not UTF-8, an integer of more than 4300 digits,
    nested deeper than the interpreter's recursion limit), instead of failing as a 400."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = read_json(await self.body())
        return self._json


def read_json(body: bytes) -> Any:
    """``body`` as JSON; every way it cannot be read is a JSONDecodeError, which FastAPI answers with a 422."""
    try:
        return json.loads(body, object_pairs_hook=unique_keys)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError:
        raise json.JSONDecodeError("the body is not UTF-8 text", "", 0) from None
    except ValueError:
        raise json.JSONDecodeError("a number has too many digits", "", 0) from None
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", "", 0) from None


class StrictJSONRoute(APIRoute):
    """The API's routes: they read JSON bodies with ``StrictJSONRequest``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    return JSONResponse(
        status_code=422,
        content={
            "detail": readable(errors),
            "errors": [
                {"loc": list(e.get("loc", ())), "msg": str(e.get("msg")), "type": e.get("type")} for e in errors
            ],
        },
    )


async def not_found(request: Request, exc: ModelNotFound) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content={"detail": redact(str(exc))})


async def throttled(request: Request, exc: LoadThrottled | ExplainBusy) -> JSONResponse:
    retry = str(max(1, math.ceil(exc.retry_after)))
    return JSONResponse(status_code=429, content={"detail": str(exc)}, headers={"Retry-After": retry})


async def busy(request: Request, exc: QueueFull) -> JSONResponse:
    headers = {"Retry-After": str(QUEUE_RETRY_SECONDS)}
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers=headers)


async def user_error(request: Request, exc: PipelineError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": redact(str(exc))})  # may name a source URI


def readable(errors: Sequence[dict[str, Any]]) -> str:
    """Pydantic's error list as one sentence per problem: 'texts[2]: text is empty'."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            why = str((err.get("ctx") or {}).get("error", "decode error"))
            if why.startswith(DUPLICATE_KEY):
                parts.append(f"the body gives the {why.removeprefix('duplicate ')} twice: send each field once")
            else:
                parts.append(f"the body is not valid JSON ({why})")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ""
        for p in loc:
            where += f"[{p}]" if p.isdigit() else (f".{p}" if where else p)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
