"""One scoring job: resolve the inputs and the model, resume or start the shards, score, and swap in the output."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.registry import model_spec
from pipeline.registry.model_spec import ModelRef
from pipeline.scoring import backends, reader, shards, writer
from pipeline.scoring.backends import ScoringModel

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


@dataclass
class ScoreSummary:
    """What a scoring job did: rows and timing for the log, MLflow and the CLI."""

    output: str
    inputs: list[str]
    model_name: str
    model_version: str
    rows_read: int
    rows_scored: int  # rows in the output
    skipped_invalid: int
    shards: int
    resumed_shards: int
    seconds: float
    texts_per_second: float  # texts scored in this run per second of scoring (model loading excluded)
    label_counts: dict[str, int] = field(default_factory=dict)
    engine: str = "local"
    ray_nodes: list[str] = field(default_factory=list)  # the Ray nodes that scored rows in this run
    blank_records: int = 0  # records of only blank cells (``,``) the reader left out, as it leaves out blank lines
    backend: str = "torch"  # score.backend: torch, onnx-fp32 or onnx-int8
    parity: dict[str, Any] | None = None  # onnx-int8: the parity report that admitted it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest(files: list[Path], model: ModelRef, cfg: Config, chunk_size: int, id_column: str | None) -> dict:
    return {
        "inputs": [shards.fingerprint(p) for p in files],
        "model": {"name": model.name, "version": model.version},
        "chunk_size": chunk_size,
        "id_column": id_column,
        "reading": {"format": cfg.data.format, "text_column": cfg.data.text_column},
        "skip_invalid": _skip_invalid(cfg),
        "backend": cfg.score.backend,  # one output, one backend: a changed backend starts over
    }


def _skip_invalid(cfg: Config) -> bool:
    """The ingest policy for empty texts: an error when the data checks make blank or missing text an error."""
    severity = cfg.checks.severity
    return severity.text_not_blank != "error" and severity.text_not_null != "error"


def _pinned_model(cfg: Config, spec: str | None, work: Path) -> tuple[ModelRef, Path | None]:
    """The model ``spec`` names, pinned to one version, and its logged ONNX export if already downloaded. For the
    ONNX backends a registered version is resolved and downloaded (with that export) in a child process, so the
    scoring process never imports MLflow (``registered``); torch resolves here and downloads after the manifest."""
    if cfg.score.backend == backends.TORCH or model_spec.names_folder(spec):
        return model_spec.resolve(spec, model_spec.Registry.of(cfg.registry)), None
    from pipeline.scoring.registered import fetch_in_child

    fetched = fetch_in_child(cfg.registry, spec, work)
    return fetched.model, fetched.onnx_file


def _run_engine(
    cfg: Config,
    engine: str,
    address: str | None,
    files: list[Path],
    parts: Path,
    done: set[int],
    model: ModelRef,
    size: int,
    id_column: str | None,
    chosen: ScoringModel,
) -> tuple[list[Path], int, list[str]]:
    """Score the pending chunks with ``engine``; returns every shard path, the rows scored now and the Ray nodes."""
    chunks = reader.chunks(files, cfg.data, size, id_column)
    assert model.folder is not None
    if engine == "ray":
        from pipeline.scoring.ray_engine import RaySettings, run_ray

        settings = RaySettings(address, cfg.score.precision, cfg.model.max_length, cfg.score.batch_size, chosen)
        return run_ray(chunks, parts, done, model, settings, _skip_invalid(cfg))
    from pipeline.scoring.local import run_local

    predictor = backends.scorer(model, chosen, cfg.score.precision, cfg.model.max_length, cfg.score.batch_size)
    total = reader.count_rows(files, cfg.data) if sys.stderr.isatty() else None  # for the ETA
    shard_paths, scored = run_local(chunks, parts, done, predictor, model, _skip_invalid(cfg), total)
    return shard_paths, scored, []


def score_files(
    cfg: Config,
    inputs: list[str],
    output: Path,
    model: str | None = None,
    id_column: str | None = None,
    chunk_size: int | None = None,
    engine: str = "local",
    address: str | None = None,
    overwrite: bool = False,
) -> ScoreSummary:
    """Score every text of ``inputs`` (files, folders, globs) into ``output``, resuming an interrupted run.

    ``engine`` local scores in this process; ray on the Ray cluster at ``address`` (None = a local Ray).
    ``output`` may replace an existing file only with ``overwrite``, and never an input or a managed folder's file.
    """
    if engine not in ENGINES:
        raise PipelineError(f"unknown scoring engine {engine!r}: use one of {', '.join(ENGINES)}")
    if address and engine != "ray":
        raise PipelineError("--address names a Ray cluster: add --engine ray")
    writer.output_format(output)
    start = time.perf_counter()
    project = Path(cfg.project_dir).resolve()
    files = reader.input_files(inputs, project)
    managed = paths.managed_folders(cfg.write_folders(), project, paths.sqlite_folder(cfg.tracking_uri))
    paths.check_output(output, flag="--output", inputs=files, managed=managed, overwrite=overwrite)
    size = chunk_size or cfg.score.chunk_size
    with tempfile.TemporaryDirectory(prefix="emotion-score-model-") as tmp:
        resolved, logged_onnx = _pinned_model(cfg, model, Path(tmp))
        parts = shards.parts_dir(output)
        done = set(shards.prepare(parts, _manifest(files, resolved, cfg, size, id_column)))
        with shards.kept_only_with_shards(parts):
            resolved = model_spec.download(resolved, Path(tmp))
            chosen = backends.choose(cfg, resolved, Path(tmp), logged_onnx)
            log.info(
                "scoring %d file(s) with %s version %s into %s (engine %s, backend %s)",
                len(files),
                resolved.name,
                resolved.version,
                output,
                engine,
                chosen.backend,
            )
            scoring_start = time.perf_counter()
            shard_paths, scored_now, nodes = _run_engine(
                cfg, engine, address, files, parts, done, resolved, size, id_column, chosen
            )
            scoring_seconds = time.perf_counter() - scoring_start
    counts = [shards.shard_counts(p) for p in shard_paths]
    label_counts: Counter[str] = writer.finish(parts, shard_paths, output, cfg.data.label_separator)
    seconds = time.perf_counter() - start
    summary = ScoreSummary(
        output=str(output),
        inputs=[str(p) for p in files],
        model_name=resolved.name,
        model_version=resolved.version,
        rows_read=sum(c.rows_read for c in counts),
        rows_scored=sum(label_counts.values()),
        skipped_invalid=sum(c.skipped for c in counts),
        shards=len(shard_paths),
        resumed_shards=len(done),
        seconds=round(seconds, 3),
        texts_per_second=round(scored_now / scoring_seconds, 1) if scoring_seconds else 0.0,
        label_counts=dict(sorted(label_counts.items())),
        engine=engine,
        ray_nodes=nodes,
        blank_records=sum(c.blank for c in counts),
        backend=chosen.backend,
        parity=chosen.parity,
    )
    if summary.skipped_invalid:
        log.warning("skipped %d empty or invalid texts (checks.severity.text_not_blank)", summary.skipped_invalid)
    if summary.blank_records:
        log.warning("left out %d records of only blank cells (as blank lines are)", summary.blank_records)
    log.info("scored %d texts into %s in %.1fs", summary.rows_scored, output, seconds)
    return summary
