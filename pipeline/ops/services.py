"""Shared backends on one host: PostgreSQL, an MLflow tracking server and a Prefect server on it.

``make services`` (``python -m pipeline.ops.services start``) starts the three on 127.0.0.1, each only if it is not
running yet, and prints the environment lines clients need; ``make services-stop`` stops them. Everything lives in
the services folder (default ``.services/``): PostgreSQL's data folder ``pg/`` (its log ``pg/postgresql.log``),
the MLflow artifact store ``mlflow-artifacts/`` (or ``--artifacts-destination s3://...``), ``prefect-home/``, and a
``<name>.pid`` / ``<name>.log`` pair for each server.

PostgreSQL comes from the distribution (``apt-get install postgresql``); its server refuses to run as root, so as
root it runs as the ``postgres`` user, owning its data folder.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
DATABASES = ("mlflow", "prefect", "optuna")
WAIT_SECONDS = 180.0  # first starts run database migrations; a busy 2-core machine needs a while


@dataclass(frozen=True)
class Services:
    """Where the services keep their state and which loopback ports they listen on."""

    root: Path
    host: str = "127.0.0.1"
    pg_port: int = 5432
    mlflow_port: int = 5000
    prefect_port: int = 4200
    artifacts_destination: str = ""  # default: <root>/mlflow-artifacts; s3://bucket/path for a team

    @property
    def pg_data(self) -> Path:
        return self.root / "pg"

    def database_url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL (MLflow, Optuna); a bare postgresql:// means psycopg 3 to SQLAlchemy 2.1, not installed."""
        return f"{driver}://postgres@{self.host}:{self.pg_port}/{database}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    def env_lines(self) -> list[str]:
        """What a client exports to use these services."""
        return [
            f"export MLFLOW_TRACKING_URI={self.mlflow_url}",
            f"export PREFECT_API_URL={self.prefect_api_url}",
            f"export OPTUNA_STORAGE={self.database_url('optuna')}",
        ]


def pg_bin() -> Path:
    """The folder with PostgreSQL's server programs (initdb, pg_ctl), newest major version first."""
    found = sorted(Path("/").glob(PG_BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name), reverse=True)
    for folder in found:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise PipelineError(
        f"PostgreSQL server programs (initdb, pg_ctl) not found in {PG_BIN_GLOB}: install them with "
        "`apt-get install postgresql` (Debian/Ubuntu), then run `make services` again"
    )


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: root runs its programs as the postgres user."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser") is None:
        raise PipelineError("running as root needs `runuser` to start PostgreSQL as the postgres user")
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_SECONDS)
    if done.returncode != 0:
        raise PipelineError(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _require_port(services: Services, port: int, what: str, flag: str) -> None:
    if not _port_free(services.host, port):
        raise PipelineError(
            f"cannot start {what}: port {port} on {services.host} is in use by another program; "
            f"stop it or choose another port ({flag})"
        )


def _postgres_running(services: Services, bindir: Path) -> bool:
    if not (services.pg_data / "PG_VERSION").exists():
        return False
    status = _as_postgres([str(bindir / "pg_ctl"), "status", "-D", str(services.pg_data)])
    return subprocess.run(status, capture_output=True, timeout=60).returncode == 0


def _initdb(services: Services, bindir: Path) -> None:
    """A new cluster owned by the user the server runs as; local connections trusted (it listens on loopback only)."""
    if subprocess.run(_as_postgres(["test", "-x", str(services.root)]), capture_output=True).returncode != 0:
        raise PipelineError(
            f"the postgres user cannot reach {services.root}: choose a services folder whose parents it may enter "
            "(--dir, or SERVICES_DIR=... for make), or give them o+x"
        )
    services.pg_data.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(services.pg_data, "postgres", "postgres")
    services.pg_data.chmod(0o700)
    initdb = [str(bindir / "initdb"), "-D", str(services.pg_data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
    _run(_as_postgres(initdb), "initdb")


def start_postgres(services: Services) -> str:
    """Initialise (first time) and start PostgreSQL on the loopback port; create the services' databases."""
    bindir = pg_bin()
    if _postgres_running(services, bindir):
        return f"PostgreSQL is already running ({services.pg_data})"
    _require_port(services, services.pg_port, "PostgreSQL", "--pg-port")
    if not (services.pg_data / "PG_VERSION").exists():
        _initdb(services, bindir)
    options = f"-p {services.pg_port} -k {services.pg_data} -c listen_addresses={services.host}"
    log = services.pg_data / "postgresql.log"
    command = [str(bindir / "pg_ctl"), "-D", str(services.pg_data), "-o", options, "-l", str(log), "-w", "start"]
    _run(_as_postgres(command), f"pg_ctl start (see {log})")
    _create_databases(services)
    return f"PostgreSQL started on {services.host}:{services.pg_port} ({services.pg_data})"


def _create_databases(services: Services) -> None:
    import psycopg2

    with contextlib.closing(psycopg2.connect(services.database_url("postgres", "postgresql"))) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            existing = {row[0] for row in cursor.fetchall()}
            for name in DATABASES:
                if name not in existing:
                    cursor.execute(f'CREATE DATABASE "{name}"')


def stop_postgres(services: Services) -> str:
    if not (services.pg_data / "PG_VERSION").exists():
        return "PostgreSQL: nothing to stop"
    bindir = pg_bin()
    if not _postgres_running(services, bindir):
        return "PostgreSQL is not running"
    _run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(services.pg_data), "-m", "fast", "-w", "stop"]), "pg_ctl stop")
    return "PostgreSQL stopped"


def _pid(services: Services, name: str) -> int | None:
    """The process group of a server started here, if it is still alive."""
    path = services.root / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.killpg(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _spawn(services: Services, name: str, command: list[str], env: dict[str, str], health: str) -> None:
    """Start a server in its own process group, logging to <name>.log; wait until ``health`` answers."""
    log = services.root / f"{name}.log"
    bindir = str(Path(sys.executable).parent)  # servers start uvicorn/gunicorn from PATH
    env = os.environ | {"PATH": f"{bindir}:{os.environ.get('PATH', '')}"} | env
    with log.open("a") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    (services.root / f"{name}.pid").write_text(str(process.pid))
    deadline = time.monotonic() + WAIT_SECONDS
    while not _healthy(health):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_group(services, name)
            raise PipelineError(f"{name} did not start (see {log}): {log.read_text()[-1500:]}")
        time.sleep(1.0)


def start_mlflow(services: Services) -> str:
    """An MLflow tracking server on PostgreSQL that stores and serves (proxies) the artifacts itself."""
    if _pid(services, "mlflow"):
        return f"MLflow is already running on {services.mlflow_url}"
    _require_port(services, services.mlflow_port, "the MLflow server", "--mlflow-port")
    destination = services.artifacts_destination or str(services.root / "mlflow-artifacts")
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        services.database_url("mlflow"),
        "--artifacts-destination",
        destination,
        "--serve-artifacts",
        "--workers",
        "2",
        "--host",
        services.host,
        "--port",
        str(services.mlflow_port),
    ]
    _spawn(services, "mlflow", command, {"MLFLOW_ENABLE_TELEMETRY": "false"}, f"{services.mlflow_url}/health")
    return f"MLflow started on {services.mlflow_url} (artifacts: {destination})"


def start_prefect(services: Services) -> str:
    """A Prefect server on PostgreSQL (schedules, work pools, flow-run history)."""
    if _pid(services, "prefect"):
        return f"Prefect is already running on {services.prefect_api_url}"
    _require_port(services, services.prefect_port, "the Prefect server", "--prefect-port")
    env = {
        "PREFECT_API_DATABASE_CONNECTION_URL": services.database_url("prefect", "postgresql+asyncpg"),
        "PREFECT_HOME": str(services.root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    command = [
        str(Path(sys.executable).with_name("prefect")),
        "server",
        "start",
        "--host",
        services.host,
        "--port",
        str(services.prefect_port),
    ]
    _spawn(services, "prefect", command, env, f"{services.prefect_api_url}/health")
    return f"Prefect started on {services.prefect_api_url}"


def _stop_group(services: Services, name: str) -> str:
    """SIGTERM the server's process group, SIGKILL it after 30 s; remove its pid file."""
    pid = _pid(services, name)
    (services.root / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return f"{name} is not running"
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(pid, 0)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child (the tests start servers in-process)
            time.sleep(0.5)
        os.killpg(pid, signal.SIGKILL)
    return f"{name} stopped"


STARTERS: dict[str, Callable[[Services], str]] = {
    "postgres": start_postgres,
    "mlflow": start_mlflow,
    "prefect": start_prefect,
}


def start(services: Services, names: tuple[str, ...] = tuple(STARTERS), report: Callable[[str], None] = print) -> None:
    """Start the named services (PostgreSQL first: the others keep their state in it), reporting each."""
    services.root.mkdir(parents=True, exist_ok=True)
    for name in names:
        report(STARTERS[name](services))


def stop(services: Services, report: Callable[[str], None] = print) -> None:
    """Stop the servers, then PostgreSQL."""
    for message in (_stop_group(services, "prefect"), _stop_group(services, "mlflow"), stop_postgres(services)):
        report(message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.ops.services", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "env"])
    parser.add_argument("--dir", default=".services", help="the services folder (default: .services)")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--artifacts-destination", default="", help="MLflow artifact store, e.g. s3://bucket/mlflow")
    args = parser.parse_args(argv)
    services = Services(
        Path(args.dir).resolve(),
        "127.0.0.1",
        args.pg_port,
        args.mlflow_port,
        args.prefect_port,
        args.artifacts_destination,
    )
    try:
        if args.action == "start":
            start(services)
        elif args.action == "stop":
            stop(services)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.action != "stop":
        print("# clients use these services with:\n" + "\n".join(services.env_lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
