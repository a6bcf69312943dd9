"""Text repair in cleaning (pipeline/data/clean.py): HTML entities, mojibake, literal and CRLF line breaks.

Checked on the rows of the real files in ../shared/data as published, and at prediction from the model folder.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import CleanConfig
from pipeline.data.clean import (
    PREPROCESSING_FILE,
    REPAIR_COLUMNS,
    clean,
    load_text_policy,
    prepare_text,
    repair_text,
    save_text_policy,
)
from tests.conftest import SHARED_DATA
from tests.unit.conftest import frame

CROWDFLOWER = SHARED_DATA / "crowdflower" / "text_emotion.csv"
SEMEVAL_TRAIN = SHARED_DATA / "semeval2018-ec" / "2018-E-c-En-train.txt"
OFF = CleanConfig(repair_html=False, repair_mojibake=False, repair_line_breaks=False)


def crowdflower_rows(needle: str, limit: int) -> list[str]:
    """The first texts of CrowdFlower's file (read as published) that hold ``needle``."""
    content = pd.read_csv(CROWDFLOWER, dtype=str)["content"]
    return content[content.str.contains(needle, regex=False)].head(limit).tolist()


def semeval_tweets_with_literal_newline(limit: int) -> list[str]:
    with SEMEVAL_TRAIN.open(encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(rows)
        return [row[1] for row in rows if "\\n" in row[1]][:limit]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("I &quot;love&quot; it &amp; you &lt;3", 'I "love" it & you <3'),
        ("it&#39;s fine", "it's fine"),
        ("escaped twice &amp;lt;3 &amp;quot;", 'escaped twice <3 "'),
        ("AT&T and R&D stay", "AT&T and R&D stay"),  # no entity: nothing to unescape
        ("donâ€™t stop", "don’t stop"),  # UTF-8 read as cp1252
        ("carï¿½too lazy", "car\ufffdtoo lazy"),  # the lost character becomes U+FFFD, the garbage goes
        ("naïve café", "naïve café"),  # correct accents are left alone
        ("line one\\nline two", "line one line two"),  # the two characters backslash-n
        ("a\\r\\nb\\rc", "a b c"),
        ("crlf\r\nleft\rover", "crlf left over"),
        ("path C:\\\\temp stays", "path C:\\\\temp stays"),
    ],
)
def test_repair_then_normalize(raw: str, expected: str) -> None:
    assert prepare_text(raw, CleanConfig(mask_urls=False, mask_mentions=False)) == expected


def test_each_rule_can_be_turned_off() -> None:
    raw = "&quot;donâ€™t\\n"
    assert repair_text(raw, OFF) == raw
    assert repair_text(raw, OFF.model_copy(update={"repair_html": True})) == '"donâ€™t\\n'
    assert repair_text(raw, OFF.model_copy(update={"repair_mojibake": True})) == "&quot;don’t\\n"
    assert repair_text(raw, OFF.model_copy(update={"repair_line_breaks": True})) == "&quot;donâ€™t\n"


def test_repair_is_on_by_default() -> None:
    cfg = CleanConfig()
    assert (cfg.repair_html, cfg.repair_mojibake, cfg.repair_line_breaks) == (True, True, True)


def test_crowdflower_entities_and_mojibake_repaired_and_counted() -> None:
    """CrowdFlower's real rows: ``&quot;`` and ``ï¿½`` reach the model repaired, each rule counted per split."""
    quoted = crowdflower_rows("&quot;", 5)
    broken = crowdflower_rows("ï¿½", 5)
    assert len(quoted) == len(broken) == 5
    rows = [(t, "worry", "train") for t in quoted] + [(t, "worry", "test") for t in broken]
    result = clean(frame(rows), CleanConfig(drop_duplicates=False, conflicts="keep", drop_leakage=False))
    texts = result.frame["text"].tolist()
    assert not any("&quot;" in t for t in texts) and sum('"' in t for t in texts[:5]) == 5
    assert not any("ï¿½" in t for t in texts) and all("\ufffd" in t for t in texts[5:])
    changes = result.changes
    assert changes.loc["train", "repaired_html"] == 5 and changes.loc["train", "repaired_mojibake"] == 0
    assert changes.loc["test", "repaired_mojibake"] == 5 and changes.loc["test", "repaired_html"] == 0
    assert changes["rows_out"].sum() == 10


@pytest.mark.slow
def test_crowdflower_whole_file_through_ingest_and_clean() -> None:
    """All 40,000 rows read by ingest as published: the 260 rows with ``ï¿½`` (and two other mojibake rows) and the
    ~2.3k rows with entities (2222 with &quot;, &amp; or &lt;; more with &gt;) are repaired and counted."""
    from pipeline.config import DataConfig
    from pipeline.data import ingest

    cfg = DataConfig(source=str(CROWDFLOWER), text_column="content", label_column="sentiment", labels=None)
    snapshot = ingest.normalize(ingest.read_source(cfg), cfg)
    assert len(snapshot) == 40000
    result = clean(snapshot, CleanConfig())
    repaired = result.changes[list(REPAIR_COLUMNS)].sum()
    assert 260 <= repaired["repaired_mojibake"] <= 270
    assert repaired["repaired_html"] == snapshot["text"].str.contains(r"&#?\w+;").sum() >= 2222
    assert not result.frame["text"].str.contains("ï¿½|&quot;|&amp;", regex=True).any()


def test_semeval_literal_newlines_become_spaces() -> None:
    tweets = semeval_tweets_with_literal_newline(4)
    assert len(tweets) == 4
    result = clean(frame([(t, "joy", "train") for t in tweets]), CleanConfig(mask_mentions=False, mask_urls=False))
    assert not any("\\n" in t for t in result.frame["text"])
    assert result.changes.loc["train", "repaired_literal_newlines"] == 4
    assert result.frame["text"][0] == " ".join(tweets[0].replace("\\n", " ").split())


def test_changes_table_and_console_line_report_repairs(caplog: pytest.LogCaptureFixture) -> None:
    rows = [("a &amp; b", "joy", "train"), ("c\\nd", "joy", "train"), ("plain", "joy", "validation")]
    with caplog.at_level(logging.INFO):
        changes = clean(frame(rows), CleanConfig()).changes
    assert list(changes.columns[1 : 1 + len(REPAIR_COLUMNS)]) == list(REPAIR_COLUMNS)
    assert changes.loc["train", list(REPAIR_COLUMNS)].tolist() == [1, 0, 1, 0]
    assert changes.loc["validation", list(REPAIR_COLUMNS)].tolist() == [0, 0, 0, 0]
    assert "text repair  html 1, mojibake 0, literal newlines 1, crlf 0 rows" in caplog.text
    assert "text repair: html entities, mojibake, line breaks" in caplog.text  # the policy line


def test_repair_off_counts_nothing_and_keeps_entities() -> None:
    result = clean(frame([("a &amp; b", "joy", "train")]), OFF)
    assert result.frame["text"][0] == "a &amp; b"
    assert result.changes.loc["train", list(REPAIR_COLUMNS)].sum() == 0


def test_repair_can_turn_rows_into_duplicates() -> None:
    rows = [("say &quot;hi&quot;", "joy", "train"), ('say "hi"', "joy", "train")]
    changes = clean(frame(rows), CleanConfig()).changes
    assert changes.loc["train", ["repaired_html", "dropped_duplicates", "rows_out"]].tolist() == [1, 1, 1]


def test_policy_saved_with_the_model_round_trips(tmp_path: Path) -> None:
    save_text_policy(tmp_path, CleanConfig(repair_mojibake=False))
    loaded = load_text_policy(tmp_path)
    assert loaded is not None and (loaded.repair_html, loaded.repair_mojibake) == (True, False)


def test_policy_saved_before_repair_existed_keeps_repair_off(tmp_path: Path) -> None:
    """A model folder from before this feature was trained on unrepaired text: it is served the same way."""
    old = CleanConfig().model_dump(exclude={"repair_html", "repair_mojibake", "repair_line_breaks"})
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(old))
    loaded = load_text_policy(tmp_path)
    assert loaded is not None and not (loaded.repair_html or loaded.repair_mojibake or loaded.repair_line_breaks)


def test_prediction_applies_the_saved_repair(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Training and serving see the same text: the Predictor repairs with the policy stored in the model folder."""
    from pipeline.model.modeling import load_classifier
    from pipeline.model.predict import Predictor

    folder = tmp_path / "model"
    load_classifier(str(tiny_model_dir), ["joy", "fear"]).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, folder / name)
    raw = crowdflower_rows("&quot;", 1) + crowdflower_rows("ï¿½", 1) + semeval_tweets_with_literal_newline(1)
    cfg = CleanConfig()
    save_text_policy(folder, cfg)
    predictor = Predictor(folder)
    prepared = predictor.prepare(raw)
    assert prepared == [prepare_text(t, cfg) for t in raw]  # what cleaning gave the model at training
    assert prepared == clean(frame([(t, "joy", "train") for t in raw]), cfg).frame["text"].tolist()
    assert "&quot;" not in prepared[0] and "ï¿½" not in prepared[1] and "\\n" not in prepared[2]
    assert len(predictor.predict(raw)) == 3


def test_repair_of_repaired_text_changes_nothing() -> None:
    """Evaluation and drift score cleaned texts through the model folder's policy again: that must be a no-op."""
    cfg = CleanConfig()
    raw = crowdflower_rows("&quot;", 20) + crowdflower_rows("ï¿½", 20) + semeval_tweets_with_literal_newline(20)
    raw.append("twice &amp;amp;lt;3 \\\\n end")
    once = [prepare_text(t, cfg) for t in raw]
    assert [prepare_text(t, cfg) for t in once] == once
