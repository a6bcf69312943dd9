"""The drift verdict: drift or not, why, every tested feature with its score, and how it reads (CLI, Markdown)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FeatureDrift:
    name: str
    kind: str  # descriptor | prediction | embedding
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftVerdict:
    """Drift or not, why, and every tested feature with its score."""

    drift: bool
    reasons: list[str]
    features: list[FeatureDrift]
    drifted_share: float  # share of descriptor + prediction columns that drifted
    drift_share_threshold: float
    batch: dict[str, Any]
    reference: dict[str, Any]
    champion: dict[str, Any]
    report_path: str | None = None
    label_shares: dict[str, dict[str, float]] = field(default_factory=dict)  # predicted-label shares per side

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    def feature(self, name: str) -> FeatureDrift:
        return next(f for f in self.features if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = self.drifted_features
        out["scores"] = {f.name: round(f.score, 4) for f in self.features}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftVerdict:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["features"] = [FeatureDrift(**f) for f in data["features"]]
        return cls(**fields)

    def summary(self) -> str:
        lines = [
            f"drift     {'DETECTED' if self.drift else 'none'}  ({len(self.drifted_features)} of "
            f"{len(self.features)} features drifted)",
            *[f"          {reason}" for reason in self.reasons],
            f"batch     {self.batch.get('source')}  {self.batch.get('rows')} texts, "
            f"{self.batch.get('labelled_rows', 0)} labelled",
            f"reference {self.reference.get('rows')} rows  ({self.reference.get('provenance')})",
            f"champion  {self.champion.get('name')} version {self.champion.get('version')}",
            "features  " + "  ".join(f"{'*' if f.drifted else ' '}{f.name}={f.score:.3f}" for f in self.features[:4]),
            *[
                "          "
                + "  ".join(f"{'*' if f.drifted else ' '}{f.name}={f.score:.3f}" for f in self.features[i : i + 4])
                for i in range(4, len(self.features), 4)
            ],
            "          (* drifted; scores: distance for numeric and label columns, ROC AUC for the embedding)",
        ]
        if self.report_path:
            lines.append(f"report    {self.report_path}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        rows = "\n".join(
            f"| {f.name} | {f.kind} | {f.method} | {f.score:.4f} | {f.threshold:g} | "
            f"{'**drift**' if f.drifted else 'ok'} |"
            for f in self.features
        )
        return "\n".join(
            [
                f"# Drift check: {'DRIFT DETECTED' if self.drift else 'no drift'}",
                "",
                *[f"- {reason}" for reason in self.reasons],
                f"- batch: `{self.batch.get('source')}`, {self.batch.get('rows')} texts "
                f"({self.batch.get('labelled_rows', 0)} labelled)",
                f"- reference: {self.reference.get('rows')} rows ({self.reference.get('provenance')})",
                f"- champion: {self.champion.get('name')} v{self.champion.get('version')}",
                f"- report: `{self.report_path}`" if self.report_path else "",
                "",
                "| feature | kind | method | score | threshold | result |",
                "|---|---|---|---|---|---|",
                rows,
            ]
        )


def format_check(result: dict[str, Any]) -> str:
    """The closing report of `emotion monitor`: the verdict, then what it triggered."""
    verdict = DriftVerdict.from_dict(result)
    retraining = result.get("retraining") or {}
    lines = ["", "== emotion drift check ==", verdict.summary()]
    if result.get("mlflow_run_id"):
        lines.append(f"mlflow    run {result['mlflow_run_id']} (experiment of monitor.experiment)")
    if retraining.get("triggered"):
        if retraining.get("mode") == "deployment":
            lines.append(f"retrain   started {retraining.get('deployment')} flow run {retraining.get('flow_run_id')}")
        else:
            merged = retraining.get("merged")
            if merged:
                lines.append(
                    f"retrain   merged {sum(merged['added'].values())} new labelled rows {merged['added']} "
                    f"-> {merged['folder']}"
                )
            lines.append(
                f"retrain   version {retraining.get('version')} on {retraining.get('data_source')}: gate "
                f"{'PASSED' if retraining.get('gate_passed') else 'FAILED'}, aliases "
                f"{', '.join(retraining.get('aliases') or [])}"
            )
    else:
        lines.append(f"retrain   no: {retraining.get('reason', 'not triggered')}")
    return "\n".join(lines)
