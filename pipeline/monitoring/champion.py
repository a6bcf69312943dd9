"""The registry champion and the data it was trained on: what drift is measured against, and what retraining extends."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import Config, DataConfig
from pipeline.errors import PipelineError
from pipeline.redact import restore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Champion:
    """The registry champion: where its model was downloaded, and the lineage its run recorded."""

    name: str
    version: str
    run_id: str
    model_dir: Path
    data_hash: str | None
    data_source: str | None
    params: dict[str, str]  # the training run's parameters (data.* tells how its source was read)
    labels: list[str]  # the model's labels, in class-id order

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "data_hash": self.data_hash,
            "data_source": self.data_source,
        }


def load_champion(cfg: Config, dst: Path) -> Champion:
    """Find the champion version, download its model into ``dst``, and read its lineage."""
    from pipeline.registry import model_spec

    registry = model_spec.Registry.of(cfg.registry)
    try:
        found = model_spec.resolve(None, registry)  # None: the champion
    except model_spec.UnknownModel as exc:
        raise PipelineError(
            f"no champion of '{cfg.mlflow.registered_model}' in {cfg.tracking_uri}: train and promote "
            "one with `emotion run` before monitoring drift"
        ) from exc
    model_dir, version = model_spec.download(found, dst).folder, found.record
    assert model_dir is not None
    run = registry.client().get_run(version.run_id) if version.run_id else None
    tags = {**(run.data.tags if run else {}), **(version.tags or {})}
    id2label = json.loads((model_dir / "config.json").read_text()).get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)]
    log.info(
        "champion: %s version %s (run %s, data %s)",
        cfg.mlflow.registered_model,
        version.version,
        version.run_id,
        tags.get("data_hash"),
    )
    return Champion(
        cfg.mlflow.registered_model,
        str(version.version),
        str(version.run_id or ""),
        model_dir,
        tags.get("data_hash"),
        tags.get("data_source"),
        dict(run.data.params) if run else {},
        labels,
    )


def snapshot_matches(frame: pd.DataFrame, data_hash: str) -> bool:
    """Whether ``frame`` written as a snapshot has exactly the recorded hash (DVC folder hash or md5: content hash)."""
    from pipeline.data.ingest import write_snapshot
    from pipeline.registry.versioning import content_hash, dvc_dir_hash

    with tempfile.TemporaryDirectory(prefix="snapshot-check-") as tmp:
        path = write_snapshot(frame, Path(tmp) / "data")
        if data_hash.startswith("md5:"):
            return data_hash == content_hash(path)
        return data_hash == dvc_dir_hash(path)


def _from_dvc_cache(project_dir: Path, data_hash: str) -> pd.DataFrame | None:
    """The snapshot stored under ``data_hash`` in the project's DVC cache, or None when it is not there."""
    from pipeline.data.ingest import SNAPSHOT_NAME
    from pipeline.registry.versioning import dvc_cached_file

    blob = dvc_cached_file(project_dir, data_hash, SNAPSHOT_NAME)
    if blob is None:
        return None
    return pd.read_json(blob, lines=True, dtype=False, convert_dates=False)


def _data_config_from_params(cfg: Config, params: dict[str, str], source: str) -> DataConfig:
    """The DataConfig the champion's run was trained with (its logged params), falling back to the current one."""
    import yaml

    values = cfg.data.model_dump()
    for key in values:
        raw = params.get(f"data.{key}")
        if raw is not None and key != "source":
            with contextlib.suppress(yaml.YAMLError):  # an unreadable value keeps the current setting
                values[key] = (
                    yaml.safe_load(raw) if key in ("labels", "dvc_track") else (None if raw == "None" else raw)
                )
    values["source"] = source
    try:
        return DataConfig.model_validate(values)
    except Exception:
        return cfg.data.model_copy(update={"source": source})


def champion_snapshot(cfg: Config, champion: Champion) -> tuple[pd.DataFrame, str]:
    """The dataset the champion was trained on (text, label, split) and where it came from.

    Tried in order: the project's DVC cache under the champion's ``data_hash`` (the exact bytes), then its
    ``data_source`` read again, checked against ``data_hash`` (a mismatch is logged, the data still used).
    """
    from pipeline.data.ingest import describe_source, normalize, read_source

    project_dir = Path(cfg.project_dir).resolve()
    if champion.data_hash:
        frame = _from_dvc_cache(project_dir, champion.data_hash)
        if frame is not None:
            return frame, f"DVC cache {champion.data_hash}"
    if not champion.data_source:
        raise PipelineError(
            f"champion v{champion.version} records no data_source or data_hash: cannot rebuild its "
            "reference data; retrain it with `emotion run`"
        )
    source = restore(champion.data_source, describe_source(cfg.data.source))  # the tag hides a URI's password
    data_cfg = _data_config_from_params(cfg, champion.params, source)
    try:
        frame = normalize(read_source(data_cfg, project_dir), data_cfg)  # as ingest did: unsplit sources get splits
    except PipelineError as exc:
        raise PipelineError(
            f"cannot rebuild champion v{champion.version}'s data: {exc}. Restore its snapshot "
            f"{champion.data_hash} with `dvc pull`, or retrain with `emotion run`"
        ) from exc
    provenance = f"data_source {champion.data_source}"
    if champion.data_hash and not snapshot_matches(frame, champion.data_hash):
        log.warning(
            "champion v%s was trained on snapshot %s, but %s reads differently now: the reference is built "
            "from its current content",
            champion.version,
            champion.data_hash,
            champion.data_source,
        )
        provenance += f" (changed since snapshot {champion.data_hash})"
    return frame, provenance
