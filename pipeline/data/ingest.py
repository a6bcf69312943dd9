"""Read labelled text from any supported source into one normalized snapshot (text, label, split).

The snapshot is written to ``data/snapshot.jsonl`` with deterministic bytes, so the same source
always gets the same DVC hash.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import logging
import re
import shutil
import socket
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import SAMPLE_SOURCE, DataConfig
from pipeline.data import formats, readers
from pipeline.data.labels import LabelReport, label_frame
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
SNAPSHOT_NAME = "snapshot.jsonl"
LABEL_NAMES_FILE = "labels.txt"  # GoEmotions: label names, one per line, line number = id
SNAPSHOT_COLUMNS = ("text", "label", "split")
HF_HOST = ("huggingface.co", 443)
COLUMN_KEYS = {"text": "text_column", "label": "label_column"}


@dataclass
class SourceReport:
    """What reading the source found: per file its format, encoding, delimiter and malformed rows; label changes."""

    source: str
    bad_row_policy: str = "error"
    files: list[readers.FileReport] = field(default_factory=list)
    labels: LabelReport = field(default_factory=LabelReport)
    missing_columns: dict[str, str] = field(default_factory=dict)  # snapshot column -> what the files hold instead
    split_assigned: bool = False  # the source had no split column: ingest drew one (data.split_ratios)

    @property
    def bad_rows(self) -> int:
        return sum(len(f.bad_rows) for f in self.files)

    @property
    def blank_records(self) -> int:
        return sum(f.blank_records for f in self.files)

    def notes(self) -> list[str]:
        """Lines worth a reader's attention: encodings other than UTF-8, malformed rows, label changes."""
        out = [
            f"{Path(f.file).name}: read as {f.encoding}"
            for f in self.files
            if not (f.encoding or "utf-8").startswith("utf-8")  # label folders: "utf-8 (90)"
        ]
        out += [f"{Path(f.file).name}: {note}" for f in self.files for note in [*f.notes, f.blank_note()] if note]
        if self.bad_rows:
            out.append(f"{self.bad_rows} malformed row(s) left out (data.bad_rows={self.bad_row_policy})")
        return out + self.labels.notes() + list(self.missing_columns.values())

    def tracking_values(self) -> tuple[dict[str, str], dict[str, float]]:
        """MLflow params (how the files were read) and metrics (rows left out) of this read."""

        def joined(values: list[Any]) -> str:
            return ", ".join(dict.fromkeys(str(v) for v in values if v is not None)) or "n/a"

        params = {
            "data_read.formats": joined([f.format for f in self.files]),
            "data_read.encodings": joined([f.encoding for f in self.files]),
            "data_read.delimiters": joined(
                [readers.DELIMITER_NAMES.get(f.delimiter or "", f.delimiter) for f in self.files]
            ),
            "data_read.files": str(len(self.files)),
            "data_bad_rows": str(self.bad_rows),
        }
        metrics = {
            "data_bad_rows": float(self.bad_rows),
            "data_blank_records": float(self.blank_records),
            "data_label_dropped_rows": float(self.labels.dropped_rows),
        }
        return params, metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "bad_row_policy": self.bad_row_policy,
            "bad_rows": self.bad_rows,
            "blank_records": self.blank_records,
            "files": [f.to_dict() for f in self.files],
            "labels": self.labels.to_dict(),
            "missing_columns": self.missing_columns,
            "split_assigned": self.split_assigned,
            "notes": self.notes(),
        }


@dataclass(frozen=True)
class Snapshot:
    """The normalized dataset, where it was written, and what reading the source found."""

    frame: pd.DataFrame
    path: Path
    source: str
    report: SourceReport | None = None

    def split_counts(self) -> dict[str, int]:
        if "split" not in self.frame:
            return {}
        return {str(k): int(v) for k, v in self.frame["split"].value_counts(sort=False).items()}


def sample_data_dir() -> Path:
    """The small original dataset shipped inside the package."""
    return Path(str(files("pipeline.data") / "sample_data"))


def describe_source(source: str | list[str]) -> str:
    """The source as one string (MLflow tags, summaries): a list is joined with ' + '."""
    return source if isinstance(source, str) else " + ".join(source)


def _split_labels(value: Any, separator: str) -> list[str] | None:
    """A multi-label cell as a list of names: lists stay lists, strings are split, missing stays missing.

    A cell is whatever the reader produced: a str, a list, a numpy array (parquet lists), NaN or None.
    """
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [str(v).strip() for v in list(value) if str(v).strip()]
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    return None


def _closest(name: str, columns: list[str]) -> str | None:
    lowered = {str(c).lower(): str(c) for c in columns}
    if name.lower() in lowered:
        return lowered[name.lower()]
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def _note_missing_columns(frame: pd.DataFrame, path: Path, cfg: DataConfig, report: SourceReport | None) -> None:
    """A configured column the file lacks: say which columns it has and the closest name (validation refuses it)."""
    for column, key in COLUMN_KEYS.items():
        wanted = getattr(cfg, key)
        if wanted in frame.columns or (column == "label" and cfg.label_columns is not None):
            continue
        columns = [str(c) for c in frame.columns]
        closest = _closest(wanted, columns)
        hint = f"; closest: '{closest}' (--set data.{key}={closest})" if closest else ""
        shown = ", ".join(columns[:30]) + (f", ... ({len(columns)} in all)" if len(columns) > 30 else "")
        message = f"{path.name} has no column '{wanted}' (data.{key}); its columns: {shown}{hint}"
        log.warning("%s", message)
        if report is not None:
            report.missing_columns.setdefault(column, message)


def read_table(
    path: Path,
    cfg: DataConfig,
    label_names: list[str] | None = None,
    report: SourceReport | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Read one file (maybe gzip/zip-compressed; with ``limit`` bytes only a sample of it, as `emotion inspect`
    checks) and rename the configured columns to text / label / split."""
    loaded = formats.load(path, cfg.format, formats.read_options(cfg), label_names, limit)
    fmt, frame, file_report = loaded.format, loaded.frame, loaded.report
    readers.apply_bad_row_policy(file_report, cfg.bad_rows)
    file_report.rows = len(frame)
    if report is not None:
        report.files.append(file_report)
    if frame.empty:
        raise PipelineError(f"{path} is empty: it holds no rows")
    if not fmt.labelled:
        _note_missing_columns(frame, path, cfg, report)
        frame = frame.rename(columns={cfg.text_column: "text", cfg.label_column: "label", cfg.split_column: "split"})
        if cfg.multi_label and "label" in frame:
            frame["label"] = frame["label"].map(lambda v: _split_labels(v, cfg.label_separator))
    return frame


def read_headerless(path: Path) -> pd.DataFrame:
    """A CSV/TSV without a header row (e.g. GoEmotions' ``text<TAB>label ids<TAB>id``): the longest column, as text."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    raw = pd.read_csv(
        path,
        sep=sep,
        header=None,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8-sig",
        quoting=csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL,
    )
    lengths = {c: raw[c].fillna("").str.len().mean() for c in raw.columns}
    return pd.DataFrame({"text": raw[max(lengths, key=lengths.__getitem__)]})


# a split named at the end of a longer file name: 2018-E-c-En-train.txt, en_dev.tsv, 2018-E-c-En-test-gold.txt
SPLIT_SUFFIX = re.compile(r"[-_.](train|validation|valid|val|dev|test)(?:[-_.]gold)?$")


def _split_of(path: Path, suffixed: bool = True) -> str | None:
    """The split a file name states: the whole stem (train, dev, ...) or, with ``suffixed``, a suffix after - _ or .
    (SemEval's ``...-train``, ``...-test-gold``): a file read alone keeps its rows unless named just by a split."""
    stem = Path(readers.data_name(path)).stem.lower()
    found = SPLIT_SUFFIX.search(stem) if suffixed else None
    return SPLIT_ALIASES.get(stem) or (SPLIT_ALIASES[found.group(1)] if found else None)


def _split_files(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        split = _split_of(path)
        if split and formats.is_data_file(path):
            if split in found:
                raise PipelineError(
                    f"{directory} holds two files for split '{split}': {found[split].name}, {path.name}"
                )
            found[split] = path
    return found


def _read_directory(
    directory: Path, cfg: DataConfig, report: SourceReport | None, limit: int | None = None
) -> pd.DataFrame:
    """Split files (train / validation / test, any supported format), else one sub-folder of .txt files per label."""
    label_names = None
    if (directory / LABEL_NAMES_FILE).exists() and cfg.format in ("auto", "goemotions"):
        label_names = [line.strip() for line in (directory / LABEL_NAMES_FILE).read_text().splitlines() if line.strip()]
        cfg = cfg.model_copy(update={"format": "goemotions"})
    split_files = _split_files(directory)
    if not split_files:
        folders = readers.read_label_folders(directory, formats.read_options(cfg), SPLIT_ALIASES)
        if folders is None:
            raise PipelineError(
                f"{directory} holds no split files and no label folders: expected train / validation (or val, dev) / "
                f"test with one of the suffixes {formats.suffix_list()}, or one sub-folder of .txt files per label"
            )
        frame, file_reports = folders
        if report is not None:
            report.files += file_reports
        return frame
    parts = []
    for split, path in split_files.items():
        frame = read_table(path, cfg, label_names, report, limit)
        frame["split"] = split
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _read_files(
    paths: list[Path], cfg: DataConfig, report: SourceReport | None, limit: int | None = None
) -> pd.DataFrame:
    """Several files: split files when every name is a split (train.csv, dev.csv, ...), else one table."""
    splits = [_split_of(p, suffixed=len(paths) > 1) for p in paths]
    named = all(splits) and len(set(splits)) == len(splits)
    parts = []
    for path, split in zip(paths, splits):
        if path.is_dir():
            frame = _read_directory(path, cfg, report, limit)
        else:
            frame = read_table(path, cfg, report=report, limit=limit)
        if named:
            frame["split"] = split
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _read_hf(dataset_id: str, cfg: DataConfig) -> pd.DataFrame:
    """Load a Hugging Face dataset; fails fast with a clear message when the hub is unreachable."""
    try:
        socket.create_connection(HF_HOST, timeout=5).close()
    except OSError as exc:
        raise PipelineError(
            f"cannot reach the Hugging Face hub to load 'hf:{dataset_id}' ({exc}). This needs a network; "
            "offline, download the dataset elsewhere and set data.source to a local folder or file"
        ) from exc
    import datasets

    try:
        dataset = datasets.load_dataset(dataset_id, cfg.hf_config)
    except Exception as exc:  # datasets raises many types for missing / private / broken datasets
        raise PipelineError(f"cannot load 'hf:{dataset_id}': {exc}") from exc
    parts = []
    for name, split in dataset.items():
        canonical = SPLIT_ALIASES.get(name.lower())
        if canonical is None:
            continue
        frame = split.to_pandas().rename(columns={cfg.text_column: "text", cfg.label_column: "label"})
        feature = split.features.get(cfg.label_column)
        if hasattr(feature, "int2str"):
            frame["label"] = frame["label"].map(feature.int2str)
        frame["split"] = canonical
        parts.append(frame)
    if not parts:
        raise PipelineError(f"'hf:{dataset_id}' has none of the splits {SPLITS}")
    return pd.concat(parts, ignore_index=True)


def read_source(
    cfg: DataConfig, base_dir: Path = Path("."), report: SourceReport | None = None, limit: int | None = None
) -> pd.DataFrame:
    """Read ``cfg.source`` (relative paths against ``base_dir``) into a frame with text, label, split columns.

    Labels come out named, normalised and mapped (pipeline/data/labels.py); ``report`` collects what was found.
    ``limit`` reads a bounded sample of each file (formats.load), as `emotion inspect` checks its proposal.
    """
    source = cfg.source
    if isinstance(source, str) and source.startswith("hf:"):
        frame = _read_hf(source[3:], cfg)
    elif source == SAMPLE_SOURCE:
        frame = _read_directory(sample_data_dir(), cfg, report, limit)
    else:
        paths = readers.expand_sources(source, base_dir)
        single_dir = len(paths) == 1 and paths[0].is_dir()
        frame = _read_directory(paths[0], cfg, report, limit) if single_dir else _read_files(paths, cfg, report, limit)
    frame, label_report = label_frame(frame, cfg)  # indicator columns or score bins, ids, spellings, the map
    if report is not None:
        report.labels = label_report
    return frame


def _as_text(value: Any) -> str | None:
    """A DataFrame cell (any reader's type) as text; missing stays missing."""
    return None if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)) else str(value)


def _as_label(value: Any) -> str | list[str] | None:
    """Single labels as strings, multi-label cells as lists of strings."""
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [str(v) for v in list(value)]
    return _as_text(value)


def assign_splits(frame: pd.DataFrame, ratios: list[float], seed: int) -> pd.Series:
    """A stratified, seeded train/validation/test split (by the first label for multi-label rows)."""
    from sklearn.model_selection import train_test_split

    if abs(sum(ratios) - 1.0) > 1e-6 or min(ratios) < 0:
        raise PipelineError(f"data.split_ratios must be three non-negative shares summing to 1, got {list(ratios)}")
    strata = (
        frame["label"].map(lambda v: (v[0] if v else None) if isinstance(v, list) else v) if "label" in frame else None
    )
    index = frame.index.to_numpy()

    def cut(idx, count, by):
        if count <= 0:
            return idx, idx[:0]
        try:
            return train_test_split(idx, test_size=count, random_state=seed, stratify=by)
        except ValueError:  # a class too small to stratify: fall back to a plain seeded split
            log.warning("split not stratified: a label has too few rows for ratios %s", list(ratios))
            return train_test_split(idx, test_size=count, random_state=seed)

    by = strata.fillna("<none>").to_numpy() if strata is not None else None
    n_test, n_validation = round(len(index) * ratios[2]), round(len(index) * ratios[1])  # whole rows, no float drift
    rest, test = cut(index, n_test, by)
    by_rest = strata.loc[rest].fillna("<none>").to_numpy() if strata is not None else None
    _, validation = cut(rest, n_validation, by_rest)  # train is what is left
    split = pd.Series("train", index=frame.index)
    split.loc[validation], split.loc[test] = "validation", "test"
    return split


def normalize(raw: pd.DataFrame, cfg: DataConfig | None = None) -> pd.DataFrame:
    """Keep the snapshot columns (text and split as strings, label as a string or a list), splits named
    canonically and in split order; a source without splits gets a stratified seeded split.

    A missing text or label column stays missing, so validation can name it.
    """
    frame = raw[[c for c in SNAPSHOT_COLUMNS if c in raw]].copy()
    for column in frame.columns:
        frame[column] = frame[column].map(_as_label if column == "label" else _as_text)
    if "split" not in frame and cfg is not None and "text" in frame:
        frame["split"] = assign_splits(frame, cfg.split_ratios, cfg.split_seed)
        log.info("no split column: assigned a stratified split %s (seed %d)", list(cfg.split_ratios), cfg.split_seed)
    if "split" not in frame:
        return frame.reset_index(drop=True)
    frame["split"] = frame["split"].map(lambda s: SPLIT_ALIASES.get(s.strip().lower(), s) if s is not None else s)
    order = {name: i for i, name in enumerate(SPLITS)}
    rank = frame["split"].map(lambda s: order.get(s, len(SPLITS)))
    return frame.iloc[rank.argsort(kind="stable")].reset_index(drop=True)


def check_replaceable(snapshot_dir: Path) -> None:
    """Refuse to replace a folder the pipeline did not write: only an empty one or one holding just a snapshot."""
    if snapshot_dir.is_symlink() or (snapshot_dir.exists() and not snapshot_dir.is_dir()):
        raise PipelineError(f"{snapshot_dir} is not a snapshot folder: remove it or set data.snapshot_dir elsewhere")
    others = sorted(p.name for p in snapshot_dir.iterdir() if p.name != SNAPSHOT_NAME) if snapshot_dir.exists() else []
    if others:
        raise PipelineError(
            f"{snapshot_dir} holds files a snapshot does not ({', '.join(others[:5])}): it is not a folder the "
            "pipeline wrote, so it is left alone; move those files or set data.snapshot_dir to another folder"
        )


def write_snapshot(frame: pd.DataFrame, snapshot_dir: Path) -> Path:
    """Replace the snapshot folder's content with one deterministic JSONL file (only a folder it wrote itself)."""
    check_replaceable(snapshot_dir)
    if snapshot_dir.exists():
        shutil.rmtree(snapshot_dir)
    snapshot_dir.mkdir(parents=True)
    path = snapshot_dir / SNAPSHOT_NAME
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for record in frame.to_dict(orient="records"):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_snapshot(snapshot_dir: Path) -> pd.DataFrame:
    path = snapshot_dir / SNAPSHOT_NAME
    if not path.exists():
        raise PipelineError(f"no data snapshot at {path}: run `emotion ingest` (or `dvc pull`) first")
    return pd.read_json(path, lines=True, dtype=False, convert_dates=False)


def ingest(cfg: DataConfig, snapshot_dir: Path, base_dir: Path = Path(".")) -> Snapshot:
    """Read the configured source and write the normalized snapshot."""
    source = describe_source(cfg.source)
    report = SourceReport(source, cfg.bad_rows)
    raw = read_source(cfg, base_dir, report)
    report.split_assigned = "split" not in raw
    frame = normalize(raw, cfg)
    path = write_snapshot(frame, snapshot_dir)
    snapshot = Snapshot(frame=frame, path=path, source=source, report=report)
    log.info("ingested %d rows from %s: %s", len(frame), source, snapshot.split_counts())
    for note in report.notes():
        log.info("ingest: %s", note)
    return snapshot


def write_report(snapshot: Snapshot, path: Path) -> None:
    """The ingest report as JSON, bound to the snapshot bytes it describes (a restored snapshot ignores it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = (snapshot.report.to_dict() if snapshot.report else {}) | {"snapshot_md5": _md5(snapshot.path)}
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False))


def read_report(path: Path, snapshot_dir: Path) -> dict[str, Any] | None:
    """The ingest report of the current snapshot, or None (no report, or it describes other snapshot bytes)."""
    snapshot = snapshot_dir / SNAPSHOT_NAME
    if not path.exists() or not snapshot.exists():
        return None
    report = json.loads(path.read_text())
    return report if report.get("snapshot_md5") == _md5(snapshot) else None


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
