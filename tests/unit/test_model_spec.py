"""pipeline.registry.model_spec on a real sqlite MLflow store: every spec form, and one clear error per mistake."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

import emotion_cli as cli
from pipeline.config import Config, load_config
from pipeline.errors import PipelineError
from pipeline.registry import connection, model_spec, model_versions, run_log
from pipeline.registry.model_spec import ModelRef, Registry, UnknownModel, resolve
from tests.conftest import PARAMS

pytestmark = pytest.mark.slow  # one real sqlite store with two logged versions (about 10-30 s to set up)

MODEL = "emotion-classifier"
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_classifier_dir: Path) -> Config:
    """Two registered versions, each from its own run: 1 is the champion, 2 the challenger."""
    project = tmp_path_factory.mktemp("spec-store")
    cfg = load_config(PARAMS, [f"project_dir={project}", f"mlflow.lock_file={project}/mlflow/lock"], environ={})
    client = connection.client(cfg.registry)
    for alias in (model_versions.CHAMPION, model_versions.CHALLENGER):
        run_id = client.create_run(connection.experiment_id(cfg.registry, client)).info.run_id
        logged = run_log.log_model(run_id, tiny_classifier_dir, LABELS)
        version = model_versions.register(cfg.registry, client, logged, run_id, {"data_hash": f"hash-{alias}"}, "card")
        model_versions.set_alias(cfg.registry, client, alias, version)
    return cfg


@pytest.fixture
def registry(store: Config) -> Registry:
    return Registry.of(store.registry)


@pytest.mark.parametrize(
    "spec, version",
    [
        (None, "1"),
        ("@champion", "1"),
        ("@challenger", "2"),
        ("2", "2"),
        ("02", "2"),
        (f"models:/{MODEL}/1", "1"),
        (f"models:/{MODEL}@challenger", "2"),
    ],
)
def test_registry_forms_pin_one_version(registry: Registry, spec: str | None, version: str) -> None:
    ref = resolve(spec, registry)
    assert (ref.name, ref.version, ref.uri, ref.folder) == (MODEL, version, f"models:/{MODEL}/{version}", None)
    assert ref.record.tags["data_hash"] == ("hash-champion" if version == "1" else "hash-challenger")


def test_an_alias_is_pinned_when_resolved(store: Config, registry: Registry) -> None:
    ref = resolve("@challenger", registry)
    client = connection.client(store.registry)
    model_versions.set_alias(store.registry, client, model_versions.CHALLENGER, "1")
    try:
        assert ref.version == "2" and resolve("@challenger", registry).version == "1"
    finally:
        model_versions.set_alias(store.registry, client, model_versions.CHALLENGER, "2")


def test_a_folder_needs_no_registry_and_its_version_follows_its_content(
    tiny_classifier_dir: Path, tmp_path: Path
) -> None:
    def no_store() -> None:
        raise AssertionError("a folder spec must not open the registry")

    offline = Registry(MODEL, no_store, "sqlite:///nowhere.db")
    ref = resolve(str(tiny_classifier_dir), offline)
    assert ref.folder == tiny_classifier_dir.resolve() and ref.uri is None and ref.record is None
    assert ref.version.startswith("folder-") and resolve(str(tiny_classifier_dir), offline).version == ref.version

    copy = tmp_path / "copy"
    copy.mkdir()
    for item in tiny_classifier_dir.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    assert resolve(str(copy), offline).version == ref.version  # same content, same version
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(config | {"note": "changed"}))
    assert resolve(str(copy), offline).version != ref.version


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("@nosuch", UnknownModel, f"'{MODEL}' has no @nosuch in "),
        ("9", UnknownModel, f"version 9 of '{MODEL}' does not exist"),
        (f"models:/{MODEL}/9", UnknownModel, f"version 9 of '{MODEL}' does not exist"),
        ("models:/other-model/1", UnknownModel, "version 1 of 'other-model' does not exist"),
        (f"models:/{MODEL}@nosuch", UnknownModel, f"'{MODEL}' has no @nosuch"),
        ("0", PipelineError, "'0' is not a version number"),
        ("v3", PipelineError, "'v3' is not a version number"),
        ("3.0", PipelineError, "'3.0' is not a version number"),
        ("-1", PipelineError, "'-1' is not a version number"),
        (f"models:/{MODEL}/latest", PipelineError, "'latest' is not a version number"),
        ("@bad alias", PipelineError, "'@bad alias' is not an alias"),
        ("models:/broken", PipelineError, "is not a model folder, a version number, an @alias"),
        ("runs:/0123/model", PipelineError, "is not a model folder, a version number, an @alias"),
        ("/nonexistent/dir", UnknownModel, "no model folder /nonexistent/dir"),
        ("  ", PipelineError, "--model is empty"),
    ],
)
def test_each_mistake_has_its_own_error(
    registry: Registry, spec: str, error: type[PipelineError], message: str
) -> None:
    with pytest.raises(error) as info:
        resolve(spec, registry)
    assert message in str(info.value)
    assert not isinstance(info.value, connection.RegistryUnavailable)
    assert error is UnknownModel or not isinstance(info.value, UnknownModel)


def test_a_folder_without_a_model_is_an_error(tmp_path: Path, registry: Registry) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownModel, match=r"no trained model in .*empty \(config.json missing\)"):
        resolve(str(tmp_path / "empty"), registry)


def test_a_failing_store_is_not_a_missing_model(store: Config, registry: Registry) -> None:
    """A damaged alias table is a store failure (RegistryUnavailable), never 'no such alias'."""
    database = store.tracking_uri.removeprefix("sqlite:///")
    with sqlite3.connect(database) as db:
        db.execute("ALTER TABLE registered_model_aliases RENAME TO hidden_aliases")
    try:
        with pytest.raises(connection.RegistryUnavailable) as info:
            resolve("@champion", registry)
    finally:
        with sqlite3.connect(database) as db:
            db.execute("ALTER TABLE hidden_aliases RENAME TO registered_model_aliases")
    assert "failed to look up the alias 'champion'" in str(info.value)
    assert "has no @" not in str(info.value) and not isinstance(info.value, UnknownModel)


def test_download_gives_a_registry_version_its_folder(registry: Registry, tmp_path: Path) -> None:
    ref = model_spec.download(resolve("2", registry), tmp_path / "v2")
    assert ref.folder is not None and (ref.folder / "config.json").exists() and ref.version == "2"
    assert ref.folder.is_relative_to(tmp_path / "v2")
    local = ModelRef("m", "folder-x", None, tmp_path)
    assert model_spec.download(local) is local


def test_predict_takes_every_form(store: Config, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    for key, value in cli.QUIET_ENV.items():  # cli.main setdefault()s them: pin them so monkeypatch restores them
        monkeypatch.setenv(key, os.environ.get(key, value))
    args = ["predict", "--config", str(PARAMS), "--set", f"project_dir={store.project_dir}"]
    args += ["--set", f"mlflow.lock_file={store.mlflow.lock_file}", "--json"]
    for spec in ("@challenger", "2", f"models:/{MODEL}@champion"):
        assert cli.main([*args, "--model", spec, "i feel fine"]) == 0, capsys.readouterr().err
        (prediction,) = json.loads(capsys.readouterr().out)
        assert prediction["label"] in LABELS
    assert cli.main([*args, "--model", "9", "i feel fine"]) == 2
    assert f"error: version 9 of '{MODEL}' does not exist" in capsys.readouterr().err
