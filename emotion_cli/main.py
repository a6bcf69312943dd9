"""The `emotion` command: the same steps as the Prefect flow and the DVC stages, for people.

Heavy libraries are imported inside the commands, so `emotion --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from pipeline import console
from pipeline.config import Config, load_config_from_env
from pipeline.errors import DataValidationError, PipelineError

log = logging.getLogger("pipeline")

QUIET_ENV = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "pipeline",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",  # the default 20 s ran out on a busy 2-core machine
    "TOKENIZERS_PARALLELISM": "false",
}


class _RecipeAction(argparse.Action):
    """``--recipe NAME`` becomes the override ``recipes=[...]``: flows that re-read the config from the params file
    and the overrides (scheduled deployments, drift-triggered retraining) then use the same recipes."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option_string: Any = None) -> None:
        names = [*(getattr(namespace, self.dest) or []), value]
        setattr(namespace, self.dest, names)
        namespace.set = [*(namespace.set or []), f"recipes={json.dumps(names)}"]


def _config(args: argparse.Namespace) -> Config:
    return load_config_from_env(args.config, args.set)


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; for a PipelineError the message says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], PipelineError):
            record.exc_info, record.exc_text = None, None
        return True


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _config(args)
    log_file = console.new_run_log(cfg.artifacts / "logs")
    console.setup(args.verbose, log_file)
    console.libraries_to_log()
    from flows.training import training_flow

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout = the JSON summary only
        summary = training_flow(cfg, resume=args.resume) | {"log_file": str(log_file)}
    print(json.dumps(summary, indent=2, default=str) if args.json else format_summary(summary))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from pipeline.training import tune

    flags = {"tune.trials": args.trials, "tune.storage": args.storage, "tune.study": args.study}
    args.set = [*(args.set or []), *(f"{key}={value}" for key, value in flags.items() if value is not None)]
    cfg = _config(args)
    log_file = console.new_run_log(cfg.artifacts / "logs")
    console.setup(args.verbose, log_file)
    result = tune.tune(cfg, on_trial=lambda _study, trial: print(tune.format_trial(trial), flush=True))
    print(tune.format_result(result, cfg) + f"\nlog       {log_file}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipeline.stages import ingest_validated

    snapshot, data_hash, _, report = ingest_validated(_config(args))
    print(report.summary())
    print(f"snapshot {snapshot.path}: {snapshot.split_counts()} rows, hash {data_hash}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from pipeline.data.inspect import format_inspection, inspect

    cfg = _config(args)
    result = inspect(args.path, cfg.data, cfg.path("."))
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else format_inspection(result))
    return 0


def cmd_restore_data(args: argparse.Namespace) -> int:
    from pipeline import stages
    from pipeline.registry import tracking

    cfg = _config(args)
    data_hash = args.hash
    if data_hash is None and args.version is None:
        raise PipelineError("give a model VERSION or --hash")
    if data_hash is None:
        mlflow_client = tracking.client(cfg)
        try:
            version = mlflow_client.get_model_version(cfg.mlflow.registered_model, str(args.version))
        except Exception as exc:
            raise PipelineError(
                f"{cfg.mlflow.registered_model} has no version {args.version}: see `emotion models`"
            ) from exc
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

    cfg = _config(args)
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

    cfg = _config(args)
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

    cfg = _config(args)
    evaluation, paths = stages.evaluate_stage(cfg, PreparedData.load(stages.Layout.of(cfg).prepared))
    print(evaluation.report)
    print(
        f"accuracy {_ci(evaluation.metrics, 'accuracy')}  macro-F1 {_ci(evaluation.metrics, 'macro_f1')}  "
        f"-> {paths['metrics']}"
    )
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    from pipeline.registry import promotion

    cfg = _config(args)
    result = promotion.register_artifacts(cfg, actor=f"emotion register by {_actor()}")
    print(f"gate      {'PASSED' if result.verdict.passed else 'FAILED'}")
    lines = result.verdict.reasons + [note for note in result.notes if note not in result.verdict.reasons]
    print("\n".join(f"          {line}" for line in lines))
    print(f"registry  {cfg.mlflow.registered_model} version {result.version} -> aliases: {', '.join(result.aliases)}")
    if not result.promoted:
        before = f"version {result.champion_before}" if result.champion_before else "none yet"
        print(f"          champion unchanged ({before})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.model.predict import Predictor

    cfg = _config(args)
    if args.model and "://" not in args.model and ":/" not in args.model:
        model_dir = Path(args.model)  # a folder; Predictor says clearly if it holds no model
    else:
        from pipeline.registry import tracking

        tracking.client(cfg)
        uri = args.model or f"models:/{cfg.mlflow.registered_model}@{tracking.CHAMPION}"
        model_dir = tracking.download_model(uri)
    predictor = Predictor(model_dir, max_length=cfg.model.max_length)
    if args.explain:
        return _print_explanations(predictor, args.texts, cfg.serve.explain_steps, args.json)
    predictions = predictor.predict(args.texts)
    if args.json:
        print(json.dumps([vars(p) for p in predictions], indent=2))
        return 0
    for p in predictions:
        probs = "  ".join(f"{label} {prob:.3f}" for label, prob in sorted(p.probabilities.items(), key=lambda x: -x[1]))
        print(f"{','.join(p.labels):<10} {p.score:.3f}  {p.text}\n           {probs}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline.scoring.job import score_files

    cfg = _config(args)
    engine = args.engine or cfg.score.engine
    address = args.address or (cfg.score.ray_address if engine == "ray" else None)
    summary = score_files(
        cfg, args.inputs, Path(args.output), args.model, args.id_column, args.chunk_size, engine, address
    )
    if args.json:  # flushed now: a Ray driver's exit can skip the flush of a piped stdout (seen once in CI)
        print(json.dumps(summary.to_dict(), indent=2), flush=True)
        return 0
    print(
        f"scored {summary.rows_scored} of {summary.rows_read} texts with {summary.model_name} version "
        f"{summary.model_version} into {summary.output} ({summary.seconds:.1f}s, {summary.texts_per_second:.0f} "
        f"texts/s; {summary.resumed_shards} of {summary.shards} shards resumed, {summary.skipped_invalid} skipped)"
    )
    return 0


def _print_explanations(predictor: Any, texts: list[str], n_steps: int, as_json: bool) -> int:
    from dataclasses import asdict

    from pipeline.model.explain import explain

    found = [explain(predictor, text, n_steps=n_steps) for text in texts]
    if as_json:
        print(json.dumps([asdict(e) for e in found], indent=2))
        return 0
    for e in found:
        print(f"{e.label:<10} {e.probability:.3f}  {e.text}  (delta {e.delta:+.4f})")
        print("           " + "  ".join(f"{w} {s:+.3f}" for w, s in zip(e.words, e.scores)))
    return 0


def _actor() -> str:
    import getpass

    return os.environ.get("EMOTION_ACTOR") or getpass.getuser()


def cmd_models(args: argparse.Namespace) -> int:
    from pipeline.registry import tracking

    cfg = _config(args)
    rows = tracking.list_versions(cfg, tracking.client(cfg))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'version':>7}  {'aliases':<28} {'gate':<7} {'accuracy':>8} {'macro_f1':>8}  {'created (UTC)':<25} data_hash"
    )
    for r in rows:
        print(
            f"{r['version']:>7}  {','.join(r['aliases']) or '-':<28} {r['gate'] or '-':<7} {r['accuracy'] or '-':>8} "
            f"{r['macro_f1'] or '-':>8}  {r['created']:<25} {r['data_hash'] or '-'}"
        )
    return 0


def _print_event(event: Any) -> None:
    print(
        f"{event.kind}: champion -> version {event.version} (previous: {event.previous or 'none'}) "
        f"by {event.actor} at {event.at}: {event.reason}"
    )


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.registry import tracking

    cfg = _config(args)
    _print_event(
        tracking.promote(
            cfg,
            tracking.client(cfg),
            str(args.version),
            actor=_actor(),
            reason=args.reason,
            kind="manual",
            force=args.force,
        )
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from pipeline.registry import tracking

    cfg = _config(args)
    _print_event(tracking.rollback(cfg, tracking.client(cfg), actor=_actor(), reason=args.reason))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from pipeline.registry import tracking

    cfg = _config(args)
    events = tracking.history(cfg, tracking.client(cfg))
    if args.json:
        print(json.dumps([asdict(e) for e in events], indent=2))
    for event in [] if args.json else events:
        _print_event(event)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from pipeline.serving.app import run as serve

    serve(_config(args), args.host, args.port)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from flows.monitoring import monitoring_flow
    from pipeline.monitoring.verdict import format_check

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    cfg = _config(args)
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout = the JSON verdict only
        result = monitoring_flow(batch=args.path, params=args.config, overrides=args.set, cfg=cfg)
    print(json.dumps(result, indent=2, default=str) if args.json else format_check(result))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from flows.deployments import serve as serve_flows

    _config(args)  # a bad config fails here, not at the first scheduled run
    serve_flows(args.config, args.set, args.port)
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _parameters(training: dict[str, Any]) -> str:
    trainable, total = training["trainable_parameters"], training["total_parameters"]
    return f"parameters {trainable:,} trainable of {total:,} ({100 * trainable / max(total, 1):.2f}%)"


def _ci(metrics: dict[str, float], key: str) -> str:
    """``0.8123 [0.79, 0.83]``: the point value and its bootstrap interval, when the metrics have one."""
    text = f"{metrics[key]:.4f}"
    return text + (
        f" [{metrics[key + '_ci_low']:.2f}, {metrics[key + '_ci_high']:.2f}]" if key + "_ci_low" in metrics else ""
    )


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
        f"test      accuracy {_ci(metrics, 'accuracy')}  macro-F1 {_ci(metrics, 'macro_f1')}  "
        f"weighted-F1 {_ci(metrics, 'weighted_f1')}  macro-P {_ci(metrics, 'macro_precision')}  "
        f"macro-R {_ci(metrics, 'macro_recall')}",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion", description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging, all of it on the console (run: not only in its log file)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", default=None, help="params file (default: ./params.yaml)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
        p.add_argument(
            "--recipe",
            action=_RecipeAction,
            metavar="NAME_OR_PATH",
            help="layer recipes/NAME.yaml (or a .yaml file) over the params file, before --set (repeatable)",
        )
        p.set_defaults(func=func)
        return p

    run = add("run", cmd_run, "run the Prefect training flow: ingest, validate, train, evaluate, gate, register")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    tune_cmd = add("tune", cmd_tune, "search train settings with Optuna on validation; write the best as a recipe")
    tune_cmd.add_argument("--trials", type=int, help="trials this worker runs (default: tune.trials)")
    tune_cmd.add_argument("--storage", help="Optuna storage URL to join, e.g. postgresql://... (default: tune.storage)")
    tune_cmd.add_argument("--study", help="study name (default: tune.study)")
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="continue a killed or failed run (its MLflow run id) in artifacts/runs/RUN_ID from its last checkpoint",
    )
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
    add("register", cmd_register, "gate the evaluated artifacts/model against the champion, register it, promote it")
    models = add("models", cmd_models, "list registered versions: aliases, gate, metrics, creation time, data hash")
    models.add_argument("--json", action="store_true", help="print as JSON")
    promote = add("promote", cmd_promote, "make VERSION the champion (the old champion becomes 'previous')")
    promote.add_argument("version", help="the model version to promote")
    promote.add_argument("--reason", required=True, help="why, recorded with who and when")
    promote.add_argument("--force", action="store_true", help="promote even if the version failed its gate")
    rollback = add("rollback", cmd_rollback, "give champion back to the 'previous' version")
    rollback.add_argument("--reason", required=True, help="why, recorded with who and when")
    history = add("history", cmd_history, "the promotion and rollback history")
    history.add_argument("--json", action="store_true", help="print as JSON")
    predict = add("predict", cmd_predict, "classify texts with the champion model (or --model)")
    predict.add_argument("texts", nargs="+", help="texts to classify")
    predict.add_argument("--model", help="a model folder or MLflow model URI (default: models:/<name>@champion)")
    predict.add_argument("--json", action="store_true", help="print predictions as JSON")
    score = add("score", cmd_score, "score files of texts in chunks into a Parquet, CSV or JSONL file (resumable)")
    score.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="files, folders or globs (CSV/TSV, JSONL, Parquet, text;label)"
    )
    score.add_argument("--output", "-o", required=True, help="OUT.parquet, OUT.csv or OUT.jsonl")
    score.add_argument("--model", help="a version, @alias, models:/ URI or model folder (default: the champion)")
    score.add_argument("--id-column", help="the input column to copy as id (default: id if present, else row number)")
    score.add_argument("--chunk-size", type=int, help="rows per shard (default: score.chunk_size)")
    score.add_argument(
        "--engine",
        choices=["local", "ray"],
        help="local (this process) or ray (Ray Data actors; default: score.engine)",
    )
    score.add_argument(
        "--address", help="a running Ray cluster's HOST:PORT (default: score.ray_address, else a local Ray)"
    )
    score.add_argument("--json", action="store_true", help="print the summary as JSON")
    predict.add_argument(
        "--explain", action="store_true", help="print each word's attribution to the predicted label (slower)"
    )
    serve = add("serve", cmd_serve, "REST API and demo page over the champion, reloaded when it changes")
    serve.add_argument("--host", help="interface to bind (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    monitor = add("monitor", cmd_monitor, "check a batch of new texts for drift against the champion (Prefect flow)")
    monitor.add_argument("path", help="a file or folder of texts in any supported format; labels optional")
    monitor.add_argument("--json", action="store_true", help="print the verdict as JSON (top-level boolean 'drift')")
    schedule = add(
        "schedule", cmd_schedule, "serve the weekly retraining and daily drift-check deployments until stopped"
    )
    schedule.add_argument(
        "--port", type=int, default=4200, help="local Prefect server port when PREFECT_API_URL is unset"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    console.setup(args.verbose)  # `emotion run` narrows it to stage lines and a per-run log file
    code = 1
    try:
        code = args.func(args)
    except DataValidationError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        if exc.report is not None:
            print(exc.report.summary(), file=sys.stderr)
        code = 3
    except PipelineError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        code = 2
    finally:
        if code != 0 and (log_file := console.run_log()) is not None:
            print(f"log: {log_file}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
