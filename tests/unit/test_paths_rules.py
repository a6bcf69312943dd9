"""The write guard's rules, one by one, called directly (no config file, no CLI, no model): each refusal names the
setting or flag to change and says why, and each allowed layout passes. Fast enough for mutation testing, where
`test_write_guard.py` checks the same rules end to end through the commands."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline import paths
from pipeline.errors import PipelineError


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = (tmp_path / "project").resolve()
    root.mkdir()
    return root


def refusal(call, *args, **kwargs) -> str:
    with pytest.raises(PipelineError) as err:
        call(*args, **kwargs)
    return str(err.value)


def dedicated(project: Path) -> dict[str, Path]:
    """The shipped layout: every write folder in the project, none inside another except the allowed nestings."""
    return {
        "data.snapshot_dir": project / "data",
        "artifacts_dir": project / "artifacts",
        "train.checkpoint_dir": project / "artifacts" / "checkpoints",
        "mlflow.artifact_root": project / "mlflow" / "artifacts",
        "monitor.merged_dir": project / "artifacts" / "merged",
        paths.LOCK_KEY: project / "mlflow",
        "data.dvc_remote": project / "dvc-remote",
    }


# --- check_write_paths: the project folder, git and DVC internals ---------------------------------------------------


def test_the_shipped_layout_passes(project: Path):
    paths.check_write_paths(dedicated(project), project, project / "mlflow")


@pytest.mark.parametrize("where", [".", ".."])
def test_a_folder_that_is_or_holds_the_project_is_refused(project: Path, where: str):
    folder = (project / where).resolve()
    message = refusal(paths.check_write_paths, {"data.snapshot_dir": folder}, project, None)
    assert message == (
        f"data.snapshot_dir is {folder}, the project folder or one that contains it: set data.snapshot_dir to a "
        "folder of its own (e.g. inside the project)"
    )


@pytest.mark.parametrize("internal", [".git", ".dvc"])
@pytest.mark.parametrize("below", ["", "sub/deeper"])
def test_git_and_dvc_internals_are_refused(project: Path, internal: str, below: str):
    folder = project / internal / below if below else project / internal
    message = refusal(paths.check_write_paths, {"train.checkpoint_dir": folder}, project, None)
    assert message == (
        f"train.checkpoint_dir is {folder}, inside the project's {internal} folder: set train.checkpoint_dir to a "
        "folder of its own (e.g. inside the project)"
    )


def test_a_folder_merely_named_like_an_internal_passes(project: Path):
    paths.check_write_paths(
        {"artifacts_dir": project / ".github", "data.snapshot_dir": project / "x.git"}, project, None
    )


def test_a_filesystem_root_as_project_is_refused(tmp_path: Path):
    root = Path(tmp_path.anchor)
    assert refusal(paths.check_write_paths, {}, root, None) == (
        f"project_dir is {root}, a filesystem root: set project_dir to the project's own folder (the clone)"
    )


def test_a_file_as_project_is_refused(tmp_path: Path):
    file = tmp_path / "params.yaml"
    file.write_text("x: 1\n")
    assert refusal(paths.check_write_paths, {}, file, None) == (
        f"project_dir is {file}, a file: set project_dir to the project's folder"
    )


def test_a_project_not_yet_created_passes(tmp_path: Path):
    paths.check_write_paths({"artifacts_dir": tmp_path / "new" / "artifacts"}, tmp_path / "new", None)


# --- check_write_paths: the MLflow store ----------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["data.snapshot_dir", "artifacts_dir", "data.dvc_remote", "monitor.merged_dir"])
@pytest.mark.parametrize("below", ["", "db"])
def test_a_folder_in_the_mlflow_store_is_refused(project: Path, key: str, below: str):
    store = project / "mlflow"
    folder = store / below if below else store
    message = refusal(paths.check_write_paths, {key: folder}, project, store)
    assert message == (
        f"{key} is {folder}, inside the MLflow store {store} (the registry lives there): set {key} to a folder of "
        "its own (e.g. inside the project)"
    )


def test_the_store_may_hold_its_artifact_root_and_lock_but_not_be_the_artifact_root(project: Path):
    store = project / "mlflow"
    paths.check_write_paths({"mlflow.artifact_root": store / "artifacts", paths.LOCK_KEY: store}, project, store)
    message = refusal(paths.check_write_paths, {"mlflow.artifact_root": store}, project, store)
    assert message.startswith(f"mlflow.artifact_root is {store}, inside the MLflow store {store}")


def test_the_lock_folders_message_names_only_the_setting(project: Path):
    message = refusal(paths.check_write_paths, {paths.LOCK_KEY: project / ".git"}, project, None)
    assert message == (
        f"mlflow.lock_file (its folder) is {project / '.git'}, inside the project's .git folder: set "
        "mlflow.lock_file to a folder of its own (e.g. inside the project)"
    )


def test_a_store_that_holds_the_project_protects_only_the_project(project: Path):
    paths.check_write_paths({"data.snapshot_dir": project / "data"}, project, project)
    paths.check_write_paths({"data.snapshot_dir": project / "data"}, project, project.parent)


def test_a_store_elsewhere_does_not_stop_folders_outside_it(project: Path, tmp_path: Path):
    paths.check_write_paths({"data.snapshot_dir": project / "data"}, project, tmp_path / "store")


# --- check_write_paths: folders kept apart --------------------------------------------------------------------------


def test_two_settings_on_one_folder_are_refused(project: Path):
    folders = {"artifacts_dir": project / "out", "monitor.merged_dir": project / "out"}
    assert refusal(paths.check_write_paths, folders, project, None) == (
        f"artifacts_dir is {project / 'out'}, the same folder as monitor.merged_dir: set artifacts_dir to a folder "
        "of its own (e.g. inside the project)"
    )


@pytest.mark.parametrize("outer_first", [True, False])
def test_a_folder_inside_another_is_refused_naming_the_inner_one(project: Path, outer_first: bool):
    outer, inner = ("artifacts_dir", project / "artifacts"), ("data.snapshot_dir", project / "artifacts" / "data")
    folders = dict([outer, inner] if outer_first else [inner, outer])
    assert refusal(paths.check_write_paths, folders, project, None) == (
        f"data.snapshot_dir is {inner[1]}, inside artifacts_dir ({outer[1]}): set data.snapshot_dir to a folder of "
        "its own (e.g. inside the project)"
    )


@pytest.mark.parametrize("inner_key", ["train.checkpoint_dir", "monitor.merged_dir"])
@pytest.mark.parametrize("outer_first", [True, False])
def test_checkpoints_and_merged_data_may_live_in_the_artifacts(project: Path, inner_key: str, outer_first: bool):
    outer, inner = ("artifacts_dir", project / "artifacts"), (inner_key, project / "artifacts" / "inner")
    paths.check_write_paths(dict([outer, inner] if outer_first else [inner, outer]), project, None)


@pytest.mark.parametrize("outer_first", [True, False])
def test_the_artifacts_may_not_live_in_the_checkpoints(project: Path, outer_first: bool):
    outer, inner = ("train.checkpoint_dir", project / "ck"), ("artifacts_dir", project / "ck" / "artifacts")
    message = refusal(paths.check_write_paths, dict([outer, inner] if outer_first else [inner, outer]), project, None)
    assert message.startswith(f"artifacts_dir is {inner[1]}, inside train.checkpoint_dir ({outer[1]})")


def test_the_lock_folder_may_share_any_folder_but_the_exclusive_ones(project: Path):
    shared = project / "artifacts"
    paths.check_write_paths({paths.LOCK_KEY: shared, "artifacts_dir": shared}, project, None)
    paths.check_write_paths({"artifacts_dir": shared, paths.LOCK_KEY: shared / "locks"}, project, None)
    paths.check_write_paths({paths.LOCK_KEY: shared / "locks", "monitor.merged_dir": shared}, project, None)
    for exclusive in paths.EXCLUSIVE:
        for folders in ({paths.LOCK_KEY: shared, exclusive: shared}, {exclusive: shared, paths.LOCK_KEY: shared}):
            assert "the same folder as" in refusal(paths.check_write_paths, folders, project, None)
        inside = {exclusive: shared, paths.LOCK_KEY: shared / "locks"}
        assert refusal(paths.check_write_paths, inside, project, None).startswith(
            f"mlflow.lock_file (its folder) is {shared / 'locks'}, inside {exclusive} ({shared})"
        )


def test_mixes_is_symmetric_and_spares_only_the_lock_beside_plain_folders():
    assert paths._mixes("artifacts_dir", "data.snapshot_dir")
    for plain in ("artifacts_dir", "monitor.merged_dir"):
        assert not paths._mixes(paths.LOCK_KEY, plain) and not paths._mixes(plain, paths.LOCK_KEY)
    for exclusive in paths.EXCLUSIVE:
        assert paths._mixes(paths.LOCK_KEY, exclusive) and paths._mixes(exclusive, paths.LOCK_KEY)


# --- sqlite_folder --------------------------------------------------------------------------------------------------


def test_sqlite_folder_finds_the_local_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path.resolve()
    assert (
        paths.sqlite_folder(f"sqlite:///{root}/store/mlflow.db") == root / "store"
    )  # as Config.tracking_uri writes it
    assert paths.sqlite_folder("sqlite:mlflow.db") is None  # not a sqlite:/// path
    assert paths.sqlite_folder(f"file://{root}/files") == root / "files"
    assert paths.sqlite_folder(f"file:{root}/files") == root / "files"
    assert paths.sqlite_folder("file:files") == root / "files"
    assert paths.sqlite_folder("http://127.0.0.1:5000") is None
    assert paths.sqlite_folder("postgresql://u@h/db") is None


def test_sqlite_folder_keeps_the_leading_slash_of_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert paths.sqlite_folder("sqlite:///store/mlflow.db") == Path("/store")
    assert paths.sqlite_folder("sqlite:////store/mlflow.db") == Path("/store")


# --- check_project --------------------------------------------------------------------------------------------------


def test_check_project_wants_an_existing_folder(tmp_path: Path):
    missing = tmp_path / "nope"
    assert refusal(paths.check_project, missing, False) == (
        f"project_dir {missing} is not a folder: create it (git init; dvc init) or fix project_dir"
    )
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in refusal(paths.check_project, tmp_path / "file", False)
    assert not missing.exists()


def test_check_project_wants_dvc_only_when_the_snapshot_is_tracked(project: Path):
    paths.check_project(project, dvc_track=False)
    assert refusal(paths.check_project, project, True) == (
        f"project_dir {project} is not a DVC project: run `dvc init` there, or set data.dvc_track=false"
    )
    (project / ".dvc").write_text("not a folder")
    assert "is not a DVC project" in refusal(paths.check_project, project, True)


@pytest.mark.parametrize("dvc_at", [".", "..", "../.."])
def test_check_project_accepts_dvc_in_the_project_or_above(tmp_path: Path, dvc_at: str):
    project = tmp_path / "a" / "b"
    project.mkdir(parents=True)
    (project / dvc_at / ".dvc").mkdir()
    paths.check_project(project, dvc_track=True)


# --- managed_folders ------------------------------------------------------------------------------------------------


def test_managed_folders_of_the_shipped_layout(project: Path):
    managed = paths.managed_folders(dedicated(project), project, project / "mlflow")
    assert managed == {
        ".git": project / ".git",
        ".dvc": project / ".dvc",
        "the project's params.yaml": project / "params.yaml",
        "the project's dvc.yaml": project / "dvc.yaml",
        "the project's dvc.lock": project / "dvc.lock",
        "data.snapshot_dir": project / "data",
        "data.dvc_remote": project / "dvc-remote",
        "mlflow.artifact_root": project / "mlflow" / "artifacts",
        "train.checkpoint_dir": project / "artifacts" / "checkpoints",
        "data.snapshot_dir's DVC pointer": project / "data.dvc",
        "artifacts_dir (its runs/)": project / "artifacts" / "runs",
        "the MLflow store": project / "mlflow",
    }


def test_managed_folders_leave_out_what_the_config_does_not_name(project: Path):
    assert set(paths.managed_folders({}, project, None)) == {
        ".git",
        ".dvc",
        "the project's params.yaml",
        "the project's dvc.yaml",
        "the project's dvc.lock",
    }
    # a store holding the whole project would forbid every output: it is left out
    assert "the MLflow store" not in paths.managed_folders({}, project, project)
    assert "the MLflow store" not in paths.managed_folders({}, project, project.parent)


def test_managed_folders_are_resolved(tmp_path: Path):
    real = tmp_path / "real"
    (real / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    managed = paths.managed_folders({"data.snapshot_dir": tmp_path / "link" / "data"}, tmp_path / "link", None)
    assert managed["data.snapshot_dir"] == real.resolve() / "data"
    assert managed[".git"] == real.resolve() / ".git"


# --- check_output ---------------------------------------------------------------------------------------------------


def test_check_output_returns_the_target_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.check_output(Path("sub/../out.csv"), flag="-o") == tmp_path.resolve() / "out.csv"
    assert paths.check_output(Path("~/out.csv"), flag="-o") == tmp_path.resolve() / "home" / "out.csv"


def test_check_output_refuses_an_input_by_any_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    source = tmp_path / "in.csv"
    source.write_text("text\nhi\n")
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    other = tmp_path / "other.csv"
    other.write_text("text\nhi\n")  # same bytes, another file
    for name in ("in.csv", "link.csv", "hard.csv", "sub/../in.csv", "~/in.csv"):
        message = refusal(paths.check_output, Path(name), flag="--output", inputs=[other, Path("~/in.csv")])
        assert message == f"--output {name} is one of the command's inputs (~/in.csv): write to another file"
    assert paths.check_output(tmp_path / "new.csv", flag="-o", inputs=[source, other]) == tmp_path / "new.csv"


def test_same_file_needs_both_to_exist_for_the_inode_check(tmp_path: Path):
    here = tmp_path / "a.csv"
    here.write_text("x")
    assert paths._same_file(tmp_path / "missing", tmp_path / "missing")  # the same path, even before it exists
    assert not paths._same_file(here, tmp_path / "missing")
    assert not paths._same_file(tmp_path / "missing", here)
    (tmp_path / "b.csv").write_text("x")
    assert not paths._same_file(here, tmp_path / "b.csv")


def test_same_file_treats_an_unreadable_path_as_another_file(tmp_path: Path):
    here = tmp_path / "a.csv"
    here.write_text("x")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # exists() says False: "too many levels of symbolic links"
    assert not paths._same_file(loop, here)
    too_long = tmp_path / ("x" * 300)  # exists() raises OSError: "file name too long"
    assert not paths._same_file(too_long, here) and not paths._same_file(here, too_long)


def test_check_output_refuses_a_managed_folder_naming_it(tmp_path: Path):
    managed = {"data.snapshot_dir": tmp_path / "data", "the MLflow store": tmp_path / "mlflow"}
    target = tmp_path / "data" / "x" / "o.csv"
    assert refusal(paths.check_output, target, flag="-o", managed=managed, overwrite=True) == (
        f"-o {target} is inside data.snapshot_dir ({tmp_path / 'data'}), which the pipeline manages: write "
        "somewhere else"
    )
    assert "inside the MLflow store" in refusal(paths.check_output, tmp_path / "mlflow", flag="-o", managed=managed)
    assert paths.check_output(tmp_path / "data.csv", flag="-o", managed=managed) == tmp_path / "data.csv"


def test_check_output_refuses_a_folder_and_an_existing_file_without_overwrite(tmp_path: Path):
    assert refusal(paths.check_output, tmp_path, flag="--recipe", overwrite=True) == (
        f"--recipe {tmp_path} is a folder: name a file"
    )
    old = tmp_path / "old.csv"
    old.write_text("kept")
    assert refusal(paths.check_output, old, flag="-o") == (
        f"-o {old} exists: add --overwrite to replace it, or write to another file"
    )
    assert paths.check_output(old, flag="-o", overwrite=True) == old
    assert old.read_text() == "kept"


def test_check_output_checks_inputs_before_managed_folders_before_existence(tmp_path: Path):
    source = tmp_path / "data" / "in.csv"
    source.parent.mkdir()
    source.write_text("x")
    managed = {"data.snapshot_dir": tmp_path / "data"}
    assert "one of the command's inputs" in refusal(
        paths.check_output, source, flag="-o", inputs=[source], managed=managed
    )
    assert "which the pipeline manages" in refusal(paths.check_output, source, flag="-o", managed=managed)


def test_check_output_names_a_path_the_file_system_cannot_hold(tmp_path: Path):
    long = tmp_path / ("a" * 300 + ".csv")
    assert refusal(paths.check_output, long, flag="-o") == f"-o {long} cannot be a file here: File name too long"


@pytest.mark.parametrize("below", ["out.csv", "sub/out.csv"])
def test_check_output_refuses_a_file_standing_where_its_folder_would_be(tmp_path: Path, below: str):
    (tmp_path / "a-file").write_text("not a folder")
    message = refusal(paths.check_output, tmp_path / "a-file" / below, flag="-o")
    assert message.endswith(f"cannot be a file here: {tmp_path / 'a-file'} is a file, not a folder")
    assert (tmp_path / "a-file").read_text() == "not a folder"
