"""Retraining data: the champion's data plus a batch's new labelled rows, as a source folder ingest reads."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


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
