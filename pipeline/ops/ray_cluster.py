"""Joining a Ray cluster, shared by the two Ray engines (`emotion score --engine ray`, `emotion serve --engine
ray`): fail fast, naming the address, when nobody listens, and keep Ray's own logs off the console."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from pipeline.errors import PipelineError


def connect(address: str | None) -> None:
    """Join the cluster at ``address``, or start a local Ray; Ray's own logs stay in its session folder."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if address:
        _reachable(address)
    import ray

    options: dict[str, Any] = {"configure_logging": False, "log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise PipelineError(
            f"cannot connect to {where}: {exc}. Start a cluster with `ray start --head --port 6379` and pass "
            "--address HOST:6379 (or leave --address out to start a local Ray)"
        ) from exc
    for name in ("ray", "ray.data"):  # Ray's own loggers print to stderr
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h).__name__ == "PlainRayHandler"]:
            logger.removeHandler(handler)


def _reachable(address: str) -> None:
    """Fail fast on a HOST:PORT nobody listens on (ray.init would keep retrying for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return  # "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise PipelineError(
            f"cannot connect to the Ray cluster at {address}: {exc.strerror or exc}. Start one with "
            "`ray start --head --port PORT` and pass --address HOST:PORT (or leave --address out for a local Ray)"
        ) from exc
