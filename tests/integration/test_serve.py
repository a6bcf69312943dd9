"""The REST API over real HTTP: a uvicorn server on a free loopback port, a temp sqlite MLflow store with two
versions registered by the real training flow, hot reload when the champion alias moves, the `emotion serve`
command, and the demo page driven in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipeline import stages
from pipeline.registry import champion_alias, connection, model_versions, run_log
from tests.conftest import (
    BIN,
    FLOW_TRAINING,
    PARAMS,
    free_port,
    init_project,
    one_torch_thread,
    tiny_overrides,
    write_cue_folder,
)
from tests.synthetic_text import ORDERED

pytestmark = pytest.mark.slow

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
MAX_TEXTS, MAX_CHARS = 8, 300
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def wait_for(predicate: Any, what: str, timeout: float = 120.0, every: float = 0.2) -> Any:
    """Poll until ``predicate()`` is truthy (a generous deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")


class Server:
    """uvicorn serving ``create_app(cfg)`` in a thread on 127.0.0.1."""

    def __init__(self, cfg: Any) -> None:
        import uvicorn

        from pipeline.serving.app import create_app
        from pipeline.serving.timeouts import header_timeout_protocol

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(cfg),
                host="127.0.0.1",
                port=self.port,
                http=header_timeout_protocol(cfg.serve.body_timeout_seconds),  # as `emotion serve` runs it
                log_level="warning",
                access_log=False,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), "the server to start")
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def serve_config(project: Path, tiny_model_dir: Path, *extra: str) -> Any:
    from pipeline.config import load_config

    return load_config(
        PARAMS,
        tiny_overrides(
            project,
            tiny_model_dir,
            f"serve.max_texts={MAX_TEXTS}",
            f"serve.max_chars={MAX_CHARS}",
            "serve.refresh_seconds=0.5",
            *extra,
        ),
        environ={},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, prefect_harness: None) -> dict[str, Any]:
    return trained_registry(tmp_path_factory.mktemp("serve"), tiny_model_dir)


def trained_registry(folder: Path, tiny_model_dir: Path) -> dict[str, Any]:
    """A project whose registry holds versions 1 and 2 from two real training runs on cue-word texts (models that
    learned, so answers differ by text and can be checked); champion = 1."""
    from flows.training import training_flow

    project = init_project(folder / "project")
    source = write_cue_folder(folder / "cues", {"train": 600, "validation": 120, "test": 120})
    settings = (*FLOW_TRAINING, f"data.source={source}", "serve.export_onnx=true")  # the onnx-* tests serve it
    cfg = serve_config(project, tiny_model_dir, *settings)
    with one_torch_thread():
        training_flow(cfg)
        training_flow(serve_config(project, tiny_model_dir, *settings, "train.seed=8"))
    client = connection.client(cfg.registry)
    model_versions.set_alias(cfg.registry, client, model_versions.CHAMPION, "1")
    return {"project": project, "cfg": cfg, "client": client}


def registered_registry(folder: Path, tiny_model_dir: Path, classifier_dir: Path) -> dict[str, Any]:
    """A project whose registry holds ``classifier_dir`` (the session's learned fixture model) as versions 1
    (champion) and 2: a servable registry in seconds, for tests of the API itself rather than of training."""
    project = init_project(folder / "project")
    cfg = serve_config(project, tiny_model_dir, "serve.backend=torch-fp32")
    client = connection.client(cfg.registry)
    for _ in range(2):
        run_id = stages.start_run(cfg, client)
        logged = run_log.log_model(run_id, classifier_dir, LABELS)
        model_versions.register(cfg.registry, client, logged, run_id, {"gate": "passed"}, "")
    model_versions.set_alias(cfg.registry, client, model_versions.CHAMPION, "1")
    return {"project": project, "cfg": cfg, "client": client}


@pytest.fixture(scope="module")
def api(store: dict[str, Any]):
    with Server(store["cfg"]) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_health_reports_the_champion(api: httpx.Client) -> None:
    body = api.get("/health").json()
    assert body["status"] == "ok" and body["version"] == "1" and body["model"] == "emotion-classifier"
    assert body["backend"] in ("torch-bf16", "torch-fp32") and body["last_error"] is None


def test_predict_one_text(api: httpx.Client) -> None:
    response = api.post("/predict", json={"text": "we went to the park and it was happy"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "emotion-classifier" and body["version"] == "1"
    [prediction] = body["predictions"]
    assert prediction["label"] == "joy"
    assert sorted(prediction["probabilities"]) == sorted(LABELS)
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)
    assert prediction["score"] == pytest.approx(prediction["probabilities"][prediction["label"]], abs=1e-5)


def test_predict_batch_keeps_order_and_matches_single_answers(api: httpx.Client) -> None:
    texts = [text for text, _ in ORDERED]
    body = api.post("/predict", json={"texts": texts}).json()
    assert body["version"] == "1" and [p["label"] for p in body["predictions"]] == [label for _, label in ORDERED]
    for text, batched in zip(texts, body["predictions"]):
        single = api.post("/predict", json={"text": text}).json()["predictions"][0]
        assert single["label"] == batched["label"]
        for label in LABELS:
            assert single["probabilities"][label] == pytest.approx(batched["probabilities"][label], abs=0.02)


def test_model_reports_version_labels_data_hash_metrics(api: httpx.Client, store: dict[str, Any]) -> None:
    body = api.get("/model").json()
    tags = store["client"].get_model_version("emotion-classifier", "1").tags
    assert body["version"] == "1" and body["labels"] == LABELS and "champion" in body["aliases"]
    assert body["data_hash"] == tags["data_hash"] and body["data_hash"]
    assert body["metrics"] == {"accuracy": float(tags["accuracy"]), "macro_f1": float(tags["macro_f1"])}
    assert body["requested_backend"] == "torch-bf16"
    parity = body["parity"]
    # bf16 is served only if its accuracy on the data's test split is within 0.3 points of fp32; else fp32
    assert parity["n"] == 120 and Path(parity["source"]).name == "cues" and parity["tolerance"] == 0.003
    assert parity["passed"] == (abs(parity["candidate_accuracy"] - parity["reference_accuracy"]) <= 0.003)
    assert body["backend"] == ("torch-bf16" if parity["passed"] else "torch-fp32"), parity["reason"]


def test_models_lists_registry_versions(api: httpx.Client) -> None:
    body = api.get("/models").json()
    assert body["serving"] == "1"
    versions = {v["version"]: v for v in body["versions"]}
    assert set(versions) == {"1", "2"} and "champion" in versions["1"]["aliases"]
    assert versions["1"]["loaded"] and versions["2"]["data_hash"]


def test_predict_with_another_version(api: httpx.Client) -> None:
    response = api.post("/predict", json={"text": "i am scared of the dark", "version": "2"})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "2"
    assert api.get("/model", params={"version": 2}).json()["version"] == "2"
    assert api.get("/health").json()["version"] == "1"  # the champion did not change


def test_openapi_schema(api: httpx.Client) -> None:
    schema = api.get("/openapi.json").json()
    assert {"/predict", "/health", "/model", "/models", "/reload"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["PredictRequest"]
    assert {"text", "texts", "version"} <= set(request["properties"])
    assert "PredictResponse" in schema["components"]["schemas"]


BAD_REQUESTS = {
    "empty text": ({"text": ""}, "text is empty"),
    "blank text": ({"text": "   \n "}, "text is empty"),
    "empty text in a batch": ({"texts": ["fine", ""]}, "texts[1] is empty"),
    "empty batch": ({"texts": []}, "'texts' is empty"),
    "text not a string": ({"text": 42}, "text: Input should be a valid string"),
    "texts not a list": ({"texts": "one text"}, "texts: Input should be a valid list"),
    "texts of numbers": ({"texts": ["ok", 3]}, "texts[1]: Input should be a valid string"),
    "both text and texts": ({"text": "a", "texts": ["b"]}, "either 'text'"),
    "neither": ({}, "either 'text'"),
    "unknown field": ({"text": "a", "txet": "b"}, "txet: Extra inputs are not permitted"),
    "too many texts": ({"texts": ["so happy"] * (MAX_TEXTS + 1)}, f"too many texts: {MAX_TEXTS + 1} > {MAX_TEXTS}"),
    "too long text": ({"text": "a" * (MAX_CHARS + 1)}, f"text is too long: {MAX_CHARS + 1} characters > {MAX_CHARS}"),
}


@pytest.mark.parametrize("kind", list(BAD_REQUESTS))
def test_bad_request_gets_4xx_and_the_service_keeps_serving(api: httpx.Client, kind: str) -> None:
    payload, message = BAD_REQUESTS[kind]
    response = api.post("/predict", json=payload)
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert api.post("/predict", json={"text": "still here?"}).status_code == 200


def test_malformed_body_unknown_version_and_huge_body(api: httpx.Client) -> None:
    response = api.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["detail"]
    response = api.post("/predict", json={"text": "hello", "version": "99"})
    assert response.status_code == 404 and "no version 99" in response.json()["detail"]
    response = api.post("/predict", content=b"x" * 3_000_000, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "too large" in response.json()["detail"]
    assert api.get("/health").json()["status"] == "ok"


def test_explain_gives_each_word_of_the_text_an_attribution(api: httpx.Client) -> None:
    text = "we went to the park and it was happy today"
    body = api.post("/explain", json={"text": text}).json()
    assert body["words"] == text.split() and len(body["scores"]) == len(body["words"])
    assert body["version"] == "1" and body["label"] == "joy" and body["n_steps"] == 32
    assert body["words"][max(range(len(body["scores"])), key=body["scores"].__getitem__)] == "happy"
    assert body["label"] == api.post("/predict", json={"text": text}).json()["predictions"][0]["label"]
    assert sum(body["scores"]) - (body["logit"] - body["baseline_logit"]) == pytest.approx(body["delta"], abs=1e-3)
    other = api.post("/explain", json={"text": text, "label": "fear", "version": 2}).json()
    assert other["label"] == "fear" and other["version"] == "2" and other["words"] == body["words"]
    assert other["scores"] != body["scores"]


def test_explain_refuses_an_unknown_label_or_a_long_text(api: httpx.Client) -> None:
    response = api.post("/explain", json={"text": "fine", "label": "bored"})
    assert response.status_code == 422 and "unknown label 'bored'" in response.json()["detail"]
    response = api.post("/explain", json={"text": "x" * (MAX_CHARS + 1)})
    assert response.status_code == 422 and "too long" in response.json()["detail"]
    assert api.post("/explain", json={"text": "fine", "version": "99"}).status_code == 404


@pytest.mark.requires(CHROMIUM is not None, "chromium (apt-get install chromium; .ci/run installs it)")
def test_demo_page_in_headless_chromium(api: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "demo.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            page.goto(str(api.base_url), wait_until="networkidle")
            options = page.locator("#version option").all_inner_texts()
            assert options[0] == "champion (version 1)" and len(options) == 3, options
            page.select_option("#version", "2")
            page.fill("#text", "i am so happy and grateful for my friends today")
            page.click("#classify")
            page.wait_for_selector("svg#chart rect.bar", timeout=60_000)
            bars = page.locator("svg#chart rect.bar")
            assert bars.count() == 6
            shown = {
                bars.nth(i).get_attribute("data-label"): float(bars.nth(i).get_attribute("data-probability"))
                for i in range(6)
            }
            assert sorted(shown) == sorted(LABELS) and sum(shown.values()) == pytest.approx(1.0, abs=1e-3)
            assert page.text_content("#label") == max(shown, key=shown.get)
            assert "version 2" in page.inner_text("#meta")
            # a bad request shows the service's message, and the page still works afterwards
            page.fill("#text", "x" * (MAX_CHARS + 5))
            page.click("#classify")
            page.wait_for_selector("#error", state="visible")
            assert "too long" in page.inner_text("#error")
            text = "i am so happy and grateful for my friends today"
            page.fill("#text", text)
            page.click("#classify")
            page.wait_for_selector("#error", state="hidden")
            compare_and_explain(page, text)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"demo screenshot: {shot}")


def compare_and_explain(page: Any, text: str) -> None:
    """Version 2 beside version 1 (each with its registry test metrics), then each word coloured by attribution."""
    page.select_option("#version-b", "1")
    page.click("#classify")
    page.wait_for_selector("svg#chart-b rect.bar", timeout=60_000)
    assert page.locator("svg#chart rect.bar").count() == 6 and page.locator("svg#chart-b rect.bar").count() == 6
    assert "version 2" in page.inner_text("#meta") and "version 1" in page.inner_text("#meta-b")
    for metrics in ("#metrics", "#metrics-b"):
        assert re.fullmatch(r"test accuracy \d\.\d{3} · macro F1 \d\.\d{3} · gate \w+", page.inner_text(metrics))
    assert page.text_content("#label-b") in LABELS
    first, second = page.locator("#result").bounding_box(), page.locator("#result-b").bounding_box()
    assert first and second and second["x"] > first["x"] + first["width"] - 1  # side by side
    page.click("#explain")
    page.wait_for_selector("#words-b .word", timeout=120_000)
    page.wait_for_selector("#words .word", timeout=120_000)
    for box in ("#words", "#words-b"):
        words = page.locator(f"{box} .word")
        assert words.all_inner_texts() == text.split()
        scores = [float(words.nth(i).get_attribute("data-score")) for i in range(words.count())]
        assert any(score != 0 for score in scores)
    assert "why " in page.inner_text("#words .legend")


def test_hot_reload_when_the_champion_moves(api: httpx.Client, store: dict[str, Any]) -> None:
    """Move the alias to version 2; the interval check swaps it in while requests keep being answered."""
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as http:
            while not stop.is_set():
                r = http.post("/predict", json={"texts": ["i feel wonderful today", "so angry right now"]})
                seen.append((r.status_code, r.json().get("version")))

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        wait_for(lambda: len(seen) >= 3, "requests before the reload")
        model_versions.set_alias(store["cfg"].registry, store["client"], model_versions.CHAMPION, "2")
        wait_for(lambda: api.get("/health").json()["version"] == "2", "the new champion to be served")
        count = len(seen)
        wait_for(lambda: len(seen) >= count + 3, "requests after the reload")
    finally:
        stop.set()
        worker.join()
    assert {status for status, _ in seen} == {200}
    versions = [version for _, version in seen]
    assert set(versions) <= {"1", "2"} and versions[0] == "1" and versions[-1] == "2"
    assert versions.index("2") > 0 and "1" not in versions[versions.index("2") :]  # no flapping back
    assert api.get("/model").json()["version"] == "2"

    # POST /reload answers at once with nothing to do, and after moving the alias back it swaps on request
    assert api.post("/reload").json() == {"changed": False, "version": "2", "last_error": None}
    model_versions.set_alias(store["cfg"].registry, store["client"], model_versions.CHAMPION, "1")
    reloaded = api.post("/reload").json()
    if reloaded["changed"] is False:  # the interval thread may have won the race; either way 1 is served
        assert reloaded["version"] == "1"
    assert api.post("/predict", json={"text": "back to one"}).json()["version"] == "1"


def test_service_without_a_champion_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    cfg = serve_config(tmp_path / "empty", tiny_model_dir, "serve.backend=torch-fp32")
    with Server(cfg) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "no model"
        response = http.post("/predict", json={"text": "anyone there?"})
        assert response.status_code == 503 and "champion" in response.json()["detail"]
        assert http.get("/models").json()["versions"] == []
        assert http.post("/predict", json={"text": ""}).status_code == 422  # validation still answers


def test_emotion_serve_command(store: dict[str, Any], tiny_model_dir: Path, tmp_path: Path) -> None:
    """`emotion serve` (what `make serve` runs) binds 127.0.0.1, answers, and stops cleanly on Ctrl-C."""
    port = free_port()
    sets = [
        f"--set={item}"
        for item in tiny_overrides(store["project"], tiny_model_dir, "serve.backend=int8", "serve.access_log=false")
    ]
    # mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which would point the server at another test's store
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "emotion"), "serve", "--port", str(port), *sets],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            def up() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return http.get("/health").status_code == 200
                except httpx.TransportError:
                    return False

            try:
                wait_for(up, "emotion serve to answer", timeout=180, every=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log_path.read_text()}") from None
            body = http.post("/predict", json={"texts": ["i feel wonderful today", "i am scared"]}).json()
            champion = store["client"].get_model_version_by_alias("emotion-classifier", "champion")
            assert len(body["predictions"]) == 2 and body["version"] == str(champion.version)
            info = http.get("/model").json()
            assert info["requested_backend"] == "int8"
            assert info["backend"] == ("int8" if info["parity"]["passed"] else "torch-fp32"), info["parity"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    output = log_path.read_text()
    assert proc.returncode == 0, output
    assert f"http://127.0.0.1:{port}" in output


# --- operating the service: /metrics, shadow, canary, promotion on shadow evidence ---

SHADOW_TEXTS = [
    "i feel wonderful today",
    "my hands are shaking before the exam",
    "i love my dog so much",
    "so angry right now",
    "what a surprise to see you here",
    "i miss her every day",
    "that noise in the night scared me",
    "we won the final and i cannot stop smiling",
    "he lied to me again",
    "i adore this little town",
]


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """GET /metrics parsed by prometheus_client: {(sample name, labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    response = http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def model_info(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> dict[str, dict[str, str]]:
    """The ``emotion_model_info`` rows by role: {"champion": {"alias": ..., "version": ..., "backend": ...}}."""
    rows = [dict(labels) for (name, labels), value in samples.items() if name == "emotion_model_info" and value == 1]
    return {row.pop("role"): row for row in rows}


def test_metrics_count_what_was_served(store: dict[str, Any], tiny_model_dir: Path) -> None:
    """A second app in this process (the module's server is still up) scraped over HTTP: its own counts only."""
    cfg = serve_config(store["project"], tiny_model_dir)
    with Server(cfg) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        answers = [http.post("/predict", json={"text": text}).json() for text in SHADOW_TEXTS[:3]]
        answers.append(http.post("/predict", json={"texts": SHADOW_TEXTS[3:5]}).json())
        assert http.post("/predict", json={"text": ""}).status_code == 422
        backend = http.get("/health").json()["backend"]
        samples = scrape(http)
    assert {a["version"] for a in answers} == {"1"}  # serve.canary_fraction 0: the challenger never answers
    post, ok = {"route": "/predict", "method": "POST"}, "200"
    assert metric(samples, "emotion_http_requests_total", **post, status=ok) == 4
    assert metric(samples, "emotion_http_requests_total", **post, status="422") == 1
    assert metric(samples, "emotion_http_requests_total", route="/health", method="GET", status=ok) == 1
    assert metric(samples, "emotion_http_request_seconds_count", **post, status=ok) == 4
    assert metric(samples, "emotion_http_request_seconds_sum", **post, status=ok) > 0
    labels = [p["label"] for a in answers for p in a["predictions"]]
    for label in set(labels):
        assert metric(samples, "emotion_predictions_total", version="1", role="champion", label=label) == labels.count(
            label
        )
    assert metric(samples, "emotion_prediction_confidence_count", version="1") == 5
    assert metric(samples, "emotion_batch_texts_sum") == 5 and metric(samples, "emotion_batch_requests_count") == 4
    assert model_info(samples) == {"champion": {"alias": "champion", "version": "1", "backend": backend}}
    assert metric(samples, "emotion_reloads_total", result="swapped") == 1
    assert metric(samples, "emotion_inference_queue_depth") == 0
    assert metric(samples, "emotion_shadow_queue_depth") is None  # no shadow configured


def test_canary_fraction_one_answers_with_the_challenger(store: dict[str, Any], tiny_model_dir: Path) -> None:
    cfg = serve_config(store["project"], tiny_model_dir, "serve.canary_fraction=1.0")
    challenger = str(model_versions.version_by_alias(cfg.registry, store["client"], model_versions.CHALLENGER).version)
    assert challenger == "2"
    with Server(cfg) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        versions = {http.post("/predict", json={"text": text}).json()["version"] for text in SHADOW_TEXTS[:4]}
        pinned = http.post("/predict", json={"text": "hello", "version": "1"}).json()["version"]
        samples = scrape(http)
    assert versions == {"2"} and pinned == "1"  # a version asked for is always honoured
    canary = [
        v
        for (name, labels), v in samples.items()
        if name == "emotion_predictions_total" and ("role", "canary") in labels
    ]
    assert sum(canary) == 4
    info = model_info(samples)
    assert info["canary"]["version"] == "2" and info["canary"]["alias"] == "challenger"
    assert info["champion"]["version"] == "1"


def shadow_served(cfg: Any, texts: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict]:
    """Serve ``texts`` two at a time with the shadow on; then the same pairs pinned to version 2 (the shadow sees
    exactly these batches, so its answers are the same). Waits until the tags hold every shadow sample."""
    client = connection.client(cfg.registry)
    before = int(client.get_model_version("emotion-classifier", "2").tags.get("shadow.samples", "0"))
    pairs = [texts[i : i + 2] for i in range(0, len(texts), 2)]
    with Server(cfg) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        ours = [p for pair in pairs for p in http.post("/predict", json={"texts": pair}).json()["predictions"]]
        wait_for(
            lambda: metric(scrape(http), "emotion_shadow_samples_total", champion="1", shadow="2") == len(texts),
            "the shadow to score every text",
        )
        samples = scrape(http)
        wait_for(
            lambda: (
                client.get_model_version("emotion-classifier", "2").tags.get("shadow.samples")
                == str(before + len(texts))
            ),
            "the shadow tags on version 2",
        )
        theirs = [
            p
            for pair in pairs
            for p in http.post("/predict", json={"texts": pair, "version": "2"}).json()["predictions"]
        ]
    return ours, theirs, samples


def test_shadow_agreement_in_metrics_and_version_tags(store: dict[str, Any], tiny_model_dir: Path) -> None:
    cfg = serve_config(store["project"], tiny_model_dir, "serve.shadow=challenger", "serve.shadow_log_seconds=0.3")
    before = store["client"].get_model_version("emotion-classifier", "2").tags
    assert "shadow.samples" not in before
    ours, theirs, samples = shadow_served(cfg, SHADOW_TEXTS)
    agreed = sum(set(a["labels"]) == set(b["labels"]) for a, b in zip(ours, theirs))
    distance = sum(
        0.5 * sum(abs(a["probabilities"][k] - b["probabilities"][k]) for k in LABELS) for a, b in zip(ours, theirs)
    ) / len(ours)
    pair = {"champion": "1", "shadow": "2"}
    assert metric(samples, "emotion_shadow_samples_total", **pair) == 10
    assert metric(samples, "emotion_shadow_agreements_total", **pair) == agreed
    assert metric(samples, "emotion_shadow_agreement_ratio", **pair) == pytest.approx(agreed / 10)
    assert metric(samples, "emotion_shadow_prob_distance_mean", **pair) == pytest.approx(distance, abs=1e-4)
    assert metric(samples, "emotion_shadow_prob_distance_count", **pair) == 10
    assert metric(samples, "emotion_shadow_dropped_total") == 0
    assert model_info(samples)["shadow"]["version"] == "2"
    tags = store["client"].get_model_version("emotion-classifier", "2").tags
    assert tags["shadow.samples"] == "10" and tags["shadow.champion"] == "1"
    assert float(tags["shadow.agreement"]) == pytest.approx(agreed / 10, abs=1e-5)
    assert float(tags["shadow.prob_distance"]) == pytest.approx(distance, abs=1e-4)


def test_promote_requires_shadow_evidence(
    store: dict[str, Any], tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`emotion promote` refuses a challenger with too few shadow samples, accepts it once it has them (a restarted
    service keeps counting from the tags), and --force overrides the requirement, recorded in the history."""
    import emotion_cli as cli

    project, client = store["project"], store["client"]
    # the tiny random models pass or fail the regression gate by chance; here only the shadow requirement matters
    client.set_model_version_tag("emotion-classifier", "2", "gate", "passed")
    have = int(client.get_model_version("emotion-classifier", "2").tags.get("shadow.samples", "0"))
    need = have + 6
    common = [f"--set={item}" for item in tiny_overrides(project, tiny_model_dir, f"gate.min_shadow_samples={need}")]
    common += ["--config", str(PARAMS)]

    assert cli.main(["promote", "2", "--reason", "looks better", *common]) == 2
    err = capsys.readouterr().err
    assert f"version 2 was shadow-scored on {have} texts, fewer than gate.min_shadow_samples={need}" in err
    assert str(model_versions.version_by_alias(store["cfg"].registry, client, model_versions.CHAMPION).version) == "1"

    cfg = serve_config(project, tiny_model_dir, "serve.shadow=challenger", "serve.shadow_log_seconds=0.3")
    shadow_served(cfg, SHADOW_TEXTS[:6])
    assert client.get_model_version("emotion-classifier", "2").tags["shadow.samples"] == str(need)
    assert cli.main(["promote", "2", "--reason", "enough shadow", *common, "--set=gate.min_shadow_agreement=0"]) == 0
    assert str(model_versions.version_by_alias(store["cfg"].registry, client, model_versions.CHAMPION).version) == "2"

    # version 1 was never shadow-scored: refused, then forced, and the history says what was overridden
    assert cli.main(["promote", "1", "--reason", "back", *common]) == 2
    assert "version 1 was shadow-scored on 0 texts" in capsys.readouterr().err
    assert cli.main(["promote", "1", "--reason", "back", "--force", *common]) == 0
    last = champion_alias.history(store["cfg"].registry, client)[-1]
    assert last.version == "1" and last.reason.startswith("back [forced: ") and "gate.min_shadow_samples" in last.reason


def test_onnx_fp32_backend_serves_the_logged_export(
    store: dict[str, Any], tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Registering logged onnx/model.onnx beside the model; serve.backend=onnx-fp32 runs it and answers /predict."""
    import logging

    client = store["client"]
    run_id = client.get_model_version("emotion-classifier", "1").run_id
    assert [a.path for a in client.list_artifacts(run_id, "onnx")] == [run_log.ONNX_ARTIFACT]
    cfg = serve_config(store["project"], tiny_model_dir, "serve.backend=onnx-fp32")
    with (
        caplog.at_level(logging.INFO, logger="pipeline"),
        Server(cfg) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        wait_for(lambda: http.get("/health").json().get("version"), "the champion to load")
        info = http.get("/model").json()
        assert info["requested_backend"] == "onnx-fp32"
        assert info["parity"]["passed"] and info["backend"] == "onnx-fp32", info["parity"]
        assert info["parity"]["agreement"] == 1.0  # the same fp32 model, in another runtime
        response = http.post("/predict", json={"texts": ["i am scared of the dark", "what a lovely day"]})
        assert response.status_code == 200, response.text
        answers = response.json()["predictions"]
        assert [a["label"] in LABELS for a in answers] == [True, True]
    assert "will export the model at load" not in caplog.text  # the logged file was used


def test_onnx_int8_records_the_quantization_it_serves(store: dict[str, Any], tiny_model_dir: Path) -> None:
    """serve.backend=onnx-int8 whose dynamic quantization passes parity: /model says "dynamic", and so does the
    version's serve.quantization tag in the registry."""
    cfg = serve_config(store["project"], tiny_model_dir, "serve.backend=onnx-int8", "serve.parity_tolerance=1")
    with Server(cfg) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        wait_for(lambda: http.get("/health").json().get("version"), "the champion to load")
        info = http.get("/model").json()
    assert info["backend"] == "onnx-int8" and info["quantization"] == "dynamic", info["parity"]
    tags = store["client"].get_model_version("emotion-classifier", info["version"]).tags
    assert tags["serve.quantization"] == "dynamic"
