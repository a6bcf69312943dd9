"""Labels as they really come: numeric ids, three spellings of one name, and label sets to be merged.

Applied to the read rows before the snapshot is written, in this order: ids to names (``data.label_names``),
case and whitespace normalised, then ``data.label_map`` (rename, merge, or drop with null). Everything that
changed is counted in a :class:`LabelReport`, which the ingest and validation reports show.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from pipeline.errors import PipelineError


def normalise_label(name: str) -> str:
    """``" Joy  "``, ``"JOY"`` and ``"joy"`` are one label: lower case, single spaces."""
    return " ".join(str(name).split()).lower()


@dataclass
class LabelReport:
    """What label handling changed: spellings merged, ids named, labels mapped, rows left without a label."""

    normalised: dict[str, str] = field(default_factory=dict)  # raw spelling -> normalised, only where different
    ids_named: int = 0  # cells whose numeric id was replaced by its name
    mapped: dict[str, int] = field(default_factory=dict)  # "from -> to" (to: "(dropped)") -> cells
    unused_map_keys: list[str] = field(default_factory=list)
    dropped_rows: int = 0  # rows whose every label the map dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def notes(self) -> list[str]:
        """One readable line per kind of change."""
        out = []
        if self.ids_named:
            out.append(f"{self.ids_named} numeric label id(s) named by data.label_names")
        if self.normalised:
            shown = ", ".join(f"{k!r} -> {v!r}" for k, v in list(self.normalised.items())[:8])
            out.append(f"label case/whitespace normalised: {shown}")
        if self.mapped:
            out.append("data.label_map: " + ", ".join(f"{k} ({n})" for k, n in self.mapped.items()))
        if self.unused_map_keys:
            out.append(f"data.label_map keys not found in the data: {', '.join(self.unused_map_keys)}")
        if self.dropped_rows:
            out.append(f"{self.dropped_rows} row(s) left out: the label map dropped all their labels")
        return out


class _Labeller:
    """Maps one label cell at a time and counts what it changed."""

    def __init__(self, names: list[str] | None, label_map: dict[str, str | None]) -> None:
        self.names = names
        self.map = {normalise_label(k): (normalise_label(v) if v is not None else None) for k, v in label_map.items()}
        self.report = LabelReport()
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
        label = normalise_label(raw)
        if label != raw:
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
    frame: pd.DataFrame, names: list[str] | None, label_map: dict[str, str | None]
) -> tuple[pd.DataFrame, LabelReport]:
    """Name ids, normalise and map the ``label`` column; rows the map leaves without a label are left out."""
    if names is not None and len({normalise_label(n) for n in names}) != len(names):
        raise PipelineError(f"data.label_names lists a label twice: {names}")
    labeller = _Labeller(names, label_map)
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
