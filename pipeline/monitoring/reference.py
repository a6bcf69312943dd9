"""The reference a batch is compared with: a seeded sample of the champion's data, scored by the champion.

The sample comes from the data's held-out splits by default (``monitor.reference_splits``). Training logs it on
its MLflow run (``log_reference``), so monitoring needs no data access; for older runs it is rebuilt from the
champion's data (``champion.champion_snapshot``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.config import Config, MonitorConfig
from pipeline.errors import PipelineError
from pipeline.monitoring.champion import Champion, champion_snapshot
from pipeline.monitoring.descriptors import score_frame

if TYPE_CHECKING:
    from pipeline.model.predict import Predictor

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT_DIR = "reference"  # on the champion's MLflow run (see log_reference)
REFERENCE_FILE = "reference.parquet"
REFERENCE_FORMAT = 1  # bump when the reference columns change (part of the monitoring cache key)
# the code that finds, samples and scores the reference (part of the monitoring cache key)
_CODE = tuple(Path(__file__).with_name(name) for name in ("descriptors.py", "champion.py", "reference.py"))


def sample_reference(frame: pd.DataFrame, mcfg: MonitorConfig) -> pd.DataFrame:
    """A seeded sample of ``monitor.reference_size`` rows from ``monitor.reference_splits`` (text, label, split)."""
    if "split" in frame and mcfg.reference_splits:
        part = frame[frame["split"].isin(mcfg.reference_splits)]
        if part.empty:
            raise PipelineError(
                f"the champion's data has no rows in splits {mcfg.reference_splits} "
                f"(it has {sorted(frame['split'].dropna().unique())}): set monitor.reference_splits"
            )
    else:
        part = frame
    part = part[part["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    if len(part) > mcfg.reference_size:
        part = part.sample(mcfg.reference_size, random_state=mcfg.seed)
    if len(part) < 50:
        log.warning(
            "the reference has only %d rows: drift scores will be noisy (add monitor.reference_splits)", len(part)
        )
    columns = [c for c in ("text", "label", "split") if c in part]
    return part[columns].reset_index(drop=True)


def log_reference(cfg: Config, mlflow_client: Any, run_id: str, frame: pd.DataFrame) -> str:
    """Log the reference sample of a training snapshot on its MLflow run, so monitoring needs no data access.

    Call it in the training flow after ingest (``frame`` = ``snapshot.frame``); returns the artifact path.
    """
    reference = sample_reference(frame, cfg.monitor)
    with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
        path = Path(tmp) / REFERENCE_FILE
        reference.to_parquet(path, index=False)
        mlflow_client.log_artifact(run_id, str(path), REFERENCE_ARTIFACT_DIR)
    mlflow_client.set_tag(run_id, "reference_rows", str(len(reference)))
    return f"{REFERENCE_ARTIFACT_DIR}/{REFERENCE_FILE}"


def _logged_reference(cfg: Config, champion: Champion) -> pd.DataFrame | None:
    if not champion.run_id:
        return None
    from pipeline.registry import connection

    client = connection.client(cfg.registry)
    try:
        names = {a.path for a in client.list_artifacts(champion.run_id, REFERENCE_ARTIFACT_DIR)}
        if f"{REFERENCE_ARTIFACT_DIR}/{REFERENCE_FILE}" not in names:
            return None
        with tempfile.TemporaryDirectory(prefix="reference-") as tmp:
            local = client.download_artifacts(champion.run_id, f"{REFERENCE_ARTIFACT_DIR}/{REFERENCE_FILE}", tmp)
            return pd.read_parquet(local)
    except Exception as exc:  # an unreachable artifact store: fall back to the data itself
        log.warning("cannot read the reference logged on run %s: %s", champion.run_id, exc)
        return None


def reference_texts(cfg: Config, champion: Champion) -> tuple[pd.DataFrame, str]:
    """The reference rows (text, label, split) and where they came from: the run's logged sample, else its data."""
    logged = _logged_reference(cfg, champion)
    if logged is not None:
        return logged, f"logged reference on run {champion.run_id}"
    frame, provenance = champion_snapshot(cfg, champion)
    return sample_reference(frame, cfg.monitor), provenance


@dataclass
class Reference:
    """The reference rows scored by the champion (monitoring columns) and their provenance."""

    frame: pd.DataFrame
    provenance: str
    champion_version: str

    def describe(self) -> dict[str, Any]:
        return {"rows": len(self.frame), "provenance": self.provenance, "champion_version": self.champion_version}


def build_reference(cfg: Config, champion: Champion, predictor: Predictor) -> Reference:
    rows, provenance = reference_texts(cfg, champion)
    log.info("reference: %d rows from %s, scored by champion v%s", len(rows), provenance, champion.version)
    return Reference(score_frame(predictor, rows["text"].tolist()), provenance, champion.version)


def reference_key(cfg: Config, champion: Champion) -> str:
    """What the scored reference depends on: the champion's run and data, the reference settings, the code."""
    parts = [
        champion.run_id,
        champion.version,
        champion.data_hash,
        champion.data_source,
        REFERENCE_FORMAT,
        cfg.monitor.reference_splits,
        cfg.monitor.reference_size,
        cfg.monitor.seed,
        cfg.model.max_length,
        *(hashlib.md5(path.read_bytes()).hexdigest() for path in _CODE),
    ]
    return "reference-" + hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]
