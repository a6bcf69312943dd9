"""The Ray Serve replica's pieces that need no cluster: its health check over the app's inference thread, the
config each replica runs, and the proxy routing chosen for each proxy location."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.config import load_config
from pipeline.serving.batcher import Batcher
from pipeline.serving.ray_serve import EmotionAPI, proxy_env, replica_config
from tests.conftest import PARAMS


def test_health_check_fails_only_when_the_inference_thread_has_stopped(tmp_path: Path) -> None:
    replica = EmotionAPI(load_config(PARAMS, [f"project_dir={tmp_path}"], environ={}).model_dump(mode="json"))
    replica.check_health()  # before the app is built (Serve builds it right after the constructor)
    batcher = Batcher(8)
    replica.api = SimpleNamespace(state=SimpleNamespace(batcher=batcher))  # type: ignore[assignment]
    batcher.start()
    replica.check_health()
    batcher.stop()
    with pytest.raises(RuntimeError, match="inference thread has stopped"):
        replica.check_health()


def test_replicas_get_an_absolute_project_and_threads_for_their_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PARAMS.parent)
    cfg = replica_config(load_config(PARAMS, ["project_dir=.", "serve.ray_cpus_per_replica=2"], environ={}))
    assert cfg.project_dir == str(PARAMS.parent) and cfg.serve.threads == 2
    fixed = replica_config(load_config(PARAMS, ["serve.threads=3", "serve.ray_cpus_per_replica=0.5"], environ={}))
    assert fixed.serve.threads == 3
    assert replica_config(load_config(PARAMS, ["serve.ray_cpus_per_replica=0.5"], environ={})).serve.threads == 1


def test_one_proxy_on_the_head_routes_to_every_node() -> None:
    assert proxy_env("HeadOnly") == {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    assert proxy_env("EveryNode") == {}


def test_serve_refuses_a_ray_address_without_the_ray_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import emotion_cli

    assert emotion_cli.main(["serve", "--address", "10.0.0.1:6379", "--set", f"project_dir={tmp_path}"]) == 2
    assert "--address is for --engine ray" in capsys.readouterr().err
