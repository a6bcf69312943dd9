"""`emotion inspect` on the public emotion datasets exactly as published (../shared/data), and on the synthetic
shapes the issue names: its proposal, pasted back as `--set` flags, must ingest, validate, clean and encode to the
right label set, multi-label flag and row counts; a proposal that fails its own check prints no command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from pipeline import stages
from pipeline.data import ingest
from pipeline.data.inspect import _rank_labels, format_inspection, inspect
from tests.conftest import SEMEVAL_LABELS, SHARED_DATA
from tests.unit.conftest import LABELS
from tests.unit.test_data_sources import config, pasted, put, rows

SHARED = SHARED_DATA


@dataclass
class Real:
    name: str
    source: str  # under ../shared/data
    labels: int
    multi_label: bool
    splits: dict[str, int]  # rows per split after ingest


REAL = [
    Real("emotion", "emotion", 6, False, {"train": 16000, "validation": 2000, "test": 2000}),
    Real("goemotions", "goemotions", 28, True, {"train": 43410, "validation": 5426, "test": 5427}),
    Real("semeval2018-ec", "semeval2018-ec", 12, True, {"train": 6838, "validation": 886, "test": 3259}),
    Real("crowdflower", "crowdflower/text_emotion.csv", 13, False, {"train": 32000, "validation": 4000, "test": 4000}),
]


def _proved(source: str, tmp_path: Path) -> tuple[list[str], str]:
    """Inspect ``source``; its proposal must have passed its check and print a command: the flags, the report."""
    result = inspect(source, config(tmp_path).data, tmp_path)
    report = format_inspection(result)
    assert result.check.startswith("ok: "), result.check
    assert "train on it:" in report
    return result.flags(), report


@pytest.mark.slow
@pytest.mark.requires(SHARED.is_dir(), "../shared/data")
@pytest.mark.parametrize("real", REAL, ids=[r.name for r in REAL])
def test_real_file_proposal_prepares_the_right_task(real: Real, tmp_path: Path) -> None:
    flags, _ = _proved(str(SHARED / real.source), tmp_path)
    cfg = config(tmp_path, *pasted(flags))
    snapshot, _ = stages.ingest_stage(cfg)
    assert snapshot.split_counts() == real.splits
    labels, report = stages.validate_stage(cfg, snapshot.frame)
    assert report.passed and len(labels) == real.labels
    prepared, _ = stages.prepare_stage(cfg, snapshot.frame, labels)
    assert prepared.label_map.multi_label is real.multi_label
    if real.name == "semeval2018-ec":
        assert labels == sorted([*SEMEVAL_LABELS, "neutral"])
        assert not any("\\n" in t for t in prepared.splits["train"]["text"])  # literal \n repaired


@pytest.mark.slow
@pytest.mark.requires(SHARED.is_dir(), "../shared/data")
def test_semeval_single_file_proposes_indicator_columns(tmp_path: Path) -> None:
    result = inspect(str(SHARED / "semeval2018-ec" / "2018-E-c-En-dev.txt"), config(tmp_path).data, tmp_path)
    assert result.settings["label_columns"] == "auto" and result.settings["text_column"] == "Tweet"
    assert result.label_columns == SEMEVAL_LABELS and result.multi_label
    assert "label_column" not in result.settings and result.check.startswith("ok: 886 rows"), result.check


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("2018-E-c-En-train.txt", "train"),
        ("2018-E-c-En-dev.txt", "validation"),
        ("2018-E-c-En-test-gold.txt", "test"),
        ("en_val.csv", "validation"),
        ("dev.tsv", "validation"),
        ("contest.csv", None),
        ("entrain.txt", None),
        ("reviews.csv", None),
    ],
)
def test_split_names_at_the_end_of_a_file_name(name: str, split: str | None) -> None:
    assert ingest._split_of(Path(name)) == split


def test_a_file_read_alone_is_split_by_its_suffix_only_among_others(tmp_path: Path) -> None:
    """`...-dev.txt` alone gets a seeded split; beside `...-train.txt` it is the validation split."""
    parts = {"data-train.csv": rows()[:60], "data-dev.csv": rows()[60:75], "data-test.csv": rows()[75:]}
    paths = [
        put(tmp_path / name, "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in data))
        for name, data in parts.items()
    ]
    alone = ingest.normalize(
        ingest.read_source(config(tmp_path, f"data.source={paths[1]}").data), config(tmp_path).data
    )
    assert set(alone["split"]) == {"train", "validation", "test"}
    listed = config(tmp_path, f"data.source=[{', '.join(map(str, paths))}]").data
    together = ingest.normalize(ingest.read_source(listed), listed)
    assert together["split"].value_counts().to_dict() == {"train": 60, "validation": 15, "test": len(rows()) - 75}


# --- synthetic shapes ------------------------------------------------------------------------------------------


def test_header_of_words_over_numeric_columns_with_a_trailing_delimiter(tmp_path: Path) -> None:
    lines = ["id,user_id,score,retweets,text,emotion,lang,"]
    lines += [f"{i},u{1000 + i},0.{i % 9},{i % 5},{text},{label},en," for i, (text, label) in enumerate(rows())]
    source = str(put(tmp_path / "in" / "export.csv", "\n".join(lines) + "\n"))
    result = inspect(source, config(tmp_path).data, tmp_path)
    assert result.header is True and "header" not in result.settings
    assert [c.name for c in result.columns] == ["id", "user_id", "score", "retweets", "text", "emotion", "lang"]
    assert any("empty last column" in n for n in result.notes), result.notes
    assert result.label_column == "emotion" and sorted(result.labels) == sorted(LABELS)
    cfg = config(tmp_path, *pasted(_proved(source, tmp_path)[0]))
    snapshot, _ = stages.ingest_stage(cfg)
    assert sorted(snapshot.frame["label"].unique()) == sorted(LABELS) and len(snapshot.frame) == len(rows())


def test_a_near_constant_column_is_never_the_label() -> None:
    """A header word read as a row over a constant (a missed header) is no label column; emotion names win."""
    data = rows()
    frame = pd.DataFrame(
        {
            "col1": ["text"] + [t for t, _ in data],
            "col2": ["lang"] + ["en"] * len(data),
            "col3": ["feeling"] + [label for _, label in data],
            "col4": ["platform"] + [("web", "ios", "android")[i % 3] for i in range(len(data))],
        }
    )
    ranked = list(_rank_labels(frame, {"col1"}))
    assert ranked == ["col3", "col4"]


def test_runner_up_is_shown_so_a_user_can_switch(tmp_path: Path) -> None:
    lines = ["text,platform,feeling"] + [f"{t},{('web', 'ios')[i % 2]},{lab}" for i, (t, lab) in enumerate(rows())]
    source = str(put(tmp_path / "in" / "posts.csv", "\n".join(lines) + "\n"))
    result = inspect(source, config(tmp_path).data, tmp_path)
    assert result.label_column == "feeling" and result.runner_up == "platform"
    assert "--set data.label_column=platform" in format_inspection(result)


def test_tweets_ending_in_decorated_labels_with_html_entities(tmp_path: Path) -> None:
    lines = [f"so &quot;{t}&quot; &amp; more\t:: {lab}" for t, lab in rows()]
    source = str(put(tmp_path / "in" / "tweets.txt", "\n".join(lines) + "\n"))
    result = inspect(source, config(tmp_path).data, tmp_path)
    assert result.delimiter == "\t" and result.settings["delimiter"] == "tab"  # not the ; of &quot;
    assert sorted(result.labels) == sorted(LABELS)  # ':: joy' shown as joy, as ingest strips the decoration
    cfg = config(tmp_path, *pasted(_proved(source, tmp_path)[0]))
    snapshot, _ = stages.ingest_stage(cfg)
    labels, _ = stages.validate_stage(cfg, snapshot.frame)
    assert sorted(labels) == sorted(LABELS)
    prepared, _ = stages.prepare_stage(cfg, snapshot.frame, labels)
    texts = pd.concat([s["text"] for s in prepared.splits.values()])
    assert not texts.str.contains("&quot;|&amp;").any() and texts.str.contains('"').all()


def test_valence_arousal_dominance_scores_get_proposed_bins(tmp_path: Path) -> None:
    n = 180
    lines = ["text,valence,arousal,dominance"] + [
        f"{t} number {i},{1 + 4 * (i % 60) / 59:.2f},{1 + (i % 7) * 0.5:.1f},{2.25 + (i % 3) * 0.5:.2f}"
        for i, (t, _) in enumerate((rows() * 3)[:n])
    ]
    source = str(put(tmp_path / "in" / "vad.csv", "\n".join(lines) + "\n"))
    result = inspect(source, config(tmp_path).data, tmp_path)
    assert result.label_column == "valence" and set(result.settings["label_bins"]) == {"low", "mid", "high"}
    assert any("numeric scores" in n for n in result.notes)
    cfg = config(tmp_path, *pasted(_proved(source, tmp_path)[0]))
    snapshot, _ = stages.ingest_stage(cfg)
    assert sorted(snapshot.frame["label"].unique()) == ["high", "low", "mid"] and len(snapshot.frame) == n


def test_a_failed_check_prints_no_command(tmp_path: Path) -> None:
    lines = ["text,label"] + [f"{t},joy" for t, _ in rows()]  # one label: no classifier can be trained
    source = str(put(tmp_path / "in" / "one.csv", "\n".join(lines) + "\n"))
    result = inspect(source, config(tmp_path).data, tmp_path)
    report = format_inspection(result)
    assert result.check.startswith("FAILED: "), result.check
    assert "train on it" not in report and "emotion run" not in report
    assert "no command proposed" in report
