"""A model card for each registered version, shown as its description in the MLflow UI."""

from __future__ import annotations

from typing import Any

from pipeline.evaluation.cross_validation import CrossValidation
from pipeline.evaluation.evaluate import with_interval
from pipeline.evaluation.gate import GateVerdict
from pipeline.redact import redact

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


def _cv_section(cv: CrossValidation | None) -> list[str]:
    if cv is None:
        return []
    return [
        "",
        "### Cross-validation",
        f"{cv.headline()} (mean ± standard deviation; stratified folds of train + validation, test held out; "
        "each fold's model selected on a slice of its own training folds). Per-fold table: the run's `cv/` artifacts.",
    ]


def build(
    labels: list[str],
    lineage: dict[str, str],
    metrics: dict[str, float],
    verdict: GateVerdict,
    calibration: dict[str, Any],
    champion_version: str | None,
    cross_validation: CrossValidation | None = None,
) -> str:
    """Markdown: what the model does, its data and code version, scores with their bootstrap intervals, the
    cross-validation spread (when run), gate verdict (the comparison with the champion and every failed check),
    intended use, limits."""

    def score(key: str, digits: int = 4) -> str:
        return with_interval(metrics, key, digits) if key in metrics else "n/a"

    per_class = ", ".join(f"{label} {score(f'f1_{label}', 3)}" for label in labels)
    failed = [c.describe() for c in verdict.failed]
    versus = [c.describe() for c in verdict.checks if c.passed and c.name == "macro_f1 vs champion"]
    lines = [
        "## Emotion classifier",
        f"**Labels** ({len(labels)}): {', '.join(labels)}",
        f"**Data**: `{lineage.get('data_source')}`, DVC hash `{lineage.get('data_hash')}`; "
        f"**code**: `{lineage.get('git_commit')}`; **run**: `{lineage.get('run_id')}`",
        "",
        "### Test scores",
        f"accuracy {score('accuracy')} · macro-F1 {score('macro_f1')} · weighted-F1 {score('weighted_f1')} · "
        f"macro precision {score('macro_precision')} · macro recall {score('macro_recall')} · ECE {score('ece')} "
        f"(temperature {calibration.get('temperature', 1.0):.3f})",
        f"Per-class F1: {per_class}",
        "[brackets]: percentile-bootstrap intervals over the test rows" if "macro_f1_ci_low" in metrics else "",
        *_cv_section(cross_validation),
        "",
        "### Gate",
        f"**{verdict.title()}**: {len(verdict.checks) - len(failed)} of "
        f"{len(verdict.checks)} checks passed; compared with champion "
        f"{'v' + champion_version if champion_version else '(none)'}.",
        *[f"- {line}" for line in versus + failed[:15] + ([verdict.hold] if verdict.hold else [])],
        "",
        "### Intended use",
        INTENDED_USE,
        "",
        "### Limitations",
        LIMITATIONS,
    ]
    text = redact("\n".join(lines))  # a data source URI may carry a password
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 3] + "..."
