"""Every command that writes a user-named path is guarded (issue 27): never over one of its inputs, never into a
folder the pipeline manages, never over an existing file without --overwrite; a bad project_dir creates nothing;
Ctrl-C and bad registry arguments end in one line, not a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import emotion_cli as cli
from emotion_cli.main import INTERRUPTED
from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.scoring import shards
from tests.conftest import BIN, PARAMS, cli_env, default_sigint, init_project
from tests.unit.test_cli import run_cli


@pytest.fixture(autouse=True)
def restore_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """cli.main setdefault()s some environment variables; pin them so monkeypatch restores them afterwards.
    In-process commands run in the test's folder: a relative -o never lands in the repository."""
    monkeypatch.chdir(tmp_path)
    for key, value in cli.QUIET_ENV.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def texts_csv(path: Path, rows: int = 6) -> Path:
    pd.DataFrame({"id": range(rows), "text": [f"i feel fine today, number {i}" for i in range(rows)]}).to_csv(
        path, index=False
    )
    return path


def score_args(project: Path, model: Path, *args: str) -> list[str]:
    return ["score", "--config", str(PARAMS), "--set", f"project_dir={project}", "--model", str(model), *args]


# --- the guard itself -------------------------------------------------------------------------------------------


def test_check_output_refuses_inputs_by_any_name(tmp_path: Path):
    source = texts_csv(tmp_path / "in.csv")
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    for name in ("in.csv", "link.csv", "hard.csv", "./sub/../in.csv"):
        with pytest.raises(PipelineError, match=r"--output .* is one of the command's inputs"):
            paths.check_output(tmp_path / name, flag="--output", inputs=[source], overwrite=True)


def test_check_output_refuses_managed_folders_folders_and_existing_files(tmp_path: Path):
    managed = {"data.snapshot_dir": tmp_path / "data"}
    with pytest.raises(PipelineError, match=r"-o .*inside data.snapshot_dir"):
        paths.check_output(tmp_path / "data" / "x" / "o.csv", flag="-o", managed=managed, overwrite=True)
    with pytest.raises(PipelineError, match="is a folder"):
        paths.check_output(tmp_path, flag="-o", overwrite=True)
    (tmp_path / "old.csv").write_text("kept")
    with pytest.raises(PipelineError, match="exists: add --overwrite"):
        paths.check_output(tmp_path / "old.csv", flag="-o", managed=managed)
    assert (
        paths.check_output(tmp_path / "old.csv", flag="-o", managed=managed, overwrite=True)
        == (tmp_path / "old.csv").resolve()
    )
    assert (tmp_path / "old.csv").read_text() == "kept"


def test_managed_folders_of_the_shipped_config(tmp_path: Path):
    from pipeline.config import load_config

    cfg = load_config(PARAMS, [f"project_dir={tmp_path}"], environ={})
    managed = paths.managed_folders(cfg.write_folders(), tmp_path.resolve(), paths.sqlite_folder(cfg.tracking_uri))
    root = tmp_path.resolve()
    for inside in (
        "data",
        "mlflow",
        "mlflow/artifacts/1/abc",
        "artifacts/runs/x",
        ".git/x",
        ".dvc/cache",
        "dvc-remote",
    ):
        with pytest.raises(PipelineError, match="which the pipeline manages"):
            paths.check_output(root / inside / "out.csv", flag="-o", managed=managed)
    for project_file in ("params.yaml", "dvc.yaml", "data.dvc"):
        with pytest.raises(PipelineError, match="which the pipeline manages"):
            paths.check_output(root / project_file, flag="-o", managed=managed, overwrite=True)
    assert paths.check_output(root / "artifacts" / "scores" / "o.csv", flag="-o", managed=managed)


# --- emotion score -o --------------------------------------------------------------------------------------------


def test_score_onto_its_own_input_exits_2_and_leaves_it_byte_for_byte(tmp_path: Path, tiny_classifier_dir: Path):
    source = texts_csv(tmp_path / "in.csv")
    pd.read_csv(source).assign(note="other column").to_csv(source, index=False)
    before = source.read_bytes()
    result = run_cli(*score_args(tmp_path, tiny_classifier_dir, "in.csv", "-o", "in.csv"), cwd=tmp_path, timeout=180)
    assert result.returncode == 2, result.stderr
    assert "error: --output in.csv is one of the command's inputs" in result.stderr
    assert "Traceback" not in result.stderr
    assert source.read_bytes() == before and not shards.parts_dir(source).exists()


def test_score_into_the_dvc_snapshot_is_refused_and_dvc_stays_clean(tmp_path: Path, tiny_classifier_dir: Path):
    project = init_project(tmp_path / "project")
    (project / "data").mkdir()
    (project / "data" / "snapshot.jsonl").write_text('{"text": "i am happy", "label": "joy", "split": "train"}\n')
    subprocess.run([str(BIN / "dvc"), "add", "-q", "data"], cwd=project, check=True, capture_output=True)
    texts_csv(tmp_path / "in.csv")
    os.chdir(project)  # -o is relative to where it is typed: here the project
    for target in ("data/snapshot.jsonl", "data/new.jsonl", ".dvc/cache/x.csv"):
        code = cli.main([*score_args(project, tiny_classifier_dir, str(tmp_path / "in.csv"), "-o", target)])
        assert code == 2, target
    status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=project, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}
    assert sorted(p.name for p in (project / "data").iterdir()) == ["snapshot.jsonl"]


def test_score_into_a_registered_runs_artifacts_or_a_run_folder_is_refused(
    tmp_path: Path, tiny_classifier_dir: Path, capsys: pytest.CaptureFixture
):
    reference = tmp_path / "mlflow" / "artifacts" / "1" / "abc123" / "artifacts" / "reference" / "reference.parquet"
    reference.parent.mkdir(parents=True)
    reference.write_bytes(b"the drift reference")
    texts_csv(tmp_path / "in.csv")
    for target, key in ((reference, "mlflow.artifact_root"), (tmp_path / "artifacts/runs/r1/o.csv", "artifacts_dir")):
        code = cli.main([*score_args(tmp_path, tiny_classifier_dir, str(tmp_path / "in.csv"), "-o", str(target))])
        assert code == 2 and key in capsys.readouterr().err
    assert reference.read_bytes() == b"the drift reference" and not (tmp_path / "artifacts").exists()


def test_score_replaces_an_existing_output_only_with_overwrite(
    tmp_path: Path, tiny_classifier_dir: Path, capsys: pytest.CaptureFixture
):
    texts_csv(tmp_path / "in.csv")
    (tmp_path / "out.csv").write_text("an older result")
    args = score_args(tmp_path, tiny_classifier_dir, str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"))
    assert cli.main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "out.csv").read_text() == "an older result"
    assert cli.main([*args, "--overwrite"]) == 0
    assert len(pd.read_csv(tmp_path / "out.csv")) == 6


def test_a_failed_score_leaves_no_parts_folder_holding_only_a_manifest(tmp_path: Path, tiny_classifier_dir: Path):
    (tmp_path / "in.jsonl").write_text('{"text": "fine"}\n{"text": "  "}\n')  # blank: an error by default
    code = cli.main(score_args(tmp_path, tiny_classifier_dir, str(tmp_path / "in.jsonl"), "-o", "o.csv"))
    assert code == 2 and not (tmp_path / "o.csv.parts").exists() and not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_ctrl_c_ends_score_in_one_line_with_exit_130_and_the_shards_resume(tmp_path: Path, tiny_classifier_dir: Path):
    texts_csv(tmp_path / "in.csv", rows=4000)
    args = [str(BIN / "emotion"), *score_args(tmp_path, tiny_classifier_dir, "in.csv", "-o", "o.csv")]
    proc = subprocess.Popen(
        [*args, "--chunk-size", "100", "--set", "score.batch_size=16"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    parts = tmp_path / "o.csv.parts"
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()][-1].startswith("interrupted: the scored shards")
    kept = len(list(parts.glob("part-*.parquet")))
    assert 0 < kept < 40 and not (tmp_path / "o.csv").exists()
    again = run_cli(
        *score_args(tmp_path, tiny_classifier_dir, "in.csv", "-o", "o.csv", "--json"),
        "--chunk-size",
        "100",
        cwd=tmp_path,
        timeout=180,
    )
    summary = json.loads(again.stdout)
    assert again.returncode == 0 and summary["resumed_shards"] >= kept and summary["rows_scored"] == 4000


# --- the project folder is checked before anything is created ---------------------------------------------------


def test_run_with_the_filesystem_root_as_project_creates_nothing(tmp_path: Path):
    existed = {name: Path("/", name).exists() for name in ("artifacts", "mlflow")}
    result = run_cli("run", "--config", str(PARAMS), "--set", "project_dir=/", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "project_dir is /, a filesystem root" in result.stderr
    assert "Traceback" not in result.stderr
    assert {name: Path("/", name).exists() for name in existed} == existed
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["run", "ingest"])
def test_run_in_a_folder_that_is_no_dvc_project_creates_nothing(tmp_path: Path, capsys, command: str):
    project = tmp_path / "plain"
    project.mkdir()
    assert cli.main([command, "--config", str(PARAMS), "--set", f"project_dir={project}"]) == 2
    assert "is not a DVC project" in capsys.readouterr().err
    assert list(project.iterdir()) == []


def test_run_in_a_missing_project_folder_creates_it_not(tmp_path: Path, capsys):
    assert cli.main(["run", "--config", str(PARAMS), "--set", f"project_dir={tmp_path / 'nope'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


# --- tune's recipe -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "needle"),
    [
        ("data/tuned.yaml", "inside data.snapshot_dir"),
        ("params.yaml", "params.yaml"),
        ("recipes/tuned.yaml", "exists: add --overwrite"),
        ("recipes/base.yaml", "one of the command's inputs"),
    ],
)
def test_tune_refuses_its_recipe_target_before_any_trial(tmp_path: Path, capsys, recipe: str, needle: str):
    project = init_project(tmp_path / "project")
    (project / "recipes").mkdir()
    (project / "recipes" / "tuned.yaml").write_text("train: {epochs: 1}\n")
    (project / "recipes" / "base.yaml").write_text("train: {epochs: 2}\n")
    (project / "params.yaml").write_text(PARAMS.read_text())
    before = sorted(p.relative_to(project) for p in project.rglob("*") if ".git" not in p.parts)
    args = ["tune", "--config", str(project / "params.yaml"), "--set", f"project_dir={project}"]
    args += ["--recipe", "base", "--set", f"tune.recipe={recipe}"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "tune.recipe" in err and needle in err
    assert sorted(p.relative_to(project) for p in project.rglob("*") if ".git" not in p.parts) == before


# --- registry arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["abc", "1.5", "-1", "0", "99999999999999999999", "٣"])
def test_promote_names_a_bad_version_not_the_store(tmp_path: Path, capsys, version: str):
    code = cli.main(
        ["promote", version, "--reason", "why", "--config", str(PARAMS), "--set", f"project_dir={tmp_path}"]
    )
    err = capsys.readouterr().err
    assert code == 2 and error_lines(err) == [
        f"error: {version!r} is not a version number: versions are 1, 2, 3 ... (see `emotion models`)"
    ]
    assert not (tmp_path / "mlflow").exists()  # the store was not even opened


@pytest.mark.parametrize("command", [["promote", "1"], ["rollback"]])
@pytest.mark.parametrize("reason", ["", "   ", "\t\n"])
def test_an_empty_reason_is_refused(tmp_path: Path, capsys, command: list[str], reason: str):
    code = cli.main([*command, "--reason", reason, "--config", str(PARAMS), "--set", f"project_dir={tmp_path}"])
    assert code == 2 and error_lines(capsys.readouterr().err)[0].startswith("error: --reason is empty")
    assert not (tmp_path / "mlflow").exists()


# --- no traceback on the training paths ---------------------------------------------------------------------------


def _run_args(project: Path, source: Path) -> list[str]:
    return ["run", "--config", str(PARAMS), "--set", f"project_dir={project}", "--set", f"data.source={source}"]


@pytest.mark.slow
def test_resuming_a_run_that_failed_validation_is_a_clear_error(tmp_path: Path, prefect_api: str):
    project = init_project(tmp_path / "project")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\ni feel happy,joy\n   ,sadness\ni am sad,sadness\n")
    env = cli_env(prefect_api)
    first = run_cli(*_run_args(project, bad), cwd=tmp_path, timeout=180, env=env)
    assert first.returncode == 3, first.stderr
    (run_id,) = [p.name for p in (project / "artifacts" / "runs").iterdir()]
    again = run_cli(*_run_args(project, bad), "--resume", run_id, cwd=tmp_path, timeout=180, env=env)
    assert again.returncode == 3 and "Traceback" not in again.stderr
    assert next(line for line in again.stderr.splitlines() if line.startswith("error:")).startswith(
        "error: data validation failed"
    )


@pytest.mark.slow
def test_ctrl_c_ends_run_in_one_line_with_exit_130(tmp_path: Path):
    project = init_project(tmp_path / "project")
    good = tmp_path / "good.csv"
    good.write_text("text,label\n" + "".join(f"i feel happy {i},joy\ni am so sad {i},sadness\n" for i in range(30)))
    proc = subprocess.Popen(
        [str(BIN / "emotion"), *_run_args(project, good), "--set", "data.labels=null"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    runs = project / "artifacts" / "runs"
    deadline = time.monotonic() + 120
    while not (runs.is_dir() and any(runs.iterdir())) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert sum(line.startswith("interrupted: ") for line in stderr.splitlines()) == 1


@pytest.mark.parametrize(("command", "module"), [("tune", "steps"), ("run", "steps"), ("score", "production")])
def test_ctrl_c_in_any_long_command_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, command: str, module: str
):
    """Where a real SIGINT is too slow to aim (tune's trials): the command's KeyboardInterrupt, as main sees it."""
    from emotion_cli import production, steps

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr({"steps": steps, "production": production}[module], f"cmd_{command}", interrupted)
    extra = ["in.csv", "-o", "o.csv"] if command == "score" else []
    assert cli.main([command, *extra]) == 130
    lines = error_lines(capsys.readouterr().err)
    assert lines == [f"interrupted: {INTERRUPTED[command]}"]
