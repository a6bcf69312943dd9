"""Shadow scoring's pieces without a server: the agreement measure, the bounded queue that drops instead of
blocking, the stats kept in version tags, and the promotion requirement read from them."""

from types import SimpleNamespace
from typing import Any

import pytest

from pipeline.config import Config
from pipeline.registry.shadow_stats import ShadowStats, from_tags, promotion_problem
from pipeline.serving.metrics import ServeMetrics
from pipeline.serving.shadow import Shadow, agreement


def prediction(probabilities: dict[str, float]) -> Any:
    label = max(probabilities, key=probabilities.__getitem__)
    return SimpleNamespace(label=label, labels=[label], score=probabilities[label], probabilities=probabilities)


def test_agreement_compares_labels_and_measures_total_variation() -> None:
    a, b = prediction({"joy": 0.7, "fear": 0.3}), prediction({"joy": 0.4, "fear": 0.6})
    assert agreement(a, a) == (True, 0.0)
    agreed, distance = agreement(a, b)
    assert not agreed and distance == pytest.approx(0.3)
    assert agreement(a, prediction({"joy": 0.6, "fear": 0.4}))[0]


def test_a_full_shadow_queue_drops_and_counts_instead_of_blocking() -> None:
    cfg = Config.model_validate({"serve": {"shadow": "challenger", "shadow_queue": 2}})
    metrics = ServeMetrics(SimpleNamespace(), set())
    shadow = Shadow(cfg, store=None, batcher=None, metrics=metrics)  # type: ignore[arg-type]  # never started
    champion = SimpleNamespace(version="1")
    for _ in range(5):
        shadow.offer(champion, ["a text"], [prediction({"joy": 1.0})])  # type: ignore[arg-type]
    assert shadow.pending() == 2
    assert metrics.registry.get_sample_value("emotion_shadow_dropped_total") == 3


def test_shadow_fraction_zero_offers_nothing() -> None:
    cfg = Config.model_validate({"serve": {"shadow": "challenger", "shadow_fraction": 0.0}})
    shadow = Shadow(cfg, None, None, ServeMetrics(SimpleNamespace(), set()))  # type: ignore[arg-type]
    shadow.offer(SimpleNamespace(version="1"), ["x"], [prediction({"joy": 1.0})])  # type: ignore[arg-type]
    assert shadow.pending() == 0


def test_stats_resume_from_tags_only_against_the_same_champion() -> None:
    tags = {"shadow.samples": "40", "shadow.agreement": "0.75", "shadow.prob_distance": "0.1", "shadow.champion": "3"}
    resumed = from_tags(tags, "3", "5")
    assert (resumed.samples, resumed.agreements) == (40, 30) and resumed.prob_distance == pytest.approx(0.1)
    resumed.add(True, 0.2)
    assert resumed.samples == 41 and resumed.agreement == pytest.approx(31 / 41)
    assert from_tags(tags, "4", "5") == ShadowStats("4", "5")  # another champion: start over
    assert from_tags(tags | {"shadow.samples": "many"}, "3", "5") == ShadowStats("3", "5")


def version(**tags: str) -> Any:
    return SimpleNamespace(version="5", tags=tags)


def test_promotion_needs_shadow_samples_and_agreement_only_when_configured() -> None:
    evidence = {"shadow.samples": "150", "shadow.agreement": "0.8", "shadow.champion": "3"}
    assert promotion_problem(Config().registry, version()) is None  # gate.min_shadow_samples 0: not required
    cfg = Config.model_validate({"gate": {"min_shadow_samples": 200, "min_shadow_agreement": 0.9}})
    assert "shadow-scored on 150 texts, fewer than gate.min_shadow_samples=200" in promotion_problem(
        cfg.registry, version(**evidence)
    )
    assert "shadow-scored on 0 texts" in promotion_problem(cfg.registry, version())
    enough = evidence | {"shadow.samples": "200"}
    problem = promotion_problem(cfg.registry, version(**enough))
    assert "agreed with champion version 3 on 80.0% of 200" in problem and "min_shadow_agreement=90.0%" in problem
    assert promotion_problem(cfg.registry, version(**(enough | {"shadow.agreement": "0.95"}))) is None
