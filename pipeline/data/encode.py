"""Label encoding: a label map (saved beside the prepared data) and class ids or multi-hot rows."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.data.ingest import SPLITS
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LABEL_MAP_FILE = "label_map.json"


@dataclass(frozen=True)
class LabelMap:
    labels: list[str]  # index = class id
    multi_label: bool = False

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"labels": self.labels, "multi_label": self.multi_label}, indent=2))

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        saved = json.loads(path.read_text())
        return cls(list(saved["labels"]), bool(saved.get("multi_label", False)))


def is_multi_label(frame: pd.DataFrame) -> bool:
    """Multi-label data carries lists in its label column."""
    return "label" in frame and bool(frame["label"].map(lambda v: isinstance(v, list)).any())


def label_set(frame: pd.DataFrame, declared: list[str] | None) -> list[str]:
    """The declared labels, or those seen in the training split (sorted, so ids are reproducible)."""
    if declared:
        if len(set(declared)) != len(declared):
            raise PipelineError(f"data.labels lists a label twice: {declared}")
        return list(declared)
    if "label" not in frame or "split" not in frame:
        return []
    train = frame.loc[frame["split"] == "train", "label"].dropna()
    names = train.explode().dropna() if is_multi_label(frame) else train
    return sorted(names.astype(str).unique())


@dataclass
class PreparedData:
    """Encoded splits ready for training, with their label map."""

    splits: dict[str, pd.DataFrame]  # columns: text, label, label_id (single-label) or label_ids (multi-label)
    label_map: LabelMap

    def texts(self, split: str) -> list[str]:
        return self.splits[split]["text"].tolist()

    def label_ids(self, split: str) -> list[int]:
        """Class ids (single-label) or, for multi-label rows, the first label's id (for stratified views)."""
        frame = self.splits[split]
        return (
            frame["label_id"].tolist() if "label_id" in frame else [ids[0] if ids else -1 for ids in frame["label_ids"]]
        )

    def targets(self, split: str) -> np.ndarray:
        """Training targets: class ids, or a multi-hot matrix (rows x labels) for multi-label data."""
        if not self.label_map.multi_label:
            return np.array(self.label_ids(split), dtype=np.int64)
        hot = np.zeros((len(self.splits[split]), len(self.label_map.labels)), dtype=np.float32)
        for row, ids in enumerate(self.splits[split]["label_ids"]):
            hot[row, list(ids)] = 1.0
        return hot

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in self.splits.items():
            frame.to_json(out_dir / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        self.label_map.save(out_dir / LABEL_MAP_FILE)

    @classmethod
    def load(cls, out_dir: Path) -> PreparedData:
        if not (out_dir / LABEL_MAP_FILE).exists():
            raise PipelineError(f"no prepared data in {out_dir}: run `emotion prepare` first")
        splits = {s: pd.read_json(out_dir / f"{s}.jsonl", lines=True, dtype={"text": str}) for s in SPLITS}
        return cls(splits, LabelMap.load(out_dir / LABEL_MAP_FILE))


def encode(frame: pd.DataFrame, labels: list[str]) -> PreparedData:
    """Attach class ids (or id lists); the frame must already have passed validation (labels inside the set)."""
    multi = is_multi_label(frame)
    label_map = LabelMap(labels, multi)
    ids = label_map.label2id
    splits = {}
    for split in SPLITS:
        part = frame.loc[frame["split"] == split, ["text", "label"]].reset_index(drop=True)
        if multi:
            part["label_ids"] = part["label"].map(lambda names: sorted(ids[n] for n in names))
        else:
            part["label_id"] = part["label"].map(ids).astype(int)
        splits[split] = part
    log.info("encoded %d labels (%s): %s", len(labels), "multi-label" if multi else "single-label", labels)
    return PreparedData(splits, label_map)
