"""Commands that put a registered model to work: predict, score files, serve, monitor drift, schedule the flows."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from emotion_cli.common import AddCommand, config, quiet_user_error_tracebacks
from pipeline import console
from pipeline.errors import PipelineError


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.model.predict import Predictor
    from pipeline.registry import model_spec

    cfg = config(args)
    model = model_spec.download(model_spec.resolve(args.model, model_spec.Registry.of(cfg.registry)))
    assert model.folder is not None
    predictor = Predictor(model.folder, max_length=cfg.model.max_length, batch_size=cfg.model.inference_batch_size)
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


def cmd_score(args: argparse.Namespace) -> int:
    from pipeline.scoring.job import score_files

    if args.backend:  # read with the config, so a wrong name is refused like a wrong --set score.backend
        args.set = [*(args.set or []), f"score.backend={args.backend}"]
    cfg = config(args)
    # the job's own lines (which model, how many texts scored) and the libraries' go to a log file, as `run` does;
    # the console keeps the summary and our warnings. Written only once a record comes: a refused job creates nothing
    console.setup(args.verbose, console.later_log(cfg.artifacts / "logs", "score"), delay=True)
    engine = args.engine or cfg.score.engine
    address = args.address or (cfg.score.ray_address if engine == "ray" else None)
    summary = score_files(
        cfg,
        args.inputs,
        Path(args.output),
        args.model,
        args.id_column,
        args.chunk_size,
        engine,
        address,
        overwrite=args.overwrite,
    )
    log_file = console.run_log()
    if args.json:  # flushed now: a Ray driver's exit can skip the flush of a piped stdout (seen once in CI)
        print(json.dumps(summary.to_dict() | {"log_file": log_file and str(log_file)}, indent=2), flush=True)
        return 0
    blank = f", {summary.blank_records} blank records left out" if summary.blank_records else ""
    print(
        f"scored {summary.rows_scored} of {summary.rows_read} texts with {summary.model_name} version "
        f"{summary.model_version} ({summary.backend}) into {summary.output} ({summary.seconds:.1f}s, "
        f"{summary.texts_per_second:.0f} texts/s; {summary.resumed_shards} of {summary.shards} shards resumed, "
        f"{summary.skipped_invalid} skipped{blank})"
    )
    if summary.parity:
        print(f"parity    {summary.parity['reason']}")
    if log_file is not None:
        print(f"log       {log_file}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers is not None:  # read with the config, so it is validated like --set serve.workers
        args.set = [*(args.set or []), f"serve.workers={args.workers}"]
    cfg = config(args)
    if args.engine == "ray":
        if cfg.serve.workers > 1:
            raise PipelineError("serve.workers is for the local engine; Ray Serve runs serve.ray_replicas replicas")
        from pipeline.serving.ray_serve import run_on_ray

        run_on_ray(cfg, args.address, args.host, args.port)
        return 0
    if args.address:
        raise PipelineError("--address is for --engine ray: add --engine ray, or drop --address")
    from pipeline.serving.server import run as serve

    serve(cfg, args.host, args.port)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from flows.monitoring import monitoring_flow
    from pipeline.monitoring.verdict import format_check

    quiet_user_error_tracebacks()
    cfg = config(args)
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):  # stdout = the JSON verdict only
        result = monitoring_flow(batch=args.path, params=args.config, overrides=args.set, cfg=cfg)
    print(json.dumps(result, indent=2, default=str) if args.json else format_check(result))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from flows.deployments import serve as serve_flows

    config(args)  # a bad config fails here, not at the first scheduled run
    serve_flows(args.config, args.set, args.port)
    return 0


def add_commands(add: AddCommand) -> None:
    predict = add("predict", cmd_predict, "classify texts with the champion model (or --model)")
    predict.add_argument("texts", nargs="+", help="texts to classify")
    predict.add_argument("--model", help="a version, @alias, models:/ URI or model folder (default: the champion)")
    predict.add_argument("--json", action="store_true", help="print predictions as JSON")
    predict.add_argument(
        "--explain", action="store_true", help="print each word's attribution to the predicted label (slower)"
    )
    score = add("score", cmd_score, "score files of texts in chunks into a Parquet, CSV or JSONL file (resumable)")
    score.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="files, folders or globs (CSV/TSV, JSONL, Parquet, text;label)"
    )
    score.add_argument("--output", "-o", required=True, help="OUT.parquet, OUT.csv or OUT.jsonl")
    score.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never an input)")
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
    score.add_argument(
        "--backend",
        help="torch, onnx-fp32 or onnx-int8 (ONNX Runtime without torch; int8 only after a parity check; "
        "default: score.backend)",
    )
    score.add_argument("--json", action="store_true", help="print the summary as JSON")
    serve = add("serve", cmd_serve, "REST API and demo page over the champion, reloaded when it changes")
    serve.add_argument("--host", help="interface to bind (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port, each with its own model (default: serve.workers, 1)",
    )
    serve.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: uvicorn, serve.workers processes; ray: Ray Serve, serve.ray_replicas replicas (docs/serving.md)",
    )
    serve.add_argument(
        "--address", help="with --engine ray: a Ray cluster's HOST:PORT (default: serve.ray_address, else a local Ray)"
    )
    monitor = add("monitor", cmd_monitor, "check a batch of new texts for drift against the champion (Prefect flow)")
    monitor.add_argument("path", help="a file or folder of texts in any supported format; labels optional")
    monitor.add_argument("--json", action="store_true", help="print the verdict as JSON (top-level boolean 'drift')")
    schedule = add(
        "schedule", cmd_schedule, "serve the weekly retraining and daily drift-check deployments until stopped"
    )
    schedule.add_argument(
        "--port", type=int, default=4200, help="local Prefect server port when PREFECT_API_URL is unset"
    )
