"""Drift monitoring: compare a batch of new texts with the champion's reference data, and say whether it drifted.

The reference is a seeded sample of the data the champion was trained on (its held-out splits by default,
``monitor.reference_splits``), scored by the champion. Both sides get the same columns:

- text descriptors that need no downloads: length, word count, mean word length, non-letter, uppercase,
  punctuation, digit and non-ASCII (emoji, accents, curly quotes) shares, URLs and @/u/ r/ mentions;
- the champion's prediction, as serving makes it (stored text policy; sigmoid for a multi-label model): the
  predicted (top) label (categorical) and its probability, the confidence;
- the champion's own sentence embedding: the mean-pooled last hidden state of its encoder.

An Evidently 0.7 report tests every descriptor and prediction column (``monitor.num_method`` /
``monitor.cat_method`` with their thresholds) and the embeddings (Evidently's domain-classifier method: the
ROC AUC of a classifier telling batch from reference). The verdict is *drift* when at least
``monitor.drift_share`` of the columns drifted, or when the embeddings did. The HTML report and the verdict
(JSON) are written to a folder under ``artifacts/``.

Plain functions: no Prefect here. The flow in ``flows/monitoring.py`` wraps them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.config import Config, DataConfig, MonitorConfig
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from evidently.metrics.embeddings import ModelDriftMethod

    from pipeline.model.predict import Predictor

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT_DIR = "reference"  # on the champion's MLflow run (see log_reference)
REFERENCE_FILE = "reference.parquet"
REFERENCE_FORMAT = 1  # bump when the reference columns change (part of the monitoring cache key)
EMBEDDING_NAME = "sentence_embedding"
EMBEDDING_PREFIX = "emb_"
DESCRIPTORS = (
    "length",
    "word_count",
    "mean_word_length",
    "non_letter_share",
    "uppercase_share",
    "punctuation_share",
    "digit_share",
    "non_ascii_share",
    "links_mentions",
)
PREDICTION_NUMERIC = ("confidence",)
PREDICTION_CATEGORICAL = ("predicted_label",)
EMBEDDING_PLOT_ROWS = 300  # rows per side in the report's t-SNE plot of the embeddings (its cost grows with rows)
_LINKS = re.compile(r"https?://\S+|www\.\S+|(?<![\w/])@\w+|(?<![\w/])/?[ur]/\w+")


# --------------------------------------------------------------------------------------------- descriptors


def describe_text(text: str) -> dict[str, float]:
    """The descriptors of one text (shares are over its non-space characters)."""
    chars = [c for c in text if not c.isspace()]
    n = max(len(chars), 1)
    letters = [c for c in chars if c.isalpha()]
    words = text.split()
    return {
        "length": float(len(text)),
        "word_count": float(len(words)),
        "mean_word_length": len(chars) / max(len(words), 1),
        "non_letter_share": (len(chars) - len(letters)) / n,
        "uppercase_share": sum(c.isupper() for c in letters) / max(len(letters), 1),
        "punctuation_share": sum(unicodedata.category(c).startswith("P") for c in chars) / n,
        "digit_share": sum(c.isdigit() for c in chars) / n,
        "non_ascii_share": sum(ord(c) > 127 for c in chars) / n,
        "links_mentions": float(len(_LINKS.findall(text))),
    }


def text_descriptors(texts: list[str]) -> pd.DataFrame:
    """One row of descriptors per text, columns in ``DESCRIPTORS`` order."""
    return pd.DataFrame([describe_text(t) for t in texts], columns=list(DESCRIPTORS)).astype(float)


# --------------------------------------------------------------------------------------------- scoring


def score_texts(predictor: Predictor, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and mean-pooled last-hidden-state embeddings, one forward pass per batch.

    Scored as serving predicts (the ``Predictor``'s stored text policy, then sigmoid for a multi-label model or
    the calibrated softmax), so the monitored predictions are the ones users get.
    """
    if not texts:
        raise PipelineError("no texts to score")
    return predictor.scores(texts, embeddings=True)


def scored_frame(texts: list[str], probs: np.ndarray, embeddings: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """The monitoring columns for texts: descriptors, predicted label and confidence, embedding columns."""
    frame = text_descriptors(texts)
    frame["predicted_label"] = [labels[i] for i in probs.argmax(axis=1)]
    frame["confidence"] = probs.max(axis=1).astype(float)
    emb = pd.DataFrame(embeddings, columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(embeddings.shape[1])])
    return pd.concat([frame, emb], axis=1)


def score_frame(predictor: Predictor, texts: list[str]) -> pd.DataFrame:
    """The monitoring columns for texts, scored by the predictor."""
    probs, embeddings = score_texts(predictor, texts)
    return scored_frame(texts, probs, embeddings, predictor.labels)


def embedding_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(EMBEDDING_PREFIX)]


# --------------------------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """New texts to check: ``frame`` has ``text`` and ``label`` (None where unknown or not in the label set)."""

    frame: pd.DataFrame
    source: str
    total_rows: int  # rows read, before dropping blanks and sampling
    dropped_blank: int = 0
    other_labels: list[str] = field(default_factory=list)  # label values outside the champion's label set

    @property
    def labelled(self) -> pd.DataFrame:
        return self.frame[self.frame["label"].notna()]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": len(self.frame),
            "rows_read": self.total_rows,
            "labelled_rows": len(self.labelled),
            "dropped_blank": self.dropped_blank,
        }


def _read_headerless(path: Path, sep: str) -> pd.DataFrame:
    """A CSV/TSV without a header row (e.g. GoEmotions' ``text<TAB>label ids<TAB>id``): the longest column is the text."""
    raw = pd.read_csv(
        path,
        sep=sep,
        header=None,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8-sig",
        quoting=3 if sep == "\t" else 0,
    )
    lengths = {c: raw[c].fillna("").str.len().mean() for c in raw.columns}
    text_col = max(lengths, key=lengths.get)
    return pd.DataFrame({"text": raw[text_col]})


def _read_batch_file(path: Path, data_cfg: DataConfig) -> pd.DataFrame:
    from pipeline.data.ingest import SUFFIX_FORMATS, read_table

    cfg = data_cfg.model_copy(update={"format": "auto"}) if path.suffix.lower() in SUFFIX_FORMATS else data_cfg
    frame = read_table(path, cfg)
    if "text" not in frame and path.suffix.lower() in (".csv", ".tsv"):
        log.info("%s has no '%s' column: reading it as a file without a header row", path, data_cfg.text_column)
        frame = _read_headerless(path, "," if path.suffix.lower() == ".csv" else "\t")
    if "text" not in frame:
        raise PipelineError(
            f"{path} has no text column '{data_cfg.text_column}' (columns: {list(frame.columns)}); set data.text_column"
        )
    return frame


def read_batch(
    path: str | Path, data_cfg: DataConfig, labels: list[str], mcfg: MonitorConfig, base_dir: Path = Path(".")
) -> Batch:
    """Read a batch file, or every supported file in a folder, keep text (and label when known), sample it down."""
    from pipeline.data.ingest import SUFFIX_FORMATS

    location = Path(path).expanduser()
    location = location if location.is_absolute() else base_dir / location
    if not location.exists():
        raise PipelineError(f"batch {location} does not exist")
    if location.is_dir():
        files = sorted(
            p
            for p in location.iterdir()
            if p.is_file() and p.suffix.lower() in SUFFIX_FORMATS and not p.name.startswith(".")
        )
        if not files:
            raise PipelineError(f"{location} holds no data files (suffixes {sorted(SUFFIX_FORMATS)})")
    else:
        files = [location]
    parts = [_read_batch_file(f, data_cfg) for f in files]
    frame = pd.concat([p[[c for c in ("text", "label") if c in p]] for p in parts], ignore_index=True)
    if "label" not in frame:
        frame["label"] = None
    total = len(frame)
    frame["text"] = frame["text"].map(lambda v: str(v) if pd.notna(v) else "")
    blank = frame["text"].str.strip() == ""
    frame = frame[~blank].reset_index(drop=True)
    known = set(labels)
    raw_labels = frame["label"].map(lambda v: str(v).strip() if pd.notna(v) else None)
    other = sorted({v for v in raw_labels.dropna() if v not in known})
    frame["label"] = raw_labels.map(lambda v: v if v in known else None)
    if other:
        log.warning(
            "%d label value(s) in %s are not in the champion's label set (e.g. %s): those rows count as unlabelled",
            len(other),
            location,
            ", ".join(repr(v) for v in other[:5]),
        )
    if len(frame) > mcfg.batch_max_rows:
        log.info("sampling %d of %d rows from %s (monitor.batch_max_rows)", mcfg.batch_max_rows, len(frame), location)
        frame = frame.sample(mcfg.batch_max_rows, random_state=mcfg.seed).reset_index(drop=True)
    if len(frame) < mcfg.min_batch_rows:
        raise PipelineError(
            f"batch {location} has {len(frame)} non-blank texts: at least {mcfg.min_batch_rows} are "
            "needed to test for drift (monitor.min_batch_rows)"
        )
    log.info(
        "batch %s: %d texts (%d labelled, %d blank dropped)",
        location,
        len(frame),
        int(frame["label"].notna().sum()),
        int(blank.sum()),
    )
    return Batch(frame, str(location), total, int(blank.sum()), other)


# --------------------------------------------------------------------------------------------- the champion and its data


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
    from pipeline.registry import tracking

    client = tracking.client(cfg)
    version = tracking.version_by_alias(cfg, client, tracking.CHAMPION)
    if version is None:
        raise PipelineError(
            f"no champion of '{cfg.mlflow.registered_model}' in {cfg.tracking_uri}: train and promote "
            "one with `emotion run` before monitoring drift"
        )
    model_dir = tracking.download_model(f"models:/{cfg.mlflow.registered_model}/{version.version}", dst)
    run = client.get_run(version.run_id) if version.run_id else None
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


def _dvc_dir_hash(snapshot_file: Path) -> str:
    """The hash ``dvc add`` gives a folder holding just this file (md5 of its JSON listing, with ``.dir``)."""
    md5 = hashlib.md5(snapshot_file.read_bytes()).hexdigest()
    listing = json.dumps([{"md5": md5, "relpath": snapshot_file.name}], sort_keys=True)
    return hashlib.md5(listing.encode()).hexdigest() + ".dir"


def snapshot_matches(frame: pd.DataFrame, data_hash: str) -> bool:
    """Whether ``frame`` written as a snapshot has exactly the recorded hash (DVC folder hash or md5: content hash)."""
    from pipeline.data.ingest import write_snapshot

    with tempfile.TemporaryDirectory(prefix="snapshot-check-") as tmp:
        path = write_snapshot(frame, Path(tmp) / "data")
        if data_hash.startswith("md5:"):
            return data_hash == "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
        return data_hash == _dvc_dir_hash(path)


def _from_dvc_cache(project_dir: Path, data_hash: str) -> pd.DataFrame | None:
    """The snapshot stored under ``data_hash`` in the project's DVC cache, or None when it is not there."""
    from pipeline.data.ingest import SNAPSHOT_NAME

    if not data_hash.endswith(".dir") or not (project_dir / ".dvc").is_dir():
        return None
    try:
        from dvc.repo import Repo

        with Repo(str(project_dir)) as repo:
            cache = repo.cache.local
            listing_path = Path(cache.oid_to_path(data_hash))
            if not listing_path.exists():
                return None
            entries = {e["relpath"]: e["md5"] for e in json.loads(listing_path.read_text())}
            if SNAPSHOT_NAME not in entries:
                return None
            blob = Path(cache.oid_to_path(entries[SNAPSHOT_NAME]))
    except Exception as exc:  # DVC raises many types for a broken or foreign cache; the next source is tried
        log.warning("cannot read the DVC cache of %s: %s", project_dir, exc)
        return None
    if not blob.exists():
        return None
    return pd.read_json(blob, lines=True, dtype=False, convert_dates=False)


def _data_config_from_params(cfg: Config, params: dict[str, str], source: str) -> DataConfig:
    """The DataConfig the champion's run was trained with (its logged params), falling back to the current one."""
    import yaml

    values = cfg.data.model_dump()
    for key in values:
        raw = params.get(f"data.{key}")
        if raw is not None and key != "source":
            try:
                values[key] = (
                    yaml.safe_load(raw) if key in ("labels", "dvc_track") else (None if raw == "None" else raw)
                )
            except yaml.YAMLError:
                pass
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
    from pipeline.data.ingest import normalize, read_source

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
    data_cfg = _data_config_from_params(cfg, champion.params, champion.data_source)
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
    from pipeline.registry import tracking

    client = tracking.client(cfg)
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
        hashlib.md5(Path(__file__).read_bytes()).hexdigest(),
    ]
    return "reference-" + hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------------------------- the verdict


@dataclass
class FeatureDrift:
    name: str
    kind: str  # descriptor | prediction | embedding
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftVerdict:
    """Drift or not, why, and every tested feature with its score."""

    drift: bool
    reasons: list[str]
    features: list[FeatureDrift]
    drifted_share: float  # share of descriptor + prediction columns that drifted
    drift_share_threshold: float
    batch: dict[str, Any]
    reference: dict[str, Any]
    champion: dict[str, Any]
    report_path: str | None = None
    label_shares: dict[str, dict[str, float]] = field(default_factory=dict)  # predicted-label shares per side

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = self.drifted_features
        out["scores"] = {f.name: round(f.score, 4) for f in self.features}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftVerdict:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["features"] = [FeatureDrift(**f) for f in data["features"]]
        return cls(**fields)

    def summary(self) -> str:
        lines = [
            f"drift     {'DETECTED' if self.drift else 'none'}  ({len(self.drifted_features)} of "
            f"{len(self.features)} features drifted)",
            *[f"          {reason}" for reason in self.reasons],
            f"batch     {self.batch.get('source')}  {self.batch.get('rows')} texts, "
            f"{self.batch.get('labelled_rows', 0)} labelled",
            f"reference {self.reference.get('rows')} rows  ({self.reference.get('provenance')})",
            f"champion  {self.champion.get('name')} version {self.champion.get('version')}",
            "features  " + "  ".join(f"{'*' if f.drifted else ' '}{f.name}={f.score:.3f}" for f in self.features[:4]),
            *[
                "          "
                + "  ".join(f"{'*' if f.drifted else ' '}{f.name}={f.score:.3f}" for f in self.features[i : i + 4])
                for i in range(4, len(self.features), 4)
            ],
            "          (* drifted; scores: distance for numeric and label columns, ROC AUC for the embedding)",
        ]
        if self.report_path:
            lines.append(f"report    {self.report_path}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = "\n".join(
            f"| {f.name} | {f.kind} | {f.method} | {f.score:.4f} | {f.threshold:g} | "
            f"{'**drift**' if f.drifted else 'ok'} |"
            for f in self.features
        )
        return "\n".join(
            [
                f"# Drift check: {'DRIFT DETECTED' if self.drift else 'no drift'}",
                "",
                *[f"- {reason}" for reason in self.reasons],
                f"- batch: `{self.batch.get('source')}`, {self.batch.get('rows')} texts "
                f"({self.batch.get('labelled_rows', 0)} labelled)",
                f"- reference: {self.reference.get('rows')} rows ({self.reference.get('provenance')})",
                f"- champion: {self.champion.get('name')} v{self.champion.get('version')}",
                f"- report: `{self.report_path}`" if self.report_path else "",
                "",
                "| feature | kind | method | score | threshold | result |",
                "|---|---|---|---|---|---|",
                rows,
            ]
        )


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


def detect_drift(
    reference: Reference,
    current: pd.DataFrame,
    mcfg: MonitorConfig,
    out_dir: Path,
    batch: dict[str, Any] | None = None,
    champion: dict[str, Any] | None = None,
) -> DriftVerdict:
    """Run the Evidently report on reference vs current, write ``drift_report.html`` and ``verdict.json``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset

    ref = reference.frame
    emb_cols = embedding_columns(ref)
    if embedding_columns(current) != emb_cols:
        raise PipelineError("the batch and the reference were embedded by different models: rebuild the reference")
    numeric = [*DESCRIPTORS, *PREDICTION_NUMERIC]
    categorical = list(PREDICTION_CATEGORICAL)
    columns = numeric + categorical
    definition = DataDefinition(
        numerical_columns=numeric + emb_cols, categorical_columns=categorical, embeddings={EMBEDDING_NAME: emb_cols}
    )
    method = ModelDriftMethod(threshold=mcfg.embedding_threshold)
    metrics: list[Any] = [
        DataDriftPreset(
            columns=columns,
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
    import warnings

    from evidently.legacy.metrics.data_drift import embeddings_drift

    plot_rows = embeddings_drift.SAMPLE_CONSTANT
    embeddings_drift.SAMPLE_CONSTANT = EMBEDDING_PLOT_ROWS  # Evidently samples this many rows for its t-SNE plot
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on constant reference columns; the test copes
        try:
            run = report.run(
                Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
                Dataset.from_pandas(ref.reset_index(drop=True), data_definition=definition),
            )
        finally:
            embeddings_drift.SAMPLE_CONSTANT = plot_rows
    run_dict = run.dict()
    per_column, dataset_drift = _column_results(run_dict)
    missing = [c for c in columns if c not in per_column]
    if missing:
        raise PipelineError(f"the Evidently report has no drift result for {missing}")

    auc, emb_drifted = _embedding_drift(run_dict, method, current[emb_cols], ref[emb_cols])
    features = [FeatureDrift(c, "descriptor" if c in DESCRIPTORS else "prediction", *per_column[c]) for c in columns]
    features.append(
        FeatureDrift(
            EMBEDDING_NAME, "embedding", "domain classifier ROC AUC", auc, mcfg.embedding_threshold, emb_drifted
        )
    )
    share = sum(f.drifted for f in features[:-1]) / len(columns)
    share_drift = dataset_drift if dataset_drift is not None else share >= mcfg.drift_share
    reasons = [
        f"{'DRIFT' if share_drift else 'ok'}: {share:.0%} of {len(columns)} descriptor and prediction columns "
        f"drifted (drift at >= {mcfg.drift_share:.0%})"
        + (f": {', '.join(f.name for f in features[:-1] if f.drifted)}" if share else ""),
        f"{'DRIFT' if emb_drifted else 'ok'}: embedding domain classifier ROC AUC {auc:.3f} "
        f"(drift above {mcfg.embedding_threshold})",
    ]
    verdict = DriftVerdict(
        drift=bool(share_drift or emb_drifted),
        reasons=reasons,
        features=features,
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
    log.info("drift %s: %s", "DETECTED" if verdict.drift else "not detected", "; ".join(reasons))
    return verdict


# --------------------------------------------------------------------------------------------- retraining data


@dataclass
class MergeResult:
    folder: Path
    added: dict[str, int]  # new rows per split
    skipped_duplicates: int
    base_rows: int

    def describe(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "added": self.added,
            "skipped_duplicates": self.skipped_duplicates,
            "base_rows": self.base_rows,
        }


def _holdout_split(text: str, holdout_fraction: float) -> str:
    """A stable split for a new row from its text: the same text always lands in the same split."""
    u = int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    if u < holdout_fraction / 2:
        return "test"
    if u < holdout_fraction:
        return "validation"
    return "train"


def merge_labelled(base: pd.DataFrame, new_rows: pd.DataFrame, holdout_fraction: float, out_dir: Path) -> MergeResult:
    """Write the base dataset plus new labelled rows as a source folder (train/validation/test JSONL).

    New texts already in the base (any split) are skipped, so no text leaks across splits; the rest are split
    by a hash of the text (``holdout_fraction`` to validation and test, half each). Ingest then snapshots the
    folder and DVC versions it like any source.
    """
    from pipeline.data.ingest import SPLITS

    labelled = new_rows[new_rows["label"].notna()][["text", "label"]].drop_duplicates("text")
    seen = set(base["text"].astype(str))
    fresh = labelled[~labelled["text"].isin(seen)].copy()
    fresh["split"] = fresh["text"].map(lambda t: _holdout_split(t, holdout_fraction))
    merged = pd.concat([base[["text", "label", "split"]], fresh], ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=False)
    for split in SPLITS:
        part = merged[merged["split"] == split][["text", "label"]]
        part.to_json(out_dir / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
    added = {s: int((fresh["split"] == s).sum()) for s in SPLITS}
    log.info(
        "merged %d new labelled rows %s into %d base rows -> %s (%d already known, skipped)",
        len(fresh),
        added,
        len(base),
        out_dir,
        len(labelled) - len(fresh),
    )
    return MergeResult(out_dir, added, len(labelled) - len(fresh), len(base))


def retrain_overrides(folder: Path, labels: list[str]) -> dict[str, Any]:
    """The data settings that train on a merged folder (its columns are text / label, split by file)."""
    return {
        "source": str(folder),
        "format": "auto",
        "text_column": "text",
        "label_column": "label",
        "split_column": "split",
        "labels": list(labels),
    }


# --------------------------------------------------------------------------------------------- tracking


def _champion_run_id(cfg: Config, mlflow_client: Any, champion: dict[str, Any]) -> str | None:
    """The training run of the champion version the verdict names, as its registry model version records it."""
    from mlflow.exceptions import MlflowException

    version = champion.get("version")
    if version is None:
        return None
    name = champion.get("name") or cfg.mlflow.registered_model
    try:
        return mlflow_client.get_model_version(name, str(version)).run_id
    except MlflowException as exc:
        raise PipelineError(
            f"the drift verdict names {name} version {version}, which the registry at "
            f"{cfg.tracking_uri} does not have: check mlflow.registered_model and the "
            "tracking URI"
        ) from exc


def log_drift_check(cfg: Config, verdict: DriftVerdict, out_dir: Path, run_name: str | None = None) -> str:
    """One MLflow run per check in ``monitor.experiment``: scores as metrics, report and verdict as artifacts.

    The run is tagged with the champion's version and training run, so a check leads back to the model it judged.
    """
    from pipeline.registry import tracking

    client = tracking.client(cfg)
    experiment_cfg = cfg.model_copy(
        update={"mlflow": cfg.mlflow.model_copy(update={"experiment": cfg.monitor.experiment})}
    )
    tags = {
        "drift": str(verdict.drift).lower(),
        "drifted_features": ",".join(verdict.drifted_features),
        "champion_version": verdict.champion.get("version"),
        "champion_run_id": _champion_run_id(cfg, client, verdict.champion),
        "data_hash": verdict.champion.get("data_hash"),
        "batch_source": verdict.batch.get("source"),
        "reference_provenance": verdict.reference.get("provenance"),
    }
    run = client.create_run(
        tracking.experiment_id(experiment_cfg, client),
        run_name=run_name,
        tags={k: str(v)[:5000] for k, v in tags.items() if v is not None},
    )
    run_id = run.info.run_id
    tracking.log_metrics(
        client,
        run_id,
        {
            **{f"drift_score.{f.name}": f.score for f in verdict.features},
            "drifted_share": verdict.drifted_share,
            "drift": float(verdict.drift),
            "batch_rows": verdict.batch.get("rows", 0),
            "reference_rows": verdict.reference.get("rows", 0),
        },
    )
    tracking.log_param_values(client, run_id, tracking.flatten(cfg.monitor.model_dump(), "monitor."))
    for name in ("drift_report.html", "verdict.json"):
        if (out_dir / name).exists():
            client.log_artifact(run_id, str(out_dir / name), "drift")
    client.set_terminated(run_id, "FINISHED")
    log.info("drift check logged to MLflow run %s (experiment %s)", run_id, cfg.monitor.experiment)
    return run_id


_PREDICTORS: dict[tuple[str, str, str, int], Predictor] = {}


def predictor_for(cfg: Config, model_dir: Path) -> Predictor:
    """A Predictor for the model folder, loaded once per process (the reference and the batch share it)."""
    from pipeline.model.predict import Predictor

    key = (str(model_dir), cfg.train.device, cfg.train.precision, cfg.model.max_length)
    if key not in _PREDICTORS:
        _PREDICTORS.clear()
        _PREDICTORS[key] = Predictor(model_dir, cfg.train.device, cfg.train.precision, cfg.model.max_length)
    return _PREDICTORS[key]


def format_check(result: dict[str, Any]) -> str:
    """The closing report of `emotion monitor`: the verdict, then what it triggered."""
    verdict = DriftVerdict.from_dict(result)
    retraining = result.get("retraining") or {}
    lines = ["", "== emotion drift check ==", verdict.summary()]
    if result.get("mlflow_run_id"):
        lines.append(f"mlflow    run {result['mlflow_run_id']} (experiment of monitor.experiment)")
    if retraining.get("triggered"):
        if retraining.get("mode") == "deployment":
            lines.append(f"retrain   started {retraining.get('deployment')} flow run {retraining.get('flow_run_id')}")
        else:
            merged = retraining.get("merged")
            if merged:
                lines.append(
                    f"retrain   merged {sum(merged['added'].values())} new labelled rows {merged['added']} "
                    f"-> {merged['folder']}"
                )
            lines.append(
                f"retrain   version {retraining.get('version')} on {retraining.get('data_source')}: gate "
                f"{'PASSED' if retraining.get('gate_passed') else 'FAILED'}, aliases "
                f"{', '.join(retraining.get('aliases') or [])}"
            )
    else:
        lines.append(f"retrain   no: {retraining.get('reason', 'not triggered')}")
    return "\n".join(lines)
