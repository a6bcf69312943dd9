"""Several server processes on one port (``serve.workers`` > 1): each with its own event loop, model store,
batcher and torch threads, so that N cores run forward passes at once instead of one inference thread sharing
the GIL with the event loop.

The parent (``run_workers``) binds the port itself, so a taken port is one clear error before anything loads,
then starts the workers (``multiprocessing``'s spawn: a fresh interpreter each, no inherited threads) and only
supervises: it reports the first worker that cannot start (once, not once per worker), forwards Ctrl-C and
SIGTERM to the workers and waits for them, and stops them all when one dies. A worker whose parent disappears
(killed with SIGKILL) stops by itself, so none is left behind.

Each worker listens on a socket of its own bound with ``SO_REUSEPORT``: the kernel spreads new connections over
the workers that listen, by a hash of the connection. A worker starts listening once it has loaded the champion
(one uvicorn process also binds only then), so no connection waits in the queue of a worker still loading.
What the workers share (metrics, reload generation) is in ``siblings``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.serving.siblings import WorkerContext

log = logging.getLogger(__name__)

STOP_SECONDS = 30.0  # a worker still running this long after SIGTERM is killed
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def worker_config(cfg: Config) -> Config:
    """The config one worker runs: unless ``serve.threads`` is set, the cores divided among the workers (at least
    one torch thread each), not cores - 1 each, which would have N workers fight over the same cores."""
    serve = cfg.serve
    threads = serve.threads or max(1, (os.cpu_count() or 1) // serve.workers)
    return cfg.model_copy(update={"serve": serve.model_copy(update={"threads": threads})})


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets bound to ``host:port`` with ``SO_REUSEPORT``, one per worker. The port is first bound
    without it, so a port taken by any other server (even another `emotion serve --workers`, which would otherwise
    silently join the group) is refused with one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PipelineError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; another server may be using it "
                "(stop it, or pick another --port)"
            ) from None
    sockets = []
    for _ in range(count):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))  # each worker's uvicorn listens once its app has loaded the champion
        sockets.append(sock)
    return sockets


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """``name`` set while the workers start (they copy the environment), restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@dataclass
class Worker:
    """The parent's handle on one worker: its process and the pipe it reports on."""

    context: WorkerContext
    process: Any  # multiprocessing's SpawnProcess
    reports: Connection
    ready: bool = False


def run_workers(cfg: Config, host: str, port: int) -> None:
    """Serve ``cfg`` from ``serve.workers`` processes on ``host:port`` until Ctrl-C or SIGTERM; PipelineError
    when the port is taken or a worker cannot start."""
    count = cfg.serve.workers
    sockets = listening_sockets(host, port, count)
    shared = Path(tempfile.mkdtemp(prefix="emotion-serve-workers-"))
    stopping = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    workers: list[Worker] = []
    try:
        contexts = [WorkerContext(i, count, shared) for i in range(count)]
        contexts[0].metrics_dir.mkdir()
        with environment(MULTIPROC_ENV, str(contexts[0].metrics_dir)):  # read when prometheus-client is imported
            workers = [start_worker(worker_config(cfg), ctx, sock) for ctx, sock in zip(contexts, sockets)]
        supervise(workers, sockets, stopping, f"http://{host}:{port}")
    finally:
        stop_all(workers)
        for sock in sockets:
            sock.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        shutil.rmtree(shared, ignore_errors=True)


def start_worker(cfg: Config, context: WorkerContext, sock: socket.socket) -> Worker:
    spawn = multiprocessing.get_context("spawn")
    reports, child_end = spawn.Pipe(duplex=True)
    process = spawn.Process(
        target=serve_one,
        args=(cfg.model_dump(mode="json"), context, sock, child_end),
        name=f"emotion-serve-{context.index}",
    )
    process.start()
    child_end.close()
    return Worker(context, process, reports)


def supervise(workers: list[Worker], sockets: list[socket.socket], stopping: threading.Event, url: str) -> None:
    """Until a stop signal: report the workers' start, and stop everything if one fails or dies."""
    by_pipe = {id(w.reports): w for w in workers}
    by_sentinel = {w.process.sentinel: w for w in workers}
    while not stopping.is_set():
        for ready in wait([*(w.reports for w in workers), *by_sentinel], timeout=0.5):
            if isinstance(ready, int):
                worker = by_sentinel[ready]
                if stopping.is_set() or worker.process.exitcode == 0:  # 0: it was told to stop (e.g. Ctrl-C
                    return  # reached the process group before this process noticed): stop them all
                raise PipelineError(
                    f"server process {worker.context.index} exited (code {worker.process.exitcode}) "
                    + ("while serving; stopping the others" if worker.ready else "before it was ready (see above)")
                )
            assert isinstance(ready, Connection)
            on_report(by_pipe[id(ready)], ready, workers, sockets, url)


def on_report(worker: Worker, pipe: Connection, workers: list[Worker], sockets: list[socket.socket], url: str) -> None:
    """A worker's message: ``("ready", None)`` or ``("failed", message)`` (a user error, reported once)."""
    try:
        kind, detail = pipe.recv()
    except EOFError:  # it is exiting; its sentinel says so next
        return
    if kind == "failed":
        raise PipelineError(detail)
    worker.ready = True
    if all(w.ready for w in workers):
        for sock in sockets:  # each worker holds its own; a copy kept here would queue connections nobody accepts
            sock.close()
        log.info("%d server processes answering on %s", len(workers), url)


def stop_all(workers: list[Worker]) -> None:
    """SIGTERM to every worker still running (uvicorn then finishes its requests), SIGKILL after STOP_SECONDS."""
    for worker in workers:
        if worker.process.is_alive():
            os.kill(worker.process.pid, signal.SIGTERM)
    for worker in workers:
        worker.process.join(STOP_SECONDS)
        if worker.process.is_alive():
            log.warning("server process %d did not stop in %gs: killed", worker.context.index, STOP_SECONDS)
            worker.process.kill()
            worker.process.join()
        worker.reports.close()


def serve_one(config: dict[str, Any], context: WorkerContext, sock: socket.socket, parent: Connection) -> None:
    """One worker (in its own process): the app on ``sock`` until SIGTERM, Ctrl-C or the parent's end."""
    import uvicorn

    from pipeline import console
    from pipeline.serving.app import create_app
    from pipeline.serving.store import ModelStore
    from pipeline.serving.timeouts import header_timeout_protocol

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent passes Ctrl-C on as SIGTERM, once
    console.setup(False)
    cfg = Config.model_validate(config)
    try:
        store = ModelStore(cfg)
    except Exception as exc:  # every worker would fail alike: the parent says it once, not N tracebacks
        problem = str(exc) if isinstance(exc, PipelineError) else f"{type(exc).__name__}: {exc}"
        parent.send(("failed", redact(problem)))  # printed on the console: no credentials of a tracking URI
        exit_now(1)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg, store, worker=context),
            host=cfg.serve.host,  # for its log lines: it serves ``sock``
            port=cfg.serve.port,
            http=header_timeout_protocol(cfg.serve.body_timeout_seconds),
            access_log=cfg.serve.access_log,
            log_level="info",
        )
    )
    parent_gone = threading.Event()
    threading.Thread(target=report_ready, args=(server, parent, parent_gone), daemon=True).start()
    # uvicorn handles SIGINT and SIGTERM while it serves, then restores these handlers and raises the signal again
    # (for a caller that wants it): ignored, so the worker ends by exit_now, not by a second signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.run(sockets=[sock])
    if parent_gone.is_set():  # killed, it cannot delete the folder the workers share: the first to stop does
        shutil.rmtree(context.shared_dir, ignore_errors=True)
    exit_now(0 if server.started else 3)  # 3: uvicorn's start-up failure


def exit_now(code: int) -> None:
    """End the worker without the interpreter's teardown of torch, MLflow and the rest (seconds on 2 cores), as
    the `emotion` command does; the logs are flushed first."""
    logging.shutdown()
    os._exit(code)


def report_ready(server: Any, parent: Connection, parent_gone: threading.Event) -> None:
    """Tell the parent once the worker answers; then wait on the pipe: it ends when the parent does (even killed
    with SIGKILL), and the worker stops rather than serve on alone."""
    while not server.started and not server.should_exit:
        time.sleep(0.1)
    try:
        if server.started:
            parent.send(("ready", None))
        parent.recv()
    except (EOFError, OSError):
        parent_gone.set()
    server.should_exit = True
