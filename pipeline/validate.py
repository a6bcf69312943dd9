"""Great Expectations suite over the snapshot: a failed check stops the run with a readable report."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.errors import DataValidationError
from pipeline.ingest import SPLITS

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("text", "label", "split")
MAX_EXAMPLES = 5


@dataclass
class CheckResult:
    name: str
    passed: bool
    unexpected_count: int = 0
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ValidationReport:
    checks: list[CheckResult]
    rows: int

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """Console text: one line per failed check, with counts and example rows."""
        if self.passed:
            return f"all {len(self.checks)} data checks passed on {self.rows} rows"
        lines = [f"{len(self.failed)} of {len(self.checks)} data checks failed on {self.rows} rows:"]
        for check in self.failed:
            count = f" ({check.unexpected_count} rows)" if check.unexpected_count else ""
            lines.append(f"  x {check.name}{count}: {check.detail}")
            lines.extend(f"      e.g. {json.dumps(ex, ensure_ascii=False)[:200]}" for ex in check.examples)
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = ["# Data validation report", "", f"Rows: {self.rows}. Verdict: **{'PASS' if self.passed else 'FAIL'}**.", "",
                 "| check | result | unexpected rows | detail |", "|---|---|---|---|"]
        for c in self.checks:
            lines.append(f"| {c.name} | {'pass' if c.passed else 'FAIL'} | {c.unexpected_count} | {c.detail} |")
        for c in self.failed:
            if c.examples:
                lines += ["", f"## {c.name}: examples", "", "```"]
                lines += [json.dumps(ex, ensure_ascii=False) for ex in c.examples]
                lines.append("```")
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "validation.json").write_text(json.dumps({"passed": self.passed, "rows": self.rows,
                                                             "checks": [asdict(c) for c in self.checks]}, indent=2))
        path = out_dir / "validation_report.md"
        path.write_text(self.to_markdown())
        return path


def _expectations(labels: list[str]) -> list[tuple[str, Any]]:
    """(readable name, GX expectation) pairs, in report order."""
    import great_expectations.expectations as gxe

    checks: list[tuple[str, Any]] = [
        (f"column '{col}' present", gxe.ExpectColumnToExist(column=col)) for col in REQUIRED_COLUMNS
    ]
    checks += [
        ("dataset not empty", gxe.ExpectTableRowCountToBeBetween(min_value=1)),
        ("text not null", gxe.ExpectColumnValuesToNotBeNull(column="text")),
        ("text not blank", gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$")),
        ("label not null", gxe.ExpectColumnValuesToNotBeNull(column="label")),
        ("split not null", gxe.ExpectColumnValuesToNotBeNull(column="split")),
        ("label in declared set", gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels)),
        ("split names known", gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS))),
        ("every split present", gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=list(SPLITS))),
    ]
    return checks


def _run_suite(frame: pd.DataFrame, named: list[tuple[str, Any]]) -> dict[str, Any]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("snapshot").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="emotion-data"))
    for name, expectation in named:
        expectation.meta = {"check": name}
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="snapshot", data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
    # GX groups results by column, not in suite order: key them by the name each expectation carries.
    return {res.expectation_config.meta["check"]: res for res in result.results}


def _examples(frame: pd.DataFrame, indices: list[int]) -> list[dict[str, Any]]:
    rows = frame.loc[indices[:MAX_EXAMPLES], [c for c in REQUIRED_COLUMNS if c in frame]]
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} | {"row": int(i)} for i, row in rows.iterrows()]


def _describe(name: str, res: Any, frame: pd.DataFrame) -> CheckResult:
    info = res.result or {}
    if res.exception_info and res.exception_info.get("raised_exception"):
        message = str(res.exception_info.get("exception_message", "")).splitlines()[0][:200]
        return CheckResult(name, False, detail=f"could not be checked: {message}")
    count = int(info.get("unexpected_count") or 0)
    examples = _examples(frame, info.get("unexpected_index_list") or [])
    detail = ""
    if not res.success:
        if name == "every split present" and "split" in frame:
            missing = sorted(set(SPLITS) - set(frame["split"].dropna().unique()))
            detail = f"missing split(s): {', '.join(missing)}"
        elif name == "dataset not empty":
            detail = "the dataset has no rows"
        elif name.startswith("column"):
            detail = f"columns found: {', '.join(map(str, frame.columns))}"
        else:
            values = sorted({str(v) for v in info.get("partial_unexpected_list") or []})[:MAX_EXAMPLES]
            detail = f"unexpected values: {', '.join(json.dumps(v) for v in values)}" if values else "see examples"
    return CheckResult(name, bool(res.success), count, detail, examples if not res.success else [])


def validate(frame: pd.DataFrame, labels: list[str], report_dir: Path) -> ValidationReport:
    """Run the suite, write the Markdown/JSON report, and raise DataValidationError on any failure."""
    frame = frame.reset_index(drop=True)  # example rows are looked up by the index GX reports
    present = [c for c in REQUIRED_COLUMNS if c in frame]
    named = _expectations(labels)
    # Expectations on a missing column only repeat the column check: keep the report to the point.
    named = [(n, e) for n, e in named if getattr(e, "column", None) in (None, *present) or n.startswith("column")]
    results = _run_suite(frame, named)
    report = ValidationReport([_describe(name, results[name], frame) for name, _ in named], rows=len(frame))
    path = report.write(report_dir)
    if not report.passed:
        log.error("data validation failed; full report: %s", path)
        raise DataValidationError(
            f"data validation failed: {', '.join(c.name for c in report.failed)} (report: {path})", report)
    log.info("%s", report.summary())
    return report
