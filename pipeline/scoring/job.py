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

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.scoring import reader, shards, writer
from pipeline.scoring.model import ScoringModel, local_folder, resolve_model

log = logging.getLogger(__name__)

ENGINES = ("local",)


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _manifest(files: list[Path], model: ScoringModel, cfg: Config, chunk_size: int, id_column: str | None) -> dict:
    return {
        "inputs": [shards.fingerprint(p) for p in files],
        "model": {"name": model.name, "version": model.version},
        "chunk_size": chunk_size,
        "id_column": id_column,
        "reading": {"format": cfg.data.format, "text_column": cfg.data.text_column},
        "skip_invalid": _skip_invalid(cfg),
    }


def _skip_invalid(cfg: Config) -> bool:
    """The ingest policy for empty texts: an error when the data checks make blank or missing text an error."""
    severity = cfg.checks.severity
    return severity.text_not_blank != "error" and severity.text_not_null != "error"


def score_files(
    cfg: Config,
    inputs: list[str],
    output: Path,
    model: str | None = None,
    id_column: str | None = None,
    chunk_size: int | None = None,
    engine: str = "local",
) -> ScoreSummary:
    """Score every text of ``inputs`` (files, folders, globs) into ``output``, resuming an interrupted run."""
    from pipeline.model.predict import Predictor

    if engine not in ENGINES:
        raise PipelineError(f"unknown scoring engine {engine!r}: use one of {', '.join(ENGINES)}")
    writer.output_format(output)
    start = time.perf_counter()
    files = reader.input_files(inputs, Path(cfg.project_dir).resolve())
    size = chunk_size or cfg.score.chunk_size
    resolved = resolve_model(cfg, model)
    parts = shards.parts_dir(output)
    done = set(shards.prepare(parts, _manifest(files, resolved, cfg, size, id_column)))
    with tempfile.TemporaryDirectory(prefix="emotion-score-model-") as tmp:
        resolved = local_folder(cfg, resolved, Path(tmp))
        assert resolved.folder is not None
        predictor = Predictor(
            resolved.folder,
            precision=cfg.score.precision,
            max_length=cfg.model.max_length,
            batch_size=cfg.score.batch_size,
        )
        log.info("scoring %d file(s) with %s version %s into %s", len(files), resolved.name, resolved.version, output)
        from pipeline.scoring.local import run_local

        scoring_start = time.perf_counter()
        paths, scored_now = run_local(
            reader.chunks(files, cfg.data, size, id_column),
            parts,
            done,
            predictor,
            resolved,
            _skip_invalid(cfg),
            reader.count_rows(files, cfg.data) if sys.stderr.isatty() else None,  # for the ETA
        )
        scoring_seconds = time.perf_counter() - scoring_start
    counts = [shards.shard_counts(p) for p in paths]
    label_counts: Counter[str] = writer.finish(parts, paths, output, cfg.data.label_separator)
    seconds = time.perf_counter() - start
    summary = ScoreSummary(
        output=str(output),
        inputs=[str(p) for p in files],
        model_name=resolved.name,
        model_version=resolved.version,
        rows_read=sum(c[0] for c in counts),
        rows_scored=sum(label_counts.values()),
        skipped_invalid=sum(c[1] for c in counts),
        shards=len(paths),
        resumed_shards=len(done),
        seconds=round(seconds, 3),
        texts_per_second=round(scored_now / scoring_seconds, 1) if scoring_seconds else 0.0,
        label_counts=dict(sorted(label_counts.items())),
    )
    if summary.skipped_invalid:
        log.warning("skipped %d empty or invalid texts (checks.severity.text_not_blank)", summary.skipped_invalid)
    log.info("scored %d texts into %s in %.1fs", summary.rows_scored, output, seconds)
    return summary
