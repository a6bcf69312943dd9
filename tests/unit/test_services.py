"""`make services`' clear errors, without starting anything: missing PostgreSQL programs, a port already taken."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.ops import services as svc


def test_missing_postgres_programs_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(svc, "PG_BIN_GLOB", str(tmp_path / "*" / "bin"))
    (tmp_path / "15" / "bin").mkdir(parents=True)  # a folder without initdb/pg_ctl is not enough
    with pytest.raises(PipelineError, match=r"apt-get install postgresql"):
        svc.start(svc.Services(tmp_path / "services"), report=lambda message: None)


def test_a_taken_port_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        services = svc.Services(tmp_path / "services", mlflow_port=taken.getsockname()[1])
        with pytest.raises(PipelineError, match=f"port {services.mlflow_port} on 127.0.0.1 is in use"):
            svc.start(services, names=("mlflow",), report=lambda message: None)
    assert list((tmp_path / "services").iterdir()) == []


def test_env_lines_name_every_service() -> None:
    services = svc.Services(Path("/srv/x"), pg_port=5433, mlflow_port=5001, prefect_port=4201)
    assert services.env_lines() == [
        "export MLFLOW_TRACKING_URI=http://127.0.0.1:5001",
        "export PREFECT_API_URL=http://127.0.0.1:4201/api",
        "export OPTUNA_STORAGE=postgresql+psycopg2://postgres@127.0.0.1:5433/optuna",
    ]
