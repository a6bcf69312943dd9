"""Great Expectations suite over the snapshot: errors stop the run, warnings are reported, both readably.

The suite runs on four small frames, so that every check, also the ones about aggregates, is a GX expectation:

- ``rows``: one row per snapshot row, plus boolean columns computed with pandas (``duplicate_in_split``,
  ``leaked``, ``conflicting``) that GX expects to be all False;
- ``label_rows``: one row per (row, label): multi-label lists are exploded, an empty list is a missing label, and
  the ``row`` column maps every finding back to the snapshot row;
- ``label_counts``: one row per declared label with its count in the train split;
- ``split_counts``: one row per expected split with its row count.

What the reader found (pipeline/data/ingest.py's report: malformed rows left out by ``data.bad_rows``, a
fallback encoding, label spellings normalised or mapped, a configured column the file lacks) is added to the
report as source notes, and malformed rows as the check ``source rows well-formed`` (skip: passed, counted;
warn: a warning), so none of it is silent.

Each check has a severity (``checks.severity`` in params.yaml): ``error`` stops the run with
``DataValidationError``, ``warning`` is only reported, ``off`` skips the check. Checks the later steps rely on
(columns, nulls in label/split, declared labels, known and present splits) are always errors.
"""

from __future__ import annotations

import json
import logging
import math
import os
import unicodedata
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from pipeline.config import ValidationConfig
from pipeline.data.ingest import SPLITS
from pipeline.errors import DataValidationError

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUIRED_COLUMNS = ("text", "label", "split")
MAX_EXAMPLES = 5
HELD_OUT = ("validation", "test")


@dataclass
class CheckResult:
    name: str
    passed: bool
    unexpected_count: int = 0
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)
    severity: str = "error"  # error: a failure stops the run; warning: reported only
    key: str = ""  # the severity key in params.yaml (checks.severity.<key>)
    unit: str = "rows"  # what unexpected_count counts: rows, labels or splits
    rule: str = ""  # what the check expects, with its thresholds

    @property
    def status(self) -> str:
        return "pass" if self.passed else ("FAIL" if self.severity == "error" else "warn")


@dataclass
class ValidationReport:
    checks: list[CheckResult]
    rows: int
    settings: dict[str, Any] = field(default_factory=dict)
    source_notes: list[str] = field(default_factory=list)  # what reading the source found (ingest report)

    @property
    def passed(self) -> bool:
        """No error-severity check failed (warnings do not stop the run)."""
        return not self.failed

    @property
    def failed(self) -> list[CheckResult]:
        """The failed checks that stop the run."""
        return [c for c in self.checks if not c.passed and c.severity == "error"]

    @property
    def warnings(self) -> list[CheckResult]:
        """The failed checks that are only reported."""
        return [c for c in self.checks if not c.passed and c.severity != "error"]

    def check(self, name: str) -> CheckResult:
        return next(c for c in self.checks if c.name == name)

    @staticmethod
    def _lines(mark: str, checks: list[CheckResult]) -> list[str]:
        lines = []
        for c in checks:
            count = f" ({c.unexpected_count} {c.unit})" if c.unexpected_count else ""
            lines.append(f"  {mark} {c.name}{count}: {c.detail}")
            lines.extend(f"      e.g. {json.dumps(ex, ensure_ascii=False)[:200]}" for ex in c.examples)
        return lines

    def summary(self) -> str:
        """Console text: one line per failed check (x) and per warning (!), with counts and example rows;
        then what reading the source found (-), with the rows a passed check still counted (skipped rows)."""
        n, warnings = len(self.checks), self.warnings
        counted = [c for c in self.checks if c.passed and c.unexpected_count]
        notes = [*self._lines("-", counted), *(f"  - source: {note}" for note in self.source_notes)]
        if self.passed and not warnings:
            return "\n".join([f"all {n} data checks passed on {self.rows} rows", *notes])
        if self.passed:
            head = f"data checks passed on {self.rows} rows with {len(warnings)} warning(s) ({n} checks):"
            return "\n".join([head, *self._lines("!", warnings), *notes])
        lines = [f"{len(self.failed)} of {n} data checks failed on {self.rows} rows:", *self._lines("x", self.failed)]
        if warnings:
            lines += [f"  and {len(warnings)} warning(s):", *self._lines("!", warnings)]
        return "\n".join(lines + notes)

    def to_markdown(self) -> str:
        verdict = (
            "FAIL" if not self.passed else (f"PASS with {len(self.warnings)} warning(s)" if self.warnings else "PASS")
        )
        lines = ["# Data validation report", "", f"Rows: {self.rows}. Verdict: **{verdict}**.", ""]
        if self.settings:
            lines += ["Settings: " + ", ".join(f"{k} = {v}" for k, v in self.settings.items()) + ".", ""]
        lines += [
            "| check | result | unexpected | counted | severity | expects | detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            rule, detail = (c.rule.replace("|", "\\|"), c.detail.replace("|", "\\|"))
            lines.append(
                f"| {c.name} | {c.status} | {c.unexpected_count} | {c.unit} | {c.severity} | {rule} | {detail} |"
            )
        if self.source_notes:
            lines += ["", "## Source", "", *(f"- {note}" for note in self.source_notes)]
        for c in self.checks:
            if c.examples and (not c.passed or c.unexpected_count):
                lines += ["", f"## {c.name}: examples", "", "```"]
                lines += [json.dumps(ex, ensure_ascii=False) for ex in c.examples]
                lines.append("```")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "errors": len(self.failed),
            "warnings": len(self.warnings),
            "settings": self.settings,
            "source_notes": self.source_notes,
            "checks": [asdict(c) | {"status": c.status} for c in self.checks],
        }

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "validation.json").write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False))
        path = out_dir / "validation_report.md"
        path.write_text(self.to_markdown())
        return path


# --- derived frames -------------------------------------------------------------------------------------------


def _is_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def text_key(text: Any) -> str | None:
    """Texts are compared after NFKC and collapsed whitespace (as cleaning does by default); blanks have no key."""
    if not isinstance(text, str):
        return None
    return " ".join(unicodedata.normalize("NFKC", text).split()) or None


def label_key(label: Any) -> Any:
    """A hashable label: the string, or the sorted set of a multi-label list; missing or empty -> None."""
    if _is_list(label):
        names = tuple(sorted({str(v) for v in list(label) if not _missing(v)}))
        return names or None
    return None if _missing(label) else label


def _row_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The snapshot rows (label lists as JSON text, for GX) plus the derived per-row flags."""
    rows = frame.copy()
    if "label" in rows:
        rows["label"] = rows["label"].map(lambda v: json.dumps(list(v), ensure_ascii=False) if _is_list(v) else v)
    if "text" not in frame or "split" not in frame:
        return rows
    keys = frame["text"].map(text_key)
    split = frame["split"]
    has_key = keys.notna()
    rows["duplicate_in_split"] = has_key & pd.DataFrame({"s": split, "k": keys}).duplicated(keep="first")
    train_keys = set(keys[(split == "train") & has_key])
    rows["leaked"] = split.isin(HELD_OUT) & keys.isin(train_keys) & has_key
    if "label" in frame:
        labels = frame["label"].map(label_key)
        known = has_key & labels.notna()
        distinct = (
            pd.DataFrame({"s": split, "k": keys, "l": labels})[known].groupby(["s", "k"], dropna=False)["l"].nunique()
        )
        conflicting = set(distinct[distinct > 1].index)
        rows["conflicting"] = [bool(ok) and (s, k) in conflicting for s, k, ok in zip(split, keys, known)]
    return rows


def _label_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (snapshot row, label); an empty list or a missing label gives one row with a null label."""
    labels = frame["label"].map(lambda v: list(v) if _is_list(v) else v)
    out = pd.DataFrame({"label": labels, "row": frame.index})
    if "split" in frame:
        out["split"] = frame["split"].to_numpy()
    out = out.explode("label", ignore_index=True)
    out["label"] = out["label"].map(lambda v: None if _missing(v) else v).astype(object)
    return out


def _label_counts(label_rows: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One row per declared label: how many train rows carry it (a row counts once per label)."""
    train = label_rows[label_rows["split"] == "train"].drop_duplicates(["row", "label"])
    counts = train["label"].value_counts().reindex(labels, fill_value=0).astype(int)
    out = pd.DataFrame({"label": labels, "train_count": counts.to_numpy()})
    out["balance_count"] = out["train_count"].where(out["train_count"] > 0).astype(float)  # absent labels: null
    return out


def _split_counts(frame: pd.DataFrame) -> pd.DataFrame:
    counts = frame["split"].value_counts().reindex(list(SPLITS), fill_value=0).astype(int)
    return pd.DataFrame({"split": list(SPLITS), "rows": counts.to_numpy()})


# --- the checks -----------------------------------------------------------------------------------------------


@dataclass
class _Check:
    key: str  # severity key
    name: str
    table: str  # rows | label_rows | label_counts | split_counts
    expectation: Any
    needs: tuple[str, ...] = ()  # snapshot columns the check needs (skipped, not repeated, when one is missing)
    unit: str = "rows"
    rule: str = ""


def _checks(labels: list[str], cfg: ValidationConfig, label_counts: pd.DataFrame | None) -> list[_Check]:
    """Every check, in report order."""
    import great_expectations.expectations as gxe

    C = _Check
    checks = [
        C("columns", f"column '{col}' present", "rows", gxe.ExpectColumnToExist(column=col), rule="column exists")
        for col in REQUIRED_COLUMNS
    ]
    checks += [
        C("not_empty", "dataset not empty", "rows", gxe.ExpectTableRowCountToBeBetween(min_value=1), rule=">= 1 row"),
        C(
            "text_not_null",
            "text not null",
            "rows",
            gxe.ExpectColumnValuesToNotBeNull(column="text"),
            ("text",),
            rule="every row has a text",
        ),
        C(
            "text_not_blank",
            "text not blank",
            "rows",
            gxe.ExpectColumnValuesToNotMatchRegex(column="text", regex=r"^\s*$"),
            ("text",),
            rule="not only whitespace",
        ),
        C(
            "text_length",
            "text length within bounds",
            "rows",
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=cfg.min_text_chars, max_value=cfg.max_text_chars
            ),
            ("text",),
            rule=f"{cfg.min_text_chars}..{cfg.max_text_chars} characters",
        ),
        C(
            "label_not_null",
            "label not null",
            "label_rows",
            gxe.ExpectColumnValuesToNotBeNull(column="label"),
            ("label",),
            rule="a label (multi-label: a non-empty list)",
        ),
        C(
            "label_in_set",
            "label in declared set",
            "label_rows",
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=labels),
            ("label",),
            rule=f"one of {len(labels)} labels (each label of a list)",
        ),
        C(
            "min_labels",
            "at least two labels",
            "label_counts",
            gxe.ExpectTableRowCountToBeBetween(min_value=2),
            ("label",),
            "labels",
            rule=">= 2 labels in the label set",
        ),
        C(
            "split_not_null",
            "split not null",
            "rows",
            gxe.ExpectColumnValuesToNotBeNull(column="split"),
            ("split",),
            rule="every row has a split",
        ),
        C(
            "split_known",
            "split names known",
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            ("split",),
            rule="/".join(SPLITS),
        ),
        C(
            "splits_present",
            "every split present",
            "split_counts",
            gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=1),
            ("split",),
            "splits",
            rule=">= 1 row in each of " + "/".join(SPLITS),
        ),
    ]
    if label_counts is not None:  # only when there is a train split to count in
        most = int(label_counts["train_count"].max()) if len(label_counts) else 0
        checks += [
            C(
                "label_min_count",
                "every label in train with min count",
                "label_counts",
                gxe.ExpectColumnValuesToBeBetween(column="train_count", min_value=cfg.min_train_count),
                ("label", "split"),
                "labels",
                rule=f">= {cfg.min_train_count} train rows per label",
            ),
            C(
                "class_balance",
                "class balance",
                "label_counts",
                gxe.ExpectColumnValuesToBeBetween(column="balance_count", min_value=most / cfg.max_imbalance_ratio),
                ("label", "split"),
                "labels",
                rule=f"rarest label's train count >= 1/{cfg.max_imbalance_ratio:g} of the most common's",
            ),
        ]
    checks += [
        C(
            "duplicates",
            "no duplicate texts in a split",
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="duplicate_in_split", value_set=[False]),
            ("text", "split"),
            rule="each text once per split",
        ),
        C(
            "leakage",
            "no train text in validation/test",
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="leaked", value_set=[False]),
            ("text", "split"),
            rule="validation/test texts not in train",
        ),
        C(
            "conflicts",
            "no conflicting labels",
            "rows",
            gxe.ExpectColumnValuesToBeInSet(column="conflicting", value_set=[False]),
            ("text", "label", "split"),
            rule="one label (set) per text within a split",
        ),
    ]
    return checks


def _run_suites(frames: dict[str, pd.DataFrame], checks: list[_Check], severities: dict[str, str]) -> dict[str, Any]:
    """One GX validation per derived frame; results keyed by the check name each expectation carries."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("snapshot")
    results: dict[str, Any] = {}
    for table, frame in frames.items():
        mine = [c for c in checks if c.table == table]
        if not mine:
            continue
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name=f"emotion-data-{table}"))
        for check in mine:
            check.expectation.meta = {"check": check.name}
            check.expectation.severity = "critical" if severities[check.key] == "error" else "warning"
            suite.add_expectation(check.expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=suite))
        run = definition.run(batch_parameters={"dataframe": frame}, result_format={"result_format": "COMPLETE"})
        # GX groups results by column, not in suite order: key them by the name each expectation carries.
        for res in run.results:
            config = res.expectation_config
            assert config is not None, "a suite run returns each expectation's configuration with its result"
            results[config.meta["check"]] = res
    return results


def _json_value(value: Any) -> Any:
    if _is_list(value):
        return [_json_value(v) for v in list(value)]
    if _missing(value):
        return None
    return value.item() if hasattr(value, "item") else value


def _examples(frame: pd.DataFrame, rows: list[int]) -> list[dict[str, Any]]:
    shown = rows[:MAX_EXAMPLES]
    part = frame.loc[shown, [c for c in REQUIRED_COLUMNS if c in frame]]
    return [_json_row(row) | {"row": int(i)} for i, row in zip(shown, part.to_dict("records"))]


def _json_row(row: dict[Hashable, Any], leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row of a DataFrame (string column names) with JSON-ready values."""
    return {str(k): _json_value(v) for k, v in row.items() if k not in leave_out}


def _unique(values: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(values))


def _describe(
    check: _Check, res: Any, frame: pd.DataFrame, frames: dict[str, pd.DataFrame], cfg: ValidationConfig, severity: str
) -> CheckResult:
    base: dict[str, Any] = {"severity": severity, "key": check.key, "unit": check.unit, "rule": check.rule}
    if res.exception_info and res.exception_info.get("raised_exception"):
        message = str(res.exception_info.get("exception_message", "")).splitlines()[0][:200]
        return CheckResult(check.name, False, detail=f"could not be checked: {message}", **base)
    if res.success:
        return CheckResult(check.name, True, **base)
    info = res.result or {}
    table = frames[check.table]
    indices = list(info.get("unexpected_index_list") or [])
    count, examples, detail = int(info.get("unexpected_count") or 0), [], "see examples"
    if check.table == "rows":
        if check.key in ("conflicts", "duplicates"):  # show the rows of one text together
            keys = frame.loc[indices, ["split", "text"]].assign(k=lambda d: d["text"].map(text_key))
            indices = keys.sort_values(["split", "k"], kind="stable").index.tolist()
        examples = _examples(frame, indices)
    elif check.table == "label_rows":  # findings per label, counted and shown per snapshot row
        rows = _unique(int(table.loc[i, "row"]) for i in indices)
        count, examples = len(rows), _examples(frame, rows)
    else:
        examples = [_json_row(r, ("balance_count",)) for r in table.loc[indices[:MAX_EXAMPLES]].to_dict("records")]
    values = sorted({str(v) for v in info.get("partial_unexpected_list") or []})[:MAX_EXAMPLES]
    if check.name.startswith("column"):
        detail = f"columns found: {', '.join(map(str, frame.columns)) or 'none of text, label, split'}"
    elif check.key == "not_empty":
        detail = "the dataset has no rows"
    elif check.key == "splits_present":
        missing = table.loc[table["rows"] == 0, "split"].tolist()
        detail = f"missing split(s): {', '.join(missing)}"
    elif check.key == "min_labels":
        detail = f"{len(table)} label(s): {', '.join(table['label'])}; a classifier needs two or more"
    elif check.key == "label_min_count":
        low = table.loc[indices]
        detail = f"fewer than {cfg.min_train_count} train rows: " + ", ".join(
            f"{r.label} ({r.train_count})" for r in low.itertuples()
        )
    elif check.key == "class_balance":
        present = table[table["train_count"] > 0]
        common = present.iloc[int(present["train_count"].argmax())]
        rarest = present.iloc[int(present["train_count"].argmin())]
        detail = (
            f"rarest label '{rarest['label']}' has {rarest['train_count']} train rows, most common "
            f"'{common['label']}' {common['train_count']} "
            f"(ratio 1:{common['train_count'] / rarest['train_count']:.1f}, allowed 1:{cfg.max_imbalance_ratio:g})"
        )
    elif check.key == "text_length":
        lengths = frame.loc[indices, "text"].str.len()
        detail = (
            f"{count} text(s) outside {cfg.min_text_chars}..{cfg.max_text_chars} characters "
            f"(shortest {int(lengths.min())}, longest {int(lengths.max())})"
        )
    elif check.key == "duplicates":
        keys = frame.loc[indices, "text"].map(text_key)
        detail = f"{count} extra copies of {keys.nunique()} text(s) within their split"
    elif check.key == "leakage":
        by_split = frame.loc[indices, "split"].value_counts()
        detail = "rows whose text is also in train: " + ", ".join(f"{s} {n}" for s, n in by_split.items())
    elif check.key == "conflicts":
        groups = frame.loc[indices, ["split", "text"]].assign(k=lambda d: d["text"].map(text_key))
        detail = f"{groups.drop_duplicates(['split', 'k']).shape[0]} text(s) carry different labels within a split"
    elif values:
        detail = f"unexpected values: {', '.join(json.dumps(v, ensure_ascii=False) for v in values)}"
    return CheckResult(check.name, False, count, detail, examples, **base)


def severities(cfg: ValidationConfig) -> dict[str, str]:
    """Every check key's severity: the configured ones, and the fixed errors the later steps rely on."""
    fixed = {
        k: "error"
        for k in (
            "columns",
            "not_empty",
            "label_not_null",
            "label_in_set",
            "min_labels",
            "split_not_null",
            "split_known",
            "splits_present",
        )
    }
    return fixed | cfg.severity.model_dump()


def source_checks(source: dict[str, Any]) -> list[CheckResult]:
    """Malformed rows the reader left out (data.bad_rows skip: counted, warn: a warning; error never gets here)."""
    files = [f for f in source.get("files", []) if f.get("bad_row_count")]
    count = sum(f["bad_row_count"] for f in files)
    if not count:
        return []
    policy = source.get("bad_row_policy", "skip")
    where = "; ".join(
        f"{Path(f['file']).name} line(s) {', '.join(map(str, f['bad_lines'][:10]))}"
        + (", ..." if f["bad_row_count"] > 10 else "")
        for f in files
    )
    examples = [{"file": Path(f["file"]).name} | b for f in files for b in f["bad_rows"]][:MAX_EXAMPLES]
    return [
        CheckResult(
            "source rows well-formed",
            policy == "skip",
            count,
            f"{count} malformed row(s) left out (data.bad_rows={policy}): {where}",
            examples,
            severity="warning",
            key="bad_rows",
            rule="field count as the header's",
        )
    ]


def validate(
    frame: pd.DataFrame,
    labels: list[str],
    report_dir: Path,
    settings: ValidationConfig | None = None,
    source: dict[str, Any] | None = None,
) -> ValidationReport:
    """Run the suite, write the Markdown/JSON report, and raise DataValidationError if an error-severity check fails.

    ``source`` is the ingest report of this snapshot (ingest.read_report), when there is one.
    """
    cfg = settings or ValidationConfig()
    level = severities(cfg)
    frame = frame.reset_index(drop=True)  # example rows are looked up by the index GX reports
    present = set(frame.columns) & set(REQUIRED_COLUMNS)
    frames = {"rows": _row_frame(frame)}
    if "label" in present:
        frames["label_rows"] = _label_rows(frame)
    if "split" in present:
        frames["split_counts"] = _split_counts(frame)
    label_counts = None
    if "label" in present:
        if "split" in present and (frame["split"] == "train").any():
            label_counts = _label_counts(frames["label_rows"], labels)
        frames["label_counts"] = label_counts if label_counts is not None else pd.DataFrame({"label": labels})
    # Checks on a missing column only repeat the column check: keep the report to the point.
    checks = [c for c in _checks(labels, cfg, label_counts) if set(c.needs) <= present and level[c.key] != "off"]
    results = _run_suites(frames, checks, level)
    report = ValidationReport(
        [
            *(source_checks(source) if source else []),
            *(_describe(c, results[c.name], frame, frames, cfg, level[c.key]) for c in checks),
        ],
        rows=len(frame),
        settings={k: v for k, v in cfg.model_dump().items() if k != "severity"},
        source_notes=[n for n in (source or {}).get("notes", []) if "malformed row" not in n],
    )
    path = report.write(report_dir)
    for check in report.warnings:
        log.warning("data check warning: %s (%d %s): %s", check.name, check.unexpected_count, check.unit, check.detail)
    if not report.passed:
        log.error("data validation failed; full report: %s", path)
        raise DataValidationError(
            f"data validation failed: {', '.join(c.name for c in report.failed)} (report: {path})", report
        )
    log.info("%s", report.summary())
    return report
