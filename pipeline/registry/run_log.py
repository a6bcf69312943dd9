"""MLflow runs and what they log: parameters, metrics, tags, files, the model and its ONNX export."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.redact import redact
from pipeline.registry import connection

log = logging.getLogger(__name__)

HF_ARTIFACT = "hf_model"  # the artifact key serving/pyfunc.py loads the Hugging Face folder from

MODEL_REQUIREMENTS = ("torch", "transformers", "tokenizers", "safetensors", "pandas", "numpy", "pydantic", "pyyaml")

ONNX_ARTIFACT = "onnx/model.onnx"  # the fp32 ONNX export beside the logged model, for the onnx-* serving backends

ONNX_STATIC_ARTIFACT = "onnx/model-int8-static.onnx"  # its calibrated int8 form, logged by the first server to build it


@dataclass(frozen=True)
class Logged:
    """What a step asks to be logged on its run; the flow logs it in one call (``record``), so a run's path through the
    code goes forward: steps compute, the driver records."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # keys as logged (prefixes included)
    tags: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[Path]] = field(default_factory=dict)  # artifact folder -> files
    folders: dict[str, Path] = field(default_factory=dict)  # artifact folder -> a local folder, logged whole

    def __or__(self, other: Logged) -> Logged:
        return Logged(
            self.params | other.params,
            self.metrics | other.metrics,
            self.tags | other.tags,
            self.files | other.files,
            self.folders | other.folders,
        )


def record(mlflow_client: Any, run_id: str, logged: Logged) -> None:
    """Record what a step returned: tags, parameters, metrics, files and folders."""
    if logged.tags:
        set_tags(mlflow_client, run_id, logged.tags)
    if logged.params:
        log_param_values(mlflow_client, run_id, logged.params)
    if logged.metrics:
        log_metrics(mlflow_client, run_id, logged.metrics)
    for artifact_dir, paths in logged.files.items():
        log_files(mlflow_client, run_id, paths, artifact_dir)
    for artifact_dir, folder in logged.folders.items():
        mlflow_client.log_artifacts(run_id, str(folder), artifact_dir)


def start_run(registry: RegistrySettings, mlflow_client: Any, tags: dict[str, str], params: dict[str, Any]) -> str:
    """A new run in the configured experiment with its tags (credentials hidden) and flat parameters."""
    run = mlflow_client.create_run(connection.experiment_id(registry, mlflow_client), tags=redacted(tags))
    log_param_values(mlflow_client, run.info.run_id, params)
    return str(run.info.run_id)


def start_child_run(
    registry: RegistrySettings,
    mlflow_client: Any,
    parent_id: str,
    name: str,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """A run nested under ``parent_id`` (the MLflow UI shows it beneath its parent): a CV fold or a teacher."""
    nested = {"mlflow.parentRunId": parent_id, "mlflow.runName": name} | (tags or {})
    run = mlflow_client.create_run(connection.experiment_id(registry, mlflow_client), tags=nested)
    if params:
        log_param_values(mlflow_client, run.info.run_id, params)
    return str(run.info.run_id)


def redacted(tags: dict[str, str]) -> dict[str, str]:
    """Tags as they may be stored: a value such as ``data_source`` may be a URI with a password."""
    return {key: redact(str(value)) for key, value in tags.items()}


def set_tags(mlflow_client: Any, run_id: str, tags: dict[str, str]) -> None:
    for key, value in redacted(tags).items():
        mlflow_client.set_tag(run_id, key, value)


def end_run(mlflow_client: Any, run_id: str, status: str) -> None:
    """Close the run as FINISHED or FAILED."""
    mlflow_client.set_terminated(run_id, status)


def log_files(mlflow_client: Any, run_id: str, paths: list[Path], artifact_dir: str) -> None:
    """Log each file under ``artifact_dir`` of the run."""
    for path in paths:
        mlflow_client.log_artifact(run_id, str(path), artifact_dir)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def log_param_values(mlflow_client: Any, run_id: str, values: dict[str, Any]) -> None:
    """Flat parameters as MLflow keeps them: credentials in URIs hidden, strings cut to its 6000-character limit,
    in one call."""
    from mlflow.entities import Param

    mlflow_client.log_batch(run_id, params=[Param(k, redact(str(v))[:6000]) for k, v in values.items()])


def log_metrics(
    mlflow_client: Any, run_id: str, metrics: dict[str, float], step: int | None = None, prefix: str = ""
) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(prefix + k, float(v), now, step or 0) for k, v in metrics.items() if isinstance(v, (int, float))]
    mlflow_client.log_batch(run_id, metrics=batch)


def log_model(run_id: str, model_dir: Path, labels: list[str], export_onnx: bool = False) -> tuple[str, str]:
    """Log the model folder as a pyfunc model on the run (and, with ``export_onnx``, its fp32 ONNX export as
    ``onnx/model.onnx``); returns its model URI and logged-model id."""
    import pandas as pd
    from mlflow.models import infer_signature

    import mlflow

    example_in = pd.DataFrame({"text": ["i feel wonderful today"]})
    example_out = pd.DataFrame(
        [{"label": labels[0], "labels": labels[0], "score": 1.0, **{f"prob_{label}": 0.0 for label in labels}}]
    )
    requirements = [f"{name}=={dist_version(name)}" for name in MODEL_REQUIREMENTS]
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(type hint|input example).*", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).parents[1] / "serving" / "pyfunc.py"),
            artifacts={HF_ARTIFACT: str(model_dir)},
            code_paths=[str(Path(__file__).parents[1])],
            signature=infer_signature(example_in, example_out),
            pip_requirements=requirements,
        )
        if export_onnx:
            _log_onnx(model_dir)
    return info.model_uri, info.model_id


def _log_onnx(model_dir: Path) -> None:
    """Export the model to ONNX and log it on the active run (quantization is left to the server's load)."""
    import mlflow
    from pipeline.model.onnx_export import ONNX_FILE, export_onnx

    with tempfile.TemporaryDirectory(prefix="emotion-onnx-") as tmp:
        path = export_onnx(model_dir, Path(tmp) / ONNX_FILE)
        mlflow.log_artifact(str(path), artifact_path=str(Path(ONNX_ARTIFACT).parent))


def download_onnx(run_id: str | None, dst: Path) -> Path | None:
    """The run's logged ONNX export, downloaded into ``dst``; None when the run has none (then export at load)."""
    from mlflow.exceptions import MlflowException

    import mlflow

    if not run_id:
        return None
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ONNX_ARTIFACT, dst_path=str(dst))
    except (MlflowException, OSError):
        log.info("run %s has no %s: the ONNX backend will export the model at load", run_id, ONNX_ARTIFACT)
        return None
    with contextlib.suppress(MlflowException, OSError):  # the calibrated int8 file, once a server has built it
        mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ONNX_STATIC_ARTIFACT, dst_path=str(dst))
    return Path(local)


def log_static_int8(mlflow_client: Any, run_id: str, path: Path) -> None:
    """Keep a calibrated int8 file beside the run's ONNX export, so the next server load reuses it."""
    mlflow_client.log_artifact(run_id, str(path), artifact_path=str(Path(ONNX_STATIC_ARTIFACT).parent))


def download_model(model_uri: str, dst: Path | None = None) -> Path:
    """Download a registered or logged model and return its Hugging Face folder."""
    from mlflow.exceptions import MlflowException

    import mlflow
    from pipeline.model.predict import find_model_folder

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
