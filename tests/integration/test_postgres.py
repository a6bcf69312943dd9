"""Shared backends on PostgreSQL, started by the module behind `make services`, and promotion across "machines".

1. `start` brings up PostgreSQL, MLflow and Prefect in a temp folder; a second `start` finds them running; a port
   already taken is refused with a clear message.
2. The training flow tracks and registers through the MLflow server on PostgreSQL.
3. Two processes promote at once WITHOUT a shared lock file (each has its own `mlflow.lock_file`, as on two
   machines): only the registry-side lease and generation check keep aliases and history consistent.

Needs PostgreSQL's server programs (`apt-get install postgresql`): without them these tests fail, they do not skip.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.errors import PipelineError
from pipeline.ops import services as svc
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import PARAMS, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

MODEL = "emotion-classifier"


@pytest.fixture(scope="module")
def services():
    """The three services on free loopback ports in a temp folder the postgres user can enter; stopped after."""
    try:
        svc.pg_bin()
    except PipelineError as exc:
        pytest.fail(str(exc))  # a missing PostgreSQL is a broken set-up, not a reason to skip
    root = Path(tempfile.mkdtemp(prefix="emotion-svc-"))  # short: PostgreSQL's socket path is limited to 107 bytes
    root.chmod(0o755)  # pytest's tmp folders are private to root; the server runs as postgres
    services = svc.Services(root, pg_port=free_port(), mlflow_port=free_port(), prefect_port=free_port())
    messages: list[str] = []
    try:
        svc.start(services, report=messages.append)
        assert [m.split(" started")[0] for m in messages] == ["PostgreSQL", "MLflow", "Prefect"], messages
        yield services
    finally:
        svc.stop(services, report=messages.append)
        shutil.rmtree(root, ignore_errors=True)


def test_services_start_once_and_refuse_a_taken_port(services: svc.Services, tmp_path: Path) -> None:
    import psycopg2

    again: list[str] = []
    svc.start(services, report=again.append)
    assert all("already running" in m for m in again) and len(again) == 3
    assert f"export MLFLOW_TRACKING_URI={services.mlflow_url}" in services.env_lines()

    url = services.database_url("prefect", "postgresql")  # the Prefect server keeps its state in PostgreSQL
    with contextlib.closing(psycopg2.connect(url)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'")
        assert cursor.fetchone() == (1,)

    taken = svc.Services(tmp_path / "other", mlflow_port=services.mlflow_port)
    with pytest.raises(PipelineError, match=f"port {services.mlflow_port} .* in use"):
        svc.start_mlflow(taken)
    assert not (tmp_path / "other" / "mlflow.pid").exists()


PROMOTER = """
import sys
from pipeline.config import load_config
from pipeline.registry import champion_alias, connection, model_versions, run_log
params, project, uri, version, rounds = sys.argv[1:]
lock = f"mlflow.lock_file={project}/locks-{version}/registry.lock"  # not shared: only the registry protects aliases
cfg = load_config(params, [f"project_dir={project}", f"mlflow.tracking_uri={uri}", lock], {})
client = connection.client(cfg.registry)
for i in range(int(rounds)):
    target = version if i % 2 == 0 else "1"
    champion_alias.promote(cfg.registry, client, target, actor=f"machine-{version}", reason=str(i))
"""


def test_flow_on_postgres_and_concurrent_promotions_without_a_shared_lock(
    services: svc.Services, tiny_config, tiny_model_dir: Path
) -> None:
    from flows.training import training_flow

    cfg = tiny_config(f"mlflow.tracking_uri={services.mlflow_url}")
    summary = training_flow(cfg)
    client = connection.client(cfg.registry)
    first = client.get_model_version(MODEL, summary["version"])
    assert summary["version"] == "1" and client.get_model_version_by_alias(MODEL, "champion").version == "1"
    assert client.get_run(first.run_id).info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    for _ in range(2):  # versions 2 and 3, each from its own run (one version per run), to promote back and forth
        run_id = stages.start_run(cfg, client)
        logged = run_log.log_model(run_id, tiny_model_dir, ["joy", "fear"])  # uploaded through the server
        model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed"}, "card")

    rounds = 6
    promoters = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, str(PARAMS), cfg.project_dir, services.mlflow_url, version, str(rounds)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("2", "3")
    ]
    for promoter in promoters:
        assert promoter.wait(timeout=600) == 0, promoter.stderr.read()[-3000:]

    events = champion_alias.history(cfg.registry, client)
    assert len(events) == 1 + 2 * rounds  # the flow's promotion, then none lost
    for before, after in itertools.pairwise(events):  # each promotion saw the champion the one before it set
        assert after.previous == before.version
    model = client.get_registered_model(MODEL)
    assert {k.split(".")[1] for k in model.tags if k.startswith(champion_alias.HISTORY_PREFIX)} == {
        f"{n:06d}" for n in range(1, 2 * rounds + 2)
    }  # one entry per generation, none overwritten
    assert model.tags[champion_alias.GENERATION_TAG].startswith(f"{2 * rounds + 1}:")
    assert str(model.aliases["champion"]) == events[-1].version
    if events[-1].previous != events[-1].version:
        assert str(model.aliases["previous"]) == events[-1].previous
    assert client.search_registered_models(f"name='{MODEL}{champion_alias.LEASE_SUFFIX}'") == []
