"""Commands that build a model: the whole training flow (`run`), its steps one by one, tuning, data snapshots."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from emotion_cli.common import AddCommand, ci, config, quiet_user_error_tracebacks
from pipeline import console, paths
from pipeline.errors import PipelineError


def cmd_run(args: argparse.Namespace) -> int:
    cfg = config(args)
    paths.check_project(Path(cfg.project_dir).resolve(), cfg.data.dvc_track)  # before the log, store or locks
    log_file = console.new_run_log(cfg.artifacts / "logs")
    console.setup(args.verbose, log_file)
    console.libraries_to_log()
    from flows.training import training_flow

    quiet_user_error_tracebacks()
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout = the JSON summary only
        summary = training_flow(cfg, resume=args.resume) | {"log_file": str(log_file)}
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipeline.stages import tune

    flags = {"tune.trials": args.trials, "tune.storage": args.storage, "tune.study": args.study}
    args.set = [*(args.set or []), *(f"{key}={value}" for key, value in flags.items() if value is not None)]
    cfg = config(args)
    paths.check_project(Path(cfg.project_dir).resolve(), dvc_track=False)
    tune.recipe_target(cfg, args.overwrite)  # before the log file: a refusal leaves nothing behind
    log_file = console.new_run_log(cfg.artifacts / "logs")
    console.setup(args.verbose, log_file)
    result = tune.tune(
        cfg, on_trial=lambda _study, trial: print(tune.format_trial(trial), flush=True), overwrite=args.overwrite
    )
    print(tune.format_result(result, cfg) + f"\nlog       {log_file}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.stages import ingest_validated

    cfg = config(args)
    paths.check_project(Path(cfg.project_dir).resolve(), cfg.data.dvc_track)
    snapshot, data_hash, _, report = ingest_validated(cfg)
    print(report.summary())
    print(f"snapshot {snapshot.path}: {snapshot.split_counts()} rows, hash {data_hash}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.data.inspect import format_inspection, inspect

    cfg = config(args)
    result = inspect(args.path, cfg.data, cfg.path("."), cfg.checks)
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else format_inspection(result))
    return 0


def cmd_restore_data(args: argparse.Namespace) -> int:
    from pipeline import stages
    from pipeline.registry import model_spec

    cfg = config(args)
    data_hash = args.hash
    if data_hash is None and args.version is None:
        raise PipelineError("give a model VERSION or --hash")
    if data_hash is None:
        registry = model_spec.Registry.of(cfg.registry)
        version = model_spec.by_version(registry, registry.model, str(args.version)).record
        data_hash = version.tags.get("data_hash")
        if not data_hash:
            raise PipelineError(f"version {args.version} records no data_hash tag")
        print(
            f"version {args.version}: data {version.tags.get('data_source')} hash {data_hash}, "
            f"code {version.tags.get('git_commit')}"
        )
    path = stages.restore_stage(cfg, data_hash)
    print(f"restored {path} (data.dvc -> {data_hash}); `git checkout <code commit> -- .` restores the code too")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from pipeline import stages
    from pipeline.data.ingest import read_snapshot

    cfg = config(args)
    frame = read_snapshot(stages.Layout.of(cfg).snapshot)
    labels, report = stages.validate_stage(cfg, frame)
    print(report.summary())
    prepared, changes = stages.prepare_stage(cfg, frame, labels)
    counts = ", ".join(f"{k}={len(v)}" for k, v in prepared.splits.items())
    print(f"prepared {counts} rows; cleaning:\n{changes.to_string()}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline import stages
    from pipeline.data.encode import PreparedData

    cfg = config(args)
    result = stages.train_stage(cfg, PreparedData.load(stages.Layout.of(cfg).prepared))
    where = f"rank {result.rank}/{result.world_size}: " if result.world_size > 1 else ""
    print(
        f"{where}trained {result.steps} steps in {result.train_seconds:.1f}s "
        f"({result.samples_per_second:.1f} samples/s, {result.device}, {result.precision}); "
        f"best epoch {result.best_epoch}; weights {result.weights_digest}"
        + (f"; resumed from step {result.resumed_from_step}" if result.resumed_from_step else "")
        + (f"; saved to {result.model_dir}" if result.rank == 0 else "")
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline import stages
    from pipeline.data.encode import PreparedData

    cfg = config(args)
    evaluation, paths = stages.evaluate_stage(cfg, PreparedData.load(stages.Layout.of(cfg).prepared))
    print(evaluation.report)
    print(
        f"accuracy {ci(evaluation.metrics, 'accuracy')}  macro-F1 {ci(evaluation.metrics, 'macro_f1')}  "
        f"-> {paths['metrics']}"
    )
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _parameters(training: dict[str, Any]) -> str:
    trainable, total = training["trainable_parameters"], training["total_parameters"]
    return f"parameters {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f}%)"


def format_summary(summary: dict[str, Any]) -> str:
    """The closing report of `emotion run`."""
    metrics = summary["metrics"]
    lines = [
        "",
        "== emotion pipeline run ==",
        f"data      {summary['data_source']}  hash {summary['data_hash']}  rows {summary['rows']}",
        f"training  {summary['training']['steps']} steps, best epoch {summary['training']['best_epoch']}, "
        f"{summary['training']['seconds']}s, {summary['training']['samples_per_second']} samples/s "
        f"({summary['training']['device']}, {summary['training']['precision']})",
        f"          {_parameters(summary['training'])}",
        f"test      accuracy {ci(metrics, 'accuracy')}  macro-F1 {ci(metrics, 'macro_f1')}  "
        f"weighted-F1 {ci(metrics, 'weighted_f1')}  macro-P {ci(metrics, 'macro_precision')}  "
        f"macro-R {ci(metrics, 'macro_recall')}",
        f"calibrated ECE {_fmt(metrics.get('ece'))} (temperature {summary['training']['temperature']})  behaviour: "
        f"minimum functionality {_fmt(summary['behaviour']['mft_accuracy'])}, "
        f"invariance {_fmt(summary['behaviour']['invariance_rate'])}",
        f"gate      {'PASSED' if summary['gate']['passed'] else 'FAILED'}",
        *[f"          {reason}" for reason in summary["gate"]["reasons"]],
        f"registry  {summary['model']} version {summary['version']} -> aliases: {', '.join(summary['aliases'])}",
        f"mlflow    run {summary['run_id']}",
    ]
    if not summary["gate"]["passed"]:
        before = summary["champion_before"]
        lines.append(f"          champion unchanged ({'version ' + before if before else 'none yet'})")
    if summary.get("run_dir"):
        lines.append(f"folder    {_shown(summary['run_dir'])}  (artifacts/latest points here)")
    if summary.get("log_file"):
        lines.append(f"log       {_shown(summary['log_file'])}")
    return "\n".join(lines)


def _shown(path: str) -> str:
    """A path relative to the working directory when it lies below it (a shorter line), else as given."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except (ValueError, OSError):  # not below it, or the working directory is gone
        return path


def add_commands(add: AddCommand) -> None:
    run = add("run", cmd_run, "run the Prefect training flow: ingest, validate, train, evaluate, gate, register")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue a killed or failed run (its MLflow run id) in artifacts/runs/RUN_ID from its last checkpoint",
    )
    tune_cmd = add("tune", cmd_tune, "search train settings with Optuna on validation; write the best as a recipe")
    tune_cmd.add_argument("--trials", type=int, help="trials this worker runs (default: tune.trials)")
    tune_cmd.add_argument("--storage", help="Optuna storage URL to join, e.g. postgresql://... (default: tune.storage)")
    tune_cmd.add_argument("--study", help="study name (default: tune.study)")
    tune_cmd.add_argument("--overwrite", action="store_true", help="replace the recipe file if it exists")
    add("ingest", cmd_ingest, "snapshot the data source into data/ and version it with DVC")
    inspect = add("inspect", cmd_inspect, "describe a data file and print the --set flags that train on it")
    inspect.add_argument("path", help="a file, folder, glob or list item to inspect (as data.source takes it)")
    inspect.add_argument("--json", action="store_true", help="print the inspection as JSON")
    restore = add("restore-data", cmd_restore_data, "restore data/ to the exact snapshot a model version trained on")
    restore.add_argument("version", nargs="?", help="registered model version")
    restore.add_argument("--hash", help="a DVC hash (e.g. from `emotion models`) instead of a version")
    add("prepare", cmd_prepare, "validate, clean and encode the snapshot into artifacts/prepared")
    add("train", cmd_train, "fine-tune the model on artifacts/prepared into artifacts/model")
    add("evaluate", cmd_evaluate, "score artifacts/model on the test split: metrics, report, plots")
