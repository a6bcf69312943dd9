"""One typed configuration for every driver (CLI, Prefect, DVC), read from params.yaml.

The classes' defaults equal params.yaml (a unit test walks both). Named recipes (recipes/<name>.yaml: partial
params trees, e.g. a benchmark's training settings) layer over params.yaml. Any key can be overridden with
``--set dotted.key=value``; values are parsed as YAML, so ``--set train.max_steps=50`` gives an int and
``--set data.labels=null`` clears a list.
"""

from __future__ import annotations

import codecs
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import paths
from pipeline.errors import PipelineError

EMBEDDED_MODEL = "embedded"
SAMPLE_SOURCE = "sample"
EMOTION_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")  # dair-ai/emotion's id order
DEFAULT_PARAMS = Path("params.yaml")
RECIPES_DIR = "recipes"
REPO_RECIPES = Path(__file__).resolve().parent.parent / RECIPES_DIR  # named recipes shipped with the code
DELIMITER_ALIASES = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Section):
    """Where the labelled text comes from and how to read it."""

    # "sample", a directory (split files or one sub-folder per label), a file, a glob, a list of those, or "hf:<id>"
    source: str | list[str] = SAMPLE_SOURCE
    format: Literal["auto", "text", "csv", "tsv", "jsonl", "json", "parquet", "xlsx", "goemotions"] = "auto"
    delimiter: str = "auto"  # csv: auto sniffs comma/semicolon/tab/pipe; or one character, or comma|semicolon|tab|pipe
    quotechar: str | None = '"'  # null = no quoting
    escapechar: str | None = None
    header: bool = True  # false: columns are named col1, col2, ...
    comment: str | None = None  # lines starting with this character (between rows) are left out
    encoding: str = "utf-8"  # a BOM always wins; auto = UTF-8, then cp1252 (reported); or any Python codec name
    bad_rows: Literal["error", "skip", "warn"] = "error"  # rows whose field count is wrong; always reported
    sheet: str | None = None  # xlsx: sheet name; null = the first sheet
    text_column: str = "text"
    label_column: str = "label"
    split_column: str = "split"
    labels: list[str] | None = list(EMOTION_LABELS)  # declared label set, in id order; None = infer from train
    multi_label: bool = False  # labels are lists (GoEmotions, or a column of separated labels)
    label_separator: str = ","  # between labels in a multi-label CSV/TSV cell
    # several 0/1 indicator columns, one per label (SemEval-2018 E-c), make a multi-label dataset: their names, or
    # "auto" (every column of only 0s and 1s besides text and split); sets multi_label; None = data.label_column
    label_columns: list[str] | Literal["auto"] | None = None
    # label_columns rows with no 1: labelled neutral | left out (drop) | the run stops (error)
    empty_labels: Literal["neutral", "drop", "error"] = "neutral"
    # named ranges turning a column of numeric scores (e.g. valence 1-5) into labels: {low: [1, 2.5], ...};
    # low <= score < high (the top range includes its high); None = a column of scores is refused
    label_bins: dict[str, list[float]] | None = None
    # numeric label ids name these labels (id = position); null = labels as written
    label_names: list[str] | None = None
    # applied after case/whitespace normalisation: rename, merge (same target), drop (null)
    label_map: dict[str, str | None] = {}
    split_ratios: list[float] = Field(
        [0.8, 0.1, 0.1], min_length=3, max_length=3
    )  # train/val/test, for unsplit sources
    split_seed: int = 42
    hf_config: str | None = None  # dataset config name for hf: sources
    snapshot_dir: str = "data"  # normalized snapshot tracked by DVC (data.dvc)
    dvc_track: bool = True  # `dvc add` the snapshot after ingest
    dvc_remote: str | None = (
        "dvc-remote"  # folder or URL (s3://..., gs://..., ssh://...) to push snapshots to; null = none
    )

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        value = DELIMITER_ALIASES.get(value.lower(), value)
        if value != "auto" and len(value) != 1:
            raise ValueError(f"'{value}' is not auto, one character, or one of {', '.join(DELIMITER_ALIASES)}")
        return value

    @field_validator("quotechar", "escapechar", "comment")
    @classmethod
    def _one_char(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 1:
            raise ValueError(f"'{value}' is not a single character")
        return value or None

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        if value != "auto":
            try:
                codecs.lookup(value)
            except LookupError as exc:
                raise ValueError(
                    f"unknown encoding '{value}': use auto or a Python codec name (utf-8, cp1252, ...)"
                ) from exc
        return value

    @field_validator("label_map", mode="before")
    @classmethod
    def _map_keys(cls, value: Any) -> Any:
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value  # YAML reads 0: as an int

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str] | None) -> list[str] | None:
        return [" ".join(str(v).split()).lower() for v in value] if value is not None else None  # as the data's

    @field_validator("label_columns")
    @classmethod
    def _label_columns(cls, value: list[str] | str | None) -> list[str] | str | None:
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError(f"list the indicator columns once each (or use auto), got {value}")
        return value

    @field_validator("label_bins")
    @classmethod
    def _label_bins(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("name at least one range, e.g. {low: [1, 2.5], high: [2.5, 5]}, or use null")
        for name, span in value.items():
            if len(span) != 2 or not span[0] < span[1]:
                raise ValueError(f"range '{name}' must be [low, high] with low < high, got {span}")
        spans = sorted(value.values())
        for (_, high), (low, _) in itertools.pairwise(spans):
            if low < high:
                raise ValueError(f"ranges overlap: one ends at {high:g} after the next starts at {low:g}")
        return value

    @model_validator(mode="after")
    def _label_shape(self) -> DataConfig:
        """Indicator columns always make multi-label data: multi_label follows them instead of being refused."""
        if self.label_columns is not None and self.label_bins is not None:
            raise ValueError("label_columns (0/1 columns) and label_bins (one score column) exclude each other")
        if self.label_bins is not None and self.multi_label:
            raise ValueError("label_bins turns one score per row into one label: it needs multi_label: false")
        if self.label_columns is not None:
            self.multi_label = True
        return self


class CleanConfig(_Section):
    """Text repair and normalization applied before encoding (and, from the model folder, at prediction); the raw
    snapshot is never changed."""

    repair_html: bool = True  # HTML entities unescaped: &quot; &amp; &#39; -> " & '
    repair_mojibake: bool = True  # ftfy fixes UTF-8 read as Latin-1/cp1252: donâ€™t -> don’t, ï¿½ -> U+FFFD
    repair_line_breaks: bool = True  # literal two-character \n, \r and stray carriage returns -> line breaks
    unicode_form: Literal["NFC", "NFKC", "none"] = "NFKC"
    lowercase: bool = False
    mask_urls: bool = True  # http(s)://... and www.... -> url_token
    url_token: str = "<url>"
    mask_mentions: bool = True  # @name -> mention_token
    mention_token: str = "@user"
    drop_duplicates: bool = True  # the same text (and labels) again within a split: keep the first
    conflicts: Literal["drop", "majority", "keep"] = "majority"  # same text, different labels within a split
    drop_leakage: bool = True  # validation/test rows whose text is also in train


Severity = Literal["error", "warning", "off"]


class CheckSeverity(_Section):
    """Configurable data checks: error stops the run, warning is only reported, off skips the check.

    Columns, dataset not empty, label/split not null, label in declared set, at least two labels, split names
    known and every split present are always errors: the later steps cannot run without them.
    """

    text_not_null: Severity = "error"
    text_not_blank: Severity = "error"
    text_length: Severity = "warning"
    label_min_count: Severity = "error"
    duplicates: Severity = "warning"  # cleaning drops them (clean.drop_duplicates)
    leakage: Severity = "warning"  # cleaning drops them from validation/test (clean.drop_leakage)
    conflicts: Severity = "warning"  # cleaning resolves them (clean.conflicts)
    class_balance: Severity = "warning"


class ValidationConfig(_Section):
    """Thresholds and severities of the Great Expectations data checks (pipeline/data/validate.py)."""

    min_text_chars: int = Field(2, ge=0)
    max_text_chars: int = Field(2000, ge=1)
    min_train_count: int = Field(10, ge=1)  # rows per label in the train split
    max_imbalance_ratio: float = Field(20.0, ge=1)  # most common label's train count / rarest's
    severity: CheckSeverity = CheckSeverity()


class ModelConfig(_Section):
    """Which encoder to fine-tune: 'embedded' (all-MiniLM-L6-v2 from its PyPI package), a folder, or a hub id."""

    name: str = EMBEDDED_MODEL
    max_length: int = Field(128, gt=0)
    # texts per forward pass when a model scores validation, test or drift texts (length-sorted); serving and batch
    # scoring have their own (serve.batch_size, score.batch_size)
    inference_batch_size: int = Field(64, ge=1)


class PeftSettings(_Section):
    """Parameter-efficient fine-tuning (LoRA, pipeline/training/lora.py): the encoder or LLM stays frozen, small
    low-rank adapters and the classification head train; the saved model has the adapters merged in."""

    enabled: bool = False
    rank: int = Field(8, ge=1)  # r: the adapters' inner dimension
    alpha: int = Field(16, ge=1)  # the update is scaled by alpha / rank
    dropout: float = Field(0.05, ge=0, lt=1)  # dropout on the adapters' input
    target_modules: list[str] | None = None  # module names to adapt; None = the default for the model type
    quantize: Literal["none", "4bit", "8bit"] = "none"  # load the frozen model quantized (QLoRA): CUDA + bitsandbytes

    @model_validator(mode="after")
    def _quantize_needs_adapters(self) -> PeftSettings:
        if self.quantize != "none" and not self.enabled:
            raise ValueError("quantize needs enabled: true (a quantized model can only train adapters)")
        return self


class TeacherRuns(_Section):
    """Teachers trained inside the run before the student (pipeline/training/teachers.py, flows/training.py).

    Each seed is one teacher with the student's settings (``teacher_overrides`` changed); the student (``seed``)
    then learns from their mean predictions, with ``train.teachers`` as well, and is the model evaluated and gated.
    """

    teacher_seeds: list[int] = []  # one teacher per seed; [] = no teachers trained in the run
    teacher_overrides: dict[str, Any] = {}  # train.* keys the teachers use instead of the student's, e.g. epochs
    parallelism: int = Field(1, ge=1)  # teachers trained at once, each in its own process; 1 = one after another


TEACHER_FIXED = ("seed", "teachers", "distill", "checkpoint_dir")  # a teacher's own, not overridable


class TrainConfig(_Section):
    epochs: int = Field(6, ge=1)
    max_steps: int | None = Field(None, ge=0)  # caps optimizer steps (smoke runs); None = no cap
    batch_size: int = Field(16, ge=1)  # per device and per micro-batch
    grad_accumulation: int = Field(1, ge=1)  # micro-batches per optimizer step
    learning_rate: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    class_weights: Literal["none", "balanced", "sqrt"] = "none"  # loss weights against imbalance (macro-F1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # target mass moved off the given label(s); 0 = plain CE/BCE
    layer_lr_decay: float = Field(1.0, gt=0, le=1)  # lr x decay^depth below the head (LLRD); 1 = one lr for all
    group_by_length: bool = True  # batches of similar length (less padding); false = plain random batches
    fused_optimizer: bool = True  # one fused AdamW kernel; false = torch's per-tensor (foreach) AdamW
    fast_dropout: bool = (
        True  # CPU only: dropout masks from 16-bit lanes of 64-bit draws (pipeline/training/fast_dropout.py)
    )
    eval_every: int | None = Field(None, ge=1)  # evaluate (and checkpoint) every N optimizer steps; None = per epoch
    patience: int | None = Field(None, ge=1)  # stop after N evaluations without a better validation macro-F1
    # average the weights at every evaluation from this epoch on; the average is kept if it beats the best single
    # evaluation on validation macro-F1 (checkpoint averaging); None = off
    average_from: int | None = Field(None, ge=1)
    checkpoint_dir: str = "artifacts/checkpoints"  # `emotion train`'s resumable state (`emotion run`: its run folder)
    resume: bool = True
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42
    # seed of the new classifier head's initial weights (None = seed); runs that share it and differ in seed
    # (batch order, dropout) stay close enough in weight space to be averaged into one model (pipeline/training/soup.py)
    init_seed: int | None = None
    # knowledge distillation (pipeline/training/distill.py): saved models with the same labels whose mean
    # predictions on the train split the new model also learns from; [] = off
    teachers: list[str] = []
    distill_weight: float = Field(0.5, ge=0, le=1)  # share of the loss from the teachers (the rest: gold labels)
    distill_temperature: float = Field(2.0, gt=0)  # softens the teachers' and the student's distributions
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, ~30% more time
    peft: PeftSettings = PeftSettings()
    distill: TeacherRuns = TeacherRuns()

    def teacher(self, seed: int) -> TrainConfig:
        """A teacher's settings: the student's with ``distill.teacher_overrides``, its own seed, no teachers."""
        settings = self.model_dump(exclude={"distill"}) | self.distill.teacher_overrides
        return TrainConfig.model_validate(settings | {"seed": seed, "teachers": []})

    @model_validator(mode="after")
    def _teacher_plan(self) -> TrainConfig:
        seeds = self.distill.teacher_seeds
        if not seeds:
            return self
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"distill.teacher_seeds {seeds} repeats a seed: two teachers would be the same model")
        if self.seed in seeds:
            raise ValueError(
                f"the student's seed {self.seed} is also a teacher seed: give train.seed a value of its own"
            )
        if self.distill_weight == 0:
            raise ValueError("distill.teacher_seeds with distill_weight 0: the student would ignore its teachers")
        fixed = sorted(set(self.distill.teacher_overrides) & set(TEACHER_FIXED))
        if fixed:
            raise ValueError(f"distill.teacher_overrides cannot set {fixed}: each teacher has its own")
        try:
            self.teacher(seeds[0])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"distill.teacher_overrides: {problems}") from None
        return self


class EvaluateConfig(_Section):
    """Test-set uncertainty: percentile-bootstrap intervals over test rows (pipeline/evaluation/intervals.py), and
    K-fold cross-validation of the train + validation pool (pipeline/evaluation/cross_validation.py)."""

    bootstrap_samples: int = Field(1000, ge=100)  # resamples of the test rows, for every interval and the gate
    confidence: float = Field(0.95, gt=0, lt=1)  # of the metric intervals in metrics.json, MLflow and the card
    seed: int = 0  # the same seed, rows and predictions give the same intervals
    cv_folds: int = Field(0, ge=0)  # K stratified folds before the final model (0 = off; K >= 2)
    cv_always: bool = False  # also cross-validate sources that come with their own train/validation/test split

    @field_validator("cv_folds")
    @classmethod
    def _folds(cls, value: int) -> int:
        if value == 1:
            raise ValueError("1 fold is no cross-validation: use 0 (off) or K >= 2 folds")
        return value


class GateConfig(_Section):
    """Promotion rules: absolute floors, calibration, behaviour, and the largest significant drop vs the champion.

    Against the champion (same test rows, paired bootstrap): refused only when the upper bound of the interval of
    (candidate - champion) is below -max_regression, i.e. significantly worse by more than the margin.
    """

    min_accuracy: float = Field(0.6, ge=0, le=1)
    min_macro_f1: float = Field(0.6, ge=0, le=1)
    min_class_f1: float = Field(0.3, ge=0, le=1)  # so one emotion cannot collapse unnoticed
    max_regression: float = Field(0.01, ge=0, le=1)  # margin: macro-F1 (and accuracy) it may lose vs champion
    max_class_regression: float = Field(0.1, ge=0, le=1)  # margin: per-class F1 it may lose vs champion
    confidence: float = Field(0.95, gt=0, lt=1)  # "significantly worse": the interval of the difference, this level
    max_ece: float = Field(0.15, ge=0, le=1)  # expected calibration error on test, after temperature scaling
    min_mft_accuracy: float = Field(0.7, ge=0, le=1)  # share of clear per-emotion sentences labelled right
    min_invariance: float = Field(0.85, ge=0, le=1)  # share of name/place/number/punctuation edits that keep the label
    invariance_tolerance: float = Field(0.2, ge=0, le=1)  # largest move of the top probability still called invariant
    min_shadow_samples: int = Field(0, ge=0)  # `emotion promote` needs this many shadow-scored texts; 0 = not required
    min_shadow_agreement: float = Field(0.9, ge=0, le=1)  # and this label agreement with the champion (when required)


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlflow/mlflow.db"
    artifact_root: str = "mlflow/artifacts"
    experiment: str = "emotion"
    registered_model: str = "emotion-classifier"
    lock_file: str = "mlflow/registry.lock"  # alias moves on this machine; across machines: the registry lease


class ServeConfig(_Section):
    """The REST API and demo page (`emotion serve`): limits, hot reload and the inference backend."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    alias: str = "champion"  # the registry alias served by default
    max_texts: int = Field(64, ge=1)  # texts per request
    max_chars: int = Field(2000, ge=1)  # characters per text
    explain_steps: int = Field(32, ge=2, le=512)  # Integrated Gradients steps per explanation (/explain, --explain)
    explain_concurrency: int = Field(1, ge=1)  # explanations computed at once, on threads of their own (/explain)
    explain_queue: int = Field(4, ge=0)  # explanations waiting for one of those; beyond -> 429 + Retry-After
    explain_max_chars: int = Field(2000, ge=1)  # characters per explained text (and at most max_chars)
    refresh_seconds: float = Field(10.0, ge=0)  # how often to look for a new champion; 0 = only on POST /reload
    backend: Literal["torch-fp32", "torch-bf16", "int8", "onnx-fp32", "onnx-int8", "onnx-int8-static"] = "torch-bf16"
    export_onnx: bool = True  # registering a version also logs onnx/model.onnx (fp32) for the onnx-* backends
    parity_tolerance: float = Field(0.003, ge=0, le=1)  # accuracy a fast backend may lose vs fp32 (0.003 = 0.3 points)
    parity_source: str | None = None  # labelled data whose test split checks parity; None = data.source
    batch_size: int = Field(8, ge=1)  # texts per forward pass: small, length-sorted batches waste little padding
    max_batch_texts: int = Field(256, ge=1)  # texts of concurrent requests run together in one call
    max_loaded_versions: int = Field(2, ge=0)  # non-champion versions kept loaded for the demo's version picker
    threads: int | None = Field(None, ge=1)  # torch threads per process; None = cores - 1, or cores // workers
    workers: int = Field(1, ge=1)  # server processes on one port, each with its own model and batcher
    access_log: bool = True
    shadow: str | None = None  # an alias (e.g. challenger) also scored in the background; None = no shadow
    shadow_fraction: float = Field(1.0, ge=0, le=1)  # share of champion-served requests also shadow-scored
    shadow_queue: int = Field(64, ge=1)  # requests waiting for the shadow; more are dropped (counted), never block
    shadow_log_seconds: float = Field(60.0, gt=0)  # how often agreement is written to the shadow version's tags
    canary_fraction: float = Field(0.0, ge=0, le=1)  # share of /predict traffic (no version asked) for canary_alias
    canary_alias: str = "challenger"  # the alias the canary share goes to
    max_queue: int = Field(1024, ge=1)  # texts waiting for inference; a request beyond this gets 503 + Retry-After
    request_timeout_seconds: float = Field(30.0, gt=0)  # longest wait for an inference; longer -> 504
    body_timeout_seconds: float = Field(10.0, gt=0)  # longest wait for a request's headers, then its body -> 408
    load_interval_seconds: float = Field(5.0, ge=0)  # at most one on-demand version load this often; else 429
    admin_token: str | None = None  # when set, /reload and /models need "Authorization: Bearer <token>"
    allowed_hosts: list[str] = ["127.0.0.1", "localhost", "testserver"]  # Host headers answered (+ the bind host)
    ray_address: str | None = None  # --engine ray: a running cluster's HOST:PORT; None = start a local Ray
    ray_replicas: int = Field(2, ge=1)  # emotion serve --engine ray: copies of the app, each with its own model
    ray_cpus_per_replica: float = Field(1.0, gt=0)  # CPUs Ray reserves per replica (whole ones = its torch threads)
    ray_max_ongoing_requests: int = Field(64, ge=1)  # requests in flight per replica: what its batcher can gather
    ray_max_replicas_per_node: int | None = Field(None, ge=1)  # None = Serve's best-effort spread; 1 = one per node
    ray_proxy_location: Literal["HeadOnly", "EveryNode"] = "HeadOnly"  # where Serve's HTTP proxies listen


class MonitorConfig(_Section):
    """Drift monitoring (`emotion monitor`, the daily drift check) and what a drift verdict triggers."""

    batch_source: str | None = None  # new texts the scheduled drift check reads (file or folder); None = none
    batch_max_rows: int = Field(2000, ge=1)  # larger batches are sampled down (seeded) to this many rows
    min_batch_rows: int = Field(30, ge=2)  # fewer rows than this is too little to test for drift
    reference_splits: list[str] = ["validation"]  # of the champion's data; held out, so its confidence is honest
    reference_size: int = Field(1000, ge=10)  # reference rows sampled (seeded) from those splits
    seed: int = 0
    drift_share: float = Field(0.3, gt=0, le=1)  # drift when this share of descriptor + prediction columns drifted
    num_method: str = "wasserstein"  # Evidently stat test for numeric columns (descriptors, confidence)
    num_threshold: float = Field(0.2, gt=0)  # in-distribution noise at 500 vs 1000 rows: 95th percentile ~0.12
    cat_method: str = "jensenshannon"  # Evidently stat test for the predicted-label distribution
    cat_threshold: float = Field(0.1, gt=0)
    embedding_threshold: float = Field(0.6, gt=0.5, le=1)  # domain-classifier ROC AUC on sentence embeddings
    embedding_plot: bool = True  # put the embedding drift (t-SNE plot, ~10 s) in the HTML report
    trigger: Literal["off", "on_drift", "schedule_only"] = "on_drift"  # what a drift verdict starts
    retrain_deployment: str | None = None  # e.g. "emotion-retrain/weekly": retrain as a deployment run, not a subflow
    merged_dir: str = "artifacts/merged"  # champion data + new labelled rows, one folder per merge
    holdout_fraction: float = Field(0.2, ge=0, lt=1)  # share of new labelled rows for validation + test (half each)
    training_cron: str | None = "0 3 * * 1"  # scheduled retraining (weekly); None = no schedule
    drift_cron: str | None = "0 6 * * *"  # scheduled drift check (daily); None = no schedule
    timezone: str = "UTC"
    experiment: str = "emotion-monitoring"  # MLflow experiment of the drift checks

    @field_validator("trigger", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


class ScoreConfig(_Section):
    """Batch scoring of files (`emotion score`, the batch-scoring flow): chunking, inference and the schedule."""

    batch_source: str | None = None  # file, folder or glob the scheduled scoring run reads; None = no schedule
    output_dir: str = "artifacts/scores"  # where scheduled runs write <stamp>-<batch>.parquet
    chunk_size: int = Field(10000, ge=1)  # input rows per shard: memory use and the unit of resume
    batch_size: int = Field(64, ge=1)  # texts per forward pass (length-sorted within a chunk)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # backend torch only
    # torch (the model in torch, `precision`) | onnx-fp32 | onnx-int8 (ONNX Runtime, no torch in the scoring
    # process; int8 only after the parity check on serve.parity_source, as serving does)
    backend: Literal["torch", "onnx-fp32", "onnx-int8"] = "torch"
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # engine ray: a running cluster's HOST:PORT; None = start a local Ray
    cron: str | None = None  # scheduled batch scoring, e.g. "0 2 * * *"; None = on demand only
    check_drift: bool = False  # run the drift check on the same batch after scoring
    experiment: str = "emotion-scoring"  # MLflow experiment of the scoring runs


class SearchParam(_Section):
    """One searched setting: a float or int range (``log`` samples evenly in log space) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _shape(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("categorical takes a non-empty list of choices (and no low/high)")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise ValueError(f"{self.type} takes low and high (and no choices)")
        if self.low > self.high or (self.log and self.low <= 0):
            raise ValueError(f"needs low <= high{' and low > 0 (log scale)' if self.log else ''}")
        if self.type == "int" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError("int takes whole-number low and high")
        return self

    def candidates(self) -> list[Any]:
        """The values that bound what the search may try: each must be a valid setting."""
        if self.type == "categorical":
            return list(self.choices or [])
        bounds = [float(self.low or 0.0), float(self.high or 0.0)]  # both set: checked in _shape
        return [int(b) for b in bounds] if self.type == "int" else bounds


class TuneConfig(_Section):
    """Hyperparameter search (`emotion tune`, pipeline/stages/tune.py): Optuna TPE with median pruning on
    validation macro-F1; the best trial is written as a recipe."""

    trials: int = Field(20, ge=1)  # trials this worker runs (several workers on one study each run this many)
    timeout_minutes: float | None = Field(None, gt=0)  # this worker stops starting trials after this; None = no limit
    study: str = "emotion-tune"  # workers with the same study name and storage join one study
    storage: str | None = None  # an Optuna storage URL (env OPTUNA_STORAGE); None = sqlite in artifacts/tune/
    seed: int | None = 0  # TPE sampler seed; give each worker of a shared study its own (or None = random)
    startup_trials: int = Field(5, ge=0)  # trials sampled at random and never pruned before TPE and pruning start
    warmup_evaluations: int = Field(1, ge=0)  # a trial is not pruned at its first N validation evaluations
    recipe: str = "recipes/tuned.yaml"  # the best trial's settings: `emotion run --recipe tuned` (or this path)
    experiment: str = "emotion-tuning"  # MLflow experiment: one parent run per worker, one nested run per trial
    # train.<key>: {type: float|int, low, high, log} or {type: categorical, choices}; null leaves a key out
    space: dict[str, dict[str, Any] | None] = {
        "learning_rate": {"type": "float", "low": 1.0e-5, "high": 5.0e-4, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "epochs": {"type": "int", "low": 2, "high": 8},
        "layer_lr_decay": {"type": "float", "low": 0.7, "high": 1.0},
        "class_weights": {"type": "categorical", "choices": ["none", "sqrt", "balanced"]},
        "label_smoothing": {"type": "float", "low": 0.0, "high": 0.2},
        "warmup_fraction": {"type": "float", "low": 0.0, "high": 0.2},
    }

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, dict[str, Any] | None]) -> dict[str, dict[str, Any] | None]:
        for name, spec in value.items():
            if spec is not None:
                _check_search_param(name, spec)
        return value

    def search_space(self) -> dict[str, SearchParam]:
        """The searched train settings by name (entries set to null are left out)."""
        return {name: SearchParam.model_validate(spec) for name, spec in self.space.items() if spec is not None}


def _check_search_param(name: str, spec: dict[str, Any]) -> None:
    """A searched key must be a train setting, and every value the search may try a valid one."""
    if name not in TrainConfig.model_fields:
        raise ValueError(
            f"unknown parameter '{name}': the search space takes train settings ({', '.join(TrainConfig.model_fields)})"
        )
    try:
        param = SearchParam.model_validate(spec)
    except ValidationError as exc:
        raise ValueError(f"'{name}': {'; '.join(err['msg'] for err in exc.errors())}") from exc
    for candidate in param.candidates():
        try:
            TrainConfig.model_validate({name: candidate})
        except ValidationError as exc:
            raise ValueError(
                f"'{name}' may take {candidate!r}, not a valid train.{name}: {exc.errors()[0]['msg']}"
            ) from exc


class Config(_Section):
    project_dir: str = "."  # relative paths below resolve against this
    recipes: list[str] = []  # recipe files layered over params.yaml, as named (recipes/<name>.yaml or a path)
    artifacts_dir: str = "artifacts"
    lock_timeout: float = Field(600.0, ge=0)  # seconds to wait for the project or registry lock before giving up
    data: DataConfig = DataConfig()
    clean: CleanConfig = CleanConfig()
    checks: ValidationConfig = ValidationConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    mlflow: MlflowConfig = MlflowConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    score: ScoreConfig = ScoreConfig()
    tune: TuneConfig = TuneConfig()

    @model_validator(mode="after")
    def _folds_without_teachers(self) -> Config:
        """Teachers trained on all of train + validation have seen every fold's held-out rows: CV would leak."""
        if self.evaluate.cv_folds >= 2 and (self.train.teachers or self.train.distill.teacher_seeds):
            raise ValueError(
                "evaluate.cv_folds with teachers (train.teachers or train.distill.teacher_seeds): the teachers have"
                " seen every fold's held-out rows; cross-validate without distillation"
            )
        return self

    def path(self, relative: str | Path) -> Path:
        """Resolve a config path against the project directory."""
        p = Path(relative)
        return p if p.is_absolute() else Path(self.project_dir).resolve() / p

    @property
    def artifacts(self) -> Path:
        return self.path(self.artifacts_dir)

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI with a relative sqlite path made absolute."""
        uri = self.mlflow.tracking_uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.path(uri[len(prefix) :]))
        return uri

    def write_folders(self) -> dict[str, Path]:
        """Every folder the config names for writing, by config key, resolved against the project."""
        folders = {
            "data.snapshot_dir": self.path(self.data.snapshot_dir),
            "artifacts_dir": self.path(self.artifacts_dir),
            "train.checkpoint_dir": self.path(self.train.checkpoint_dir),
            "mlflow.artifact_root": self.path(self.mlflow.artifact_root),
            "monitor.merged_dir": self.path(self.monitor.merged_dir),
            paths.LOCK_KEY: self.path(self.mlflow.lock_file).parent,
        }
        remote = self.data.dvc_remote
        if remote is not None and "://" not in remote:  # a folder, not a URL
            folders["data.dvc_remote"] = self.path(remote)
        return {key: path.resolve() for key, path in folders.items()}

    @property
    def registry(self) -> RegistrySettings:
        """What the registry layer needs of this config, resolved: it never sees the whole Config."""
        return RegistrySettings(
            tracking_uri=self.tracking_uri,
            artifact_root=self.path(self.mlflow.artifact_root),
            experiment=self.mlflow.experiment,
            model_name=self.mlflow.registered_model,
            lock_file=self.path(self.mlflow.lock_file),
            lock_timeout=self.lock_timeout,
            min_shadow_samples=self.gate.min_shadow_samples,
            min_shadow_agreement=self.gate.min_shadow_agreement,
        )


@dataclass(frozen=True)
class RegistrySettings:
    """The MLflow store and registered model a command works with, and the rules of moving its champion."""

    tracking_uri: str  # relative sqlite paths made absolute
    artifact_root: Path  # where a local store's experiment keeps artifacts
    experiment: str
    model_name: str  # the registered model
    lock_file: Path  # alias moves on this machine queue on it
    lock_timeout: float
    min_shadow_samples: int  # a manual promotion needs this shadow evidence (gate.min_shadow_*)
    min_shadow_agreement: float


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (as in YAML 1.2): `off`, `no`, `on`, `yes` stay strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise PipelineError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


# settings that name inputs: a relative one given with --set means the folder where it was typed. The project's own
# folders (data.snapshot_dir, artifacts_dir, the MLflow store, ...) stay relative to project_dir: they are its layout
ANCHORED_PATHS = (
    "data.source",
    "model.name",
    "train.teachers",
    "serve.parity_source",
    "monitor.batch_source",
    "score.batch_source",
)
NOT_PATHS = {SAMPLE_SOURCE, EMBEDDED_MODEL}


def _anchored(value: Any, cwd: Path, key: str) -> Any:
    """``value`` with a relative path made absolute against ``cwd``; sources that are not paths stay as given
    (``sample``, ``embedded``, ``hf:...``, URLs; a model name that is no folder here is a hub id)."""
    if isinstance(value, list):
        return [_anchored(item, cwd, key) for item in value]
    if not isinstance(value, str) or not value or value in NOT_PATHS or "://" in value or value.startswith("hf:"):
        return value
    if Path(value).expanduser().is_absolute():
        return value
    if key == "model.name" and not (cwd / value).exists():
        return value  # a hub id such as bert-base-uncased
    return str(cwd / value)


def anchor_paths(tree: dict[str, Any], cwd: Path) -> dict[str, Any]:
    """The ``--set`` tree with every relative input path resolved against ``cwd``, the folder it was typed in:
    ``--set serve.parity_source=../data --set project_dir=/tmp/p`` reads ``../data`` from here, not from /tmp/p."""
    out = dict(tree)
    for key in ANCHORED_PATHS:
        section, leaf = key.split(".")
        holder = out.get(section)
        if isinstance(holder, dict) and leaf in holder:
            out[section] = holder | {leaf: _anchored(holder[leaf], cwd, key)}
    return out


def _override_value(key: str, raw: str) -> Any:
    """``raw`` read as YAML (``1`` a number, ``[a, b]`` a list); text YAML cannot read is named, not a traceback."""
    if not raw.strip():
        return ""
    try:
        return _yaml(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PipelineError(f"--set {key}: {raw!r} is not a YAML value ({problem}); quote it: {key}='...'") from exc


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict, parsing each value as YAML."""
    tree: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PipelineError(f"--set expects dotted.key=value, got '{item}'")
        _set_dotted(tree, key.strip(), _override_value(key.strip(), raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    try:
        tree = _yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(tree, dict):
        raise PipelineError(f"{what} {path} must be a mapping of config keys, got {type(tree).__name__}")
    return tree


def _validate(tree: dict[str, Any], what: str) -> Config:
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise PipelineError(f"{what}: {problems}") from exc


def recipe_dirs(project_dir: str | Path = ".") -> list[Path]:
    """Where recipe names are looked up: the project's recipes/, the working directory's, then this repository's."""
    found: list[Path] = []
    for folder in (Path(project_dir) / RECIPES_DIR, Path.cwd() / RECIPES_DIR, REPO_RECIPES):
        if folder.resolve() not in [f.resolve() for f in found]:
            found.append(folder)
    return found


def available_recipes(project_dir: str | Path = ".") -> list[str]:
    return sorted({path.stem for folder in recipe_dirs(project_dir) for path in folder.glob("*.yaml")})


def find_recipe(name: str, project_dir: str | Path = ".") -> Path:
    """A recipe given as a path (``x.yaml``, ``dir/x``) is that file; a bare name is recipes/<name>.yaml."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name).expanduser()
        if path.is_file():
            return path
        raise PipelineError(f"recipe file {path} not found")
    for folder in recipe_dirs(project_dir):
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    raise PipelineError(
        f"unknown recipe '{name}': available are {', '.join(available_recipes(project_dir)) or 'none'} "
        f"(recipes/<name>.yaml in {', '.join(str(f) for f in recipe_dirs(project_dir))}); or give a .yaml path"
    )


def read_recipe(name: str, project_dir: str | Path = ".") -> dict[str, Any]:
    """A recipe's partial params tree, checked on its own so a mistake names the recipe file."""
    path = find_recipe(name, project_dir)
    tree = _read_yaml(path, "recipe")
    if "recipes" in tree:
        raise PipelineError(f"recipe {path} names other recipes; list them all with --recipe (or `recipes:`) instead")
    _validate(tree, f"invalid recipe {path}")
    return tree


def _recipe_names(value: Any) -> list[str]:
    names = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise PipelineError(f"recipes must be a list of recipe names or files, got {value!r}")
    return names


def load_config(
    params: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
    recipes: list[str] | None = None,
) -> Config:
    """Read params.yaml (if present), layer the recipes, the environment and ``--set`` overrides, and validate.

    Later layers win: params.yaml < recipes (in order) < ``MLFLOW_TRACKING_URI``, ``OPTUNA_STORAGE`` and
    ``EMOTION_ADMIN_TOKEN`` in ``environ`` < ``--set``.
    The recipes are ``recipes`` if given, else the ``recipes`` key (``--set`` over params.yaml); the config
    records their names, so a run logs what it was made of. Pointing a whole shell at a tracking server needs
    no edit.
    """
    path = Path(params) if params else DEFAULT_PARAMS
    tree: dict[str, Any] = {}
    if path.exists():
        tree = _read_yaml(path, "config file")
    elif params:
        raise PipelineError(f"config file {path} not found")
    cli = anchor_paths(parse_overrides(overrides), Path.cwd())
    names = _recipe_names(recipes if recipes is not None else cli.get("recipes", tree.get("recipes", [])))
    project_dir = cli.get("project_dir", tree.get("project_dir", "."))
    for name in names:
        tree = _merge(tree, read_recipe(name, str(project_dir)))
    env_uri = (environ or {}).get("MLFLOW_TRACKING_URI")
    if env_uri:
        tree = _merge(tree, {"mlflow": {"tracking_uri": env_uri}})
    env_storage = (environ or {}).get("OPTUNA_STORAGE")  # `make services` exports its PostgreSQL study database
    if env_storage:
        tree = _merge(tree, {"tune": {"storage": env_storage}})
    env_token = (environ or {}).get("EMOTION_ADMIN_TOKEN")  # a secret: better in the environment than in argv
    if env_token:
        tree = _merge(tree, {"serve": {"admin_token": env_token}})
    tree = _merge(tree, cli) | {"recipes": names}
    cfg = _validate(tree, "invalid configuration")
    paths.check_write_paths(cfg.write_folders(), Path(cfg.project_dir).resolve(), paths.sqlite_folder(cfg.tracking_uri))
    # before any command writes: no folder setting may point at the project or the registry
    return cfg


def load_config_from_env(
    params: str | Path | None = None, overrides: list[str] | None = None, recipes: list[str] | None = None
) -> Config:
    """The drivers' entry point: like ``load_config`` with the process environment."""
    return load_config(params, overrides, dict(os.environ), recipes)
