"""The hardened API over real HTTP (uvicorn on a loopback port, the registry of two real training runs): text
that is not Unicode, one bad text in a batch, a chunked body over the limit, version spellings and the load rate,
the bounded queue and the request timeout, the admin token, the Host check and sanitised errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_serve import Server, serve_config, trained_registry, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, prefect_harness: None) -> dict[str, Any]:
    return trained_registry(tmp_path_factory.mktemp("hardening"), tiny_model_dir)


def served(store: dict[str, Any], tiny_model_dir: Path, *extra: str) -> Server:
    return Server(serve_config(store["project"], tiny_model_dir, "serve.backend=torch-fp32", *extra))


def app_state(server: Server) -> Any:
    app: Any = server.server.config.app  # the FastAPI app create_app made
    return app.state


class Gate:
    """Wraps a loaded model's predict: calls wait for ``open`` (when closed) and fail on a poison text."""

    def __init__(self, predict: Any, poison: str = "POISON") -> None:
        self.predict, self.poison = predict, poison
        self.open = threading.Event()
        self.calls: list[list[str]] = []
        self.running = threading.Event()

    def __call__(self, texts: list[str]) -> Any:
        self.calls.append(list(texts))
        self.running.set()
        assert self.open.wait(timeout=60)
        if any(self.poison in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
        return self.predict(texts)


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(server: Server) -> Gate:
        classifier = app_state(server).store.champion.classifier
        gate = Gate(classifier.predict)
        monkeypatch.setattr(classifier, "predict", gate)
        return gate

    return install


def test_text_that_is_not_unicode_is_refused_naming_its_index(store: dict[str, Any], tiny_model_dir: Path) -> None:
    with served(store, tiny_model_dir) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        body = b'{"texts": ["i am happy", "bad \\ud800 text"]}'  # valid JSON, a lone surrogate once decoded
        response = http.post("/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert "texts[1] is not valid Unicode" in response.json()["detail"]
        assert http.post("/predict", json={"texts": ["i am happy", "fine text"]}).status_code == 200


def test_one_failing_text_does_not_fail_the_requests_batched_with_it(
    store: dict[str, Any], tiny_model_dir: Path, gated: Any
) -> None:
    with served(store, tiny_model_dir) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        gate = gated(server)
        batcher = app_state(server).batcher
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(http.post, "/predict", json={"text": "keeps the inference thread busy"})
            wait_for(gate.running.is_set, "the first request to reach the model")
            bad = pool.submit(http.post, "/predict", json={"text": "POISON text"})
            good = pool.submit(http.post, "/predict", json={"texts": ["i am happy", "so glad"]})
            wait_for(lambda: batcher.waiting_texts == 3, "both requests to wait for the same batch")
            gate.open.set()
            assert first.result().status_code == 200
            assert good.result().status_code == 200, good.result().text
            assert len(good.result().json()["predictions"]) == 2
            assert bad.result().status_code == 500
    batched = [call for call in gate.calls if len(call) == 3]
    assert batched and "POISON text" in batched[0], gate.calls  # they did share a forward pass, which failed
    assert ["i am happy", "so glad"] in gate.calls  # and the good request was retried alone


def test_a_chunked_body_over_the_limit_is_cut_off_not_read_whole(store: dict[str, Any], tiny_model_dir: Path) -> None:
    sent = 0

    def body() -> Iterator[bytes]:  # no Content-Length: httpx sends a generator chunked
        nonlocal sent
        chunk = b'{"texts": ["' + b"a" * 65_000
        for _ in range(800):  # 52 MB
            sent += len(chunk)
            yield chunk
            chunk = b"a" * 65_000

    with served(store, tiny_model_dir) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        try:
            response = http.post("/predict", content=body(), headers={"content-type": "application/json"})
            assert response.status_code == 413 and "too large" in response.json()["detail"], response.text
        except httpx.TransportError:  # the server closed the connection before the client read the 413
            pass
        assert sent < 10_000_000, f"{sent} bytes were sent before the server refused"
        assert http.get("/health").status_code == 200


def test_versions_are_normalised_and_on_demand_loads_rate_limited(store: dict[str, Any], tiny_model_dir: Path) -> None:
    extra = ("serve.load_interval_seconds=3600", "serve.max_loaded_versions=1")
    with served(store, tiny_model_dir, *extra) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for bad in ("abc", "-1", "0", "1.0"):
            response = http.get("/model", params={"version": bad})
            assert response.status_code == 422 and "positive integer" in response.json()["detail"], bad
        assert http.post("/predict", json={"text": "hi", "version": "x"}).status_code == 422
        assert http.get("/model", params={"version": "01"}).json()["version"] == "1"  # the champion, not a copy
        first = http.get("/model", params={"version": "2"}).json()
        again = http.get("/model", params={"version": "002"}).json()  # cached: the same load, so no 429
        assert first["version"] == again["version"] == "2" and first["loaded_at"] == again["loaded_at"]
        assert http.post("/predict", json={"text": "hi", "version": 2}).json()["version"] == "2"
        assert http.get("/model", params={"version": "99"}).status_code == 404  # unknown: no load to limit
        app_state(server).store._others.clear()  # version 2 evicted: the next request would load it again
        response = http.get("/model", params={"version": "2"})
        assert response.status_code == 429 and int(response.headers["retry-after"]) > 3000, response.text


def test_a_full_queue_answers_503_and_a_slow_inference_504(
    store: dict[str, Any], tiny_model_dir: Path, gated: Any
) -> None:
    extra = ("serve.max_queue=2", "serve.request_timeout_seconds=3")
    with served(store, tiny_model_dir, *extra) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        gate = gated(server)
        batcher = app_state(server).batcher
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(http.post, "/predict", json={"text": "slow"})
            wait_for(gate.running.is_set, "the first request to reach the model")
            waiting = pool.submit(http.post, "/predict", json={"texts": ["one", "two"]})
            wait_for(lambda: batcher.waiting_texts == 2, "the second request to wait")
            full = http.post("/predict", json={"text": "three"})
            assert full.status_code == 503 and "busy" in full.json()["detail"]
            assert full.headers["retry-after"] == "1"
            assert running.result().status_code == 504 and "3s" in running.result().json()["detail"]
            assert waiting.result().status_code == 504
        gate.open.set()
        wait_for(lambda: batcher.waiting_texts == 0, "the timed-out texts to leave the queue")  # skipped, not run
        assert http.post("/predict", json={"text": "back to normal"}).status_code == 200
    assert ["one", "two"] not in gate.calls  # the request that timed out while waiting was never computed


def test_admin_token_host_check_and_sanitised_errors(
    store: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = ("serve.admin_token=s3cret", "serve.refresh_seconds=0")
    with served(store, tiny_model_dir, *extra) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        for path, method in (("/reload", "POST"), ("/models", "GET")):
            assert http.request(method, path).status_code == 401
            assert http.request(method, path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert http.request(method, path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.post("/predict", json={"text": "open to all"}).status_code == 200
        assert http.get("/health", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
        assert http.get("/health", headers={"Host": f"localhost:{server.port}"}).status_code == 200

        from pipeline.registry import model_spec

        def unreachable(*args: Any) -> None:
            raise ConnectionError("cannot reach https://alice:hunter2@mlflow.internal/api at /srv/secret/path")

        monkeypatch.setattr(model_spec, "by_alias", unreachable)  # how the model store reads an alias
        reload = http.post("/reload", headers={"Authorization": "Bearer s3cret"}).json()
        health = http.get("/health").json()
    for error in (reload["last_error"], health["last_error"]):
        assert error == "reload failed (ConnectionError); see the server log"
    assert health["status"] == "ok" and health["version"] == "1"  # the old model keeps serving


def test_a_slow_explanation_answers_504_and_one_still_waiting_is_skipped(
    store: dict[str, Any], tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.model import explain as attributions

    real, release, running = attributions.explain, threading.Event(), threading.Event()
    texts: list[str] = []

    def slow(predictor: Any, text: str, label: str | None = None, n_steps: int = 32) -> Any:
        texts.append(text)
        running.set()
        assert release.wait(timeout=60)
        return real(predictor, text, label, n_steps)

    monkeypatch.setattr(attributions, "explain", slow)
    with (
        served(store, tiny_model_dir, "serve.request_timeout_seconds=2") as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
        ThreadPoolExecutor(2) as pool,
    ):
        first = pool.submit(http.post, "/explain", json={"text": "a slow explanation"})
        wait_for(running.is_set, "the first explanation to start")
        waiting = pool.submit(http.post, "/explain", json={"text": "one that waits"})
        answer = first.result()
        assert answer.status_code == 504 and "no explanation within 2s" in answer.json()["detail"]
        assert waiting.result().status_code == 504
        release.set()
        assert http.post("/explain", json={"text": "back to normal"}).status_code == 200
    assert texts == ["a slow explanation", "back to normal"]  # the one that timed out while waiting never ran


def test_parity_and_registry_errors_reach_the_api_sanitised(store: dict[str, Any], tiny_model_dir: Path) -> None:
    from tests.integration.test_registry_integrity import broken_alias_table

    secret_source = "/srv/alice-hunter2/emotions.csv"  # unreadable: the parity check cannot run
    extra = ("serve.backend=int8", f"serve.parity_source={secret_source}", "serve.refresh_seconds=0.2")
    server = Server(serve_config(store["project"], tiny_model_dir, *extra))
    with server, httpx.Client(base_url=server.url, timeout=60) as http:
        model = http.get("/model")
        parity = model.json()["parity"]
        assert parity["passed"] is False and model.json()["backend"] == "torch-fp32"
        assert "the parity data could not be read (PipelineError); see the server log" in parity["reason"]
        assert "hunter2" not in model.text

        with broken_alias_table(store["cfg"]):  # the registry fails every read from now on
            wait_for(lambda: app_state(server).store.last_error, "a refresh to fail")
            other = http.get("/model", params={"version": "2"})
            health = http.get("/health").json()
        assert other.status_code == 503
        assert other.json()["detail"] == "the registry could not be read (MlflowException); see the server log"
        assert health["last_error"] == "reload failed (RegistryUnavailable); see the server log"
        assert health["version"] == "1"  # still serving
