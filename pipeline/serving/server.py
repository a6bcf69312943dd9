"""Starting `emotion serve` on the local engine: one uvicorn process, or ``serve.workers`` processes on one port
(``processes``); both run ``app.create_app``. Kept apart from ``app`` so that the worker processes, which build the
app, do not import the module that starts them."""

from __future__ import annotations

import logging
from contextlib import suppress

from pipeline.config import Config
from pipeline.serving.app import create_app
from pipeline.serving.timeouts import header_timeout_protocol

log = logging.getLogger(__name__)


def run(cfg: Config, host: str | None = None, port: int | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); with ``serve.workers`` > 1 from that many processes."""
    import uvicorn

    host = host or cfg.serve.host
    port = port or cfg.serve.port
    cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"host": host, "port": port})})  # Host check
    log.info(
        "serving %s@%s on http://%s:%d (demo page at /, API docs at /docs)",
        cfg.mlflow.registered_model,
        cfg.serve.alias,
        host,
        port,
    )
    if cfg.serve.workers > 1:
        from pipeline.serving.processes import run_workers  # multiprocessing and sockets: only when asked

        run_workers(cfg, host, port)
        log.info("stopped")
        return
    with suppress(KeyboardInterrupt):  # uvicorn shuts down gracefully, then re-raises the Ctrl-C it captured
        uvicorn.run(
            create_app(cfg),
            host=host,
            port=port,
            http=header_timeout_protocol(cfg.serve.body_timeout_seconds),
            access_log=cfg.serve.access_log,
            log_level="info",
        )
    log.info("stopped")
