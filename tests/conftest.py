"""Shared fixtures: offline and telemetry-free settings, a tiny random BERT and one it fine-tuned on cue words,
temp DVC projects."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

QUIET = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
}
os.environ.update(QUIET)
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests always use their own temp store

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
PARAMS = REPO / "params.yaml"
BIN = Path(sys.executable).parent
# SemEval-2018 E-c's 11 indicator columns, in file order (../shared/data/semeval2018-ec)
SEMEVAL_LABELS = [
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "love",
    "optimism",
    "pessimism",
    "sadness",
    "surprise",
    "trust",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) with the embedded model's tokenizer: trains in seconds."""
    from tests.tiny_bert import save_tiny_bert

    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def classifier_folder(base: Path, out: Path, labels: list[str], multi_label: bool = False) -> Path:
    """The tiny BERT with a fresh classification head: a servable model folder without any training."""
    import torch

    from pipeline.model.modeling import load_classifier, load_tokenizer

    torch.manual_seed(1)
    load_classifier(str(base), labels, multi_label).save_pretrained(out)
    load_tokenizer(str(base)).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny BERT as an untrained six-emotion classifier: about 1/6 for every label, so only for plumbing tests
    that check no answer (formats, errors, resume); tests of answers use `learned_model_dir`."""
    labels = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    return classifier_folder(tiny_model_dir, tmp_path_factory.mktemp("tiny-classifier"), labels)


LEARNED_TRAINING = [
    "model.max_length=32",
    "train.epochs=8",
    "train.batch_size=32",
    "train.learning_rate=1e-2",
    "train.warmup_fraction=0.0",
    "train.device=cpu",
    "train.precision=fp32",
    "train.seed=7",
]

# the fixture's settings at half the learning rate, for longer, for the training flow on a cue-word folder: at 1e-2
# that data (seeds 40-42) merged two emotions
FLOW_TRAINING = [*LEARNED_TRAINING, "train.epochs=12", "train.learning_rate=5e-3"]


FRAME_COLUMNS = ["text", "label", "split"]


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train the tiny model on one torch thread: on a busy 2-core machine two threads took 150 s instead of 5."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_cue_folder(folder: Path, sizes: dict[str, int]) -> Path:
    """A data folder of cue-word texts, one dair-ai style "text;label" file per split (seeded per split)."""
    from tests.synthetic_text import cue_rows

    folder.mkdir(parents=True, exist_ok=True)
    for seed, (split, n) in enumerate(sizes.items()):
        (folder / f"{split}.txt").write_text("".join(f"{text};{label}\n" for text, label in cue_rows(n, seed + 40)))
    return folder


LEARNED_MIN_ACCURACY = 0.95


@pytest.fixture(scope="session")
def learned_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny BERT fine-tuned by the project's own training code on cue-word texts: a normal model folder
    (tokenizer, label map, calibration) whose answers differ by text, so order, parity and explanation tests can
    fail. About 5 s; fails loudly if it no longer reaches LEARNED_MIN_ACCURACY on held-out cue texts."""
    import pandas as pd

    from pipeline.config import load_config
    from pipeline.data.encode import encode
    from pipeline.model.predict import Predictor
    from pipeline.training.train import train
    from tests.synthetic_text import EMOTIONS, cue_rows

    splits = {"train": cue_rows(600, seed=0), "validation": cue_rows(60, seed=1, noise=0.1), "test": cue_rows(60, 2)}
    frame = pd.DataFrame([(t, label, s) for s, rows in splits.items() for t, label in rows], columns=FRAME_COLUMNS)
    cfg = load_config(PARAMS, [f"model.name={tiny_model_dir}", *LEARNED_TRAINING], environ={})
    out = tmp_path_factory.mktemp("learned") / "model"
    with one_torch_thread():
        train(encode(frame, EMOTIONS), cfg.model, cfg.train, out)
    held_out = cue_rows(240, seed=99)
    probs = Predictor(out, device="cpu", precision="fp32").predict_proba([text for text, _ in held_out])
    accuracy = sum(EMOTIONS[i] == label for i, (_, label) in zip(probs.argmax(axis=1), held_out)) / len(held_out)
    assert accuracy >= LEARNED_MIN_ACCURACY, f"the learned fixture model reached only {accuracy:.3f} on held-out cues"
    return out


def in_ci() -> bool:
    """True in CI (CI=true): there a missing browser, service or dataset is a broken set-up, not a reason to skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: bool, what: str) -> None:
    """Skip the calling test when ``what`` is missing on this machine; under CI=true fail it instead, so CI cannot
    pass without running the tests that need Chromium, ../shared/data, PostgreSQL or Ray."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{what} is missing and CI=true requires it: install or provide it", pytrace=False)
    pytest.skip(f"{what} is missing")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "requires(condition, what): the test needs what (see require)")
    config.addinivalue_line("markers", "fresh_registry: the `project` fixture without its seeded MLflow store")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.requires(condition, what)` on a test or module: `require(condition, what)` before it runs."""
    for mark in item.iter_markers("requires"):
        require(*mark.args)


def init_project(path: Path, registry: bool = True) -> Path:
    """A fresh git + DVC repository, as a user's clone would be; with ``registry``, also an empty MLflow store."""
    path.mkdir(parents=True, exist_ok=True)
    run = lambda *cmd: subprocess.run(cmd, cwd=path, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "test@example.com")
    run("git", "config", "user.name", "test")
    run(str(BIN / "dvc"), "init", "-q")
    run("git", "commit", "-q", "-m", "init")
    if registry:
        seed_registry(path)
    return path


def seed_registry(project: Path) -> None:
    """An empty MLflow store where params.yaml puts it (``mlflow/mlflow.db``), copied from a template migrated once
    per MLflow version (tests/mlflow_store.py): a new store's schema migrations took about 5 s, paid by every test
    project that reached the registry. Tests of a user's first run on a new project (two runs setting the store up
    at once, the console of a first run) take ``fresh_registry`` instead. The Default experiment's artifact
    location is set as a store created in the project would have it (this pipeline logs to its own experiment)."""
    import sqlite3

    from tests.mlflow_store import migrated_template

    db = project / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(migrated_template(), db)
    with contextlib.closing(sqlite3.connect(db)) as store, store:
        store.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", [str(project / "mlruns/0")]
        )


@pytest.fixture
def project(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh project with an empty MLflow store; ``@pytest.mark.fresh_registry``: without one (the pipeline makes
    it, as on a user's first run)."""
    return init_project(tmp_path / "project", registry=request.node.get_closest_marker("fresh_registry") is None)


def tiny_overrides(project: Path, model_dir: Path, *extra: str) -> list[str]:
    """--set overrides for a fast run of the shipped params.yaml inside a temp project."""
    return [
        f"project_dir={project}",
        f"model.name={model_dir}",
        "model.max_length=64",
        "train.epochs=2",
        "train.batch_size=32",
        "train.learning_rate=1e-3",
        "gate.min_accuracy=0.0",
        "gate.min_macro_f1=0.0",
        "gate.min_class_f1=0.0",
        "gate.max_ece=1.0",
        "gate.min_mft_accuracy=0.0",
        "gate.min_invariance=0.0",
        f"mlflow.lock_file={project}/mlflow/registry.lock",
        "serve.export_onnx=false",  # the ONNX export at registration: 1.6 s a run; its tests turn it on
        *extra,
    ]


@pytest.fixture
def tiny_config(project: Path, tiny_model_dir: Path):
    """Config for the temp project with the tiny model; call with extra KEY=VALUE overrides."""
    from pipeline.config import load_config

    return lambda *extra: load_config(PARAMS, tiny_overrides(project, tiny_model_dir, *extra), environ={})


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect API for the session, results kept out of the user's home."""
    storage = tmp_path_factory.mktemp("prefect-results")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(storage)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api(prefect_harness: None) -> str:
    """The session's Prefect API URL, for `emotion` subprocesses (see ``cli_env``)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def cli_env(prefect_api: str | None, **extra: str) -> dict[str, str]:
    """The environment of an `emotion` subprocess: this one's without Prefect settings, then ``prefect_api`` (the
    session's server: a temporary server started and stopped in each run cost about 8 s of a tiny run's 25) or None
    (the run starts its own temporary server, as a user's first run does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return env | ({"PREFECT_API_URL": prefect_api} if prefect_api else {}) | extra


@pytest.fixture
def prefect_server(tmp_path: Path):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME (sqlite): (API URL, client env)."""
    from tests.servers import prefect_server as start_server

    with start_server(tmp_path / "prefect-home") as api:
        yield api


@pytest.fixture(scope="module")
def ray_cluster():
    """A real two-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py): the head's HOST:PORT, stopped at the end."""
    from tests.ray_cluster import two_node_cluster

    with two_node_cluster() as address:
        yield address


def copy_sample(dst: Path) -> Path:
    """A writable copy of the shipped sample dataset (to corrupt in tests)."""
    from pipeline.data.ingest import sample_data_dir

    dst.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        shutil.copy(sample_data_dir() / f"{split}.txt", dst / f"{split}.txt")
    return dst


def default_sigint() -> None:
    """In a child before exec: Ctrl-C at its default, as in a terminal. A child inherits an ignored SIGINT when the
    suite itself runs in the background (`make test &`), and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    """A free TCP port on the loopback interface, for servers the tests start."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
