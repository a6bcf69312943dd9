"""The stage layer: the artifact-level steps the three drivers (CLI, DVC stages, Prefect flows) share.

``layout`` (where a run reads and writes, its locks), ``snapshot`` (the snapshot transaction), ``steps`` (validate,
prepare, train, evaluate, behaviour), ``cv`` (cross-validation), ``registration`` (the run's record, lineage, the
champion scored on the same test set, gate and promotion) and ``records`` (what each step asks to be logged).
Only this layer and the drivers see the whole ``Config``; the packages below get its sections.
"""

from pipeline.stages.cv import cv_fold_stage, cv_folds_stage, cv_summary_stage
from pipeline.stages.layout import (
    LATEST,
    RUNS_DIR,
    Layout,
    latest_run,
    pointer_of,
    project_lock,
    publish_latest,
    run_lock,
    staging_dir,
)
from pipeline.stages.records import (
    evaluation_logged,
    ingest_logged,
    prepare_logged,
    reports_logged,
    training_logged,
)
from pipeline.stages.registration import (
    data_hash_of,
    evaluated_run,
    gate_and_promote,
    lineage_of,
    register_artifacts,
    score_champion,
    start_run,
)
from pipeline.stages.snapshot import (
    Staging,
    commit_snapshot,
    discard_snapshot,
    ingest_stage,
    ingest_validated,
    restore_stage,
    staged_snapshot,
)
from pipeline.stages.steps import (
    behaviour_stage,
    evaluate_stage,
    keep_ingest_report,
    keep_validation,
    prepare_stage,
    score_model,
    train_stage,
    validate_stage,
)

__all__ = [
    "LATEST",
    "RUNS_DIR",
    "Layout",
    "Staging",
    "behaviour_stage",
    "commit_snapshot",
    "cv_fold_stage",
    "cv_folds_stage",
    "cv_summary_stage",
    "data_hash_of",
    "discard_snapshot",
    "evaluate_stage",
    "evaluated_run",
    "evaluation_logged",
    "gate_and_promote",
    "ingest_logged",
    "ingest_stage",
    "ingest_validated",
    "keep_ingest_report",
    "keep_validation",
    "latest_run",
    "lineage_of",
    "pointer_of",
    "prepare_logged",
    "prepare_stage",
    "project_lock",
    "publish_latest",
    "register_artifacts",
    "reports_logged",
    "restore_stage",
    "run_lock",
    "score_champion",
    "score_model",
    "staged_snapshot",
    "staging_dir",
    "start_run",
    "train_stage",
    "training_logged",
    "validate_stage",
]
