"""Drift monitoring steps: descriptors, batch reading, the Evidently verdict on real data, merging, schedules.

The verdict tests score real texts with a tiny fine-tuned BERT (the session's `trained` model): held-out
emotion test texts against the emotion validation split must show no drift, GoEmotions Reddit comments must.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import load_config
from pipeline.errors import PipelineError
from pipeline.monitoring.batches import read_batch
from pipeline.monitoring.champion import Champion, champion_snapshot
from pipeline.monitoring.descriptors import (
    DESCRIPTORS,
    describe_text,
    embedding_columns,
    score_frame,
    score_texts,
    text_descriptors,
)
from pipeline.monitoring.detection import detect_drift
from pipeline.monitoring.merge import merge_labelled, retrain_overrides
from pipeline.monitoring.reference import Reference, reference_texts, sample_reference
from pipeline.monitoring.verdict import DriftVerdict, FeatureDrift, format_check
from tests.conftest import PARAMS, REPO, SHARED_DATA, require
from tests.unit.conftest import LABELS

EMOTION = SHARED_DATA / "emotion"
GOEMOTIONS = SHARED_DATA / "goemotions"
needs_shared = pytest.mark.requires(EMOTION.is_dir() and GOEMOTIONS.is_dir(), "../shared/data/emotion and goemotions")


def monitor_cfg(*extra: str):
    return load_config(PARAMS, ["monitor.reference_size=600", "monitor.embedding_plot=false", *extra], environ={})


def emotion_lines(name: str) -> list[tuple[str, str]]:
    rows = []
    for line in (EMOTION / name).read_text().splitlines():
        if line.strip():
            text, _, label = line.rpartition(";")
            rows.append((text, label))
    return rows


# ---------------------------------------- descriptors


def test_descriptors_measure_what_they_say() -> None:
    d = describe_text("ABcd, e1!")
    assert d["length"] == 9 and d["word_count"] == 2 and d["mean_word_length"] == 4.0  # 8 non-space chars
    assert d["non_letter_share"] == pytest.approx(3 / 8)  # , 1 !
    assert d["uppercase_share"] == pytest.approx(2 / 5)  # A B of 5 letters
    assert d["punctuation_share"] == pytest.approx(2 / 8) and d["digit_share"] == pytest.approx(1 / 8)
    assert d["non_ascii_share"] == 0 and d["links_mentions"] == 0

    plain = describe_text("i feel fine today")
    assert {k: v for k, v in plain.items() if k.endswith("share")} == dict.fromkeys(
        ["non_letter_share", "uppercase_share", "punctuation_share", "digit_share", "non_ascii_share"], 0.0
    )
    assert describe_text("café 😀")["non_ascii_share"] == pytest.approx(2 / 5)
    links = "see https://x.co/a and www.y.com, ping @bob or u/someone in r/emotions; mail a@b.c"
    assert describe_text(links)["links_mentions"] == 5

    frame = text_descriptors(["a b", "HELLO!!"])
    assert list(frame.columns) == list(DESCRIPTORS) and frame["uppercase_share"].tolist() == [0.0, 1.0]


# ---------------------------------------- scoring


@pytest.fixture(scope="module")
def multi_label_predictor(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny BERT with a fresh 3-label multi-label head, saved with the default text policy (URLs and
    mentions masked), as training saves a model folder."""
    import torch

    from pipeline.config import CleanConfig
    from pipeline.data.clean import save_text_policy
    from pipeline.model.modeling import load_classifier, load_tokenizer
    from pipeline.model.predict import Predictor

    out = tmp_path_factory.mktemp("multi-label") / "model"
    torch.manual_seed(0)
    load_classifier(str(tiny_model_dir), ["joy", "anger", "fear"], multi_label=True).save_pretrained(out)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(out)
    save_text_policy(out, CleanConfig())
    return Predictor(out, "cpu", "fp32", 64)


def test_drift_scores_a_multi_label_model_as_serving_predicts(multi_label_predictor) -> None:
    predictor = multi_label_predictor
    texts = ["so angry at https://example.com/a/b right now", "@someone i am scared of the dark", "what a day"]
    probs, embeddings = score_texts(predictor, texts)

    np.testing.assert_allclose(probs, predictor.predict_proba(texts), atol=1e-6)  # what serving answers
    assert not np.allclose(probs.sum(axis=1), 1.0)  # independent sigmoids, not a softmax over the labels
    # the stored policy applies before scoring: a raw URL or mention scores exactly as its masked form
    masked_probs, masked_embeddings = score_texts(
        predictor, ["so angry at <url> right now", "@user i am scared of the dark", "what a day"]
    )
    np.testing.assert_allclose(probs, masked_probs, atol=1e-6)
    np.testing.assert_allclose(embeddings, masked_embeddings, atol=1e-5)
    assert embeddings.shape == (3, predictor.model.config.hidden_size)

    frame = score_frame(predictor, texts)
    assert frame["confidence"].tolist() == pytest.approx(probs.max(axis=1).tolist())
    assert frame["predicted_label"].tolist() == [predictor.labels[i] for i in probs.argmax(axis=1)]
    with pytest.raises(PipelineError, match="text #2 is empty"):
        score_texts(predictor, ["fine", "   "])
    with pytest.raises(PipelineError, match="no texts to score"):
        score_texts(predictor, [])


# ---------------------------------------- batches


def test_read_batch_headerless_tsv_and_labels_outside_the_set(tmp_path: Path) -> None:
    cfg = monitor_cfg("monitor.min_batch_rows=5")
    tsv = tmp_path / "comments.tsv"
    tsv.write_text("".join(f'Comment number {i}, quite a long one "quoted"\t{i % 27},3\tid{i}\n' for i in range(12)))
    batch = read_batch(tsv, cfg.data, LABELS, cfg.monitor)
    assert len(batch.frame) == 12 and batch.frame["text"].str.startswith("Comment number").all()
    assert batch.frame["label"].isna().all() and len(batch.labelled) == 0

    txt = tmp_path / "mixed.txt"
    txt.write_text("i am so happy;joy\n\ni am bored;boredom\n   ;joy\ni am scared;fear\n" * 3)
    batch = read_batch(txt, cfg.data, LABELS, cfg.monitor)
    assert batch.dropped_blank == 3 and len(batch.frame) == 9
    assert batch.other_labels == ["boredom"]
    assert batch.frame["label"].tolist()[:3] == ["joy", None, "fear"] and len(batch.labelled) == 6


def test_read_batch_folder_sampling_and_too_few_rows(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    pd.DataFrame({"text": [f"first file text {i}" for i in range(30)]}).to_csv(folder / "monday.csv", index=False)
    pd.DataFrame({"text": [f"second file text {i}" for i in range(30)], "label": ["joy"] * 30}).to_json(
        folder / "tuesday.jsonl", orient="records", lines=True
    )
    (folder / "notes.md").write_text("not data")
    cfg = monitor_cfg("monitor.batch_max_rows=40", "monitor.min_batch_rows=10")

    batch = read_batch(folder, cfg.data, LABELS, cfg.monitor)
    assert batch.total_rows == 60 and len(batch.frame) == 40
    again = read_batch(folder, cfg.data, LABELS, cfg.monitor)
    assert batch.frame["text"].tolist() == again.frame["text"].tolist()  # seeded sample
    assert 0 < len(batch.labelled) < 40

    with pytest.raises(PipelineError, match="at least 100"):
        read_batch(folder, cfg.data, LABELS, monitor_cfg("monitor.min_batch_rows=100").monitor)
    with pytest.raises(PipelineError, match="does not exist"):
        read_batch(tmp_path / "missing", cfg.data, LABELS, cfg.monitor)


# ---------------------------------------- the verdict on real data


@pytest.fixture(scope="module")
def emotion_reference(trained):
    """600 emotion validation texts scored by the tiny fine-tuned model."""
    from pipeline.model.predict import Predictor

    require(EMOTION.is_dir(), "../shared/data/emotion")
    _, model_dir = trained
    predictor = Predictor(model_dir, "cpu", "fp32", 64)
    frame = pd.DataFrame(emotion_lines("val.txt"), columns=["text", "label"]).assign(split="validation")
    rows = sample_reference(frame, monitor_cfg().monitor)
    return Reference(score_frame(predictor, rows["text"].tolist()), "emotion val.txt", "test"), predictor


@needs_shared
@pytest.mark.slow
def test_in_distribution_batch_has_no_drift(emotion_reference, tmp_path: Path) -> None:
    reference, predictor = emotion_reference
    held_out = [text for text, _ in emotion_lines("test.txt")[:500]]
    verdict = detect_drift(reference, score_frame(predictor, held_out), monitor_cfg().monitor, tmp_path)

    assert not verdict.drift, verdict.summary()
    assert verdict.drifted_features == [] and verdict.drifted_share == 0
    assert verdict.feature("sentence_embedding").score < 0.6
    assert {f.name for f in verdict.features} == {
        *DESCRIPTORS,
        "confidence",
        "predicted_label",
        "sentence_embedding",
    }
    saved = json.loads((tmp_path / "verdict.json").read_text())
    assert saved["drift"] is False and saved["scores"]["length"] == pytest.approx(
        verdict.feature("length").score, abs=1e-4
    )
    assert (tmp_path / "drift_report.html").stat().st_size > 100_000


@needs_shared
@pytest.mark.slow
def test_goemotions_batch_drifts(emotion_reference, tmp_path: Path) -> None:
    from evidently.metrics.embeddings import ModelDriftMethod

    reference, predictor = emotion_reference
    cfg = monitor_cfg("monitor.embedding_plot=true", "monitor.batch_max_rows=500")
    batch = read_batch(GOEMOTIONS / "test.tsv", cfg.data, LABELS, cfg.monitor)
    current = score_frame(predictor, batch.frame["text"].tolist())
    verdict = detect_drift(reference, current, cfg.monitor, tmp_path, batch.describe())

    assert verdict.drift
    assert verdict.feature("sentence_embedding").drifted and verdict.feature("sentence_embedding").score > 0.8
    # with the plot on, the report's domain classifier gives the score: the same as running it alone
    emb = embedding_columns(reference.frame)
    alone, _, _ = ModelDriftMethod(threshold=cfg.monitor.embedding_threshold)(
        current[emb].copy(), reference.frame[emb].copy()
    )
    assert verdict.feature("sentence_embedding").score == pytest.approx(alone)
    assert {"length", "uppercase_share", "punctuation_share", "non_letter_share"} <= set(verdict.drifted_features)
    assert verdict.drifted_share >= 0.5 and verdict.batch["rows"] == 500 and verdict.batch["labelled_rows"] == 0
    html = (tmp_path / "drift_report.html").read_text()
    assert "Drift in embeddings" in html and "uppercase_share" in html
    assert (
        DriftVerdict.from_dict(json.loads((tmp_path / "verdict.json").read_text())).drifted_features
        == verdict.drifted_features
    )


@needs_shared
def test_a_style_shift_drifts_in_the_features_it_changes(emotion_reference, tmp_path: Path) -> None:
    """Shouting (upper case and '!!!') moves case and punctuation, not the number of words."""
    reference, predictor = emotion_reference
    shouted = [text.upper() + "!!!" for text, _ in emotion_lines("test.txt")[500:900]]
    verdict = detect_drift(reference, score_frame(predictor, shouted), monitor_cfg().monitor, tmp_path)

    assert verdict.feature("uppercase_share").drifted and verdict.feature("punctuation_share").drifted
    assert verdict.feature("non_letter_share").drifted
    assert not verdict.feature("word_count").drifted and not verdict.feature("digit_share").drifted
    assert not verdict.feature("links_mentions").drifted


# ---------------------------------------- the champion's data


def test_champion_data_from_a_csv_without_splits_gets_the_splits_training_gave_it(tmp_path: Path) -> None:
    """Rebuilt from data_source, an unsplit CSV is split as ingest split it: the hash matches, merging works."""
    from pipeline.data.ingest import ingest

    csv = tmp_path / "labelled.csv"
    pd.DataFrame(
        {"text": [f"text number {i} about {label}" for i, label in enumerate(LABELS * 20)], "label": LABELS * 20}
    ).to_csv(csv, index=False)
    cfg = monitor_cfg(f"project_dir={tmp_path}", f"data.source={csv}")
    trained_on = ingest(cfg.data, tmp_path / "data")  # the snapshot training hashed
    data_hash = "md5:" + hashlib.md5(trained_on.path.read_bytes()).hexdigest()
    champion = Champion("m", "1", "", tmp_path / "model", data_hash, str(csv), {}, LABELS)

    frame, provenance = champion_snapshot(cfg, champion)
    assert provenance == f"data_source {csv}"  # no "changed since snapshot": the same splits as training
    assert frame["split"].tolist() == trained_on.frame["split"].tolist()
    assert set(frame["split"]) == {"train", "validation", "test"}

    rows, reference_provenance = reference_texts(cfg, champion)
    assert reference_provenance == provenance and set(rows["split"]) == {"validation"}
    new = pd.DataFrame({"text": ["a brand new text", "text number 0 about sadness"], "label": ["joy", "sadness"]})
    merged = merge_labelled(frame, new, 0.2, tmp_path / "merged")
    assert sum(merged.added.values()) == 1 and merged.skipped_duplicates == 1 and merged.base_rows == 120


# ---------------------------------------- merging


def test_merge_labelled_adds_only_new_labelled_texts_with_stable_splits(tmp_path: Path) -> None:
    base = pd.DataFrame(
        {"text": ["old a", "old b", "old c"], "label": ["joy", "fear", "joy"], "split": ["train", "validation", "test"]}
    )
    new = pd.DataFrame(
        {
            "text": ["old a", *[f"new text {i}" for i in range(200)], "no label", "new text 1"],
            "label": ["joy", *["anger"] * 200, None, "anger"],
        }
    )
    result = merge_labelled(base, new, 0.2, tmp_path / "merged")

    assert result.skipped_duplicates == 1 and sum(result.added.values()) == 200 and result.base_rows == 3
    assert 120 < result.added["train"] < 200 and result.added["validation"] > 5 and result.added["test"] > 5
    splits = {s: pd.read_json(tmp_path / "merged" / f"{s}.jsonl", lines=True) for s in ("train", "validation", "test")}
    assert sum(len(f) for f in splits.values()) == 203
    texts = pd.concat(splits.values())["text"]
    assert texts.is_unique and "no label" not in set(texts)
    assert "old b" in set(splits["validation"]["text"])
    again = merge_labelled(base, new, 0.2, tmp_path / "merged-again")
    assert again.added == result.added  # the split of a text is a function of the text
    with pytest.raises(FileExistsError):
        merge_labelled(base, new, 0.2, tmp_path / "merged")  # never overwrites an earlier merge
    assert retrain_overrides(result.folder, LABELS)["source"] == str(tmp_path / "merged")


# ---------------------------------------- verdict, config, schedules


def _verdict(drifted: bool) -> DriftVerdict:
    features = [
        FeatureDrift("length", "descriptor", "wasserstein", 0.5 if drifted else 0.01, 0.2, drifted),
        FeatureDrift("sentence_embedding", "embedding", "domain classifier ROC AUC", 0.51, 0.6, False),
    ]
    return DriftVerdict(
        drifted,
        ["because"],
        features,
        1.0 if drifted else 0.0,
        0.3,
        {"source": "b.txt", "rows": 40},
        {"rows": 600, "provenance": "test"},
        {"name": "m", "version": "3"},
    )


def test_verdict_round_trip_and_printed_summary() -> None:
    result = _verdict(True).to_dict() | {
        "mlflow_run_id": "abc",
        "retraining": {
            "triggered": True,
            "mode": "subflow",
            "version": "4",
            "gate_passed": False,
            "aliases": ["challenger"],
            "data_source": "merged/x",
            "merged": {"added": {"train": 3}, "folder": "merged/x"},
        },
    }
    assert result["drift"] is True and result["drifted_features"] == ["length"] and result["scores"]["length"] == 0.5
    assert DriftVerdict.from_dict(json.loads(json.dumps(result))).to_dict() == _verdict(True).to_dict()
    text = format_check(result)
    assert "drift     DETECTED" in text and "*length=0.500" in text and " sentence_embedding=0.510" in text
    assert "version 4 on merged/x: gate FAILED" in text and "merged 3 new labelled rows" in text
    assert "retrain   no: no drift" in format_check(_verdict(False).to_dict() | {"retraining": {"reason": "no drift"}})
    assert "| length | descriptor | wasserstein | 0.5000 | 0.2 | **drift** |" in _verdict(True).to_markdown()


def test_monitor_config_defaults_and_yaml_off() -> None:
    cfg = load_config(PARAMS, [], environ={})
    assert cfg.monitor.trigger == "on_drift" and cfg.monitor.reference_splits == ["validation"]
    assert load_config(PARAMS, ["monitor.trigger=off"], environ={}).monitor.trigger == "off"  # not YAML's false
    with pytest.raises(PipelineError, match="monitor.trigger"):
        load_config(PARAMS, ["monitor.trigger=sometimes"], environ={})


def test_prefect_yaml_declares_the_deployments_that_serve_builds() -> None:
    from prefect.flows import Flow

    from flows.deployments import build_deployments

    cfg = load_config(PARAMS, [], environ={})
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    declared = {d["name"]: d for d in spec["deployments"]}
    served = {d.name: d for d in build_deployments(PARAMS, ["train.epochs=1", "monitor.batch_source=incoming"])}
    assert set(declared) == set(served) == {"weekly", "daily", "batch"}
    assert declared["weekly"]["schedules"][0]["cron"] == cfg.monitor.training_cron
    assert declared["daily"]["schedules"][0]["cron"] == cfg.monitor.drift_cron
    for name, deployment in declared.items():
        path, func = deployment["entrypoint"].split(":")
        module = __import__(path.removesuffix(".py").replace("/", "."), fromlist=[func])
        flow = getattr(module, func)
        assert isinstance(flow, Flow) and flow.name == served[name].flow_name
        assert set(deployment["parameters"]) <= set(flow.parameters.properties)
        assert [s.schedule.cron for s in served[name].schedules or []] == [s["cron"] for s in deployment["schedules"]]
        assert served[name].parameters["overrides"] == ["train.epochs=1", "monitor.batch_source=incoming"]
    # trigger off: no scheduled retraining; no batch_source: the drift check runs on demand only
    assert [
        len(d.schedules or []) for d in build_deployments(PARAMS, ["monitor.trigger=off", "monitor.batch_source=in"])
    ] == [0, 1, 0]
    assert [len(d.schedules or []) for d in build_deployments(PARAMS, [])] == [1, 0, 0]
    # batch scoring: on demand unless score.cron and score.batch_source are both set
    scored = build_deployments(PARAMS, ["score.cron=0 2 * * *", "score.batch_source=in/*.csv"])[2]
    assert [s.schedule.cron for s in scored.schedules] == ["0 2 * * *"]
    assert not build_deployments(PARAMS, ["score.cron=0 2 * * *"])[2].schedules


def test_retries_skip_user_errors() -> None:
    from prefect.states import Failed

    from flows.monitoring import transient_only

    assert transient_only(None, None, Failed(data=ConnectionError("tracking server down")))
    assert not transient_only(None, None, Failed(data=PipelineError("no champion")))


def test_cli_has_monitor_and_schedule() -> None:
    from emotion_cli import build_parser

    args = build_parser().parse_args(["monitor", "batch.csv", "--json", "--set", "monitor.trigger=off"])
    assert args.path == "batch.csv" and args.json and args.set == ["monitor.trigger=off"]
    assert build_parser().parse_args(["schedule"]).port == 4200


def test_validation_cache_key_follows_the_snapshot_labels_and_checks() -> None:
    from flows.caching import validation_cache_key

    cfg = load_config(PARAMS, [], environ={})
    key = validation_cache_key(None, {"cfg": cfg, "frame": None, "data_hash": "abc.dir"})
    assert key and key == validation_cache_key(None, {"cfg": cfg, "frame": "ignored", "data_hash": "abc.dir"})
    assert key != validation_cache_key(None, {"cfg": cfg, "data_hash": "abd.dir"})
    other_labels = load_config(PARAMS, ["data.labels=[joy, sadness]"], environ={})
    assert key != validation_cache_key(None, {"cfg": other_labels, "data_hash": "abc.dir"})
    assert validation_cache_key(None, {"cfg": cfg, "data_hash": None}) is None
