"""How failures become HTTP answers: a readable 422 for a bad request, 404/503 for a missing model, 413 for a
body too large to be a valid request (refused before it is read)."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.config import ServeConfig
from pipeline.errors import PipelineError
from pipeline.serving.store import ModelNotFound


def install(app: FastAPI) -> None:
    """Register the body-size limit and the exception handlers on ``app``."""
    app.middleware("http")(limit_body)
    app.add_exception_handler(RequestValidationError, bad_request)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFound, not_found)  # type: ignore[arg-type]
    app.add_exception_handler(PipelineError, user_error)  # type: ignore[arg-type]


async def limit_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """413 for a body longer than the largest valid request could be, before it is read."""
    serve: ServeConfig = request.app.state.cfg.serve
    max_body = serve.max_texts * (serve.max_chars * 6 + 16) + 4096  # generous JSON escaping allowance
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_body:
        return JSONResponse(
            status_code=413,
            content={
                "detail": f"request body too large: {length} bytes > {max_body} "
                f"({serve.max_texts} texts of {serve.max_chars} characters at most)"
            },
        )
    return await call_next(request)


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
    return JSONResponse(status_code=exc.status_code, content={"detail": str(exc)})


async def user_error(request: Request, exc: PipelineError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(exc)})


def readable(errors: Sequence[dict[str, Any]]) -> str:
    """Pydantic's error list as one sentence per problem: 'texts[2]: text is empty'."""
    parts = []
    for err in errors:
        if err.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')})")
            continue
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ""
        for p in loc:
            where += f"[{p}]" if p.isdigit() else (f".{p}" if where else p)
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
