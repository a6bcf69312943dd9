"""Label encoding: a label map (saved beside the prepared data) and integer ids per row."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.ingest import SPLITS

log = logging.getLogger(__name__)

LABEL_MAP_FILE = "label_map.json"


@dataclass(frozen=True)
class LabelMap:
    labels: list[str]  # index = class id

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"labels": self.labels, "multi_label": False}, indent=2))

    @classmethod
    def load(cls, path: Path) -> "LabelMap":
        return cls(list(json.loads(path.read_text())["labels"]))


def label_set(frame: pd.DataFrame, declared: list[str] | None) -> list[str]:
    """The declared labels, or those seen in the training split (sorted, so ids are reproducible)."""
    if declared:
        if len(set(declared)) != len(declared):
            raise PipelineError(f"data.labels lists a label twice: {declared}")
        return list(declared)
    if "label" not in frame or "split" not in frame:
        return []
    return sorted(frame.loc[frame["split"] == "train", "label"].dropna().astype(str).unique())


@dataclass
class PreparedData:
    """Encoded splits ready for training, with their label map."""

    splits: dict[str, pd.DataFrame]  # columns: text, label, label_id
    label_map: LabelMap

    def texts(self, split: str) -> list[str]:
        return self.splits[split]["text"].tolist()

    def label_ids(self, split: str) -> list[int]:
        return self.splits[split]["label_id"].tolist()

    def save(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in self.splits.items():
            frame.to_json(out_dir / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        self.label_map.save(out_dir / LABEL_MAP_FILE)

    @classmethod
    def load(cls, out_dir: Path) -> "PreparedData":
        if not (out_dir / LABEL_MAP_FILE).exists():
            raise PipelineError(f"no prepared data in {out_dir}: run `emotion prepare` first")
        splits = {s: pd.read_json(out_dir / f"{s}.jsonl", lines=True, dtype={"text": str, "label": str})
                  for s in SPLITS}
        return cls(splits, LabelMap.load(out_dir / LABEL_MAP_FILE))


def encode(frame: pd.DataFrame, labels: list[str]) -> PreparedData:
    """Attach class ids; the frame must already have passed validation (labels inside the set)."""
    label_map = LabelMap(labels)
    ids = label_map.label2id
    splits = {}
    for split in SPLITS:
        part = frame.loc[frame["split"] == split, ["text", "label"]].reset_index(drop=True)
        part["label_id"] = part["label"].map(ids).astype(int)
        splits[split] = part
    log.info("encoded %d labels: %s", len(labels), labels)
    return PreparedData(splits, label_map)
