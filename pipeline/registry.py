"""MLflow tracking and the model registry: runs, logged models, versions with lineage tags, aliases."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

HF_ARTIFACT = "hf_model"  # the artifact key pyfunc_model.py loads the Hugging Face folder from
CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy", "pydantic", "pyyaml")


def client(cfg: Config) -> Any:
    """An MlflowClient on the configured store (creating the local sqlite folder if needed)."""
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    import mlflow
    from mlflow import MlflowClient

    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(cfg: Config, mlflow_client: Any) -> str:
    """The configured experiment; local stores keep artifacts under ``mlflow.artifact_root``."""
    found = mlflow_client.get_experiment_by_name(cfg.mlflow.experiment)
    if found:
        return found.experiment_id
    location = None
    if cfg.tracking_uri.startswith("sqlite:"):
        location = cfg.path(cfg.mlflow.artifact_root).as_uri()
    return mlflow_client.create_experiment(cfg.mlflow.experiment, artifact_location=location)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_params(mlflow_client: Any, run_id: str, cfg: Config) -> None:
    from mlflow.entities import Param

    params = [Param(k, str(v)[:6000]) for k, v in flatten(cfg.model_dump()).items()]
    mlflow_client.log_batch(run_id, params=params)


def log_metrics(mlflow_client: Any, run_id: str, metrics: dict[str, float], step: int | None = None,
                prefix: str = "") -> None:
    from mlflow.entities import Metric
    import time

    now = int(time.time() * 1000)
    batch = [Metric(prefix + k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
    mlflow_client.log_batch(run_id, metrics=batch)


def log_model(run_id: str, model_dir: Path, labels: list[str]) -> str:
    """Log the model folder as a pyfunc model on the run; returns its model URI."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    example_in = pd.DataFrame({"text": ["i feel wonderful today"]})
    example_out = pd.DataFrame([{"label": labels[0], "score": 1.0, **{f"prob_{l}": 0.0 for l in labels}}])
    requirements = [f"{name}=={dist_version(name)}" for name in MODEL_REQUIREMENTS]
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(type hint|input example).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),
            artifacts={HF_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(__file__).parent)],
            signature=infer_signature(example_in, example_out),
            pip_requirements=requirements,
        )
    return info.model_uri


def register(cfg: Config, mlflow_client: Any, model_uri: str, run_id: str, tags: dict[str, str],
             description: str) -> str:
    """Create a registered model version with its lineage tags in one call; returns the version."""
    name = cfg.mlflow.registered_model
    try:
        mlflow_client.get_registered_model(name)
    except Exception:  # RestException(RESOURCE_DOES_NOT_EXIST)
        mlflow_client.create_registered_model(name, description="Emotion classifier fine-tuned by emotion-pipeline.")
    version = mlflow_client.create_model_version(name, model_uri, run_id=run_id, tags=tags, description=description)
    log.info("registered %s version %s", name, version.version)
    return str(version.version)


def version_by_alias(cfg: Config, mlflow_client: Any, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when none does (or the model is not registered yet)."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(cfg.mlflow.registered_model, alias)
    except MlflowException:
        return None


def set_alias(cfg: Config, mlflow_client: Any, alias: str, version: str) -> None:
    mlflow_client.set_registered_model_alias(cfg.mlflow.registered_model, alias, version)
    log.info("alias %s -> %s version %s", alias, cfg.mlflow.registered_model, version)


def download_model(model_uri: str, dst: Path | None = None) -> Path:
    """Download a registered or logged model and return its Hugging Face folder."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from pipeline.predict import find_model_folder

    target = dst or Path(tempfile.mkdtemp(prefix="emotion-model-"))
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(target))
    except MlflowException as exc:
        raise PipelineError(
            f"cannot load {model_uri}: {str(exc).splitlines()[0]}. Train and promote a model with `emotion run`, "
            "or pass a model folder with --model"
        ) from exc
    return find_model_folder(Path(local))


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path
