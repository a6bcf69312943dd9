"""SemEval-2018 Task 1 E-c (English) through `emotion run` with exactly the settings `emotion inspect` proposes,
beside a TF-IDF + one-vs-rest linear baseline on the same rows, with the task's metrics and bootstrap intervals.

The folder ../shared/data/semeval2018-ec is used as published: ``2018-E-c-En-train.txt`` trains, ``-dev`` selects
(validation), ``-test-gold`` (the released test labels) tests. `emotion inspect` proposes the flags
(data.label_columns=auto, data.empty_labels=neutral, ...); this script pastes them into

    emotion run --json --set data.source=../shared/data/semeval2018-ec --set data.label_columns=auto ...

in a project folder of its own, then scores the run's saved test predictions with the task's metrics over the 11
emotions (a row predicted or labelled only ``neutral`` has none of them): Jaccard accuracy (per row
|gold & predicted| / |gold | predicted|, 1 when both are empty), micro-F1 and macro-F1, each with a 95% bootstrap
interval. The baseline (sklearn TF-IDF word+char n-grams, one logistic regression per emotion, C chosen on dev)
reads the same cleaned snapshot.

    python bench/bench_real_data.py                       # the full run (hours on 2 CPU cores)
    python bench/bench_real_data.py --baseline-only       # the baseline alone: about a minute
    python bench/bench_real_data.py --set train.epochs=1  # passed to `emotion run` after the proposal

Writes bench/results/bench_real_semeval.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, run_emotion, write_result

DATA = REPO.parent / "shared" / "data" / "semeval2018-ec"
EMOTIONS = (DATA / "2018-E-c-En-train.txt").open().readline().rstrip().split("\t")[2:]  # in file order
ANCHORS = {  # SemEval-2018 Task 1 E-c, English: Jaccard accuracy / micro-F1 / macro-F1
    "target (issue 28)": {"jaccard": 0.56},
    "11th of 35 teams": {"jaccard": 0.520, "micro_f1": 0.640, "macro_f1": 0.493},
    "winner (about)": {"jaccard": 0.588, "micro_f1": 0.701, "macro_f1": 0.528},
}
SAMPLES, SEED = 1000, 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the SemEval E-c folder (default: ../shared/data/...)")
    p.add_argument("--project", type=Path, help="project folder for the run (kept); default: a temporary one")
    p.add_argument("--baseline-only", action="store_true", help="skip `emotion run`: the baseline alone")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to `emotion run`")
    return p.parse_args()


def proposal(source: Path, project: Path) -> list[str]:
    """`emotion inspect`'s flags for the folder, as --set values; refused when its check failed."""
    from pipeline.config import load_config
    from pipeline.data.inspect import inspect

    cfg = load_config(REPO / "params.yaml", [f"project_dir={project}"], environ={})
    result = inspect(str(source), cfg.data, project, cfg.checks)
    if not result.check.startswith("ok"):
        raise SystemExit(f"emotion inspect's proposal failed its check: {result.check}")
    words = shlex.split(" ".join(result.flags()))
    return words[1::2]


def splits(overrides: list[str], project: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """The cleaned train / validation / test texts and their 11-emotion multi-hot rows, as the run prepares them."""
    from pipeline.config import load_config
    from pipeline.data import clean, ingest

    cfg = load_config(REPO / "params.yaml", overrides, environ={})
    frame = clean.clean(ingest.normalize(ingest.read_source(cfg.data, project), cfg.data), cfg.clean).frame
    out = {}
    for split in ("train", "validation", "test"):
        part = frame[frame["split"] == split]
        hot = np.array([[name in labels for name in EMOTIONS] for labels in part["label"]], dtype=int)
        out[split] = (part["text"].tolist(), hot)
    return out


def task_metrics(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Jaccard accuracy, micro-F1 and macro-F1 over the emotions (SemEval-2018 E-c)."""
    from sklearn.metrics import f1_score

    inter, union = (gold & pred).sum(axis=1), (gold | pred).sum(axis=1)
    jaccard = np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean()
    return {
        "jaccard": float(jaccard),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
    }


def with_intervals(gold: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The metrics and their 95% percentile bootstrap intervals (rows resampled, seeded)."""
    point = task_metrics(gold, pred)
    rng = np.random.default_rng(SEED)
    draws = [
        task_metrics(gold[idx], pred[idx]) for idx in (rng.integers(0, len(gold), len(gold)) for _ in range(SAMPLES))
    ]
    out: dict[str, Any] = {}
    for name, value in point.items():
        values = np.array([d[name] for d in draws])
        out[name] = round(value, 4)
        out[f"{name}_ci"] = [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)]
    return out


def baseline(data: dict[str, tuple[list[str], np.ndarray]]) -> tuple[np.ndarray, dict[str, Any]]:
    """TF-IDF (word 1-2 and char 2-5 grams) + one logistic regression per emotion; C chosen by dev micro-F1."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline, make_union

    def model(c: float) -> Any:
        features = make_union(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True),
        )
        classifier = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000, class_weight="balanced"))
        return make_pipeline(features, classifier)

    (train_x, train_y), (dev_x, dev_y), (test_x, _) = data["train"], data["validation"], data["test"]
    scores = {}
    for c in (0.5, 1.0, 2.0, 4.0):
        fitted = model(c).fit(train_x, train_y)
        scores[c] = task_metrics(dev_y, fitted.predict(dev_x))["micro_f1"]
    best = max(scores, key=scores.__getitem__)
    fitted = model(best).fit(train_x, train_y)
    return fitted.predict(test_x).astype(int), {
        "C": best,
        "dev_micro_f1": {str(c): round(v, 4) for c, v in scores.items()},
    }


def model_predictions(project: Path, labels: list[str], n_test: int) -> np.ndarray:
    """The run's saved test decisions (evaluation's test_predictions.npz) over the 11 emotions."""
    found = sorted(project.rglob("test_predictions.npz"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"the run left no test_predictions.npz under {project}")
    with np.load(found[-1]) as saved:
        pred = saved["y_pred"]
    if pred.shape != (n_test, len(labels)):
        raise SystemExit(f"test predictions of shape {pred.shape}, expected ({n_test}, {len(labels)})")
    return pred[:, [labels.index(name) for name in EMOTIONS]].astype(int)


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-real-") as scratch:
        project = (args.project or Path(scratch)).resolve()
        project.mkdir(parents=True, exist_ok=True)
        overrides = [f"project_dir={project}", "data.dvc_track=false", *proposal(args.data.resolve(), project)]
        data = splits(overrides, project)
        gold = data["test"][1]
        started = time.perf_counter()
        base_pred, base_info = baseline(data)
        payload: dict[str, Any] = {
            "machine": machine(),
            "dataset": "SemEval-2018 Task 1 E-c, English (train / dev / test-gold as published)",
            "rows": {k: len(v[0]) for k, v in data.items()},
            "inspect_flags": overrides[2:],
            "baseline": {
                "name": "TF-IDF word+char n-grams, one-vs-rest logistic regression",
                **base_info,
                "seconds": round(time.perf_counter() - started, 1),
                "test": with_intervals(gold, base_pred),
            },
            "anchors": ANCHORS,
        }
        if not args.baseline_only:
            run_overrides = overrides + args.set
            payload["emotion_run"] = "emotion run --json " + " ".join(f"--set {shlex.quote(o)}" for o in run_overrides)
            started = time.perf_counter()
            summary = json.loads(run_emotion(["run", "--json"], run_overrides, cwd=project))
            labels = sorted([*EMOTIONS, "neutral"])  # data.labels=null: the train split's labels, sorted
            pred = model_predictions(project, labels, len(gold))
            payload["model"] = {
                "wall_minutes": round((time.perf_counter() - started) / 60, 1),
                "run_metrics": summary.get("metrics"),
                "test": with_intervals(gold, pred),
            }
            payload["met"] = payload["model"]["test"]["jaccard"] >= ANCHORS["target (issue 28)"]["jaccard"]
    path = write_result("bench_real_semeval" + ("_baseline" if args.baseline_only else ""), payload)
    for name in ("baseline", "model"):
        if name in payload:
            t = payload[name]["test"]
            print(
                f"{name}: Jaccard {t['jaccard']} {t['jaccard_ci']}, micro-F1 {t['micro_f1']}, macro-F1 {t['macro_f1']}"
            )
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
