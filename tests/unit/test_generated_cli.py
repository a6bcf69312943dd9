"""Generated inputs for the CLI (issue 27): any ``--set`` text gives a valid config or a PipelineError, and any small
CSV or JSONL file is scored exactly as its rows one by one, or refused with a clear error; the input never changes.

Seeded (``derandomize``) and bounded, so the suites run the same examples in CI every time. ``EXAMPLES`` counts the
examples each suite ran, for docs/reliability.md."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import emotion_cli as cli
from pipeline.config import Config, DataConfig, load_config
from pipeline.data import ingest
from pipeline.errors import PipelineError
from pipeline.scoring import shards
from pipeline.scoring.job import score_files
from tests.conftest import PARAMS

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
EXAMPLES: Counter[str] = Counter()
FAST = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def report_examples():
    """After the module: how many examples each suite ran (shown with ``pytest -s``), for the reliability table."""
    yield
    print("\ngenerated examples:", dict(EXAMPLES))


def _leaf_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys += _leaf_keys(value, dotted + ".") if isinstance(value, dict) and value else [dotted]
    return keys


CONFIG_KEYS = sorted(_leaf_keys(Config().model_dump()))
# text a user may type: YAML scalars and collections, paths, punctuation, control and unusual characters
TRICKY = st.sampled_from(
    ["", " ", "null", "~", "[]", "{}", "[1, 2]", "{a: 1}", "true", "off", "1e400", "-0", "0x1F", ".nan", "'", '"',
     "&a", "*a", "!!python/object:os.system", "- x", "a: b: c", "/", "..", ".git", "\x00", "\u200b", "\ud800", "é",
     "💥", "sqlite:///", "s3://b/p", "hf:", "a" * 300, "1" * 40]
)  # fmt: skip
VALUES = st.one_of(TRICKY, st.text(max_size=40), st.lists(TRICKY, max_size=3).map("".join))
KEYS = st.one_of(
    st.sampled_from(CONFIG_KEYS),
    st.sampled_from(CONFIG_KEYS).map(lambda key: key + ".extra"),
    st.text(alphabet=st.sampled_from("ab._= -\x00é"), max_size=12),
)


@settings(FAST, max_examples=120)
@given(items=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3), joiner=st.sampled_from(["=", "=", ""]))
def test_any_set_text_gives_a_config_or_a_pipeline_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, items: list[tuple[str, str]], joiner: str
):
    """Never another exception (ValueError, OSError, TypeError from deep inside), and nothing is written."""
    EXAMPLES["--set parsing"] += 1
    monkeypatch.chdir(tmp_path)
    overrides = [f"project_dir={tmp_path}", *(f"{key}{joiner}{value}" for key, value in items)]
    try:
        cfg = load_config(PARAMS, overrides, environ={})
    except PipelineError as exc:
        assert str(exc).strip()
    else:
        assert isinstance(cfg, Config)
    assert list(tmp_path.iterdir()) == []


# --- score ---------------------------------------------------------------------------------------------------------

TEXT_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])  # a file holds what UTF-8 can encode
CELLS = st.one_of(
    st.sampled_from(["", " ", '"', "'", ",", ";", "\t", "|", "\n", "\r\n", '""', "a,b", 'say "hi"', "null", "NaN"]),
    st.text(alphabet=TEXT_CHARS, max_size=30),
)
WORDY = st.text(alphabet=TEXT_CHARS, min_size=1, max_size=30).filter(str.strip)  # mostly texts that can be scored
ROWS = st.lists(st.tuples(st.one_of(WORDY, WORDY, CELLS), CELLS), min_size=1, max_size=8)


def _write(path: Path, rows: list[tuple[str, str]]) -> bytes:
    frame = pd.DataFrame(rows, columns=["text", "note"])
    buffer = io.StringIO()
    if path.suffix == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_json(buffer, orient="records", lines=True, force_ascii=False)
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    return path.read_bytes()


def _read_output(path: Path) -> pd.DataFrame:
    if path.suffix == ".pq":
        return pd.read_parquet(path)
    if path.suffix == ".csv":  # read back as emotion reads its inputs: a CSV output must be one (issue 27)
        return ingest.read_table(path, DataConfig(delimiter=","))
    return pd.read_json(path, lines=True, dtype=False)


def _as_written(out: Path, texts: list[str]) -> list[str]:
    """The texts as the output holds them: a CSV cannot carry NUL, so the writer removes it (the model never saw it)."""
    return [text.replace("\x00", "") for text in texts] if out.suffix == ".csv" else texts


def _records(inp: Path, rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows a reader yields: a CSV record whose every cell is blank is left out (and counted), as ingest does."""
    if inp.suffix != ".csv":
        return rows
    return [row for row in rows if any(cell.strip() for cell in row)]


def _one_by_one(predictor: Any, texts: list[str]) -> np.ndarray:
    return np.vstack([predictor.predict_proba([text]) for text in texts])


def _check_scored(inp: Path, out: Path, rows: list[tuple[str, str]], predictor: Any, before: bytes) -> None:
    """The property: the output holds every row in order, scored as on its own; or a PipelineError said why."""
    assert inp.read_bytes() == before  # the input is never changed, whatever happened
    if not out.exists():
        return  # refused (the caller saw the PipelineError); no half-written output either
    frame = _read_output(out)
    texts = [text for text, note in _records(inp, rows)]
    assert frame["text"].astype(str).tolist() == _as_written(out, texts)
    expected = _one_by_one(predictor, texts)
    np.testing.assert_allclose(frame[[f"p_{label}" for label in LABELS]].to_numpy(float), expected, atol=1e-4)
    assert frame["label"].tolist() == [LABELS[i] for i in expected.argmax(axis=1)]
    assert not shards.parts_dir(out).exists()


@pytest.fixture(scope="module")
def predictor(learned_model_dir: Path) -> Any:
    from pipeline.model.predict import Predictor

    return Predictor(learned_model_dir, precision="fp32", max_length=128)


@pytest.mark.slow
@settings(FAST, max_examples=30)
@given(rows=ROWS, suffix=st.sampled_from([".csv", ".jsonl"]), target=st.sampled_from(["o.csv", "o.jsonl", "o.pq"]))
def test_any_small_file_is_scored_as_its_rows_one_by_one_or_refused(
    tmp_path_factory: pytest.TempPathFactory,
    learned_model_dir: Path,
    predictor: Any,
    rows: list[tuple[str, str]],
    suffix: str,
    target: str,
):
    EXAMPLES["score (library)"] += 1
    folder = tmp_path_factory.mktemp("gen")
    inp = folder / f"in{suffix}"
    before = _write(inp, rows)
    cfg = load_config(PARAMS, [f"project_dir={folder}", "score.precision=fp32", "score.batch_size=3"], environ={})
    out = folder / target
    try:
        summary = score_files(cfg, [str(inp)], out, str(learned_model_dir), chunk_size=3)
    except PipelineError as exc:
        EXAMPLES["score (library): refused"] += 1
        assert str(exc) and not out.exists()
        parts = shards.parts_dir(out)  # kept to resume only when a shard was scored: never a lone manifest
        assert not parts.exists() or list(parts.glob("part-*.parquet"))
    else:
        assert summary.blank_records == len(rows) - len(_records(inp, rows))
    _check_scored(inp, out, rows, predictor, before)


@pytest.mark.slow
@settings(FAST, max_examples=3)
@given(rows=ROWS, suffix=st.sampled_from([".csv", ".jsonl"]))
@example(rows=[('i feel happy, "really"', "a;b"), ("naïve 💥\nsecond line", "")], suffix=".csv")
@example(rows=[("i am scared\t|", "x"), ("\u200bzero width", '"')], suffix=".jsonl")
@example(rows=[("", ""), ("i feel fine", ""), ("   ", " "), ("\n", "")], suffix=".csv")  # records of blank cells
@example(rows=[("i feel\x00 fine", "\x00"), ("\x00ok", "x")], suffix=".jsonl")  # NUL into out.csv
def test_the_cli_scores_generated_files_or_exits_2(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    learned_model_dir: Path,
    predictor: Any,
    rows: list[tuple[str, str]],
    suffix: str,
):
    """Through `emotion score` itself: exit 0 with the property above, or exit 2 with one error line."""
    EXAMPLES["score (CLI)"] += 1
    for key, value in cli.QUIET_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    folder = tmp_path_factory.mktemp("cli")
    monkeypatch.chdir(folder)
    inp = folder / f"in{suffix}"
    before = _write(inp, rows)
    args = ["score", "--config", str(PARAMS), "--set", f"project_dir={folder}", "--model", str(learned_model_dir)]
    code = cli.main([*args, "--set", "score.precision=fp32", "--json", inp.name, "-o", "out.csv"])
    captured = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in captured.err
    if code == 0:
        EXAMPLES["score (CLI): exit 0"] += 1
        summary = json.loads(captured.out)
        assert (summary["rows_scored"], summary["blank_records"]) == (
            len(_records(inp, rows)),
            len(rows) - len(_records(inp, rows)),
        )
    else:
        assert [line for line in captured.err.splitlines() if line.startswith("error:")]
    _check_scored(inp, folder / "out.csv", rows, predictor, before)
