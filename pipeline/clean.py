"""Text normalization and row filtering; returns a new frame and a per-split table of what changed."""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import dataclass

import pandas as pd

from pipeline.config import CleanConfig

log = logging.getLogger(__name__)


@dataclass
class CleanResult:
    frame: pd.DataFrame
    changes: pd.DataFrame  # one row per split: rows_in, normalized, dropped_empty, dropped_duplicates, rows_out


def normalize_text(text: str, cfg: CleanConfig) -> str:
    """Unicode normal form, collapsed whitespace, optional lower-casing."""
    if cfg.unicode_form != "none":
        text = unicodedata.normalize(cfg.unicode_form, text)
    text = " ".join(text.split())
    return text.lower() if cfg.lowercase else text


def clean(frame: pd.DataFrame, cfg: CleanConfig) -> CleanResult:
    """Normalize texts, drop rows left empty, and (by config) exact duplicates within a split."""
    out = frame.copy()
    cleaned = out["text"].map(lambda t: normalize_text(t, cfg))
    changed = cleaned != out["text"]
    out["text"] = cleaned
    empty = out["text"].str.len() == 0
    duplicate = out.duplicated(subset=["split", "text"], keep="first") & ~empty
    if not cfg.drop_duplicates:
        duplicate[:] = False
    stats = pd.DataFrame({
        "rows_in": out.groupby("split").size(),
        "normalized": changed.groupby(out["split"]).sum(),
        "dropped_empty": empty.groupby(out["split"]).sum(),
        "dropped_duplicates": duplicate.groupby(out["split"]).sum(),
    }).fillna(0).astype(int)
    out = out[~empty & ~duplicate].reset_index(drop=True)
    stats["rows_out"] = out.groupby("split").size().reindex(stats.index).fillna(0).astype(int)
    stats.index.name = "split"
    log.info("cleaning:\n%s", stats.to_string())
    return CleanResult(out, stats)
