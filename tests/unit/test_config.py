"""pipeline.config: params.yaml defaults, --set overrides with YAML typing, environment precedence, paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Config, available_recipes, load_config, load_config_from_env, parse_overrides, read_recipe
from pipeline.errors import PipelineError
from tests.conftest import PARAMS, REPO


@pytest.fixture
def params_file(tmp_path: Path) -> Path:
    """A small params file whose values differ from every model default."""
    path = tmp_path / "params.yaml"
    path.write_text(
        "artifacts_dir: out\n"
        "data:\n  source: /some/where\n  labels: [b, a]\n"
        "train:\n  epochs: 9\n  batch_size: 5\n  learning_rate: 2.5e-3\n"
        "gate:\n  min_accuracy: 0.7\n"
        "mlflow:\n  tracking_uri: sqlite:///db/track.db\n"
    )
    return path


def drift(params: Any, defaults: Any, where: str = "") -> list[str]:
    """Every key where params.yaml and the config classes' defaults disagree, walking both trees."""
    if not (isinstance(params, dict) and isinstance(defaults, dict)):
        return [] if params == defaults else [f"{where}: params.yaml {params!r}, class default {defaults!r}"]
    problems = []
    for key in sorted(set(params) | set(defaults)):
        dotted = f"{where}.{key}" if where else key
        if key not in params:
            problems.append(f"{dotted}: a config field missing from params.yaml")
        elif key not in defaults:
            problems.append(f"{dotted}: in params.yaml but no config field")
        else:
            problems += drift(params[key], defaults[key], dotted)
    return problems


def test_class_defaults_equal_shipped_params_yaml():
    """One source of defaults: code that builds a config without params.yaml gets what users run."""
    assert drift(yaml.safe_load(PARAMS.read_text()), Config().model_dump()) == []
    assert load_config(PARAMS, [], environ={}) == Config()


def test_drift_check_finds_a_changed_a_missing_and_an_unknown_key():
    params = yaml.safe_load(PARAMS.read_text())
    params["train"]["epochs"] += 1
    del params["gate"]["min_accuracy"]
    params["serve"]["colour"] = "red"
    assert drift(params, Config().model_dump()) == [
        "gate.min_accuracy: a config field missing from params.yaml",
        "serve.colour: in params.yaml but no config field",
        f"train.epochs: params.yaml {params['train']['epochs']}, class default {Config().train.epochs}",
    ]


def test_score_section_of_params_yaml_equals_the_model_defaults():
    from pipeline.config import ScoreConfig

    assert yaml.safe_load(PARAMS.read_text())["score"] == ScoreConfig().model_dump()


def test_values_from_a_params_file_override_model_defaults(params_file: Path):
    cfg = load_config(params_file, [], environ={})
    assert cfg.artifacts_dir == "out"
    assert cfg.data.source == "/some/where"
    assert cfg.data.labels == ["b", "a"]
    assert (cfg.train.epochs, cfg.train.batch_size) == (9, 5)
    assert cfg.train.learning_rate == pytest.approx(2.5e-3)
    assert cfg.gate.min_accuracy == 0.7
    # keys the file does not mention keep the model defaults
    assert cfg.gate.min_macro_f1 == Config().gate.min_macro_f1
    assert cfg.train.seed == 42


def test_missing_default_params_gives_model_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # no ./params.yaml here
    assert load_config(None, [], environ={}) == Config()


def test_explicit_missing_params_file_is_an_error(tmp_path: Path):
    with pytest.raises(PipelineError, match="not found"):
        load_config(tmp_path / "nope.yaml", [], environ={})


def test_invalid_yaml_file_is_a_pipeline_error(tmp_path: Path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_config(bad, [], environ={})


def test_set_overrides_parse_values_as_yaml(params_file: Path):
    cfg = load_config(
        params_file,
        [
            "train.max_steps=50",
            "train.learning_rate=0.125",
            "data.labels=null",
            "model.max_length=64",
            "clean.lowercase=true",
        ],
        environ={},
    )
    assert cfg.train.max_steps == 50 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.learning_rate == 0.125 and isinstance(cfg.train.learning_rate, float)
    assert cfg.data.labels is None
    assert cfg.model.max_length == 64
    assert cfg.clean.lowercase is True


def test_set_list_value(params_file: Path):
    cfg = load_config(params_file, ["data.labels=[x, y, z]"], environ={})
    assert cfg.data.labels == ["x", "y", "z"]


def test_parse_overrides_types_and_nesting():
    tree = parse_overrides(["a.b=1", "a.c=2.5", "a.d=null", "e=[1, two]", "f=text", "g="])
    assert tree == {"a": {"b": 1, "c": 2.5, "d": None}, "e": [1, "two"], "f": "text", "g": ""}
    assert type(tree["a"]["b"]) is int and type(tree["a"]["c"]) is float


def test_set_value_keeps_everything_after_first_equals(params_file: Path):
    cfg = load_config(params_file, ["data.source=/data/a=b", "mlflow.tracking_uri=http://host:5000"], environ={})
    assert cfg.data.source == "/data/a=b"
    assert cfg.mlflow.tracking_uri == "http://host:5000"


def test_later_set_wins(params_file: Path):
    cfg = load_config(params_file, ["train.epochs=2", "train.epochs=4"], environ={})
    assert cfg.train.epochs == 4


@pytest.mark.parametrize("key", ["train.bogus", "data.colour", "mlflow.nothing"])
def test_unknown_nested_key_names_the_key(params_file: Path, key: str):
    with pytest.raises(PipelineError) as info:
        load_config(params_file, [f"{key}=1"], environ={})
    assert key in str(info.value)
    assert "invalid configuration" in str(info.value)


def test_unknown_top_level_section_names_the_key(params_file: Path):
    with pytest.raises(PipelineError, match=r"nosuch"):
        load_config(params_file, ["nosuch.key=1"], environ={})


def test_wrongly_typed_value_names_the_key(params_file: Path):
    with pytest.raises(PipelineError, match=r"train\.epochs"):
        load_config(params_file, ["train.epochs=many"], environ={})


def test_constraint_violation_names_the_key(params_file: Path):
    with pytest.raises(PipelineError, match=r"gate\.min_accuracy"):
        load_config(params_file, ["gate.min_accuracy=1.5"], environ={})


@pytest.mark.parametrize("item", ["foo", "=3", " =x", ""])
def test_malformed_set_is_a_pipeline_error(params_file: Path, item: str):
    with pytest.raises(PipelineError, match="dotted.key=value"):
        load_config(params_file, [item], environ={})


def test_set_into_a_scalar_is_a_pipeline_error(params_file: Path):
    with pytest.raises(PipelineError, match="not a section"):
        load_config(params_file, ["train=5", "train.epochs=3"], environ={})


def test_env_tracking_uri_wins_over_file(params_file: Path):
    cfg = load_config(params_file, [], environ={"MLFLOW_TRACKING_URI": "http://env:5000"})
    assert cfg.mlflow.tracking_uri == "http://env:5000"
    assert cfg.tracking_uri == "http://env:5000"


def test_set_wins_over_env_tracking_uri(params_file: Path):
    cfg = load_config(
        params_file, ["mlflow.tracking_uri=http://cli:6000"], environ={"MLFLOW_TRACKING_URI": "http://env:5000"}
    )
    assert cfg.mlflow.tracking_uri == "http://cli:6000"


def test_empty_env_tracking_uri_is_ignored(params_file: Path):
    cfg = load_config(params_file, [], environ={"MLFLOW_TRACKING_URI": ""})
    assert cfg.mlflow.tracking_uri == "sqlite:///db/track.db"


def test_admin_token_from_the_environment_and_set_wins(params_file: Path):
    assert load_config(params_file, [], environ={}).serve.admin_token is None
    assert load_config(params_file, [], environ={"EMOTION_ADMIN_TOKEN": "t0k"}).serve.admin_token == "t0k"
    cfg = load_config(params_file, ["serve.admin_token=cli"], environ={"EMOTION_ADMIN_TOKEN": "t0k"})
    assert cfg.serve.admin_token == "cli"


def test_load_config_from_env_reads_process_environment(params_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://proc-env:1234")
    assert load_config_from_env(params_file, []).mlflow.tracking_uri == "http://proc-env:1234"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert load_config_from_env(params_file, []).mlflow.tracking_uri == "sqlite:///db/track.db"


def test_relative_sqlite_uri_resolves_against_project_dir(params_file: Path, tmp_path: Path):
    project = tmp_path / "proj"
    cfg = load_config(params_file, [f"project_dir={project}"], environ={})
    assert cfg.tracking_uri == f"sqlite:///{project.resolve()}/db/track.db"
    assert cfg.tracking_uri.startswith("sqlite:////")  # four slashes: an absolute path


def test_absolute_sqlite_and_remote_uris_are_unchanged(params_file: Path, tmp_path: Path):
    absolute = f"sqlite:///{tmp_path}/abs.db"
    assert load_config(params_file, [f"mlflow.tracking_uri={absolute}"], environ={}).tracking_uri == absolute
    assert load_config(params_file, ["mlflow.tracking_uri=http://h:1"], environ={}).tracking_uri == "http://h:1"


def test_paths_resolve_against_project_dir(params_file: Path, tmp_path: Path):
    cfg = load_config(params_file, [f"project_dir={tmp_path}"], environ={})
    assert cfg.artifacts == tmp_path.resolve() / "out"
    assert cfg.path("data") == tmp_path.resolve() / "data"
    assert cfg.path("/abs/x") == Path("/abs/x")


# --- recipes: partial params trees layered over params.yaml -----------------------------------------------------


def write_recipe(folder: Path, name: str, text: str) -> Path:
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    path = folder / "recipes" / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", available_recipes(REPO))
def test_every_shipped_recipe_loads_over_params_yaml(name: str):
    cfg = load_config(PARAMS, [], environ={}, recipes=[name])
    assert cfg.recipes == [name]
    assert cfg != load_config(PARAMS, [], environ={})  # a recipe that changes nothing is not a recipe


def test_shipped_recipes_include_the_benchmark_datasets():
    assert {"emotion", "goemotions", "cpu-quick", "gpu"} <= set(available_recipes(REPO))
    goemotions = load_config(PARAMS, [], environ={}, recipes=["goemotions"])
    assert goemotions.data.multi_label is True and goemotions.data.labels is None


def test_layering_params_then_recipes_in_order_then_env_then_set(params_file: Path, tmp_path: Path):
    write_recipe(tmp_path, "first", "train:\n  epochs: 2\n  batch_size: 7\nmlflow:\n  tracking_uri: http://recipe:1\n")
    write_recipe(tmp_path, "second", "train:\n  epochs: 3\n")
    layered = ["first", "second"]
    cfg = load_config(params_file, [f"project_dir={tmp_path}"], environ={}, recipes=layered)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.learning_rate) == (3, 7, 2.5e-3)  # params.yaml's lr
    assert cfg.mlflow.tracking_uri == "http://recipe:1"
    assert cfg.recipes == layered
    env = {"MLFLOW_TRACKING_URI": "http://env:2"}
    cfg = load_config(params_file, [f"project_dir={tmp_path}", "train.epochs=4"], environ=env, recipes=layered)
    assert (cfg.train.epochs, cfg.mlflow.tracking_uri) == (4, "http://env:2")


def test_recipes_key_in_params_or_set_names_the_recipes(params_file: Path, tmp_path: Path):
    write_recipe(tmp_path, "one", "train:\n  epochs: 11\n")
    write_recipe(tmp_path, "two", "train:\n  epochs: 12\n")
    params_file.write_text(params_file.read_text() + f"project_dir: {tmp_path}\nrecipes: [one]\n")
    assert load_config(params_file, [], environ={}).train.epochs == 11
    assert load_config(params_file, ["recipes=[two]"], environ={}).train.epochs == 12
    assert load_config(params_file, ["recipes=[two]"], environ={}, recipes=[]).train.epochs == 9  # argument wins


def test_project_recipe_shadows_the_shipped_one_and_a_path_works(params_file: Path, tmp_path: Path):
    write_recipe(tmp_path, "emotion", "train:\n  epochs: 13\n")
    assert load_config(params_file, [f"project_dir={tmp_path}"], environ={}, recipes=["emotion"]).train.epochs == 13
    elsewhere = write_recipe(tmp_path / "x", "mine", "train:\n  epochs: 14\n")
    cfg = load_config(params_file, [], environ={}, recipes=[str(elsewhere)])
    assert cfg.train.epochs == 14 and cfg.recipes == [str(elsewhere)]


def test_unknown_recipe_lists_the_available_ones(params_file: Path, tmp_path: Path):
    write_recipe(tmp_path, "local-one", "train:\n  epochs: 2\n")
    with pytest.raises(PipelineError) as info:
        load_config(params_file, [f"project_dir={tmp_path}"], environ={}, recipes=["nosuch"])
    message = str(info.value)
    assert "unknown recipe 'nosuch'" in message
    assert all(name in message for name in ("local-one", "emotion", "goemotions", "cpu-quick", "gpu"))


def test_missing_recipe_file_is_an_error(params_file: Path, tmp_path: Path):
    with pytest.raises(PipelineError, match="recipe file .*absent.yaml not found"):
        load_config(params_file, [], environ={}, recipes=[str(tmp_path / "absent.yaml")])


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  epoch: 3\n", r"train\.epoch"),
        ("train:\n  epochs: 0\n", r"train\.epochs"),
        ("train: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a mapping"),
        ("recipes: [other]\n", "names other recipes"),
    ],
)
def test_a_bad_recipe_is_an_error_that_names_its_file(params_file: Path, tmp_path: Path, text: str, needle: str):
    path = write_recipe(tmp_path, "bad", text)
    with pytest.raises(PipelineError, match=needle) as info:
        load_config(params_file, [f"project_dir={tmp_path}"], environ={}, recipes=["bad"])
    assert str(path) in str(info.value)


def test_recipes_must_be_names(params_file: Path):
    with pytest.raises(PipelineError, match="list of recipe names"):
        load_config(params_file, ["recipes=[1, 2]"], environ={})


def test_read_recipe_returns_only_what_the_file_sets():
    assert set(read_recipe("cpu-quick", REPO)) == {"model", "train", "monitor"}


def test_relative_input_paths_given_with_set_mean_the_folder_they_were_typed_in(tmp_path: Path, monkeypatch) -> None:
    """The bench trap: `--set serve.parity_source=../data` beside `--set project_dir=/tmp/p` read ../data from the
    project, found nothing and served fp32 silently. Inputs are read from where the user typed; the project's own
    folders stay inside the project."""
    here = tmp_path / "typed-here"
    (here / "teacher").mkdir(parents=True)
    monkeypatch.chdir(here)
    cfg = load_config(
        PARAMS,
        [
            f"project_dir={tmp_path / 'project'}",
            "serve.parity_source=../data/emotion",
            "data.source=raw/*.csv",
            "monitor.batch_source=batch.jsonl",
            "train.teachers=[teacher]",
            "model.name=teacher",
            "data.snapshot_dir=snap",
        ],
        environ={},
    )
    assert cfg.serve.parity_source == str(here / "../data/emotion")
    assert cfg.data.source == str(here / "raw/*.csv")
    assert cfg.monitor.batch_source == str(here / "batch.jsonl")
    assert cfg.train.teachers == [str(here / "teacher")] and cfg.model.name == str(here / "teacher")
    assert cfg.path(cfg.data.snapshot_dir) == (tmp_path / "project" / "snap").resolve()  # the project's layout


@pytest.mark.parametrize(
    ("override", "kept"),
    [
        ("data.source=sample", "sample"),
        ("data.source=hf:dair-ai/emotion", "hf:dair-ai/emotion"),
        ("data.source=s3://bucket/emotion.csv", "s3://bucket/emotion.csv"),
        ("model.name=embedded", "embedded"),
        ("model.name=bert-base-uncased", "bert-base-uncased"),  # no such folder here: a hub id
        ("data.source=/abs/train.csv", "/abs/train.csv"),
    ],
)
def test_sources_that_are_not_relative_paths_are_kept_as_given(tmp_path: Path, monkeypatch, override, kept) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(PARAMS, [override, "data.labels=null"], environ={})
    key = override.split("=")[0].split(".")
    assert getattr(getattr(cfg, key[0]), key[1]) == kept


def test_paths_in_params_yaml_stay_relative_to_the_project(tmp_path: Path, monkeypatch) -> None:
    params = tmp_path / "project" / "params.yaml"
    params.parent.mkdir()
    params.write_text("serve:\n  parity_source: ../data\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(params, [], environ={}).serve.parity_source == "../data"
