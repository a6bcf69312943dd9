"""Unit-test helpers: small synthetic frames, the prepared sample data, a 3-step training run per session (for the
training tests) and the learned cue-word model (`model_dir`) for every test of answers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest

from tests.conftest import PARAMS
from tests.synthetic_text import ORDERED

if TYPE_CHECKING:
    from pipeline.serving.backends import ParityData

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
CUE_TEXTS = [text for text, _ in ORDERED]  # one per emotion, of very different lengths: order mistakes show
CUE_LABELS = [label for _, label in ORDERED]  # what the learned model answers for them
# Largest probability a fast backend (bf16, int8, ONNX int8, static int8) of the learned model may move from fp32:
# they move 0.016 at most; another model moves 0.27 or more (a differently seeded learned one), 0.7 (the untrained).
FAST_BOUND = 0.03


def frame(rows: list[tuple[str | None, str | None, str | None]]) -> pd.DataFrame:
    """A snapshot-shaped frame from (text, label, split) tuples."""
    return pd.DataFrame(rows, columns=["text", "label", "split"])


def good_rows() -> list[tuple[str, str, str]]:
    """A minimal frame that passes every data check (all three splits, declared labels, no blanks)."""
    return [
        ("i feel happy today", "joy", "train"),
        ("i am so sad", "sadness", "train"),
        ("i love my dog", "love", "train"),
        ("what a lovely morning", "joy", "validation"),
        ("this makes me cry", "sadness", "validation"),
        ("i am scared of the dark", "fear", "test"),
        ("that was unexpected", "surprise", "test"),
    ]


@pytest.fixture(scope="session")
def sample_prepared():
    """The shipped sample data, read, cleaned and encoded with the declared labels of params.yaml."""
    from pipeline.config import load_config
    from pipeline.data import clean, encode, ingest

    cfg = load_config(PARAMS, [], environ={})
    raw = ingest.normalize(ingest.read_source(cfg.data.model_copy(update={"source": "sample"})))
    cleaned = clean.clean(raw, cfg.clean)
    return encode.encode(cleaned.frame, cfg.data.labels)


@pytest.fixture(scope="session")
def tiny_train_cfgs(tiny_model_dir: Path):
    """(ModelConfig, TrainConfig) for a 3-step fine-tune of the tiny BERT on CPU."""
    from pipeline.config import load_config

    cfg = load_config(
        PARAMS,
        [
            f"model.name={tiny_model_dir}",
            "model.max_length=64",
            "train.max_steps=3",
            "train.batch_size=16",
            "train.device=cpu",
            "train.seed=7",
        ],
        environ={},
    )
    return cfg.model, cfg.train


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, sample_prepared, tiny_train_cfgs):
    """One 3-step training run shared by the train / predict / CLI tests: (TrainResult, model folder)."""
    from pipeline.training.train import train

    model_cfg, train_cfg = tiny_train_cfgs
    out = tmp_path_factory.mktemp("trained") / "model"
    result = train(sample_prepared, model_cfg, train_cfg, out)
    return result, out


@pytest.fixture(scope="module")
def model_dir(learned_model_dir: Path) -> Path:
    """The session's tiny model that learned the cue words (tests/conftest.py): answers differ by text."""
    return learned_model_dir


@pytest.fixture(scope="module")
def fp32(model_dir: Path):
    """The fp32 backend over that model: the reference the fast backends are compared with."""
    from pipeline.serving.backends import FP32, FastClassifier

    return FastClassifier.load(model_dir, FP32, max_length=64, batch_size=3)


@pytest.fixture(scope="module")
def cue_parity() -> ParityData:
    """Parity data in the learned model's own domain: held-out cue texts, on which it is right (a wrong model not)."""
    from pipeline.serving.backends import ParityData
    from tests.synthetic_text import cue_rows

    rows, calibration = cue_rows(120, seed=17), cue_rows(30, seed=18)
    return ParityData([t for t, _ in rows], [label for _, label in rows], "cue texts", [t for t, _ in calibration])


@pytest.fixture(scope="module")
def sample_parity():
    """Parity data from the shipped sample's test split."""
    from pipeline.config import load_config
    from pipeline.serving.backends import load_parity_data

    cfg = load_config(PARAMS, ["data.source=sample"], environ={})
    return load_parity_data(cfg.data, Path("."))
