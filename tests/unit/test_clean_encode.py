"""pipeline.data.clean (normalization, de-duplication, change table) and pipeline.data.encode.

encode: label ids and the prepared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import CleanConfig
from pipeline.data.clean import CHANGE_COLUMNS, clean, mask_mentions, mask_urls, normalize_text
from pipeline.data.encode import LABEL_MAP_FILE, LabelMap, PreparedData, encode, label_set
from pipeline.data.ingest import SPLITS
from pipeline.errors import PipelineError
from tests.unit.conftest import frame

# --- clean ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),  # NFKC folds compatibility forms
        ("ﬁne ①", "fine 1"),
        ("  a \t b\n\nc  ", "a b c"),  # whitespace collapsed and trimmed
        ("caf\u0065\u0301", "caf\u00e9"),  # combining accent composed
        ("already clean", "already clean"),
    ],
)
def test_normalize_text_nfkc_and_whitespace(raw: str, expected: str):
    assert normalize_text(raw, CleanConfig()) == expected


def test_normalize_text_forms_and_lowercase():
    assert normalize_text("ﬁ  X", CleanConfig(unicode_form="NFC")) == "ﬁ X"  # NFC keeps the ligature
    assert normalize_text("ﬁ  X", CleanConfig(unicode_form="none")) == "ﬁ X"
    assert normalize_text("Ｈello  WORLD", CleanConfig(lowercase=True)) == "hello world"


def test_clean_counts_normalized_rows_per_split():
    df = frame(
        [
            ("ｆｕｌｌ", "joy", "train"),
            ("fine", "joy", "train"),
            ("a  b", "fear", "train"),
            ("x\ty", "joy", "validation"),
            ("ok", "joy", "test"),
        ]
    )
    result = clean(df, CleanConfig())
    assert result.frame["text"].tolist() == ["full", "fine", "a b", "x y", "ok"]
    changes = result.changes
    assert changes.index.name == "split"
    assert changes.loc["train", "normalized"] == 2
    assert changes.loc["validation", "normalized"] == 1
    assert changes.loc["test", "normalized"] == 0
    assert changes["rows_in"].to_dict() == changes["rows_out"].to_dict() == {"test": 1, "train": 3, "validation": 1}


def test_clean_drops_duplicates_within_a_split_only():
    df = frame(
        [
            ("i am happy", "joy", "train"),
            ("i  am   happy", "joy", "train"),  # duplicate once normalized
            ("i am sad", "sadness", "validation"),
            ("i am sad", "sadness", "validation"),  # duplicate in validation
            ("i am sad", "sadness", "test"),  # same text in another held-out split: kept
            ("i am glad", "joy", "train"),
        ]
    )
    result = clean(df, CleanConfig())
    assert result.frame.to_dict("records") == [
        {"text": "i am happy", "label": "joy", "split": "train"},
        {"text": "i am sad", "label": "sadness", "split": "validation"},
        {"text": "i am sad", "label": "sadness", "split": "test"},
        {"text": "i am glad", "label": "joy", "split": "train"},
    ]
    assert result.changes.loc["train"].to_dict() == {
        "rows_in": 3,
        "repaired_html": 0,
        "repaired_mojibake": 0,
        "repaired_literal_newlines": 0,
        "repaired_crlf": 0,
        "normalized": 1,
        "urls_masked": 0,
        "mentions_masked": 0,
        "dropped_empty": 0,
        "dropped_conflicts": 0,
        "dropped_duplicates": 1,
        "dropped_leakage": 0,
        "rows_out": 2,
    }
    assert result.changes.loc["validation", "dropped_duplicates"] == 1
    assert result.changes.loc["test", "dropped_duplicates"] == 0


def test_changes_table_columns_and_split_order():
    result = clean(frame([("b", "joy", "test"), ("a", "joy", "train"), ("c", "joy", "validation")]), CleanConfig())
    assert (
        result.changes.columns.tolist()
        == list(CHANGE_COLUMNS)
        == [
            "rows_in",
            "repaired_html",
            "repaired_mojibake",
            "repaired_literal_newlines",
            "repaired_crlf",
            "normalized",
            "urls_masked",
            "mentions_masked",
            "dropped_empty",
            "dropped_conflicts",
            "dropped_duplicates",
            "dropped_leakage",
            "rows_out",
        ]
    )
    assert result.changes.index.tolist() == ["train", "validation", "test"]


@pytest.mark.parametrize(
    "rule, kept, dropped",
    [
        ("majority", [("same words", "joy"), ("same words", "joy"), ("tie words", None)], 3),
        ("drop", [], 5),
        (
            "keep",
            [
                ("same words", "joy"),
                ("same words", "joy"),
                ("same words", "anger"),
                ("tie words", "joy"),
                ("tie words", "fear"),
            ],
            0,
        ),
    ],
)
def test_conflicting_labels_policy(rule, kept, dropped):
    df = frame(
        [
            ("same words", "joy", "train"),
            ("same words", "joy", "train"),
            ("same  words", "anger", "train"),
            ("tie words", "joy", "train"),
            ("tie words", "fear", "train"),
            ("same words", "fear", "validation"),
        ]
    )
    result = clean(df, CleanConfig(conflicts=rule, drop_duplicates=False, drop_leakage=False))
    train = result.frame[result.frame["split"] == "train"]
    assert list(zip(train["text"], train["label"])) == [k for k in kept if k[1] is not None]
    assert result.changes.loc["train", "dropped_conflicts"] == dropped
    assert result.changes.loc["validation", "dropped_conflicts"] == 0  # one label per text within validation


def test_conflicts_then_duplicates_then_leakage_each_row_counted_once():
    df = frame(
        [
            ("x words", "joy", "train"),
            ("x words", "joy", "train"),
            ("x words", "anger", "train"),
            ("x words", "joy", "test"),
            ("x words", "joy", "test"),
            ("y words", "fear", "test"),
        ]
    )
    result = clean(df, CleanConfig())
    assert result.changes[["dropped_conflicts", "dropped_duplicates", "dropped_leakage", "rows_out"]].to_dict(
        "index"
    ) == {
        "train": {"dropped_conflicts": 1, "dropped_duplicates": 1, "dropped_leakage": 0, "rows_out": 1},
        "test": {"dropped_conflicts": 0, "dropped_duplicates": 1, "dropped_leakage": 1, "rows_out": 1},
    }
    assert result.frame.to_dict("records") == [
        {"text": "x words", "label": "joy", "split": "train"},
        {"text": "y words", "label": "fear", "split": "test"},
    ]


def test_leakage_dropped_from_held_out_splits_or_kept():
    df = frame(
        [
            ("seen in training", "joy", "train"),
            ("seen in training", "joy", "validation"),
            ("Seen  in training", "joy", "test"),
            ("fresh", "joy", "test"),
        ]
    )
    dropped = clean(df, CleanConfig())
    assert dropped.frame["split"].tolist() == ["train", "test", "test"]
    assert dropped.changes["dropped_leakage"].to_dict() == {"train": 0, "validation": 1, "test": 0}  # case differs
    lowered = clean(df, CleanConfig(lowercase=True))
    assert lowered.changes["dropped_leakage"].to_dict() == {"train": 0, "validation": 1, "test": 1}
    kept = clean(df, CleanConfig(drop_leakage=False))
    assert len(kept.frame) == 4 and kept.changes["dropped_leakage"].sum() == 0


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("look at https://example.com/a?b=1.", "look at <url>."),
        ("www.example.org is down", "<url> is down"),
        ("see (http://x.io/p) now", "see (<url>) now"),
        ("no link here: http is a protocol", "no link here: http is a protocol"),
    ],
)
def test_urls_masked(raw, expected):
    assert mask_urls(raw, CleanConfig()) == expected
    assert mask_urls(raw, CleanConfig(mask_urls=False)) == raw


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("@bob you made my day", "@user you made my day"),
        ("thanks @Ann_92 and @joe!", "thanks @user and @user!"),
        ("mail me at ann@example.com", "mail me at ann@example.com"),  # not a mention
        ("@user already masked", "@user already masked"),
    ],
)
def test_mentions_masked(raw, expected):
    assert mask_mentions(raw, CleanConfig()) == expected
    assert mask_mentions(raw, CleanConfig(mask_mentions=False)) == raw


def test_clean_counts_masking_per_split():
    df = frame(
        [
            ("@amy look http://a.b/c", "joy", "train"),
            ("@user hi", "joy", "train"),
            ("visit www.site.com", "fear", "validation"),
            ("plain", "joy", "test"),
        ]
    )
    result = clean(df, CleanConfig())
    assert result.frame["text"].tolist() == ["@user look <url>", "@user hi", "visit <url>", "plain"]
    assert result.changes[["urls_masked", "mentions_masked", "normalized"]].to_dict("index") == {
        "train": {"urls_masked": 1, "mentions_masked": 1, "normalized": 0},
        "validation": {"urls_masked": 1, "mentions_masked": 0, "normalized": 0},
        "test": {"urls_masked": 0, "mentions_masked": 0, "normalized": 0},
    }
    kept = clean(df, CleanConfig(mask_urls=False, mask_mentions=False, url_token="[URL]"))
    assert kept.frame["text"].tolist() == df["text"].tolist()


def test_masks_can_merge_texts_into_duplicates():
    df = frame([("hi @amy", "joy", "train"), ("hi @bob", "joy", "train")])
    assert clean(df, CleanConfig()).changes.loc["train", "dropped_duplicates"] == 1
    assert clean(df, CleanConfig(mask_mentions=False)).changes.loc["train", "dropped_duplicates"] == 0


def test_multi_label_rows_compare_label_sets():
    df = frame(
        [
            ("both", ["joy", "love"], "train"),
            ("both", ["love", "joy"], "train"),  # same set: duplicate
            ("both", ["joy"], "train"),  # minority set: conflict
            ("none", [], "train"),
            ("both", ["joy", "love"], "test"),
        ]
    )  # leaked
    before = df.copy(deep=True)
    result = clean(df, CleanConfig())
    assert result.frame.to_dict("records") == [
        {"text": "both", "label": ["joy", "love"], "split": "train"},
        {"text": "none", "label": [], "split": "train"},
    ]
    assert result.changes.loc["train", ["dropped_conflicts", "dropped_duplicates"]].tolist() == [1, 1]
    assert result.changes.loc["test", "dropped_leakage"] == 1
    pd.testing.assert_frame_equal(df, before)
    assert df.loc[1, "label"] == ["love", "joy"]  # the lists themselves are untouched


def test_null_text_counts_as_empty():
    result = clean(frame([(None, "joy", "train"), ("ok", "joy", "train")]), CleanConfig())
    assert result.changes.loc["train", ["dropped_empty", "normalized", "rows_out"]].tolist() == [1, 0, 1]


def test_policy_is_logged(caplog: pytest.LogCaptureFixture):
    import logging

    with caplog.at_level(logging.INFO, logger="pipeline.data.clean"):
        clean(frame([("a b", "joy", "train")]), CleanConfig(conflicts="drop"))
    assert (
        "cleaning policy: unicode NFKC, whitespace collapsed, lowercase off, urls masked as <url>, mentions "
        "masked as @user, empty rows dropped, conflicting labels drop, duplicates dropped, "
        "leakage dropped from validation/test"
    ) in caplog.text
    assert "dropped_leakage" in caplog.text


def test_clean_keeps_duplicates_when_disabled():
    df = frame([("same", "joy", "train"), ("same", "joy", "train")])
    result = clean(df, CleanConfig(drop_duplicates=False))
    assert len(result.frame) == 2
    assert result.changes.loc["train", "dropped_duplicates"] == 0


def test_clean_lowercase_option_and_its_duplicates():
    df = frame([("I Feel GREAT", "joy", "train"), ("i feel great", "joy", "train")])
    lowered = clean(df, CleanConfig(lowercase=True))
    assert lowered.frame["text"].tolist() == ["i feel great"]
    assert lowered.changes.loc["train", "dropped_duplicates"] == 1
    kept = clean(df, CleanConfig(lowercase=False))
    assert kept.frame["text"].tolist() == ["I Feel GREAT", "i feel great"]


def test_clean_drops_rows_left_empty():
    df = frame([("\u3000 \t", "joy", "train"), ("ok", "joy", "train")])  # ideographic space folds to nothing
    result = clean(df, CleanConfig())
    assert result.frame["text"].tolist() == ["ok"]
    assert result.changes.loc["train", ["dropped_empty", "rows_out"]].tolist() == [1, 1]


def test_clean_does_not_modify_its_input():
    df = frame([("ｆｕｌｌ  width", "joy", "train"), ("ｆｕｌｌ  width", "joy", "train"), ("B", "fear", "test")])
    df.index = [5, 9, 2]
    before = df.copy(deep=True)
    result = clean(df, CleanConfig(lowercase=True))
    pd.testing.assert_frame_equal(df, before)
    assert result.frame is not df
    assert result.frame.index.tolist() == [0, 1]  # fresh index on the output


# --- encode --------------------------------------------------------------------------------------------------


def sample_frame() -> pd.DataFrame:
    return frame(
        [
            ("a", "joy", "train"),
            ("b", "anger", "train"),
            ("c", "joy", "validation"),
            ("d", "love", "validation"),
            ("e", "anger", "test"),
        ]
    )


def test_declared_label_order_gives_ids():
    prepared = encode(sample_frame(), ["love", "joy", "anger"])
    assert prepared.label_map.label2id == {"love": 0, "joy": 1, "anger": 2}
    assert prepared.label_map.id2label == {0: "love", 1: "joy", 2: "anger"}
    assert prepared.label_ids("train") == [1, 2]
    assert prepared.label_ids("validation") == [1, 0]
    assert prepared.label_ids("test") == [2]
    assert prepared.texts("validation") == ["c", "d"]
    assert set(prepared.splits) == set(SPLITS)
    assert prepared.splits["train"].columns.tolist() == ["text", "label", "label_id"]


def test_label_set_declared_is_kept_in_order():
    assert label_set(sample_frame(), ["z", "a", "m"]) == ["z", "a", "m"]


def test_label_set_inferred_from_train_and_sorted():
    # 'love' only appears in validation, so it is not part of the inferred set
    assert label_set(sample_frame(), None) == ["anger", "joy"]
    assert label_set(sample_frame(), []) == ["anger", "joy"]


def test_label_set_without_columns_is_empty():
    assert label_set(pd.DataFrame({"text": ["a"]}), None) == []


def test_duplicate_declared_label_is_an_error():
    with pytest.raises(PipelineError, match="twice"):
        label_set(sample_frame(), ["joy", "anger", "joy"])


def test_label_map_save_load(tmp_path: Path):
    path = tmp_path / LABEL_MAP_FILE
    LabelMap(["b", "a"]).save(path)
    assert json.loads(path.read_text()) == {"labels": ["b", "a"], "multi_label": False}
    assert LabelMap.load(path) == LabelMap(["b", "a"])


def test_prepared_data_round_trip(tmp_path: Path):
    df = frame(
        [
            ("null", "joy", "train"),
            ("123", "anger", "train"),
            ('café 😀 "quoted"', "joy", "train"),
            ("true", "anger", "validation"),
            ("NaN", "joy", "test"),
            ("1e5", "anger", "test"),
        ]
    )
    prepared = encode(df, ["joy", "anger"])
    prepared.save(tmp_path / "prepared")
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [
        LABEL_MAP_FILE,
        "test.jsonl",
        "train.jsonl",
        "validation.jsonl",
    ]
    loaded = PreparedData.load(tmp_path / "prepared")
    assert loaded.label_map == prepared.label_map
    for split in SPLITS:
        pd.testing.assert_frame_equal(loaded.splits[split], prepared.splits[split])
    assert loaded.texts("train") == ["null", "123", 'café 😀 "quoted"']


def test_prepared_data_load_missing_is_a_pipeline_error(tmp_path: Path):
    with pytest.raises(PipelineError, match="emotion prepare"):
        PreparedData.load(tmp_path / "nothing")
