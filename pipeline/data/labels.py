"""Labels as they really come: numeric ids, three spellings of one name, label sets to be merged, one 0/1
column per label, and numeric scores.

Applied to the read rows before the snapshot is written (:func:`label_frame`), in this order: indicator columns
to label lists (``data.label_columns``, rows with none set by ``data.empty_labels``), or scores to named ranges
(``data.label_bins``); ids to names (``data.label_names``); case and whitespace normalised, decoration stripped
(``:: joy`` -> ``joy``); then ``data.label_map`` (rename, merge, or drop with null). Everything that changed is
counted in a :class:`LabelReport`, which the ingest and validation reports show.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import DataConfig
from pipeline.errors import PipelineError

EMPTY_LABEL = "neutral"  # data.empty_labels=neutral: the label of a row whose indicator columns are all 0
NOT_LABELS = ("text", "split", "label")  # columns that are never indicators


def _spaced(name: str) -> str:
    return " ".join(str(name).split()).lower()


def _decoration(char: str) -> bool:
    return char.isspace() or unicodedata.category(char)[0] in "PS"  # punctuation and symbols


def strip_decoration(name: str) -> str:
    """``":: joy"``, ``"joy."`` and ``"#joy"`` are ``"joy"``: punctuation and symbols around a name with letters.

    Names without a letter keep their marks, so ``"-1"`` and ``"1"`` stay two labels and ``":)"`` stays itself.
    """
    start, end = 0, len(name)
    while start < end and _decoration(name[start]):
        start += 1
    while end > start and _decoration(name[end - 1]):
        end -= 1
    core = name[start:end]
    return core if any(c.isalpha() for c in core) else name


def normalise_label(name: str) -> str:
    """``" Joy  "``, ``"JOY"``, ``":: joy"`` and ``"joy"`` are one label: lower case, single spaces, undecorated."""
    return strip_decoration(_spaced(name))


@dataclass
class LabelReport:
    """What label handling changed: spellings merged, ids named, labels mapped, rows left without a label."""

    normalised: dict[str, str] = field(default_factory=dict)  # raw spelling -> normalised, only where different
    undecorated: dict[str, str] = field(default_factory=dict)  # raw spelling -> label, where decoration was stripped
    ids_named: int = 0  # cells whose numeric id was replaced by its name
    mapped: dict[str, int] = field(default_factory=dict)  # "from -> to" (to: "(dropped)") -> cells
    unused_map_keys: list[str] = field(default_factory=list)
    dropped_rows: int = 0  # rows whose every label the map dropped
    label_columns: list[str] = field(default_factory=list)  # indicator columns the labels were read from
    empty_rows: int = 0  # rows with no indicator set
    empty_policy: str | None = None  # what was done with them (data.empty_labels)
    score_column: str | None = None  # the column of numeric scores binned into labels
    binned: dict[str, int] = field(default_factory=dict)  # range name -> rows (data.label_bins)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def notes(self) -> list[str]:
        """One readable line per kind of change."""
        out = []
        if self.label_columns:
            out.append(
                f"labels from {len(self.label_columns)} indicator columns (data.label_columns): "
                + ", ".join(self.label_columns)
            )
        if self.empty_rows:
            done = f"labelled '{EMPTY_LABEL}'" if self.empty_policy == "neutral" else "left out"
            out.append(f"{self.empty_rows} row(s) with no label set: {done} (data.empty_labels={self.empty_policy})")
        if self.binned:
            counts = ", ".join(f"{name} {n}" for name, n in self.binned.items())
            out.append(f"scores in '{self.score_column}' binned into labels (data.label_bins): {counts}")
        if self.ids_named:
            out.append(f"{self.ids_named} numeric label id(s) named by data.label_names")
        if self.normalised:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(self.normalised.items())[:8])
            out.append(f"label case/whitespace normalised: {shown}")
        if self.undecorated:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(self.undecorated.items())[:8])
            out.append(f"label decoration stripped: {shown}")
        if self.mapped:
            out.append("data.label_map: " + ", ".join(f"{k} ({n})" for k, n in self.mapped.items()))
        if self.unused_map_keys:
            out.append(f"data.label_map keys not found in the data: {', '.join(self.unused_map_keys)}")
        if self.dropped_rows:
            out.append(f"{self.dropped_rows} row(s) left out: the label map dropped all their labels")
        return out


class _Labeller:
    """Maps one label cell at a time and counts what it changed."""

    def __init__(self, names: list[str] | None, label_map: dict[str, str | None], report: LabelReport) -> None:
        self.names = names
        self.map = {normalise_label(k): (normalise_label(v) if v is not None else None) for k, v in label_map.items()}
        self.report = report
        self.used: set[str] = set()
        self.mapped: Counter[str] = Counter()

    def _id_name(self, value: Any) -> Any:
        if self.names is None:
            return value
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            return value
        if not math.isfinite(number) or number != int(number) or not 0 <= int(number) < len(self.names):
            return value  # validation names it as an unknown label
        self.report.ids_named += 1
        return self.names[int(number)]

    def one(self, value: Any) -> str | None:
        """One label: named, normalised and mapped; None when the map drops it."""
        raw = str(self._id_name(value))
        spaced = _spaced(raw)
        label = strip_decoration(spaced)
        if label != spaced:
            self.report.undecorated.setdefault(raw, label)
        elif label != raw:
            self.report.normalised.setdefault(raw, label)
        if label not in self.map:
            return label
        self.used.add(label)
        target = self.map[label]
        self.mapped[f"{label} -> {target if target is not None else '(dropped)'}"] += 1
        return target

    def cell(self, value: Any) -> Any:
        """A label cell: lists label by label (repeats once), missing stays missing; ``DROP`` when all are dropped."""
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            items = list(value)
            labels = [x for x in (self.one(v) for v in items if not _missing(v)) if x is not None]
            return list(dict.fromkeys(labels)) if labels or not items else DROP
        if _missing(value):
            return value
        label = self.one(value)
        return DROP if label is None else label


DROP = object()  # marks a row whose labels were all dropped by the map


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def apply_labels(
    frame: pd.DataFrame,
    names: list[str] | None,
    label_map: dict[str, str | None],
    report: LabelReport | None = None,
) -> tuple[pd.DataFrame, LabelReport]:
    """Name ids, normalise and map the ``label`` column; rows the map leaves without a label are left out."""
    if names is not None and len({normalise_label(n) for n in names}) != len(names):
        raise PipelineError(f"data.label_names lists a label twice: {names}")
    labeller = _Labeller(names, label_map, report or LabelReport())
    if "label" not in frame:
        return frame, labeller.report
    labels = frame["label"].map(labeller.cell)
    keep = labels.map(lambda v: v is not DROP)
    out = frame.loc[keep].copy()
    out["label"] = labels[keep]
    report = labeller.report
    report.mapped = dict(sorted(labeller.mapped.items()))
    report.unused_map_keys = sorted(set(labeller.map) - labeller.used)
    report.dropped_rows = int((~keep).sum())
    return out.reset_index(drop=True), report


def label_frame(frame: pd.DataFrame, cfg: DataConfig) -> tuple[pd.DataFrame, LabelReport]:
    """Every label rule of ``cfg`` applied to the read rows: indicator columns or score bins, then names and map."""
    report = LabelReport()
    if cfg.label_columns is not None:
        frame = labels_from_columns(frame, cfg.label_columns, cfg.empty_labels, report)
    else:
        frame = bin_scores(frame, cfg.label_column, cfg.label_bins, report)
    return apply_labels(frame, cfg.label_names, cfg.label_map, report)


# --- multi-hot indicator columns (SemEval-2018 E-c: ID, Tweet, then one 0/1 column per emotion) -------------------


def _indicator(value: Any) -> int | None:
    """0 or 1 from a cell as any reader gives it ("1", 1, 1.0, True); None for anything else, missing included."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        value = value.strip()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number in (0.0, 1.0) else None


def _indicators(column: pd.Series) -> pd.Series | None:
    """The column as 0/1 ints, or None when any cell is not 0 or 1."""
    values = column.map(_indicator)
    return None if values.isna().any() else values.astype(int)


def indicator_columns(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Every column of only 0s and 1s besides text, split and label (what ``data.label_columns=auto`` takes)."""
    return {str(c): v for c in frame.columns if str(c) not in NOT_LABELS and (v := _indicators(frame[c])) is not None}


def _resolve_columns(frame: pd.DataFrame, wanted: list[str] | str) -> dict[str, pd.Series]:
    """The indicator columns by name: those listed (each must be all 0/1), or every all-0/1 column for ``auto``."""
    available = [str(c) for c in frame.columns]
    if wanted == "auto":
        found = indicator_columns(frame)
        if len(found) < 2:
            raise PipelineError(
                f"data.label_columns=auto found {len(found)} column(s) of 0/1 values among {', '.join(available)}: "
                "it needs two or more; list the indicator columns (data.label_columns: [anger, fear, ...]) "
                "or use data.label_column for one column of label names"
            )
        return found
    lowered = {c.lower(): c for c in available}
    out = {}
    for name in wanted:
        column = name if name in available else lowered.get(name.lower())
        if column is None:
            raise PipelineError(
                f"data.label_columns names '{name}', which the data lacks; its columns: {', '.join(available)}"
            )
        values = _indicators(frame[column])
        if values is None:
            bad = frame[column][frame[column].map(_indicator).isna()]
            raise PipelineError(
                f"data.label_columns: column '{column}' is not a 0/1 indicator column: {len(bad)} row(s) hold "
                f"other values, e.g. {bad.iloc[0]!r} (data row {int(bad.index[0]) + 1}); list only 0/1 columns"
            )
        out[column] = values
    return out


def labels_from_columns(frame: pd.DataFrame, columns: list[str] | str, empty: str, report: LabelReport) -> pd.DataFrame:
    """A multi-label ``label`` column (lists of column names) from 0/1 indicator columns, in column order.

    Rows with no indicator set get the label ``neutral``, are left out, or stop the run (``empty``: neutral | drop
    | error); the indicator columns stay in the frame (the snapshot keeps only text, label and split).
    """
    found = _resolve_columns(frame.set_axis([str(c) for c in frame.columns], axis=1), columns)  # names as written
    names = list(found)
    hot = pd.DataFrame(found).to_numpy(dtype=bool)
    none = np.logical_not(hot.any(axis=1))
    report.label_columns, report.empty_rows, report.empty_policy = names, int(none.sum()), empty
    if none.any() and empty == "error":
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(none)[:5])
        raise PipelineError(
            f"{int(none.sum())} row(s) have no label set in {', '.join(names)} (e.g. data rows {rows}): set "
            f"data.empty_labels=neutral to label them '{EMPTY_LABEL}', or data.empty_labels=drop to leave them out"
        )
    fallback = [EMPTY_LABEL] if empty == "neutral" else []
    out = frame.copy()
    labels = [[names[j] for j in np.flatnonzero(row)] or list(fallback) for row in hot]
    out["label"] = pd.Series(labels, index=frame.index)
    return out if empty != "drop" else out.loc[~none].reset_index(drop=True)


# --- numeric scores (valence, arousal, dominance from 1 to 5) -----------------------------------------------------


def _numbers(column: pd.Series) -> pd.Series:
    """The cells as floats (NaN where a cell is not a number); list cells are never numbers."""
    return pd.to_numeric(column.map(lambda v: None if isinstance(v, (list, tuple)) else v), errors="coerce")


def _present(column: pd.Series) -> pd.Series:
    return ~column.map(lambda v: not isinstance(v, (list, tuple)) and _missing(v))


def proposed_bins(low: float, high: float) -> str:
    """Three equal named ranges over the scores' span, as a --set value."""
    a, b = (round(low + (high - low) * k / 3, 2) for k in (1, 2))
    return f"{{low: [{low:g}, {a:g}], mid: [{a:g}, {b:g}], high: [{b:g}, {high:g}]}}"


def is_scores(column: pd.Series) -> bool:
    """Decimals in every present cell, at least one not whole: scores, not label names or ids."""
    present = _present(column)
    numbers = _numbers(column)[present]
    return bool(present.any() and numbers.notna().all() and (numbers % 1 != 0).any())


def _bin_of(value: float, bins: dict[str, list[float]]) -> str | None:
    """The range holding ``value``: low <= value < high, or value == high of a range no other range starts at."""
    for name, (low, high) in bins.items():
        if low <= value < high:
            return name
    starts = {low for low, _ in bins.values()}
    return next((name for name, (_, high) in bins.items() if value == high and high not in starts), None)


def bin_scores(
    frame: pd.DataFrame, column: str, bins: dict[str, list[float]] | None, report: LabelReport
) -> pd.DataFrame:
    """Scores in the ``label`` column as the names of ``bins``' ranges; scores without bins are refused."""
    if "label" not in frame:
        return frame
    if bins is None:
        if is_scores(frame["label"]):
            numbers = _numbers(frame["label"]).dropna()
            low, high = float(numbers.min()), float(numbers.max())
            raise PipelineError(
                f"the label column '{column}' holds numeric scores ({low:g} to {high:g}, {numbers.nunique()} "
                "distinct values), not label names: set data.label_bins to named ranges that turn scores into "
                f"labels, e.g. --set 'data.label_bins={proposed_bins(low, high)}', or pick another data.label_column"
            )
        return frame
    present = _present(frame["label"])
    numbers = _numbers(frame["label"])
    not_numbers = frame["label"][present & numbers.isna()]
    if len(not_numbers):
        raise PipelineError(
            f"data.label_bins is set but the label column '{column}' holds values that are not numbers, e.g. "
            f"{not_numbers.iloc[0]!r}: point data.label_column at the score column or remove data.label_bins"
        )
    named = numbers.map(lambda v: _bin_of(float(v), bins) if not math.isnan(v) else None)
    outside = numbers[present & named.isna()]
    if len(outside):
        shown = ", ".join(f"{v:g}" for v in outside.unique()[:5])
        raise PipelineError(
            f"{len(outside)} score(s) in '{column}' fall in none of the ranges of data.label_bins {bins}: {shown}; "
            "widen the ranges to cover them"
        )
    out = frame.copy()
    out["label"] = named.astype(object)
    report.score_column = column
    report.binned = {name: int((named == name).sum()) for name in bins}
    return out
