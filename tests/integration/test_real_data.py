"""Real data by flags alone: `emotion inspect` proposes the flags, `emotion run` trains on them, and the rows the
reader left out are counted in the validation report and in MLflow (param, metric, artifact)."""

from __future__ import annotations

import json
import random
import shlex
import subprocess
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline.registry import connection
from tests.conftest import BIN, PARAMS, cli_env, tiny_overrides
from tests.synthetic_text import SEVEN, THINGS, WORDS

pytestmark = pytest.mark.slow


def published_dataset(path: Path) -> Path:
    """A 7-label emotion file as published: pipe-delimited, 40 columns besides text and label, two broken rows."""
    rng = random.Random(0)
    header = ["id", "Tweet", "Emotion", *(f"meta_{i}" for i in range(40))]
    lines = ["|".join(header)]
    for i, (label, thing) in enumerate((lab, t) for lab in SEVEN for t in THINGS):
        text = f'the {thing} left me {WORDS[label]} today, "really"'
        lines.append(
            "|".join(
                [str(i), text, label.upper() if i % 4 == 0 else label, *(str(rng.randint(0, 99)) for _ in range(40))]
            )
        )
    lines.insert(5, "141|a quote that never closes|joy")  # too few fields
    lines.insert(50, "142|extra | pipes | in the text|fear|" + "|".join(["0"] * 40))  # too many
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def emotion_run(project: Path, model_dir: Path, flags: list[str], prefect_api: str) -> str:
    """`emotion run` with the pasted flags (through a shell's word splitting) plus the tiny-model overrides."""
    args = [str(BIN / "emotion"), "run", "--config", str(PARAMS), *shlex.split(" ".join(flags))]
    for item in tiny_overrides(project, model_dir, "train.learning_rate=1e-2", "train.epochs=3"):
        args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, env=cli_env(prefect_api), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_pipe_file_with_40_extra_columns_trains_by_inspected_flags(
    tmp_path: Path,
    project: Path,
    tiny_model_dir: Path,
    tiny_config,
    capsys: pytest.CaptureFixture,
    prefect_api: str,
) -> None:
    source = published_dataset(tmp_path / "emotions.txt")
    assert cli.main(["inspect", str(source), "--json", "--config", str(PARAMS)]) == 0
    inspection = json.loads(capsys.readouterr().out)
    assert inspection["flags"] == [
        f"--set data.source={source}",
        "--set data.format=csv",
        "--set data.delimiter=pipe",
        "--set data.bad_rows=skip",
        "--set data.text_column=Tweet",
        "--set data.label_column=Emotion",
        "--set data.labels=null",
    ]
    assert inspection["malformed_count"] == 2 and [m["line"] for m in inspection["malformed"]] == [6, 51]

    out = emotion_run(project, tiny_model_dir, inspection["flags"], prefect_api)
    assert "rows {'train': 112, 'validation': 14, 'test': 14}" in out

    report = (project / "artifacts" / "latest" / "reports" / "validation_report.md").read_text()
    assert "| source rows well-formed | pass | 2 |" in report
    assert "emotions.txt line(s) 6, 51" in report
    assert "label case/whitespace normalised: 'ANGER' -> 'anger'" in report
    cfg = tiny_config()
    client = connection.client(cfg.registry)
    run = client.search_runs([connection.experiment_id(cfg.registry, client)])[0]
    assert run.data.params["data_bad_rows"] == "2" and run.data.metrics["data_bad_rows"] == 2.0
    assert run.data.params["data_read.delimiters"] == "pipe" and run.data.params["data.bad_rows"] == "skip"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    assert {"reports/ingest_report.json", "reports/validation_report.md"} <= artifacts
    local = Path(client.download_artifacts(run.info.run_id, "reports/ingest_report.json", str(tmp_path)))
    assert json.loads(local.read_text())["files"][0]["bad_lines"] == [6, 51]
    assert client.get_model_version("emotion-classifier", "1").tags["labels"] == ",".join(SEVEN)
