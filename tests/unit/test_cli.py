"""emotion_cli: fast help, one-line `error:` messages with exit codes instead of tracebacks, prepare/predict."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import emotion_cli as cli
from emotion_cli import common
from pipeline.config import load_config
from pipeline.data import ingest
from tests.conftest import BIN, PARAMS, copy_sample
from tests.unit.conftest import LABELS

SUBCOMMANDS = ("run", "ingest", "prepare", "train", "evaluate", "predict")


@pytest.fixture(autouse=True)
def restore_env(monkeypatch: pytest.MonkeyPatch):
    """cli.main setdefault()s some environment variables; pin them so monkeypatch restores them afterwards."""
    for key, value in cli.QUIET_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def run_cli(
    *args: str, cwd: Path, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command = [str(BIN / "emotion"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- subprocess: the installed entry point ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [[str(BIN / "emotion")], [sys.executable, "-m", "emotion_cli"]], ids=["entry-point", "python-m"]
)
def test_help_exits_zero_quickly(command: list[str], tmp_path: Path):
    started = time.monotonic()
    proc = subprocess.run([*command, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 10
    for sub in SUBCOMMANDS:
        assert sub in proc.stdout
    assert proc.stderr == ""


def test_importing_the_cli_loads_no_heavy_library(tmp_path: Path):
    code = (
        "import sys, emotion_cli; heavy = ('torch', 'transformers', 'mlflow', 'great_expectations', 'prefect', "
        "'dvc', 'pandas'); print([m for m in heavy if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_predict_with_missing_model_dir_is_a_one_line_error(tmp_path: Path):
    proc = run_cli(
        "predict",
        "--config",
        str(PARAMS),
        "--set",
        f"project_dir={tmp_path}",
        "--model",
        "/nonexistent/dir",
        "i feel fine",
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "/nonexistent/dir" in lines[0]
    assert proc.stdout == ""


def test_subcommand_help_and_unknown_command(tmp_path: Path):
    ok = run_cli("predict", "--help", cwd=tmp_path)
    assert ok.returncode == 0 and "--model" in ok.stdout
    bad = run_cli("frobnicate", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr


# --- in process ------------------------------------------------------------------------------------------------


def base_args(project: Path) -> list[str]:
    return ["--config", str(PARAMS), "--set", f"project_dir={project}"]


def assert_clean_error(err: str, *needles: str) -> str:
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in err
    return lines[0]


def test_predict_with_folder_that_is_not_a_model(tmp_path: Path, capsys: pytest.CaptureFixture):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    code = cli.main(["predict", *base_args(tmp_path), "--model", str(empty), "hello"])
    out, err = capsys.readouterr()
    assert code == 2
    assert_clean_error(err, "config.json", str(empty))
    assert out == ""


def test_predict_json_with_a_model_folder(learned_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    model_dir = learned_model_dir
    code = cli.main(
        [
            "predict",
            *base_args(tmp_path),
            "--set",
            "model.max_length=64",
            "--model",
            str(model_dir),
            "--json",
            "i feel happy",
            "i am scared",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    preds = json.loads(out)
    assert [p["text"] for p in preds] == ["i feel happy", "i am scared"]
    assert [p["label"] for p in preds] == ["joy", "fear"]
    for p in preds:
        assert list(p["probabilities"]) == LABELS
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_predict_text_output(learned_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    code = cli.main(["predict", *base_args(tmp_path), "--model", str(learned_model_dir), "what an angry day"])
    out, _ = capsys.readouterr()
    assert code == 0
    first, second = out.rstrip("\n").splitlines()
    assert first.split()[0] == "anger" and first.endswith("what an angry day")
    assert all(label in second for label in LABELS)


def test_predict_explain_prints_each_word_with_its_attribution(
    learned_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    args = ["predict", *base_args(tmp_path), "--set", "serve.explain_steps=8", "--model", str(learned_model_dir)]
    assert cli.main([*args, "--explain", "what a happy day"]) == 0
    first, second = capsys.readouterr().out.rstrip("\n").splitlines()
    assert first.split()[0] == "joy" and "what a happy day" in first and "delta" in first
    assert second.split()[::2] == ["what", "a", "happy", "day"]
    scores = [float(score) for score in second.split()[1::2]]
    assert max(scores) == scores[2]  # the cue word "happy" carries the answer
    assert cli.main([*args, "--explain", "--json", "we were scared"]) == 0
    (found,) = json.loads(capsys.readouterr().out)
    assert found["words"] == ["we", "were", "scared"] and found["label"] == "fear"
    assert max(found["scores"]) == found["scores"][2]
    assert sum(found["scores"]) - (found["logit"] - found["baseline_logit"]) == pytest.approx(found["delta"], abs=1e-4)


def test_predict_empty_text_is_an_error(learned_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    code = cli.main(["predict", *base_args(tmp_path), "--model", str(learned_model_dir), "fine", "  "])
    _, err = capsys.readouterr()
    assert code == 2
    assert_clean_error(err, "text #2 is empty")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("foo", "dotted.key=value"),
        ("train.bogus=1", "train.bogus"),
        ("train.epochs=zero", "train.epochs"),
    ],
)
def test_bad_set_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture, override: str, needle: str):
    code = cli.main(["prepare", *base_args(tmp_path), "--set", override])
    _, err = capsys.readouterr()
    assert code == 2
    assert_clean_error(err, needle)


def test_missing_config_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    code = cli.main(["ingest", "--config", str(tmp_path / "absent.yaml")])
    _, err = capsys.readouterr()
    assert code == 2
    assert_clean_error(err, "absent.yaml", "not found")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "usage: emotion" in capsys.readouterr().err


def test_prepare_without_snapshot(project: Path, capsys: pytest.CaptureFixture):
    code = cli.main(["prepare", *base_args(project)])
    err = capsys.readouterr().err
    assert code == 2
    line = assert_clean_error(err, "emotion ingest")
    assert "no data snapshot" in line and str(project) in line
    assert not (project / "artifacts" / "prepared").exists()


def test_ingest_then_prepare(project: Path, capsys: pytest.CaptureFixture):
    args = [*base_args(project), "--set", "data.dvc_track=false"]
    assert cli.main(["ingest", *args]) == 0
    assert cli.main(["prepare", *args]) == 0
    out = capsys.readouterr().out
    assert "all 18 data checks passed on 720 rows" in out
    assert "prepared train=" in out
    prepared = project / "artifacts" / "prepared"
    assert json.loads((prepared / "label_map.json").read_text())["labels"] == LABELS
    assert (project / "artifacts" / "reports" / "cleaning.csv").exists()


def test_prepare_on_invalid_snapshot_exits_3(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    src = copy_sample(tmp_path / "bad-source")
    with (src / "train.txt").open("a", encoding="utf-8") as fh:
        fh.write("   ;joy\ni am enraged;rage\n")
    args = [*base_args(project), "--set", "data.dvc_track=false", "--set", f"data.source={src}"]
    assert cli.main(["ingest", *args]) == 3  # ingest validates: the refused data never reaches data/
    assert not (project / "data").exists() and not list(project.glob("data.staging-*"))
    ingest.ingest(load_config(PARAMS, [f"data.source={src}"], {}).data, project / "data")  # as if pulled from DVC
    code = cli.main(["prepare", *args])
    _, err = capsys.readouterr()
    assert code == 3
    assert "Traceback" not in err
    assert "error: data validation failed" in err
    assert (project / "artifacts" / "reports" / "validation_report.md").exists()
    assert not (project / "artifacts" / "prepared").exists()


def test_train_with_a_missing_teacher_is_an_error(
    project: Path, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
):
    args = [*base_args(project), "--set", "data.dvc_track=false", "--set", f"model.name={tiny_model_dir}"]
    assert cli.main(["ingest", *args]) == 0 and cli.main(["prepare", *args]) == 0
    capsys.readouterr()
    code = cli.main(["train", *args, "--set", f"train.teachers=[{tmp_path / 'no-teacher'}]"])
    line = assert_clean_error(capsys.readouterr().err, "train.teachers")
    assert code == 2 and "no saved model in" in line and "no-teacher" in line
    assert not (project / "artifacts" / "model").exists()


# --- --recipe ----------------------------------------------------------------------------------------------------


def test_every_subcommand_takes_recipe():
    subparsers = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name, p in subparsers.choices.items() if "--recipe" not in p._option_string_actions]
    assert subparsers.choices and missing == []


def test_recipe_layers_under_set_and_travels_with_the_overrides(tmp_path: Path):
    args = cli.build_parser().parse_args(
        ["train", *base_args(tmp_path), "--recipe", "emotion", "--set", "train.epochs=2", "--recipe", "cpu-quick"]
    )
    cfg = common.config(args)
    assert cfg.recipes == ["emotion", "cpu-quick"]
    assert cfg.train.learning_rate == 1.5e-4  # emotion
    assert (cfg.train.batch_size, cfg.model.max_length) == (32, 64)  # cpu-quick over emotion
    assert cfg.train.epochs == 2  # --set over both
    # deployments and drift-triggered retraining re-read params + overrides: the recipes are in the overrides
    assert load_config(PARAMS, args.set, environ={}) == cfg


def test_unknown_recipe_is_a_one_line_error_naming_the_choices(tmp_path: Path, capsys: pytest.CaptureFixture):
    code = cli.main(["ingest", *base_args(tmp_path), "--recipe", "nosuch"])
    _, err = capsys.readouterr()
    assert code == 2
    assert_clean_error(err, "unknown recipe 'nosuch'", "emotion", "goemotions", "cpu-quick", "gpu")
    assert not (tmp_path / "data").exists()


def _tree_digest(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_refused_ingest_leaves_data_pointer_and_remote_byte_for_byte(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    assert cli.main(["ingest", *base_args(project)]) == 0  # tracked with DVC and pushed to dvc-remote
    before = [_tree_digest(project / "data"), (project / "data.dvc").read_bytes(), _tree_digest(project / "dvc-remote")]
    assert before[2], "the good snapshot was pushed"
    bad = copy_sample(tmp_path / "bad-source")
    with (bad / "train.txt").open("a", encoding="utf-8") as fh:
        fh.write("i am enraged;rage\n")  # a label outside the declared set: an error-severity check
    capsys.readouterr()
    assert cli.main(["ingest", *base_args(project), "--set", f"data.source={bad}"]) == 3
    assert "data validation failed" in capsys.readouterr().err
    after = [_tree_digest(project / "data"), (project / "data.dvc").read_bytes(), _tree_digest(project / "dvc-remote")]
    assert after == before
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("data")) == ["data", "data.dvc"]


@pytest.mark.fresh_registry  # it writes its own mlflow/mlflow.db
def test_ingest_refuses_a_snapshot_dir_holding_the_registry(project: Path, capsys: pytest.CaptureFixture):
    (project / "mlflow").mkdir()
    (project / "mlflow" / "mlflow.db").write_text("registry")
    assert cli.main(["ingest", *base_args(project), "--set", "data.snapshot_dir=mlflow"]) == 2
    assert "data.snapshot_dir" in assert_clean_error(capsys.readouterr().err, "MLflow store")
    assert (project / "mlflow" / "mlflow.db").read_text() == "registry"


def _prefect_turning_ctrl_c_into(error: Exception):
    """A command that fails the way Prefect's task engine did when a Ctrl-C landed as a task run started: its own
    error raised while the KeyboardInterrupt was being handled."""

    def command(args: argparse.Namespace) -> int:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise error  # noqa: B904 - chained implicitly, as in Prefect's handle_crash

    return command


def test_a_ctrl_c_a_library_turned_into_its_own_error_ends_as_an_interruption(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    from emotion_cli import steps

    monkeypatch.setattr(steps, "cmd_run", _prefect_turning_ctrl_c_into(ValueError("Task run is not set")))
    assert cli.main(["run", *base_args(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted: a started run is marked failed"), err
    assert "Traceback" not in err and "Task run is not set" not in err


def test_an_error_not_raised_by_a_ctrl_c_still_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from emotion_cli import steps

    def failing(args: argparse.Namespace) -> int:
        raise ValueError("a real bug")

    monkeypatch.setattr(steps, "cmd_run", failing)
    with pytest.raises(ValueError, match="a real bug"):
        cli.main(["run", *base_args(tmp_path)])
