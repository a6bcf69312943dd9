"""A model card for each registered version, shown as its description in the MLflow UI."""

from __future__ import annotations

from typing import Any

from pipeline.evaluation.gate import GateVerdict

MAX_CHARS = 4900  # the registry stores at most 5000 characters of description

INTENDED_USE = (
    "Classifying the emotion expressed in short English texts (posts, messages, reviews) for analytics, routing "
    "and research, with a person reviewing consequential decisions."
)
LIMITATIONS = (
    "Trained on the data named above only: expect lower quality on other domains, dialects, languages, sarcasm, "
    "very long texts (truncated to the model's max length) and emotions outside the label set, which are forced "
    "into the nearest label. Probabilities are calibrated on validation data by temperature scaling; monitor drift "
    "and re-check calibration on new traffic. Not for decisions about individuals' health, employment or safety."
)


def build(
    labels: list[str],
    lineage: dict[str, str],
    metrics: dict[str, float],
    verdict: GateVerdict,
    calibration: dict[str, Any],
    champion_version: str | None,
) -> str:
    """Markdown: what the model does, its data and code version, scores, gate verdict, intended use, limits."""
    per_class = ", ".join(f"{label} {metrics.get(f'f1_{label}', float('nan')):.3f}" for label in labels)
    failed = [c.describe() for c in verdict.failed]
    lines = [
        "## Emotion classifier",
        f"**Labels** ({len(labels)}): {', '.join(labels)}",
        f"**Data**: `{lineage.get('data_source')}`, DVC hash `{lineage.get('data_hash')}`; "
        f"**code**: `{lineage.get('git_commit')}`; **run**: `{lineage.get('run_id')}`",
        "",
        "### Test scores",
        f"accuracy {metrics['accuracy']:.4f} · macro-F1 {metrics['macro_f1']:.4f} · weighted-F1 "
        f"{metrics['weighted_f1']:.4f} · macro precision {metrics['macro_precision']:.4f} · macro recall "
        f"{metrics['macro_recall']:.4f} · ECE {metrics.get('ece', float('nan')):.4f} "
        f"(temperature {calibration.get('temperature', 1.0):.3f})",
        f"Per-class F1: {per_class}",
        "",
        "### Gate",
        f"**{'PASSED' if verdict.passed else 'FAILED'}**: {len(verdict.checks) - len(failed)} of "
        f"{len(verdict.checks)} checks passed; compared with champion "
        f"{'v' + champion_version if champion_version else '(none)'}.",
        *[f"- {line}" for line in failed[:15]],
        "",
        "### Intended use",
        INTENDED_USE,
        "",
        "### Limitations",
        LIMITATIONS,
    ]
    text = "\n".join(lines)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
