"""`emotion inspect PATH`: what a data file is and the exact settings that train on it.

It detects the format, encoding, delimiter and header, shows every column with examples, guesses the text,
label and split columns (or several 0/1 indicator columns, or a column of numeric scores), counts labels,
malformed lines and duplicates, measures text lengths, and proposes ``--set`` flags (and the same as a
params.yaml snippet). The proposal is proved before it is printed: a sample of the source is ingested,
validated, cleaned and encoded with exactly those settings, by the functions a run uses; when that fails,
inspect says what failed and proposes no command.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import EMOTION_LABELS, CleanConfig, DataConfig, ValidationConfig
from pipeline.data import clean, encode, formats, ingest, labels, readers, validate
from pipeline.data.labels import normalise_label
from pipeline.errors import PipelineError

TEXT_NAMES = (
    "text",
    "sentence",
    "content",
    "review",
    "comment",
    "tweet",
    "body",
    "message",
    "utterance",
    "document",
    "post",
    "review_text",
    "clean_text",
)
LABEL_NAMES = (
    "label",
    "labels",
    "emotion",
    "emotions",
    "sentiment",
    "class",
    "category",
    "target",
    "feeling",
    "tag",
    "y",
)
SPLIT_NAMES = ("split", "set", "partition", "fold", "subset")
MAX_LABELS = 50  # more distinct values than this is not a label column
HTML_ENTITY = re.compile(r"&(#\d+|#x[0-9a-f]+|[a-z]+);", re.IGNORECASE)
INCOMPLETE_DATA = ("splits_present",)  # failed checks that say the data is incomplete, not the settings wrong
# label names seen in public emotion datasets: a column of them is the label column
EMOTION_WORDS = frozenset(EMOTION_LABELS) | {
    "neutral", "happiness", "happy", "sad", "angry", "worry", "hate", "fun", "relief", "boredom", "enthusiasm",
    "empty", "disgust", "trust", "anticipation", "optimism", "pessimism", "shame", "guilt", "admiration",
    "amusement", "annoyance", "approval", "caring", "confusion", "curiosity", "desire", "disappointment",
    "disapproval", "embarrassment", "excitement", "gratitude", "grief", "nervousness", "pride", "realization",
    "remorse", "positive", "negative", "others", "none",
}  # fmt: skip
EXAMPLES = 3
SHOWN_COLUMNS = 10  # columns described in the console report (all of them in --json)
SAMPLE_BYTES = 4 << 20  # inspect reads this much of a file (whole lines), and only counts the rest


@dataclass
class Column:
    name: str
    filled: int
    distinct: int
    mean_chars: float
    examples: list[str]


@dataclass
class Inspection:
    """Everything `emotion inspect` reports, and the settings it proposes."""

    source: str
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    header: bool | None = None
    rows: int = 0
    columns: list[Column] = field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    label_columns: list[str] = field(default_factory=list)  # 0/1 indicator columns, one per label (multi-hot)
    runner_up: str | None = None  # the next most label-like column, to switch to
    split_column: str | None = None
    multi_label: bool = False
    labels: dict[str, int] = field(default_factory=dict)
    malformed: list[dict[str, Any]] = field(default_factory=list)
    malformed_count: int = 0
    duplicates: int = 0
    lengths: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # data.* keys that differ from the defaults
    notes: list[str] = field(default_factory=list)
    check: str = ""  # what reading with the proposed settings gave
    sample: str = ""  # the part of a large file that was read (empty: all of it)

    def flags(self) -> list[str]:
        """The proposed settings as `--set` arguments, quoted for a POSIX shell."""
        return [f"--set {shlex.quote(f'data.{k}={_yaml_value(v)}')}" for k, v in self.settings.items()]

    def params_snippet(self) -> str:
        return "data:\n" + "".join(f"  {k}: {_yaml_value(v)}\n" for k, v in self.settings.items())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"flags": self.flags(), "params": self.params_snippet()}


def _yaml_value(value: Any) -> str:
    """A value as `--set` / params.yaml reads it back (YAML flow style)."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


# --- detecting how to read the file ----------------------------------------------------------------------------


def _trailing_delimiter(records: list[list[str]]) -> bool:
    """Every line ends with the delimiter: its last field is empty on every line, the first included."""
    sample = records[:51]
    return len(sample[0]) > 1 and all(len(r) > 1 and not r[-1].strip() for r in sample)


def _looks_like_header(records: list[list[str]]) -> bool:
    """A first row of short, distinct names that never recur as values below it (or a known column name); an empty
    last field on every line (a trailing delimiter) is no column."""
    if _trailing_delimiter(records):
        records = [r[:-1] for r in records]
    first, rest = records[0], records[1:51]
    names = [c.strip().lower() for c in first]
    if any(n in TEXT_NAMES + LABEL_NAMES + SPLIT_NAMES for n in names):
        return True
    if not all(names) or len(set(names)) != len(names) or any(len(n) > 40 for n in names):
        return False
    for j, name in enumerate(first):
        column = [r[j] for r in rest if j < len(r)]
        if name in column or (_is_number(name) and column and all(_is_number(v) for v in column)):
            return False
    return True


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _is_dair_ai(text: str) -> bool:
    """``text;label`` lines: every line has a ';' (not one ending an HTML entity) and few distinct, short labels
    after the last one."""
    lines = [HTML_ENTITY.sub("", line) for line in text.splitlines()[:500] if line.strip()]  # &quot; is no field
    if not lines or not all(";" in line for line in lines):
        return False
    labels = [line.rpartition(";")[2].strip() for line in lines]
    return all(0 < len(lab) <= 30 for lab in labels) and len(set(labels)) <= min(MAX_LABELS, max(2, len(lines) // 2))


@dataclass
class Detected:
    """One file read with detected settings: the config used, the settings that differ from the defaults, the raw
    frame, what reading found, and what part of the file was read (empty: all of it)."""

    cfg: DataConfig
    settings: dict[str, Any]
    frame: pd.DataFrame
    report: readers.FileReport
    sample: str = ""


def detect(path: Path, base: DataConfig, limit: int) -> Detected:
    """Read a bounded sample of one file (``limit`` bytes of whole lines, formats.load for the others) and work out
    how to read it."""
    head = readers.read_head(path, limit)
    by_name = formats.by_suffix(head.name)
    suffix_format = by_name.name if by_name else None
    settings: dict[str, Any] = {}
    if by_name is not None and not by_name.detected:  # its reader needs no settings worked out
        loaded = formats.load(path, "auto", formats.read_options(base), limit=limit)
        total = f" of {by_name.count(path):,}" if by_name.count else ""
        sample = f"the first {len(loaded.frame):,}{total} rows" if loaded.sampled else ""
        return Detected(_config(base, settings), settings, loaded.frame, loaded.report, sample)
    report = readers.FileReport(str(path), suffix_format or "?")
    text, report.encoding = _decode_sample(head, path)
    if report.encoding == readers.FALLBACK_ENCODING or report.encoding == "latin-1":
        settings["encoding"] = report.encoding
    sample = _describe_sample(head, text, path) if head.truncated else ""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        fmt = "json" if stripped.startswith("[") else "jsonl"
        report.format = fmt
        if suffix_format not in ("json", "jsonl"):
            settings["format"] = fmt
        if fmt == "json" and head.truncated:  # an array is read whole: its head is no JSON
            text, sample = readers.decode(readers.read_bytes(path)[0], report.encoding or "auto", path)[0], ""
        frame = readers.read_json(text, report)
        if report.bad_rows:
            settings["bad_rows"] = "skip"
        return Detected(_config(base, settings), settings, frame, report, sample)
    if suffix_format == "text" and _is_dair_ai(text):
        report.format = "text"
        return Detected(_config(base, settings), settings, formats.read_text_label(text), report, sample)
    return Detected(*_detect_delimited(text, suffix_format, base, settings, report), sample)


def _decode_sample(head: readers.Head, path: Path) -> tuple[str, str]:
    """The sample's text and encoding, as ``auto`` would choose for the whole file: a sample of UTF-8 text from a
    file that is not UTF-8 further on is decoded as the whole file will be (checked in constant memory)."""
    text, encoding = readers.decode(head.raw, "auto", path)
    if head.truncated and encoding == "utf-8" and readers.data_name(path) == path.name:
        whole = readers.stream_encoding(path, "auto")
        if whole != encoding:
            return head.raw.decode(whole), whole
    return text, encoding


def _describe_sample(head: readers.Head, text: str, path: Path) -> str:
    lines, size = readers.count_lines(path)
    return (
        f"the first {len(head.raw) / 2**20:.1f} MB ({text.count(chr(10)):,} of {lines:,} lines, {size / 2**20:,.1f} MB)"
    )


def _detect_delimited(
    text: str, suffix_format: str | None, base: DataConfig, settings: dict[str, Any], report: readers.FileReport
) -> tuple[DataConfig, dict[str, Any], pd.DataFrame, readers.FileReport]:
    comment = base.comment or _comment_char(text)
    if comment != base.comment:
        settings["comment"] = comment
    opts = readers.ReadOptions(quotechar=base.quotechar, comment=comment, bad_rows="skip")
    delimiter = readers.sniff_delimiter(HTML_ENTITY.sub("", text), opts)  # &amp; splits no fields
    if delimiter is None:
        raise PipelineError(
            f"{report.file}: no delimiter (comma, semicolon, tab, pipe) splits its lines into columns; "
            "set data.delimiter and data.format=csv if it is delimited text"
        )
    report.format = "tsv" if suffix_format == "tsv" and delimiter == "\t" else "csv"
    if suffix_format != report.format:
        settings["format"] = report.format
    if report.format == "csv":
        settings["delimiter"] = readers.DELIMITER_NAMES[delimiter]
    records = [fields for _, _, fields in readers._records(text[: readers.SNIFF_CHARS], delimiter, opts)]
    header = _looks_like_header(records) if len(records) > 1 else True
    if not header:
        settings["header"] = False
    frame = readers.read_delimited(
        text, delimiter, readers.ReadOptions(quotechar=base.quotechar, comment=comment, header=header), report
    )
    if _trailing_delimiter(records) and len(frame.columns) > 1 and frame[frame.columns[-1]].isna().all():
        report.notes.append(
            f"every line ends with the delimiter: the empty last column ({frame.columns[-1]}) is left out "
            "(ingest reads only the text and label columns)"
        )
        frame = frame.drop(columns=frame.columns[-1])
    if report.bad_rows:
        settings["bad_rows"] = "skip"
    return _config(base, settings), settings, frame, report


def _comment_char(text: str) -> str | None:
    """``#`` when the file opens with ``#`` lines (export notes), else None."""
    first = next((line for line in text.splitlines()[:50] if line.strip()), "")
    return "#" if first.startswith("#") else None


def _config(base: DataConfig, settings: dict[str, Any]) -> DataConfig:
    return DataConfig.model_validate(base.model_dump() | settings | {"bad_rows": "skip"})


# --- guessing the columns --------------------------------------------------------------------------------------


def _describe_columns(frame: pd.DataFrame) -> list[Column]:
    out = []
    for name in frame.columns:
        values = frame[name].dropna().map(lambda v: v if isinstance(v, str) else str(v))
        values = values[values.str.strip() != ""]
        examples = [v[:80] for v in values.drop_duplicates().head(EXAMPLES)]
        mean = float(values.str.len().mean()) if len(values) else 0.0
        out.append(Column(str(name), len(values), int(values.nunique()), round(mean, 1), examples))
    return out


def _by_name(columns: list[Column], names: tuple[str, ...], exclude: set[str]) -> str | None:
    for wanted in names:
        for c in columns:
            if c.name.strip().lower() == wanted and c.name not in exclude and c.filled:
                return c.name
    return None


def _guess_columns(columns: list[Column]) -> tuple[str | None, str | None]:
    """(text, split): by name first, else the longest varied column."""
    split = next(
        (
            c.name
            for c in columns
            if c.name.strip().lower() in SPLIT_NAMES
            and c.filled
            and all(e.strip().lower() in ingest.SPLIT_ALIASES for e in c.examples)
        ),
        None,
    )
    taken = {split} if split else set()
    text = _by_name(columns, TEXT_NAMES, taken)
    if text is None:
        varied = [c for c in columns if c.name not in taken and c.distinct > max(1, 0.5 * c.filled)]
        text = max(varied, key=lambda c: c.mean_chars).name if varied else None
    return text, split


def _label_evidence(name: str, values: pd.Series, rows: int) -> tuple[int, ...] | None:
    """How label-like a column is (higher ranks first), or None when it is no label column: it must cover the rows
    with 2 to MAX_LABELS values, no value alone (a constant, maybe under a header word read as a row), and no
    scores. Names beat numbers, known emotion names beat other names, a label-like column name breaks ties."""
    cells = values.dropna().map(str).str.strip()
    cells = cells[cells != ""]
    counts = cells.value_counts()
    if len(cells) < 0.9 * rows or not 2 <= len(counts) <= MAX_LABELS or counts.iloc[0] >= len(cells) - 1:
        return None
    if labels.is_scores(cells):
        return None
    names = [normalise_label(v) for v in counts.index]
    worded = not all(_is_number(v) for v in names)
    emotions = sum(int(n) for v, n in zip(names, counts) if v in EMOTION_WORDS) * 2 >= len(cells)
    named = name.strip().lower() in LABEL_NAMES
    return int(emotions), int(named), int(worded), len(counts)


def _rank_labels(frame: pd.DataFrame, taken: set[str]) -> dict[str, tuple[int, ...]]:
    """The label-like columns with their evidence, most label-like first."""
    scored = {
        str(c): score
        for c in frame.columns
        if str(c) not in taken and (score := _label_evidence(str(c), frame[c], len(frame))) is not None
    }
    return dict(sorted(scored.items(), key=lambda item: item[1], reverse=True))


def _score_columns(frame: pd.DataFrame, taken: set[str]) -> list[str]:
    """Columns of decimal scores (valence, arousal, ...), which are no labels without bins."""
    return [str(c) for c in frame.columns if str(c) not in taken and labels.is_scores(frame[c])]


def _bins(column: pd.Series) -> dict[str, list[float]]:
    """Three equal named ranges over the scores' span (labels.proposed_bins, as a value)."""
    numbers = pd.to_numeric(column, errors="coerce").dropna()
    low, high = float(numbers.min()), float(numbers.max())
    a, b = (round(low + (high - low) * k / 3, 2) for k in (1, 2))
    return {"low": [low, a], "mid": [a, b], "high": [b, high]}


def _label_values(frame: pd.DataFrame, column: str, multi: bool, separator: str) -> pd.Series:
    values = frame[column].dropna()
    if multi:
        values = values.map(lambda v: v if isinstance(v, list) else [p for p in str(v).split(separator) if p.strip()])
        values = values.explode().dropna()
    return values.map(str).map(normalise_label)


def _is_multi_label(frame: pd.DataFrame, column: str, separator: str) -> bool:
    values = frame[column].dropna()
    if len(values) and values.map(lambda v: isinstance(v, list)).all():
        return True
    joined = values.map(str)
    parts = joined.map(lambda v: [p.strip() for p in v.split(separator)])
    vocabulary = set(parts.explode())
    return bool((joined.str.contains(separator, regex=False)).mean() > 0.05 and len(vocabulary) <= MAX_LABELS)


# --- the inspection --------------------------------------------------------------------------------------------


def inspect(
    source: str, base: DataConfig, base_dir: Path = Path("."), checks: ValidationConfig | None = None
) -> Inspection:
    """Inspect a file (or the first file of a folder, glob or list) and propose the data.* settings for it; the
    proposal is proved with ``checks`` (the run's data checks)."""
    paths = readers.expand_sources(source, base_dir)
    if len(paths) == 1 and paths[0].is_dir():
        result = _inspect_folder(source, paths[0], base)
    else:
        result = _inspect_files(source, paths, base)
    result.check = _check(result, base, base_dir, checks)
    return result


def _inspect_files(source: str, paths: list[Path], base: DataConfig) -> Inspection:
    """The first of the files, its settings proposed for all of them (not yet proved)."""
    detected = detect(paths[0], base, SAMPLE_BYTES)
    cfg, settings, frame, report = detected.cfg, detected.settings, detected.frame, detected.report
    result = Inspection(
        source,
        report.format,
        report.encoding,
        report.delimiter,
        report.header,
        rows=len(frame),
        malformed=[asdict(b) for b in report.bad_rows[: readers.MAX_EXAMPLES]],
        malformed_count=len(report.bad_rows),
        sample=detected.sample,
    )
    result.notes += report.notes
    if len(paths) > 1:
        result.notes.append(f"{len(paths)} files: inspected {paths[0].name}; the settings apply to every file")
    if report.format == "text":
        result.text_column, result.label_column = "text", "label"
        result.columns = _describe_columns(frame)
    else:
        result.columns = _describe_columns(frame)
        result.text_column, result.split_column = _guess_columns(result.columns)
        _choose_labels(result, settings, frame)
        _propose_columns(result, settings, frame, cfg)
    result.settings = {"source": source} | settings
    _describe_data(result, frame)
    _propose_labels(result, base)
    return result


def _choose_labels(result: Inspection, settings: dict[str, Any], frame: pd.DataFrame) -> None:
    """The label column by evidence (runner-up kept), else several 0/1 columns (multi-hot), else a score column
    with proposed bins."""
    taken = {c for c in (result.text_column, result.split_column) if c}
    ranked = _rank_labels(frame, taken)
    hot = labels.indicator_columns(frame.drop(columns=[c for c in frame.columns if str(c) in taken]))
    best = next(iter(ranked), None)
    if len(hot) >= 2 and (best is None or best in hot):
        _propose_indicators(result, settings, frame[list(hot)])
        return
    if best is not None:
        result.label_column = best
        result.runner_up = next((c for c in ranked if c != best and c not in hot), None)
        if result.runner_up:
            result.notes.append(
                f"label column {best} ({frame[best].nunique()} values); runner-up {result.runner_up} "
                f"({frame[result.runner_up].nunique()} values): switch with --set data.label_column={result.runner_up}"
            )
        return
    scores = _score_columns(frame, taken)
    if scores:
        _propose_bins(result, settings, frame, scores)
        return
    result.label_column = _by_name(result.columns, LABEL_NAMES, taken)


def _propose_indicators(result: Inspection, settings: dict[str, Any], hot: pd.DataFrame) -> None:
    """Several 0/1 columns: one label each, a multi-label dataset (data.label_columns=auto)."""
    report = labels.LabelReport()
    rows = labels.labels_from_columns(hot, "auto", "neutral", report)
    result.label_columns, result.multi_label = list(hot.columns), True
    result.labels = {str(k): int(v) for k, v in rows["label"].explode().value_counts().items()}
    settings["label_columns"] = "auto"
    settings["empty_labels"] = "neutral"
    result.notes.append(
        f"{len(hot.columns)} columns of 0/1 values ({', '.join(map(str, hot.columns))}): one label each, several "
        f"per row (multi-label); {report.empty_rows} row(s) with none set are labelled '{labels.EMPTY_LABEL}' "
        "(data.empty_labels=drop leaves them out)"
    )


def _propose_bins(result: Inspection, settings: dict[str, Any], frame: pd.DataFrame, scores: list[str]) -> None:
    """A column of numeric scores is no label column: named ranges over its span make labels of it."""
    column = next((c for c in scores if c.strip().lower() in LABEL_NAMES), scores[0])
    bins = _bins(frame[column])
    result.label_column = column
    settings["label_bins"] = bins
    named = labels.bin_scores(frame[[column]].rename(columns={column: "label"}), column, bins, labels.LabelReport())
    result.labels = {str(k): int(v) for k, v in named["label"].value_counts().items()}
    others = [c for c in scores if c != column]
    result.notes.append(
        f"{', '.join(scores)} hold numeric scores ({bins['low'][0]:g} to {bins['high'][1]:g} in {column}), not label "
        f"names: proposed data.label_bins, three equal named ranges over {column}; edit the ranges to what the scores "
        "mean" + (f", or bin {', '.join(others)} instead (data.label_column)" if others else "")
    )


def _inspect_folder(source: str, folder: Path, base: DataConfig) -> Inspection:
    """A folder: GoEmotions' (labels.txt beside split files), its split files (settings from the train file) or
    its label folders."""
    split_files = ingest._split_files(folder)
    if split_files and (folder / ingest.LABEL_NAMES_FILE).exists():
        return _inspect_goemotions(source, folder, split_files, base)
    if split_files:
        first = split_files.get("train") or next(iter(split_files.values()))
        inner = _inspect_files(str(first), [first], base)
        inner.source, inner.settings["source"] = source, source
        inner.notes.insert(0, f"split files {', '.join(p.name for p in split_files.values())}: inspected {first.name}")
        inner.split_column = None
        inner.settings.pop("split_column", None)
        return inner
    folders = readers.read_label_folders(folder, formats.read_options(base), ingest.SPLIT_ALIASES)
    if folders is None:
        raise PipelineError(f"{folder} holds no split files and no label folders of .txt files")
    frame, reports = folders
    result = Inspection(
        source,
        "label-folders",
        reports[0].encoding,
        rows=len(frame),
        text_column="text",
        label_column="label",
        columns=_describe_columns(frame),
    )
    result.settings = {"source": source}
    _describe_data(result, frame)
    _propose_labels(result, base)
    return result


def _inspect_goemotions(source: str, folder: Path, split_files: dict[str, Path], base: DataConfig) -> Inspection:
    """GoEmotions' layout: ``text<TAB>label ids<TAB>id`` split files named by labels.txt (ingest reads it as is)."""
    first = split_files.get("train") or next(iter(split_files.values()))
    cfg = DataConfig.model_validate(base.model_dump() | {"source": str(first), "format": "goemotions"})
    names = [n.strip() for n in (folder / ingest.LABEL_NAMES_FILE).read_text().splitlines() if n.strip()]
    frame = ingest.read_table(first, cfg, names, limit=SAMPLE_BYTES)
    result = Inspection(source, "goemotions", "utf-8", "\t", False, rows=len(frame), text_column="text")
    result.label_column, result.multi_label = "label", True
    result.settings = {"source": source}
    result.notes.append(
        f"GoEmotions layout: {', '.join(p.name for p in split_files.values())} hold text, label ids and an id; "
        f"{ingest.LABEL_NAMES_FILE} names the {len(names)} ids (inspected {first.name})"
    )
    _describe_data(result, frame)
    _propose_labels(result, base)
    raw = detect(first, base, SAMPLE_BYTES).frame  # the columns as the file holds them (ids, not names)
    result.columns = _describe_columns(raw)
    result.text_column = _guess_columns(result.columns)[0]
    result.label_column = next((str(c) for c in raw.columns if str(c) != result.text_column), None)
    return result


def _propose_columns(result: Inspection, settings: dict[str, Any], frame: pd.DataFrame, cfg: DataConfig) -> None:
    if result.text_column is not None and result.label_columns:
        if result.text_column != "text":
            settings["text_column"] = result.text_column
        return
    if result.text_column is None or result.label_column is None:
        missing = "text" if result.text_column is None else "label"
        result.notes.append(f"no likely {missing} column found: set data.{missing}_column to one of the columns above")
        return
    for key, column, default in (
        ("text_column", result.text_column, "text"),
        ("label_column", result.label_column, "label"),
        ("split_column", result.split_column, "split"),
    ):
        if column is not None and column != default:
            settings[key] = column
    if "label_bins" not in settings and _is_multi_label(frame, result.label_column, cfg.label_separator):
        result.multi_label = True
        settings["multi_label"] = True


def _describe_data(result: Inspection, frame: pd.DataFrame) -> None:
    """Label counts, duplicate texts and text length statistics of the guessed columns."""
    if result.label_column is not None and result.label_column in frame and not result.labels:
        values = _label_values(frame, result.label_column, result.multi_label, ",")
        result.labels = {str(k): int(v) for k, v in values.value_counts().items()}
        spellings = frame[result.label_column].dropna().map(str).nunique()
        if not result.multi_label and spellings > len(result.labels):
            result.notes.append(
                f"{spellings} label spellings are {len(result.labels)} labels once case and "
                "whitespace are normalised (done by ingest, and reported)"
            )
    if result.text_column in frame:
        texts = frame[result.text_column].dropna().map(str)
        result.duplicates = int(texts.map(lambda t: " ".join(t.split())).duplicated().sum())
        lengths = texts.str.len()
        if len(lengths):
            result.lengths = {
                "min": int(lengths.min()),
                "median": float(lengths.median()),
                "mean": round(float(lengths.mean()), 1),
                "p95": float(lengths.quantile(0.95)),
                "max": int(lengths.max()),
            }


def _propose_labels(result: Inspection, base: DataConfig) -> None:
    labels = sorted(result.labels)
    if base.labels is not None and set(labels) != set(base.labels):
        result.settings["labels"] = None  # infer them from the train split
    if labels and all(_is_number(label) for label in labels):
        result.notes.append(
            "the labels are numeric ids: name them with data.label_names=[name0, name1, ...] "
            "(or map them with data.label_map)"
        )
    rare = [f"{k} ({v})" for k, v in result.labels.items() if v < 15]
    if rare:
        result.notes.append(
            f"rare labels {', '.join(rare)}: with ~80% in train they may fall under "
            "checks.min_train_count; merge or drop them with data.label_map"
        )


def _check(result: Inspection, base: DataConfig, base_dir: Path, checks: ValidationConfig | None = None) -> str:
    """Prove the proposal as a run would use it: ingest (a sample), validate, clean and encode with exactly the
    proposed settings; "ok: ..." or "FAILED: <the step>: <why>"."""
    with _quiet("pipeline.data"), _quiet("great_expectations"):
        return _prove(result, base, base_dir, checks or ValidationConfig())


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The stages' INFO logs (per-split tables) left out of the inspect report; warnings still show."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _sample_checks(checks: ValidationConfig) -> ValidationConfig:
    """The run's checks, but rows per label only warned about: they measure how much data there is (a sample
    undercounts it), not whether the settings read it right; a shortfall becomes a note."""
    severity = checks.severity.model_copy(update={"label_min_count": "warning"})
    return checks.model_copy(update={"severity": severity})


def _validate(frame: pd.DataFrame, names: list[str], checks: ValidationConfig) -> validate.ValidationReport:
    """The run's data checks on the sample; a split file missing from a folder of split files is a note (the
    data is incomplete, the settings read it right), any other failure stops the proof."""
    from pipeline.errors import DataValidationError

    with tempfile.TemporaryDirectory(prefix="inspect-") as reports:
        try:
            return validate.validate(frame, names, Path(reports), _sample_checks(checks))
        except DataValidationError as exc:
            report = exc.report
            if not isinstance(report, validate.ValidationReport) or any(
                c.key not in INCOMPLETE_DATA for c in report.failed
            ):
                raise
            return report


def _note_checks(result: Inspection, report: validate.ValidationReport, checks: ValidationConfig) -> None:
    """Say which checks a run would stop on for want of data (not for wrong settings)."""
    for check in report.failed:
        result.notes.append(
            f"{check.name}: {check.detail}: a run stops on this check until the source holds a file (or rows) for "
            "each of train, validation (dev) and test"
        )
    if checks.severity.label_min_count != "error":
        return
    for check in report.warnings:
        if check.key == "label_min_count":
            result.notes.append(
                f"{check.name}: {check.detail}{' in the sample' if result.sample else ''}: a run stops on this "
                "check; add rows, merge or drop labels with data.label_map, or lower checks.min_train_count"
            )


def _prove(result: Inspection, base: DataConfig, base_dir: Path, checks: ValidationConfig) -> str:
    from pipeline.errors import DataValidationError

    step = "reading with these settings"
    try:
        cfg = DataConfig.model_validate(base.model_dump() | result.settings)
        frame = ingest.normalize(ingest.read_source(cfg, base_dir, limit=SAMPLE_BYTES), cfg)
        missing = [c for c in ("text", "label") if c not in frame]
        if missing:
            return f"FAILED: {step} gives no {' or '.join(missing)} column"
        step = "validating"
        names = encode.label_set(frame, cfg.labels)
        if not names:
            return f"FAILED: {step}: no labels in the train split"
        _note_checks(result, _validate(frame, names, checks), checks)
        step = "cleaning and encoding"
        prepared = encode.encode(clean.clean(frame, CleanConfig()).frame, names)
    except DataValidationError as exc:
        report = exc.report
        failed = (
            ", ".join(f"{c.name} ({c.detail})" for c in report.failed)
            if isinstance(report, validate.ValidationReport)
            else str(exc)
        )
        return f"FAILED: {step}: {failed}"
    except (PipelineError, ValueError) as exc:
        return f"FAILED: {step}: {exc}"
    splits = ", ".join(f"{k} {len(v)}" for k, v in prepared.splits.items())
    read = "rows of the sample" if result.sample else "rows"
    kind = "multi-label" if prepared.label_map.multi_label else "single-label"
    return (
        f"ok: {len(frame)} {read} ingested and validated, {len(names)} labels ({kind}); cleaned and encoded: {splits}"
    )


def format_inspection(result: Inspection) -> str:
    """The console report."""
    out = io.StringIO()
    w = out.write
    delimiter = readers.DELIMITER_NAMES.get(result.delimiter or "", result.delimiter)
    w(f"source     {result.source}\nformat     {result.format}, {result.rows} rows read\n")
    w(f"encoding   {result.encoding or 'n/a'}\n")
    if result.sample:
        w(f"sample     {result.sample} read: the counts below are of that sample; ingest reads it all\n")
    if result.delimiter is not None:
        w(f"delimiter  {delimiter}    header: {'yes' if result.header else 'no'}\n")
    w(f"columns    {len(result.columns)}\n")
    mark = {result.text_column: " <- text", result.label_column: " <- label", result.split_column: " <- split"}
    mark |= {c: " <- label (0/1)" for c in result.label_columns}
    if result.runner_up:
        mark[result.runner_up] = " <- runner-up label"
    chosen = [c for c in result.columns if c.name in mark]
    shown_columns = chosen + [c for c in result.columns if c.name not in mark][: max(0, SHOWN_COLUMNS - len(chosen))]
    width = min(24, max((len(c.name) for c in shown_columns), default=4))
    for c in sorted(shown_columns, key=result.columns.index):
        w(
            f"  {c.name:<{width}} {c.filled:>7} filled {c.distinct:>7} distinct {c.mean_chars:>7.1f} chars"
            f"{mark.get(c.name, '')}\n"
        )
        w(f"  {'':<{width}}   e.g. {' | '.join(repr(e) for e in c.examples)}\n")
    rest = [c.name for c in result.columns if c not in shown_columns]
    if rest:
        w(f"  ... and {len(rest)} more: {', '.join(rest[:40])}{', ...' if len(rest) > 40 else ''}\n")
    shown = ", ".join(f"{k} {v}" for k, v in list(result.labels.items())[:30])
    w(f"labels     {len(result.labels)}{' (multi-label)' if result.multi_label else ''}: {shown}\n")
    w(f"malformed  {result.malformed_count} row(s)")
    w(
        "".join(
            f"\n  line {m['line']}: {m['fields']} fields, expected {m['expected']}: {m['raw'][:100]!r}"
            for m in result.malformed
        )
        + "\n"
    )
    w(f"duplicates {result.duplicates} repeated text(s)\n")
    if result.lengths:
        w("length     " + ", ".join(f"{k} {v:g}" for k, v in result.lengths.items()) + " characters\n")
    for note in result.notes:
        w(f"note       {note}\n")
    w(f"check      {result.check}\n")
    if not result.check.startswith("ok"):
        w("\nno command proposed: these settings fail the check above; set what it names and run inspect again\n")
        w("the settings that failed:\n" + "".join(f"  {flag}\n" for flag in result.flags()))
        return out.getvalue()
    w("\ntrain on it:\n  emotion run " + " \\\n    ".join(result.flags()) + "\n")
    w("\nor in params.yaml:\n" + "".join(f"  {line}\n" for line in result.params_snippet().splitlines()))
    return out.getvalue()
