"""`emotion score --backend onnx-fp32|onnx-int8`: ONNX Runtime and the `tokenizers` library in place of torch. The
answers are the torch path's, int8 passes through serving's parity check or is refused, and the scoring process
never imports torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.config import load_config
from pipeline.scoring.job import score_files
from tests.conftest import BIN, PARAMS, REPO, classifier_folder, write_cue_folder
from tests.unit.conftest import CUE_LABELS, CUE_TEXTS, FAST_BOUND

LONG = " ".join(["we walked along the river and talked about the long winter"] * 6)  # past max_length: truncated
TEXTS = ["ok", "i feel wonderful today", "this makes me furious and i will not forget it", LONG, *CUE_TEXTS]
SIZES = ["score.batch_size=3", "model.max_length=32"]


def scored(project: Path, model: Path, backend: str, *extra: str) -> pd.DataFrame:
    """The texts scored by ``score_files`` with ``backend`` (torch in fp32), read back in input order."""
    inp = project / "in.csv"
    if not inp.exists():
        pd.DataFrame({"text": TEXTS}).to_csv(inp, index=False)
    out = project / f"out-{backend}.parquet"
    sets = [f"project_dir={project}", "score.precision=fp32", f"score.backend={backend}", *SIZES, *extra]
    summary = score_files(load_config(PARAMS, sets, environ={}), [str(inp)], out, str(model), overwrite=True)
    assert summary.backend == backend and summary.rows_scored == len(TEXTS)
    return pd.read_parquet(out)


def probabilities(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame[[f"p_{label}" for label in labels]].to_numpy()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project for the module, so the ONNX export is made once and then found in its cache."""
    return tmp_path_factory.mktemp("onnx-score")


@pytest.fixture(scope="module")
def torch_scores(project: Path, learned_model_dir: Path) -> pd.DataFrame:
    return scored(project, learned_model_dir, "torch")


def test_onnx_fp32_scores_equal_the_torch_fp32_path(
    project: Path, learned_model_dir: Path, torch_scores: pd.DataFrame
) -> None:
    from pipeline.model.outputs import OutputPolicy

    labels = OutputPolicy.of_folder(learned_model_dir).labels
    onnx = scored(project, learned_model_dir, "onnx-fp32")
    np.testing.assert_allclose(probabilities(onnx, labels), probabilities(torch_scores, labels), atol=1e-4)
    assert onnx["label"].tolist() == torch_scores["label"].tolist()
    assert onnx["label"].tolist()[-len(CUE_TEXTS) :] == CUE_LABELS
    assert list((project / "artifacts" / "onnx").glob("*/model.onnx")), "the export is cached for the next run"


def test_the_fast_tokenizer_encodes_as_the_transformers_tokenizer(learned_model_dir: Path) -> None:
    from pipeline.model.modeling import load_tokenizer
    from pipeline.model.onnx_predict import FastTokenizer

    ours = FastTokenizer(learned_model_dir, max_length=32)
    theirs = load_tokenizer(str(learned_model_dir))
    encodings = ours.encode(TEXTS)
    expected = theirs(TEXTS, truncation=True, max_length=32)
    assert [e.ids for e in encodings] == expected["input_ids"]
    assert len(encodings[TEXTS.index(LONG)].ids) == 32
    padded = ours.pad(encodings)
    reference = theirs.pad({"input_ids": expected["input_ids"]}, return_tensors="np")
    np.testing.assert_array_equal(padded["input_ids"], reference["input_ids"])
    np.testing.assert_array_equal(padded["attention_mask"], reference["attention_mask"])


def test_onnx_int8_is_scored_only_after_the_parity_check(
    project: Path, learned_model_dir: Path, torch_scores: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from pipeline.errors import PipelineError
    from pipeline.model.outputs import OutputPolicy

    labels = OutputPolicy.of_folder(learned_model_dir).labels
    cues = write_cue_folder(project / "cues", {"train": 30, "validation": 30, "test": 120})
    parity = f"serve.parity_source={cues}"
    with caplog.at_level(logging.INFO):
        int8 = scored(project, learned_model_dir, "onnx-int8", parity)
    assert "parity check passed: onnx-int8 accuracy" in caplog.text
    assert "Quantization parameters" not in caplog.text  # ONNX Runtime's line per tensor is kept off the console
    assert np.abs(probabilities(int8, labels) - probabilities(torch_scores, labels)).max() < FAST_BOUND
    assert int8["label"].tolist()[-len(CUE_TEXTS) :] == CUE_LABELS
    alien = project / "alien"
    alien.mkdir()
    (alien / "test.txt").write_text("i am bored;boredom\nso bored;boredom\n")
    with pytest.raises(PipelineError, match="refusing --backend onnx-int8: parity data .* has labels the model does"):
        scored(project, learned_model_dir, "onnx-int8", f"serve.parity_source={alien}")
    with pytest.raises(PipelineError, match="parity check, whose data could not be read"):
        scored(project, learned_model_dir, "onnx-int8", f"serve.parity_source={project / 'missing'}")


NO_TORCH = """
import json, sys
from pathlib import Path
from pipeline.config import load_config
from pipeline.scoring.job import score_files
project, model, params = sys.argv[1:4]
sets = [f"project_dir={project}", "score.backend=onnx-fp32", "model.max_length=32"]
cfg = load_config(Path(params), sets, environ={})
summary = score_files(cfg, [f"{project}/in.csv"], Path(project) / "no-torch.jsonl", model, overwrite=True)
heavy = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"rows": summary.rows_scored, "backend": summary.backend, "heavy": heavy}))
"""


def test_the_onnx_scoring_process_never_imports_torch(
    project: Path, learned_model_dir: Path, torch_scores: pd.DataFrame
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(project), str(learned_model_dir), str(PARAMS)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rows": len(TEXTS), "backend": "onnx-fp32", "heavy": []}


def test_a_multi_label_model_scores_alike_on_onnx(tiny_model_dir: Path, tmp_path: Path) -> None:
    labels = ["joy", "fear", "anger"]
    folder = classifier_folder(tiny_model_dir, tmp_path / "multi", labels, multi_label=True)
    torch_out, onnx_out = scored(tmp_path, folder, "torch"), scored(tmp_path, folder, "onnx-fp32")
    np.testing.assert_allclose(probabilities(onnx_out, labels), probabilities(torch_out, labels), atol=1e-4)
    assert onnx_out["labels"].map(list).tolist() == torch_out["labels"].map(list).tolist()


def test_an_unknown_backend_is_a_clear_error(tmp_path: Path, learned_model_dir: Path) -> None:
    (tmp_path / "in.csv").write_text("text\nhello\n")
    done = subprocess.run(
        [str(BIN / "emotion"), "score", "in.csv", "-o", "out.csv", "--model", str(learned_model_dir)]
        + ["--backend", "onnx-int4", "--config", str(PARAMS), "--set", f"project_dir={tmp_path}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "score.backend: Input should be 'torch', 'onnx-fp32' or 'onnx-int8'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.csv").exists()


def test_resuming_with_another_backend_starts_over(
    project: Path, learned_model_dir: Path, torch_scores: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from pipeline.registry.model_spec import from_folder
    from pipeline.scoring import job, shards

    out = project / "out-onnx-fp32.parquet"
    torch_cfg = load_config(PARAMS, [f"project_dir={project}", "score.backend=torch", *SIZES], environ={})
    inp = (project / "in.csv").resolve()
    size = torch_cfg.score.chunk_size
    shards.prepare(shards.parts_dir(out), job._manifest([inp], from_folder(learned_model_dir), torch_cfg, size, None))
    (shards.parts_dir(out) / "part-00000.parquet").write_text("a shard the torch backend scored")
    with caplog.at_level(logging.WARNING):
        onnx = scored(project, learned_model_dir, "onnx-fp32")
    assert "was scored with other backend: starting over" in caplog.text
    assert onnx["label"].tolist() == torch_scores["label"].tolist()


def test_a_token_budget_cuts_long_texts_into_smaller_batches() -> None:
    from pipeline.model.outputs import length_sorted_batches

    lengths = [128] * 40 + [10] * 100 + [30] * 5
    batches = length_sorted_batches(lengths, 64, max_tokens=2048)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 2048 for b in batches)
    assert [len(b) for b in batches] == [64, 41, 16, 16, 8]  # short texts 64 at a time, 128-token ones 16
    assert length_sorted_batches([3000], 64, max_tokens=2048) == [[0]]  # a text over the budget goes alone
    assert length_sorted_batches([], 64, max_tokens=2048) == []
