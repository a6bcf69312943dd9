"""Drift detection: an Evidently 0.7 report of a batch's monitoring columns against the reference's, and the verdict.

Every descriptor and prediction column is tested (``monitor.num_method`` / ``monitor.cat_method`` with their
thresholds), and the embeddings with Evidently's domain-classifier method (the ROC AUC of a classifier telling
batch from reference). The verdict is *drift* when at least ``monitor.drift_share`` of the columns drifted, or when
the embeddings did. The HTML report and the verdict (JSON) are written to a folder under ``artifacts/``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.config import MonitorConfig
from pipeline.errors import PipelineError
from pipeline.monitoring.descriptors import (
    DESCRIPTORS,
    EMBEDDING_NAME,
    PREDICTION_CATEGORICAL,
    PREDICTION_NUMERIC,
    embedding_columns,
)
from pipeline.monitoring.reference import Reference
from pipeline.monitoring.verdict import DriftVerdict, FeatureDrift

if TYPE_CHECKING:
    from evidently.metrics.embeddings import ModelDriftMethod

log = logging.getLogger(__name__)

EMBEDDING_PLOT_ROWS = 300  # rows per side in the report's t-SNE plot of the embeddings (its cost grows with rows)
COLUMNS = (*DESCRIPTORS, *PREDICTION_NUMERIC, *PREDICTION_CATEGORICAL)  # tested one by one, in this order


def _run_report(
    reference: pd.DataFrame, current: pd.DataFrame, mcfg: MonitorConfig, emb_cols: list[str], method: ModelDriftMethod
) -> Any:
    """Evidently's report with tests: a drift test per column of ``COLUMNS``, and the embeddings' plot if asked."""
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.legacy.metrics.data_drift import embeddings_drift
    from evidently.metrics import EmbeddingsDrift
    from evidently.presets import DataDriftPreset

    numeric = [*DESCRIPTORS, *PREDICTION_NUMERIC]
    categorical = list(PREDICTION_CATEGORICAL)
    definition = DataDefinition(
        numerical_columns=numeric + emb_cols, categorical_columns=categorical, embeddings={EMBEDDING_NAME: emb_cols}
    )
    metrics: list[Any] = [
        DataDriftPreset(
            columns=list(COLUMNS),
            num_method=mcfg.num_method,
            num_threshold=mcfg.num_threshold,
            cat_method=mcfg.cat_method,
            cat_threshold=mcfg.cat_threshold,
            drift_share=mcfg.drift_share,
        )
    ]
    if mcfg.embedding_plot:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING_NAME, drift_method=method))
    report = Report(metrics, include_tests=True)
    plot_rows = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = EMBEDDING_PLOT_ROWS  # Evidently samples this many rows for its t-SNE plot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on constant reference columns; the test copes
        try:
            return report.run(
                Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
                Dataset.from_pandas(reference.reset_index(drop=True), data_definition=definition),
            )
        finally:
            embeddings_drift.SAMPLE_CONSTANT = plot_rows


def _column_results(run_dict: dict[str, Any]) -> tuple[dict[str, tuple[str, float, float, bool]], bool | None]:
    """Per-column (method, score, threshold, drifted) and the dataset-level drift test, from an Evidently run."""
    scores = {}
    for metric in run_dict.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[metric["id"]] = (
                config["column"],
                config.get("method"),
                float(metric["value"]),
                config.get("threshold"),
            )
    results: dict[str, tuple[str, float, float, bool]] = {}
    dataset_drift = None
    for test in run_dict.get("tests", []):
        params = test.get("metric_config", {}).get("params", {})
        metric_id = test.get("metric_config", {}).get("metric_id")
        if params.get("type", "").endswith(":ValueDrift") and metric_id in scores:
            column, method, score, threshold = scores[metric_id]
            results[column] = (str(method), score, float(threshold), test["status"] == "FAIL")
        elif params.get("type", "").endswith(":DriftedColumnsCount"):
            dataset_drift = test["status"] == "FAIL"
    return results, dataset_drift


def _embedding_drift(
    run_dict: dict[str, Any], method: ModelDriftMethod, current: pd.DataFrame, reference: pd.DataFrame
) -> tuple[float, bool]:
    """The domain classifier's ROC AUC and drift decision, computed once: read from the report when it ran the
    classifier for its plot, else by calling Evidently's method directly (the verdict never needs the plot)."""
    for metric in run_dict.get("metrics", []):
        if metric.get("config", {}).get("type", "").endswith(":EmbeddingsDrift"):
            auc = float(metric["value"])
            return auc, auc > method.threshold  # ModelDriftMethod's decision without bootstrap
    auc, drifted, _ = method(current.reset_index(drop=True).copy(), reference.reset_index(drop=True).copy())
    return float(auc), bool(drifted)


def _label_shares(frame: pd.DataFrame) -> dict[str, float]:
    return {str(k): round(float(v), 4) for k, v in frame["predicted_label"].value_counts(normalize=True).items()}


def _reasons(
    columns: list[FeatureDrift], share: float, share_drift: bool, embedding: FeatureDrift, mcfg: MonitorConfig
) -> list[str]:
    """The two halves of the verdict in words: the share of drifted columns, the embedding classifier's AUC."""
    return [
        f"{'DRIFT' if share_drift else 'ok'}: {share:.0%} of {len(columns)} descriptor and prediction columns "
        f"drifted (drift at >= {mcfg.drift_share:.0%})"
        + (f": {', '.join(f.name for f in columns if f.drifted)}" if share else ""),
        f"{'DRIFT' if embedding.drifted else 'ok'}: embedding domain classifier ROC AUC {embedding.score:.3f} "
        f"(drift above {mcfg.embedding_threshold})",
    ]


def detect_drift(
    reference: Reference,
    current: pd.DataFrame,
    mcfg: MonitorConfig,
    out_dir: Path,
    batch: dict[str, Any] | None = None,
    champion: dict[str, Any] | None = None,
) -> DriftVerdict:
    """Run the Evidently report on reference vs current, write ``drift_report.html`` and ``verdict.json``."""
    from evidently.metrics.embeddings import ModelDriftMethod

    ref = reference.frame
    emb_cols = embedding_columns(ref)
    if embedding_columns(current) != emb_cols:
        raise PipelineError("the batch and the reference were embedded by different models: rebuild the reference")
    method = ModelDriftMethod(threshold=mcfg.embedding_threshold)
    run = _run_report(ref, current, mcfg, emb_cols, method)
    run_dict = run.dict()
    per_column, dataset_drift = _column_results(run_dict)
    missing = [c for c in COLUMNS if c not in per_column]
    if missing:
        raise PipelineError(f"the Evidently report has no drift result for {missing}")

    auc, emb_drifted = _embedding_drift(run_dict, method, current[emb_cols], ref[emb_cols])
    columns = [FeatureDrift(c, "descriptor" if c in DESCRIPTORS else "prediction", *per_column[c]) for c in COLUMNS]
    embedding = FeatureDrift(
        EMBEDDING_NAME, "embedding", "domain classifier ROC AUC", auc, mcfg.embedding_threshold, emb_drifted
    )
    share = sum(f.drifted for f in columns) / len(columns)
    share_drift = dataset_drift if dataset_drift is not None else share >= mcfg.drift_share
    verdict = DriftVerdict(
        drift=bool(share_drift or emb_drifted),
        reasons=_reasons(columns, share, share_drift, embedding, mcfg),
        features=[*columns, embedding],
        drifted_share=round(share, 4),
        drift_share_threshold=mcfg.drift_share,
        batch=batch or {"rows": len(current)},
        reference=reference.describe(),
        champion=champion or {},
        label_shares={"reference": _label_shares(ref), "current": _label_shares(current)},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html = out_dir / "drift_report.html"
    run.save_html(str(html))
    verdict.report_path = str(html)
    (out_dir / "verdict.json").write_text(json.dumps(verdict.to_dict(), indent=2, default=str))
    log.info("drift %s: %s", "DETECTED" if verdict.drift else "not detected", "; ".join(verdict.reasons))
    return verdict
