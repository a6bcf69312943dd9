"""What the API refuses and how it bounds its work, over real HTTP (uvicorn on a loopback port, a registry of two
registered versions): /explain validates texts as /predict does, texts with nothing visible, versions beyond the
registry's integer range, duplicate JSON keys, stalled headers and bodies (raw sockets), and the explanation
budget that keeps /predict fast under a burst of explanations."""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_serve import Server, registered_registry, serve_config, wait_for

pytestmark = pytest.mark.slow

LONG_TEXT = ("my hands are shaking before the exam and i cannot sleep at all tonight " * 30)[:2000]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, learned_model_dir: Path) -> dict[str, Any]:
    return registered_registry(tmp_path_factory.mktemp("limits"), tiny_model_dir, learned_model_dir)


def served(store: dict[str, Any], tiny_model_dir: Path, *extra: str) -> Server:
    return Server(serve_config(store["project"], tiny_model_dir, "serve.backend=torch-fp32", *extra))


@pytest.fixture(scope="module")
def api_limits(store: dict[str, Any], tiny_model_dir: Path):
    extra = ("serve.body_timeout_seconds=1", "serve.explain_max_chars=50")
    with served(store, tiny_model_dir, *extra) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        http.port = server.port  # type: ignore[attr-defined]
        yield http


def post_raw(http: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return http.post(path, content=body, headers={"content-type": "application/json"})


NOTHING_VISIBLE = {
    "NUL": "\x00",
    "NULs and spaces": "\x00 \x00\t",
    "zero-width space": "\u200b",
    "zero-width joiners and BOM": "\u200d\u200c\ufeff",
    "word joiner and bidi marks": "\u2060\u200e\u200f",
    "Hangul filler": "\u3164",
    "variation selectors": "\ufe0f\U000e0100",
    "control characters": "\x07\x1b\x7f\x85",
}


@pytest.mark.parametrize("kind", list(NOTHING_VISIBLE))
def test_a_text_with_nothing_visible_is_refused_on_every_route(api_limits: httpx.Client, kind: str) -> None:
    text = NOTHING_VISIBLE[kind]
    for path, body, where in (
        ("/predict", {"text": text}, "text"),
        ("/predict", {"texts": ["fine", text]}, "texts[1]"),
        ("/explain", {"text": text}, "text"),
    ):
        response = api_limits.post(path, json=body)
        assert response.status_code == 422, (path, response.text)
        detail = response.json()["detail"]
        assert detail.startswith(f"{where} has no visible character") or detail.startswith(f"{where} is empty")
    # a visible word among the same characters is a text
    assert api_limits.post("/predict", json={"text": f"{text}joy{text}"}).status_code == 200


def test_explain_validates_its_text_as_predict_does(api_limits: httpx.Client) -> None:
    lone_surrogate = b'{"text": "bad \\ud800 text"}'  # valid JSON; not a Unicode text once decoded
    for path in ("/predict", "/explain"):
        response = post_raw(api_limits, path, lone_surrogate)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["detail"].startswith("text is not valid Unicode: a lone surrogate at character 4")
        response = api_limits.post(path, json={"text": " \n "})
        assert response.status_code == 422 and response.json()["detail"].startswith("text is empty")
    # the explanation's own text cap (serve.explain_max_chars=50) is tighter than /predict's
    response = api_limits.post("/explain", json={"text": "a" * 51})
    assert response.status_code == 422 and "text is too long: 51 characters > 50" in response.json()["detail"]
    assert api_limits.post("/predict", json={"text": "a" * 51}).status_code == 200
    assert api_limits.post("/explain", json={"text": "i am so happy"}).status_code == 200


def test_a_version_beyond_the_registry_range_is_a_bad_request_without_a_traceback(
    api_limits: httpx.Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    huge = b"99999999999999999999"
    caplog.set_level(logging.INFO)
    answers = [
        post_raw(api_limits, "/predict", b'{"text": "hello", "version": ' + huge + b"}"),  # a JSON number
        post_raw(api_limits, "/predict", b'{"text": "hello", "version": "' + huge + b'"}'),
        post_raw(api_limits, "/explain", b'{"text": "hello", "version": ' + huge + b"}"),
        api_limits.get("/model", params={"version": huge.decode()}),
        api_limits.get("/model", params={"version": "2147483648"}),  # one past a 32-bit INTEGER
        post_raw(api_limits, "/predict", b'{"text": "hello", "version": ' + b"9" * 5000 + b"}"),  # too long to read
    ]
    for response in answers:
        assert response.status_code == 422, response.text
        assert "version must be a positive integer up to 2147483647" in response.json()["detail"] or (
            "too many digits" in response.json()["detail"]
        )
    assert api_limits.get("/model", params={"version": "2147483647"}).status_code == 404  # in range, unknown
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in "".join(capfd.readouterr())


def test_a_body_that_repeats_a_key_or_cannot_be_read_is_a_bad_request(api_limits: httpx.Client) -> None:
    for path, body in (
        ("/predict", b'{"text": "i am sad", "text": "i am glad"}'),
        ("/predict", b'{"texts": ["i am sad"], "version": "1", "version": "2"}'),
        ("/explain", b'{"text": "i am sad", "label": "joy", "label": "fear"}'),
    ):
        response = post_raw(api_limits, path, body)
        assert response.status_code == 422, (path, response.text)
        assert "the body gives the key" in response.json()["detail"] and "twice" in response.json()["detail"]
    unreadable = {  # each was a 400 "There was an error parsing the body"
        b"\xff": "not UTF-8 text",
        b"[" * 5_000 + b"]" * 5_000: "nested too deeply",  # deeper than the recursion limit, under the size limit
    }
    for body, why in unreadable.items():
        response = post_raw(api_limits, "/predict", body)
        assert response.status_code == 422 and why in response.json()["detail"], response.text
    assert post_raw(api_limits, "/predict", b'{"text": "i am sad", "version": "1"}').status_code == 200


def read_until_closed(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start, data = time.monotonic(), b""
    sock.settimeout(limit)
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n", id="headers"),
        pytest.param(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"text": "i am',
            id="body",
        ),
    ],
)
def test_a_request_that_stalls_is_answered_408_and_closed(api_limits: httpx.Client, sent: bytes) -> None:
    port: int = api_limits.port  # type: ignore[attr-defined]
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(sent)
        data, took = read_until_closed(sock, limit=30)
    assert 0.9 <= took < 10, f"closed after {took:.1f}s; serve.body_timeout_seconds=1"
    if sent:  # a connection that never sent a byte is closed silently
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"serve.body_timeout_seconds" in data
    assert api_limits.get("/health").status_code == 200


def test_a_slow_body_that_arrives_in_time_is_served(api_limits: httpx.Client) -> None:
    port: int = api_limits.port  # type: ignore[attr-defined]
    body = b'{"text": "i am slow but happy"}'
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nConnection: close\r\n"
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.4)
        sock.sendall(body[10:])
        data, _ = read_until_closed(sock, limit=30)
    assert data.startswith(b"HTTP/1.1 200 "), data


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


class ExplainBurst:
    """A dozen clients asking for explanations of 2,000 characters, each honouring Retry-After, while ``on``."""

    def __init__(self, url: str, clients: int = 12) -> None:
        self.url, self.on, self.stop = url, threading.Event(), threading.Event()
        self.codes: Counter[int] = Counter()
        self.retry_after: list[int] = []
        self.in_flight = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as http:
            while self.on.wait() and not self.stop.is_set():
                with self.lock:
                    self.in_flight += 1
                response = http.post("/explain", json={"text": LONG_TEXT})
                with self.lock:
                    self.in_flight -= 1
                    self.codes[response.status_code] += 1
                if response.status_code == 429:
                    self.retry_after.append(int(response.headers["retry-after"]))
                    self.stop.wait(self.retry_after[-1])

    def pause(self) -> None:
        """Stop sending and wait for the explanations asked for to be answered."""
        self.on.clear()
        wait_for(lambda: self.in_flight == 0, "the explanations to be answered", every=0.05)


def test_predictions_keep_answering_through_a_burst_of_explanations_beyond_their_budget(
    store: dict[str, Any], tiny_model_dir: Path
) -> None:
    """Predictions in alternating idle and burst blocks all answer 200 while a dozen explanations run and queue;
    beyond the budget /explain answers 429 with Retry-After. The latencies are printed, not asserted (timing
    belongs in benchmarks): on this machine p99 idle / burst was 43.6 / 51.8 ms, where before explanations had a
    budget of their own the burst took /predict's p99 from 89 ms to 1,498 ms."""
    rounds, per_block = 4, 60
    idle: list[float] = []
    burst: list[float] = []
    with served(store, tiny_model_dir, "serve.max_chars=2000") as server, httpx.Client(base_url=server.url) as http:

        def timed(samples: list[float]) -> None:
            for _ in range(per_block):
                start = time.perf_counter()
                response = http.post("/predict", json={"text": "i feel wonderful today"})
                samples.append(time.perf_counter() - start)
                assert response.status_code == 200, response.text

        timed([])  # warm up
        explainer = server.server.config.app.state.explainer  # type: ignore[attr-defined]
        explainers = ExplainBurst(server.url)
        for thread in explainers.threads:
            thread.start()
        try:
            for _ in range(rounds):
                explainers.pause()
                timed(idle)
                explainers.on.set()
                wait_for(lambda: explainer.admitted >= 2, "explanations to run and wait", every=0.01)
                timed(burst)
        finally:
            explainers.stop.set()
            explainers.on.set()
    ms = {name: round(p99(samples) * 1000, 1) for name, samples in (("idle", idle), ("burst", burst))}
    print(f"p99 /predict in ms: {ms}")
    assert len(idle) == len(burst) == rounds * per_block  # every prediction answered 200 (timed() checks each)
    assert explainers.codes[200] >= rounds, explainers.codes  # explanations were computed meanwhile
    assert explainers.codes[429] > 0 and min(explainers.retry_after) >= 1, explainers.codes  # beyond the budget
    assert set(explainers.codes) <= {200, 429}, explainers.codes
