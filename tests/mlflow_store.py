"""A real, empty sqlite MLflow store in milliseconds: MLflow's schema migrations (about 5 s) run once per MLflow
version into a template file kept in the temp folder, and each test gets a copy of it, in memory-backed
``/dev/shm`` where there is one (each registry write commits, and a disk's fsync doubles a promotion's time).

The registry tests run once per mutant under mutmut, so a per-session migration would cost more than the tests
themselves; importing the sqlite stores here (not at a test's first client) lets mutmut's fork server pay for
those imports once."""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.version import VERSION as MLFLOW_VERSION

from mlflow import MlflowClient
from pipeline.config import RegistrySettings, load_config
from pipeline.registry import connection
from tests.conftest import PARAMS

for _store in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store"):
    importlib.import_module(_store)  # at collection, so that a fork server pays for it once

TEMPLATE = Path(tempfile.gettempdir()) / f"emotion-tests-mlflow-{MLFLOW_VERSION}-uid{os.getuid()}.db"


def migrated_template() -> Path:
    """The migrated empty store, built once: into a private file, then renamed into place (atomic, so sessions
    running at once never copy a half-migrated file)."""
    if not TEMPLATE.exists():
        scratch = Path(tempfile.mkdtemp(dir=TEMPLATE.parent)) / "mlflow.db"
        uri = f"sqlite:///{scratch}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking tables
        client.search_registered_models(max_results=1)  # the registry's
        os.replace(scratch, TEMPLATE)
        shutil.rmtree(scratch.parent, ignore_errors=True)
    return TEMPLATE


@contextlib.contextmanager
def scratch_folder() -> Iterator[Path]:
    """A folder for one test's project and store, in memory when the machine has /dev/shm; removed after."""
    memory = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(prefix="emotion-registry-", dir=memory if memory.is_dir() else None))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def registry_on_copy(folder: Path, *overrides: str) -> RegistrySettings:
    """The registry settings of a project in ``folder`` (params.yaml and ``overrides``), on a fresh store copy."""
    store = folder / "mlflow"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_template(), store / "mlflow.db")
    return load_config(PARAMS, [f"project_dir={folder}", *overrides], environ={}).registry


def register_versions(registry: RegistrySettings, count: int, **tags: str) -> Any:
    """The registered model with ``count`` versions (tags on each; a source path is all a version needs here)."""
    client = connection.client(registry)
    client.create_registered_model(registry.model_name)
    for _ in range(count):
        client.create_model_version(registry.model_name, str(registry.artifact_root / "model"), tags=tags)
    return client
