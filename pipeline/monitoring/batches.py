"""A batch of new texts to check for drift: read with ingest's readers, blanks dropped, labels checked, sampled."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import DataConfig, MonitorConfig
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


@dataclass
class Batch:
    """New texts to check: ``frame`` has ``text`` and ``label`` (None where unknown or not in the label set)."""

    frame: pd.DataFrame
    source: str
    total_rows: int  # rows read, before dropping blanks and sampling
    dropped_blank: int = 0
    other_labels: list[str] = field(default_factory=list)  # label values outside the champion's label set

    @property
    def labelled(self) -> pd.DataFrame:
        return self.frame[self.frame["label"].notna()]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": len(self.frame),
            "rows_read": self.total_rows,
            "labelled_rows": len(self.labelled),
            "dropped_blank": self.dropped_blank,
        }


def _batch_files(location: Path) -> list[Path]:
    """The file itself, or every supported data file in the folder (hidden files skipped), in name order."""
    from pipeline.data.formats import by_suffix, suffix_list

    if not location.exists():
        raise PipelineError(f"batch {location} does not exist")
    if not location.is_dir():
        return [location]
    files = sorted(
        p for p in location.iterdir() if p.is_file() and by_suffix(p.name) is not None and not p.name.startswith(".")
    )
    if not files:
        raise PipelineError(f"{location} holds no data files (suffixes {suffix_list()})")
    return files


def _read_batch_file(path: Path, data_cfg: DataConfig) -> pd.DataFrame:
    """One file as ingest reads it (format from its suffix when known); a CSV/TSV without the text column is read
    as a file without a header row, as exported comment dumps often are."""
    from pipeline.data.formats import by_suffix
    from pipeline.data.ingest import read_headerless, read_table

    cfg = data_cfg.model_copy(update={"format": "auto"}) if by_suffix(path.name) is not None else data_cfg
    frame = read_table(path, cfg)
    if "text" not in frame and path.suffix.lower() in (".csv", ".tsv"):
        log.info("%s has no '%s' column: reading it as a file without a header row", path, data_cfg.text_column)
        frame = read_headerless(path)
    if "text" not in frame:
        raise PipelineError(
            f"{path} has no text column '{data_cfg.text_column}' (columns: {list(frame.columns)}); set data.text_column"
        )
    return frame


def _known_labels(frame: pd.DataFrame, labels: list[str], location: Path) -> tuple[pd.Series, list[str]]:
    """The label column with values outside ``labels`` set to None, and those other values (warned about)."""
    known = set(labels)
    raw_labels = frame["label"].map(lambda v: str(v).strip() if pd.notna(v) else None)
    other = sorted({v for v in raw_labels.dropna() if v not in known})
    if other:
        log.warning(
            "%d label value(s) in %s are not in the champion's label set (e.g. %s): those rows count as unlabelled",
            len(other),
            location,
            ", ".join(repr(v) for v in other[:5]),
        )
    return raw_labels.map(lambda v: v if v in known else None), other


def read_batch(
    path: str | Path, data_cfg: DataConfig, labels: list[str], mcfg: MonitorConfig, base_dir: Path = Path(".")
) -> Batch:
    """Read a batch file, or every supported file in a folder, keep text (and label when known), sample it down."""
    location = Path(path).expanduser()
    location = location if location.is_absolute() else base_dir / location
    parts = [_read_batch_file(f, data_cfg) for f in _batch_files(location)]
    frame = pd.concat([p[[c for c in ("text", "label") if c in p]] for p in parts], ignore_index=True)
    if "label" not in frame:
        frame["label"] = None
    total = len(frame)
    frame["text"] = frame["text"].map(lambda v: str(v) if pd.notna(v) else "")
    blank = frame["text"].str.strip() == ""
    frame = frame[~blank].reset_index(drop=True)
    frame["label"], other = _known_labels(frame, labels, location)
    if len(frame) > mcfg.batch_max_rows:
        log.info("sampling %d of %d rows from %s (monitor.batch_max_rows)", mcfg.batch_max_rows, len(frame), location)
        frame = frame.sample(mcfg.batch_max_rows, random_state=mcfg.seed).reset_index(drop=True)
    if len(frame) < mcfg.min_batch_rows:
        raise PipelineError(
            f"batch {location} has {len(frame)} non-blank texts: at least {mcfg.min_batch_rows} are "
            "needed to test for drift (monitor.min_batch_rows)"
        )
    log.info(
        "batch %s: %d texts (%d labelled, %d blank dropped)",
        location,
        len(frame),
        int(frame["label"].notna().sum()),
        int(blank.sum()),
    )
    return Batch(frame, str(location), total, int(blank.sum()), other)
