"""Read labelled text from any supported source into one normalized snapshot (text, label, split).

The snapshot is written to ``data/snapshot.jsonl`` with deterministic bytes, so the same source
always gets the same DVC hash.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import socket
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import SAMPLE_SOURCE, DataConfig
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
SUFFIX_FORMATS = {
    ".txt": "text",
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
SNAPSHOT_NAME = "snapshot.jsonl"
LABEL_NAMES_FILE = "labels.txt"  # GoEmotions: label names, one per line, line number = id
SNAPSHOT_COLUMNS = ("text", "label", "split")
HF_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class Snapshot:
    """The normalized dataset and where it was written."""

    frame: pd.DataFrame
    path: Path
    source: str

    def split_counts(self) -> dict[str, int]:
        if "split" not in self.frame:
            return {}
        return {str(k): int(v) for k, v in self.frame["split"].value_counts(sort=False).items()}


def sample_data_dir() -> Path:
    """The small original dataset shipped inside the package."""
    return Path(str(files("pipeline.data") / "sample_data"))


def _format_of(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise PipelineError(f"cannot tell the format of {path}: use one of {sorted(SUFFIX_FORMATS)} or set data.format")
    return fmt


def _read_text_format(path: Path) -> pd.DataFrame:
    """dair-ai format: ``text;label`` per line, blank lines ignored, label after the last ';'."""
    rows = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            continue
        text, sep, label = line.rpartition(";")
        rows.append({"text": text if sep else line, "label": label.strip() if sep else None})
    return pd.DataFrame(rows, columns=["text", "label"])


def _read_goemotions(path: Path, names: list[str]) -> pd.DataFrame:
    """GoEmotions TSV: ``text<TAB>comma-separated label ids<TAB>comment id``; ids name lines of labels.txt.

    An id outside labels.txt is kept as written, so validation reports it as an unknown label.
    """
    raw = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=["text", "ids", "id"],
        dtype=str,
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        na_values=[""],
        encoding="utf-8-sig",
    )

    def to_names(ids: object) -> list[str]:
        if not isinstance(ids, str):
            return []
        out = []
        for part in ids.split(","):
            part = part.strip()
            out.append(names[int(part)] if part.isdigit() and int(part) < len(names) else part)
        return out

    return pd.DataFrame({"text": raw["text"], "label": raw["ids"].map(to_names)})


def _split_labels(value: Any, separator: str) -> list[str] | None:
    """A multi-label cell as a list of names: lists stay lists, strings are split, missing stays missing.

    A cell is whatever the reader produced: a str, a list, a numpy array (parquet lists), NaN or None.
    """
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [str(v).strip() for v in list(value) if str(v).strip()]
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    return None


def read_table(path: Path, cfg: DataConfig, label_names: list[str] | None = None) -> pd.DataFrame:
    """Read one file and rename the configured columns to text / label / split."""
    fmt = _format_of(path, cfg.format)
    try:
        if fmt == "goemotions":
            if label_names is None:
                raise PipelineError(f"{path}: the GoEmotions format needs labels.txt beside the split files")
            frame = _read_goemotions(path, label_names)
        elif fmt == "text":
            frame = _read_text_format(path)
        elif fmt in ("csv", "tsv"):
            # Only an empty cell is missing: "None", "NA" or "null" are real texts.
            frame = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="utf-8-sig",
            )
        elif fmt == "jsonl":
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")
        else:
            frame = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); re-encode it as UTF-8"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise PipelineError(f"{path} is empty: it holds no rows") from exc
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise PipelineError(f"cannot read {path} as {fmt}: {exc}") from exc
    if frame.empty:
        raise PipelineError(f"{path} is empty: it holds no rows")
    if fmt not in ("text", "goemotions"):
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


def _split_files(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        split = SPLIT_ALIASES.get(path.stem.lower())
        if path.is_file() and split and path.suffix.lower() in SUFFIX_FORMATS:
            if split in found:
                raise PipelineError(
                    f"{directory} holds two files for split '{split}': {found[split].name}, {path.name}"
                )
            found[split] = path
    if not found:
        raise PipelineError(
            f"{directory} holds no split files: expected train / validation (or val, dev) / test "
            f"with one of the suffixes {sorted(SUFFIX_FORMATS)}"
        )
    return found


def _read_directory(directory: Path, cfg: DataConfig) -> pd.DataFrame:
    label_names = None
    if (directory / LABEL_NAMES_FILE).exists() and cfg.format in ("auto", "goemotions"):
        label_names = [line.strip() for line in (directory / LABEL_NAMES_FILE).read_text().splitlines() if line.strip()]
        cfg = cfg.model_copy(update={"format": "goemotions"})
    parts = []
    for split, path in _split_files(directory).items():
        frame = read_table(path, cfg, label_names)
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


def read_source(cfg: DataConfig, base_dir: Path = Path(".")) -> pd.DataFrame:
    """Read ``cfg.source`` (relative paths against ``base_dir``) into a frame with text, label, split columns."""
    source = cfg.source
    if source.startswith("hf:"):
        return _read_hf(source[3:], cfg)
    path = sample_data_dir() if source == SAMPLE_SOURCE else base_dir / Path(source).expanduser()
    if not path.exists():
        raise PipelineError(f"data source {path} does not exist (data.source={source!r})")
    return _read_directory(path, cfg) if path.is_dir() else read_table(path, cfg)


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


def write_snapshot(frame: pd.DataFrame, snapshot_dir: Path) -> Path:
    """Replace the snapshot folder's content with one deterministic JSONL file."""
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
    frame = normalize(read_source(cfg, base_dir), cfg)
    path = write_snapshot(frame, snapshot_dir)
    snapshot = Snapshot(frame=frame, path=path, source=cfg.source)
    log.info("ingested %d rows from %s: %s", len(frame), cfg.source, snapshot.split_counts())
    return snapshot
