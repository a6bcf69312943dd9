"""The REST API as a Ray Serve deployment (``emotion serve --engine ray``): the same app, on N replicas.

Each replica runs ``app.create_app(cfg)`` unchanged, the FastAPI app the local uvicorn server runs, lifespan
included: its own ``ModelStore`` loads the champion before the replica is ready, and its own refresh thread
follows the registry alias every ``serve.refresh_seconds``, exactly as one local server does. ``POST /reload``
reaches one replica (whichever the proxy picks); the others see the new champion at their next check.

Batching stays inside each replica, in the app's ``Batcher`` (one inference thread per replica gathering the
texts of concurrent requests into one forward pass), rather than ``@serve.batch``: the batcher already batches by
texts (a request may carry 64), bounds its queue with fast 503s, runs /explain between batches on the same thread,
and feeds the shadow; ``@serve.batch`` batches calls of one method, so every route would need rewriting and the
two servers would behave differently. What Serve must allow for it is concurrency: its default of 5 requests in
flight per replica would leave the batcher little to gather, hence ``serve.ray_max_ongoing_requests`` (64).

Placement: each replica reserves ``serve.ray_cpus_per_replica`` CPUs (its torch threads); Serve schedules replicas
with Ray's SPREAD strategy, and ``serve.ray_max_replicas_per_node: 1`` makes one per node a rule. A replica whose
inference thread died fails Serve's health check and is replaced; a replica that crashes is replaced too.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

APP_NAME = "emotion"  # the Serve application; its replicas are actors named SERVE_REPLICA::emotion#EmotionAPI#...
DEPLOYMENT = "EmotionAPI"


def replica_config(cfg: Config) -> Config:
    """The config a replica runs: the project folder absolute (replicas start in Ray's own working folders) and,
    unless ``serve.threads`` is set, as many torch threads as whole CPUs reserved for the replica."""
    threads = cfg.serve.threads or max(1, int(cfg.serve.ray_cpus_per_replica))
    serve = cfg.serve.model_copy(update={"threads": threads})
    return cfg.model_copy(update={"project_dir": str(Path(cfg.project_dir).resolve()), "serve": serve})


def replica_info() -> dict[str, Any]:
    """Which replica answers (``GET /replica``): its Ray node, actor name and process, to check how requests
    spread and to find a replica to stop."""
    import ray
    from ray import serve

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "actor": serve.get_replica_context().replica_id.to_full_id_str(),
        "pid": os.getpid(),
    }


def build_app(cfg: Config) -> FastAPI:
    """``create_app(cfg)`` plus ``GET /replica`` (behind the admin token when one is set)."""
    from fastapi import Depends

    from pipeline.serving import routes
    from pipeline.serving.app import create_app

    app = create_app(cfg)
    app.add_api_route(
        "/replica",
        replica_info,
        methods=["GET"],
        summary="the Ray Serve replica that answered: node id, actor name, process id",
        dependencies=[Depends(routes.admin)],
    )
    return app


class EmotionAPI:
    """One replica: the app built in the replica's own process (FastAPI apps do not travel between processes)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = Config.model_validate(cfg)
        self.api: FastAPI | None = None  # not ``app``: Serve's wrapper has a read-only property of that name

    def __serve_build_asgi_app__(self) -> FastAPI:  # called by Serve after __init__, then the lifespan starts
        self.api = build_app(self.cfg)
        return self.api

    def check_health(self) -> None:
        """Serve calls this every few seconds; raising marks the replica unhealthy, and Serve replaces it. No
        champion is not a failure (the replica answers 503 and waits for one, as the local server does)."""
        batcher = getattr(self.api.state, "batcher", None) if self.api is not None else None
        if batcher is not None and not batcher.alive():
            raise RuntimeError("the inference thread has stopped")


def deployment(cfg: Config) -> Any:
    """The bound Serve application: ``EmotionAPI`` behind ``serve.ingress``, with the ``serve.ray_*`` options."""
    from ray import serve

    s = cfg.serve
    ingress = serve.ingress()(EmotionAPI)
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "num_replicas": s.ray_replicas,
        "ray_actor_options": {"num_cpus": s.ray_cpus_per_replica},
        "max_ongoing_requests": s.ray_max_ongoing_requests,
        "health_check_period_s": 5,
    }
    if s.ray_max_replicas_per_node is not None:
        options["max_replicas_per_node"] = s.ray_max_replicas_per_node
    return serve.deployment(**options)(ingress).bind(replica_config(cfg).model_dump(mode="json"))


def proxy_env(proxy_location: str) -> dict[str, str]:
    """Environment for Serve's controller, inherited by the proxies it starts. A proxy sends requests to the
    replicas on its own node first and elsewhere only when those are full; behind a load balancer over every
    node's proxy that saves a hop, but with one proxy on the head it would leave the other nodes' replicas idle
    until the head's had ``serve.ray_max_ongoing_requests`` requests queued. So with ``HeadOnly`` every replica
    is a candidate for every request (a hop between nodes costs far less than a forward pass)."""
    return {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"} if proxy_location == "HeadOnly" else {}


def serve_on_ray(cfg: Config, address: str | None = None) -> str:
    """Deploy the API on Ray Serve and return its URL once every replica has loaded the champion (or found none).

    ``address``: a running cluster's HOST:PORT (``ray start --head``); None starts a local Ray in this process.
    Serve's HTTP proxy listens on ``serve.host``:``serve.port`` (one on the head, or one per node with
    ``serve.ray_proxy_location: EveryNode``). The deployment outlives this process on a cluster: ``stop_on_ray``
    removes it."""
    import ray
    from ray import serve

    from pipeline.ops.ray_cluster import connect

    if not ray.is_initialized():
        connect(address)  # as `emotion score --engine ray` does: fails fast, naming the address, when nobody listens
    s = cfg.serve
    serve.start(
        proxy_location=s.ray_proxy_location,
        http_options={"host": s.host, "port": s.port},
        controller_options={"runtime_env": {"env_vars": proxy_env(s.ray_proxy_location)}},
    )
    try:
        serve.run(
            deployment(cfg),
            name=APP_NAME,
            route_prefix="/",
            blocking=False,
            logging_config={"enable_access_log": s.access_log},
        )
    except RuntimeError as exc:
        raise PipelineError(
            f"the Ray Serve deployment failed to start: {exc}; the replicas' logs are under the cluster's "
            "session folder (/tmp/ray/session_latest/logs/serve)"
        ) from exc
    return f"http://{s.host}:{s.port}"


def stop_on_ray(started_ray: bool) -> None:
    """Remove the application from Serve; shut Serve and Ray down too when this process started Ray."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    if started_ray:
        serve.shutdown()
        ray.shutdown()
    else:
        serve.delete(APP_NAME)
        ray.shutdown()  # disconnects this driver; the cluster keeps running


def run_on_ray(cfg: Config, address: str | None = None, host: str | None = None, port: int | None = None) -> None:
    """Serve on Ray until interrupted (Ctrl-C or SIGTERM), then remove the deployment (see ``stop_on_ray``).

    ``address`` defaults to ``serve.ray_address`` (None: a local Ray in this process); ``host`` and ``port``
    override ``serve.host`` and ``serve.port``, as for the local server (the Host check allows the bind host)."""
    address = address or cfg.serve.ray_address
    serve = cfg.serve.model_copy(update={"host": host or cfg.serve.host, "port": port or cfg.serve.port})
    cfg = cfg.model_copy(update={"serve": serve})
    url = serve_on_ray(cfg, address)
    log.info(
        "serving %s@%s on %s with %d Ray Serve replicas (demo page at /, API docs at /docs); Ctrl-C stops",
        cfg.mlflow.registered_model,
        cfg.serve.alias,
        url,
        cfg.serve.ray_replicas,
    )
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping: the replicas finish the requests they hold, then the deployment is removed")
        stop_on_ray(started_ray=address is None and not os.environ.get("RAY_ADDRESS"))
        signal.signal(signal.SIGTERM, previous)
    log.info("stopped")
