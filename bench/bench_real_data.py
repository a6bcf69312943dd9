"""Real emotion datasets as published, through `emotion run` with exactly the settings `emotion inspect` proposes,
beside a TF-IDF + linear baseline on the same cleaned rows in the same run, with bootstrap intervals.

``--dataset semeval`` (default): SemEval-2018 Task 1 E-c, English, in ../shared/data/semeval2018-ec as published:
``2018-E-c-En-train.txt`` trains, ``-dev`` selects (validation), ``-test-gold`` (the released test labels) tests.
Scored with the task's metrics over the 11 emotions (a row predicted or labelled only ``neutral`` has none of them):
Jaccard accuracy (per row |gold & predicted| / |gold | predicted|, 1 when both are empty), micro-F1 and macro-F1.
Baseline: TF-IDF word+char n-grams, one logistic regression per emotion, C chosen on dev micro-F1.

``--dataset crowdflower``: CrowdFlower's ``text_emotion.csv`` (13 labels, no split). The file has no split, so the
run makes its own stratified, seeded one (``data.split_ratios`` [0.8, 0.1, 0.1], ``data.split_seed`` 42: the
defaults, not flags) in the run's scratch project; nothing is copied into the repository. Scored with accuracy and
macro-F1. Baseline: the same TF-IDF features, one multinomial logistic regression, C chosen on validation macro-F1.

`emotion inspect`'s flags are pasted into

    emotion run --json --set data.source=... <inspect's flags> <--set values given here>

in a project folder of its own; its saved test predictions (checked against the gold rows, in order) are scored
with the dataset's metrics, each with a 95% percentile bootstrap interval (1000 resamples of the test rows, seeded).

    python bench/bench_real_data.py                           # SemEval: baseline + `emotion run`
    python bench/bench_real_data.py --dataset crowdflower --set train.epochs=3
    python bench/bench_real_data.py --baseline-only           # the baseline alone
    python bench/bench_real_data.py --smoke                   # 5 optimizer steps, one C: checks the path end to end

Writes bench/results/bench_real_<dataset>.json (``_baseline`` / ``_smoke`` suffixed). Not a test: never collected
by pytest.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, matmul_gflops, run_emotion, write_result

SHARED = REPO.parent / "shared" / "data"
SAMPLES, SEED = 1000, 0
Metrics = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def jaccard_micro_macro(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Jaccard accuracy, micro-F1 and macro-F1 over multi-hot rows (SemEval-2018 E-c's metrics)."""
    from sklearn.metrics import f1_score

    inter, union = (gold & pred).sum(axis=1), (gold | pred).sum(axis=1)
    jaccard = np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean()
    return {
        "jaccard": float(jaccard),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
    }


def accuracy_macro(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 over class ids."""
    from sklearn.metrics import f1_score

    return {
        "accuracy": float((gold == pred).mean()),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
    }


@dataclass(frozen=True)
class Dataset:
    """What differs between the datasets: where the data is, how labels are encoded and scored, what it is held to."""

    source: Path
    title: str
    multi_label: bool
    metrics: Metrics
    selection_metric: str  # the baseline's C is chosen on validation by this
    anchors: dict[str, dict[str, float]]
    target: tuple[str, float] | None  # (metric, value) the model is held to, if the issue set one

    def encode(self, rows: Sequence[Any], names: list[str]) -> np.ndarray:
        """Label names per row as the metric reads them: multi-hot over ``names``, or ids into ``names``."""
        if self.multi_label:
            return np.array([[name in set(row) for name in names] for row in rows], dtype=int).reshape(-1, len(names))
        return np.array([names.index(row) for row in rows], dtype=int)


SEMEVAL_DIR = SHARED / "semeval2018-ec"
DATASETS = {
    "semeval": Dataset(
        source=SEMEVAL_DIR,
        title="SemEval-2018 Task 1 E-c, English (train / dev / test-gold as published)",
        multi_label=True,
        metrics=jaccard_micro_macro,
        selection_metric="micro_f1",
        anchors={  # the shared task's English E-c results
            "11th of 35 teams": {"jaccard": 0.520, "micro_f1": 0.640, "macro_f1": 0.493},
            "winner (about)": {"jaccard": 0.588, "micro_f1": 0.701, "macro_f1": 0.528},
        },
        target=("jaccard", 0.56),
    ),
    "crowdflower": Dataset(
        source=SHARED / "crowdflower" / "text_emotion.csv",
        title="CrowdFlower text_emotion.csv as published; the run's stratified split 80/10/10, seed 42",
        multi_label=False,
        metrics=accuracy_macro,
        selection_metric="macro_f1",
        anchors={},
        target=None,
    ),
}


def scored_names(dataset: str, frame_labels: Sequence[Any]) -> list[str]:
    """The label names the metrics run over: SemEval's 11 emotions in file order (``neutral`` means none of them);
    otherwise every label of the train split, sorted."""
    if dataset == "semeval":
        return (SEMEVAL_DIR / "2018-E-c-En-train.txt").open().readline().rstrip().split("\t")[2:]
    return sorted(set(frame_labels))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="semeval")
    p.add_argument("--data", type=Path, help="the dataset's folder or file (default: ../shared/data/...)")
    p.add_argument("--project", type=Path, help="project folder for the run (kept); default: a temporary one")
    p.add_argument("--baseline-only", action="store_true", help="skip `emotion run`: the baseline alone")
    p.add_argument("--smoke", action="store_true", help="5 optimizer steps and one baseline C: the path, not quality")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to `emotion run`")
    return p.parse_args()


def proposal(source: Path, project: Path) -> list[str]:
    """`emotion inspect`'s flags for the source, as --set values; refused when its check failed."""
    from pipeline.config import load_config
    from pipeline.data.inspect import inspect

    cfg = load_config(REPO / "params.yaml", [f"project_dir={project}"], environ={})
    result = inspect(str(source), cfg.data, project, cfg.checks)
    if not result.check.startswith("ok"):
        raise SystemExit(f"emotion inspect's proposal failed its check: {result.check}")
    words = shlex.split(" ".join(result.flags()))
    return words[1::2]


def splits(overrides: list[str], project: Path) -> dict[str, tuple[list[str], list[Any]]]:
    """The cleaned train / validation / test texts and labels (a name, or a list of names), as the run prepares them."""
    from pipeline.config import load_config
    from pipeline.data import clean, ingest

    cfg = load_config(REPO / "params.yaml", overrides, environ={})
    frame = clean.clean(ingest.normalize(ingest.read_source(cfg.data, project), cfg.data), cfg.clean).frame
    return {
        split: (part["text"].tolist(), part["label"].tolist())
        for split, part in ((s, frame[frame["split"] == s]) for s in ("train", "validation", "test"))
    }


def with_intervals(metrics: Metrics, gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The metrics and their 95% percentile bootstrap intervals (rows resampled, seeded)."""
    point = metrics(gold, pred)
    rng = np.random.default_rng(SEED)
    draws = [metrics(gold[idx], pred[idx]) for idx in (rng.integers(0, len(gold), len(gold)) for _ in range(SAMPLES))]
    out: dict[str, Any] = {}
    for name, value in point.items():
        values = np.array([d[name] for d in draws])
        out[name] = round(value, 4)
        out[f"{name}_ci"] = [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]
    return out


def baseline(
    spec: Dataset, encoded: dict[str, tuple[list[str], np.ndarray]], grid: Sequence[float]
) -> tuple[np.ndarray, dict[str, Any]]:
    """TF-IDF (word 1-2 and char 2-5 grams) + logistic regression (one per emotion when multi-label, balanced class
    weights there; one multinomial otherwise); C chosen on the validation split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline, make_union

    def model(c: float) -> Any:
        features = make_union(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        )
        if spec.multi_label:
            classifier: Any = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000, class_weight="balanced"))
        else:
            classifier = LogisticRegression(C=c, max_iter=2000)
        return make_pipeline(features, classifier)

    (train_x, train_y), (dev_x, dev_y), (test_x, _) = encoded["train"], encoded["validation"], encoded["test"]
    scores = {}
    for c in grid:
        fitted = model(c).fit(train_x, train_y)
        scores[c] = spec.metrics(dev_y, fitted.predict(dev_x))[spec.selection_metric]
    best = max(scores, key=scores.__getitem__)
    fitted = model(best).fit(train_x, train_y)
    return fitted.predict(test_x).astype(int), {
        "C": best,
        f"validation_{spec.selection_metric}": {str(c): round(v, 4) for c, v in scores.items()},
    }


def run_decisions(project: Path) -> tuple[list[Any], list[Any]]:
    """The run's saved test truth and decisions (evaluation's test_predictions.npz), as label names per row."""
    found = sorted(project.rglob("test_predictions.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"the run left no test_predictions.npz under {project}")
    saved_map = json.loads((found[-1].parent / "prepared" / "label_map.json").read_text())  # the same run's folder
    labels = saved_map["labels"]
    with np.load(found[-1]) as saved:
        y_true, y_pred = saved["y_true"], saved["y_pred"]

    def names(rows: np.ndarray) -> list[Any]:
        if saved_map.get("multi_label"):
            return [[labels[j] for j in np.flatnonzero(row)] for row in rows]
        return [labels[int(i)] for i in rows]

    return names(y_true), names(y_pred)


def model_predictions(spec: Dataset, project: Path, names: list[str], gold: np.ndarray) -> np.ndarray:
    """The run's test decisions encoded as the gold rows are, after checking its truth is those rows, in order."""
    truth, decisions = run_decisions(project)
    if not np.array_equal(spec.encode(truth, names), gold):
        raise SystemExit("the run's test rows are not the rows the baseline was scored on (order or labels differ)")
    return spec.encode(decisions, names)


def main() -> int:
    args = parse_args()
    spec = DATASETS[args.dataset]
    import torch

    peak = round(matmul_gflops(torch.bfloat16), 1)  # before the run: what this machine gives now
    with tempfile.TemporaryDirectory(prefix="bench-real-") as scratch:
        project = (args.project or Path(scratch)).resolve()
        project.mkdir(parents=True, exist_ok=True)
        overrides = [
            f"project_dir={project}",
            "data.dvc_track=false",
            *proposal((args.data or spec.source).resolve(), project),
        ]
        data = splits(overrides, project)
        names = scored_names(args.dataset, data["train"][1])
        encoded = {split: (texts, spec.encode(labels, names)) for split, (texts, labels) in data.items()}
        gold = encoded["test"][1]
        started = time.perf_counter()
        base_pred, base_info = baseline(spec, encoded, (1.0,) if args.smoke else (0.5, 1.0, 2.0, 4.0))
        payload: dict[str, Any] = {
            "machine": machine(),
            "bf16_matmul_gflops": peak,
            "dataset": spec.title,
            "rows": {k: len(v[0]) for k, v in data.items()},
            "labels_scored": names,
            "inspect_flags": overrides[2:],
            "baseline": {
                "name": "TF-IDF word+char n-grams, "
                + ("one-vs-rest logistic regression" if spec.multi_label else "multinomial logistic regression"),
                **base_info,
                "seconds": round(time.perf_counter() - started, 1),
                "test": with_intervals(spec.metrics, gold, base_pred),
            },
            "anchors": spec.anchors,
        }
        if not args.baseline_only:
            extra = ["train.max_steps=5", "train.epochs=1"] if args.smoke else []
            run_overrides = overrides + extra + args.set
            payload["emotion_run"] = "emotion run --json " + " ".join(f"--set {shlex.quote(o)}" for o in run_overrides)
            payload["set_beyond_inspect"] = extra + args.set
            started = time.perf_counter()
            summary = json.loads(run_emotion(["run", "--json"], run_overrides, cwd=project))
            pred = model_predictions(spec, project, names, gold)
            payload["model"] = {
                "wall_minutes": round((time.perf_counter() - started) / 60, 1),
                "training": summary.get("training"),
                "run_metrics": summary.get("metrics"),
                "gate": summary.get("gate"),
                "test": with_intervals(spec.metrics, gold, pred),
            }
            if spec.target:
                metric, value = spec.target
                payload["target"] = {metric: value}
                payload["met"] = payload["model"]["test"][metric] >= value
    suffix = "_smoke" if args.smoke else "_baseline" if args.baseline_only else ""
    path = write_result(f"bench_real_{args.dataset}{suffix}", payload)
    for name in ("baseline", "model"):
        if name in payload:
            t = payload[name]["test"]
            print(f"{name}: " + ", ".join(f"{k} {t[k]} {t[k + '_ci']}" for k in t if not k.endswith("_ci")))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
