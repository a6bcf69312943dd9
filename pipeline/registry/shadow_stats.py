"""Shadow evidence on a registered version: how often it agreed with the champion while the service scored it in
shadow (``serve.shadow``), kept as version tags so that `emotion promote` can require it
(``gate.min_shadow_samples``, ``gate.min_shadow_agreement``).

Tags: ``shadow.samples`` (texts scored by both), ``shadow.agreement`` (share given the champion's labels),
``shadow.prob_distance`` (mean total variation distance between the two probability vectors), ``shadow.champion``
(the champion version compared against), ``shadow.updated_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.config import RegistrySettings

SAMPLES, AGREEMENT, DISTANCE, CHAMPION = "shadow.samples", "shadow.agreement", "shadow.prob_distance", "shadow.champion"


@dataclass
class ShadowStats:
    """Running agreement of one shadow version with one champion version."""

    champion: str
    shadow: str
    samples: int = 0
    agreements: int = 0
    distance_sum: float = 0.0

    @property
    def agreement(self) -> float:
        return self.agreements / self.samples if self.samples else 0.0

    @property
    def prob_distance(self) -> float:
        return self.distance_sum / self.samples if self.samples else 0.0

    def add(self, agreed: bool, distance: float) -> None:
        self.samples += 1
        self.agreements += int(agreed)
        self.distance_sum += distance


def from_tags(tags: dict[str, str], champion: str, shadow: str) -> ShadowStats:
    """The stats already recorded on the shadow version against this champion (zero for another champion), so
    that a restarted service keeps counting instead of starting over."""
    if tags.get(CHAMPION) != champion:
        return ShadowStats(champion, shadow)
    try:
        samples = int(tags.get(SAMPLES, "0"))
        agreement, distance = float(tags.get(AGREEMENT, "0")), float(tags.get(DISTANCE, "0"))
    except ValueError:
        return ShadowStats(champion, shadow)
    return ShadowStats(champion, shadow, samples, round(agreement * samples), distance * samples)


def record(registry: RegistrySettings, mlflow_client: Any, stats: ShadowStats, run_id: str | None) -> None:
    """Write ``stats`` as the shadow version's tags, and as metrics (step = samples) of the run that trained it."""
    name = registry.model_name
    values = {SAMPLES: stats.samples, AGREEMENT: stats.agreement, DISTANCE: stats.prob_distance}
    for key, value in values.items():
        mlflow_client.set_model_version_tag(name, stats.shadow, key, f"{value:.6g}" if key != SAMPLES else str(value))
    mlflow_client.set_model_version_tag(name, stats.shadow, CHAMPION, stats.champion)
    mlflow_client.set_model_version_tag(
        name, stats.shadow, "shadow.updated_at", datetime.now(UTC).isoformat(timespec="seconds")
    )
    if run_id:
        for key in (AGREEMENT, DISTANCE):
            mlflow_client.log_metric(run_id, key.replace(".", "_"), values[key], step=stats.samples)


def promotion_problem(registry: RegistrySettings, version: Any) -> str | None:
    """Why ``version`` (a registry ModelVersion) lacks the shadow evidence the gate asks for, or None."""
    if registry.min_shadow_samples <= 0:
        return None
    tags = version.tags
    stats = from_tags(tags, tags.get(CHAMPION, ""), str(version.version))
    where = f"{registry.model_name} version {version.version}"
    if stats.samples < registry.min_shadow_samples:
        return (
            f"{where} was shadow-scored on {stats.samples} texts, fewer than gate.min_shadow_samples="
            f"{registry.min_shadow_samples}: serve it in shadow (serve.shadow=<its alias>) until it has, or use --force"
        )
    if stats.agreement < registry.min_shadow_agreement:
        return (
            f"{where} agreed with champion version {tags.get(CHAMPION)} on {stats.agreement:.1%} of {stats.samples} "
            f"shadow-scored texts, below gate.min_shadow_agreement={registry.min_shadow_agreement:.1%}: "
            "look at where they disagree, or use --force"
        )
    return None
