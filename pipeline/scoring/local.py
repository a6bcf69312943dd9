"""The local engine: score chunk after chunk in this process, one shard per chunk.

``score_chunk`` (a DataFrame in, a DataFrame out) is all an engine needs per chunk; a Ray Data engine can call it
in ``map_batches`` with one ``Predictor`` (or ``OnnxPredictor``) per actor.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.data.clean import has_visible_text
from pipeline.data.formats import blank_records
from pipeline.errors import PipelineError
from pipeline.scoring import shards
from pipeline.scoring.reader import ROW_ID

if TYPE_CHECKING:
    from pipeline.model.onnx_predict import OnnxPredictor
    from pipeline.model.predict import Predictor
    from pipeline.registry.model_spec import ModelRef

log = logging.getLogger(__name__)


def valid_texts(chunk: pd.DataFrame, skip_invalid: bool) -> tuple[pd.DataFrame, int]:
    """The rows with a text that shows something (as strings) and how many were not (missing, blank, or only
    NUL / zero-width characters, as the API refuses them); with ``skip_invalid`` False an invalid text is an error
    naming its id."""
    text = chunk["text"]
    missing = text.isna() | text.map(lambda v: isinstance(v, (list, dict)))
    as_str = text.where(missing, text.astype(str))
    invalid = missing | ~as_str.fillna("").map(has_visible_text).astype(bool)
    if invalid.any() and not skip_invalid:
        first = chunk.loc[invalid, ROW_ID].iloc[0]
        raise PipelineError(
            f"row {ROW_ID}={first} has an empty or missing text ({int(invalid.sum())} in its chunk): remove such "
            "rows, or skip them with --set checks.severity.text_not_blank=warning"
        )
    return chunk.loc[~invalid].assign(text=as_str[~invalid]).reset_index(drop=True), int(invalid.sum())


def score_chunk(chunk: pd.DataFrame, predictor: Predictor | OnnxPredictor, model: ModelRef) -> pd.DataFrame:
    """Valid texts (``id``, ``text``) in; ``id``, ``text``, ``label`` (``labels`` for a multi-label model), one
    calibrated ``p_<label>`` per label, ``model_name`` and ``model_version`` out."""
    texts = chunk["text"].tolist()
    probs = predictor.predict_proba(texts) if texts else np.zeros((0, len(predictor.labels)), dtype=np.float32)
    labels = np.asarray(predictor.labels, dtype=object)
    out = pd.DataFrame({ROW_ID: chunk[ROW_ID].to_numpy(), "text": texts})
    out["label"] = labels[probs.argmax(axis=1)] if len(texts) else pd.Series(dtype=str)
    if predictor.multi_label:
        from pipeline.model.calibration import multi_label_decisions

        chosen = (
            multi_label_decisions(probs, predictor.thresholds)
            if predictor.thresholds is not None and len(texts)
            else np.zeros_like(probs, dtype=bool)
        )
        out["labels"] = [labels[np.asarray(row, dtype=bool)].tolist() for row in chosen]
    for j, label in enumerate(predictor.labels):
        out[f"p_{label}"] = probs[:, j]
    out["model_name"] = model.name
    out["model_version"] = model.version
    return out


def _progress(total: int | None, done_rows: int) -> Any:
    """A tqdm bar (texts/s, ETA) on a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done_rows, unit="text", unit_scale=True, dynamic_ncols=True, smoothing=0.1)


def run_local(
    chunks: Iterator[pd.DataFrame],
    parts: Path,
    done: set[int],
    predictor: Predictor | OnnxPredictor,
    model: ModelRef,
    skip_invalid: bool,
    total: int | None = None,
) -> tuple[list[Path], int]:
    """Score every chunk not in ``done`` into its shard; returns all shard paths in order and the rows scored now."""
    paths: list[Path] = []
    scored = 0
    bar = _progress(total, 0)
    try:
        for index, chunk in enumerate(chunks):
            path = shards.shard_path(parts, index)
            if index not in done:
                valid, skipped = valid_texts(chunk, skip_invalid)
                frame = score_chunk(valid, predictor, model)
                shards.write_shard(parts, index, frame, shards.Counts(len(chunk), skipped, blank_records(chunk)))
                scored += len(valid)
            paths.append(path)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return paths, scored
