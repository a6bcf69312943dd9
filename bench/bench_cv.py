"""Tuned recipe against the default one, by 5-fold cross-validation on a 7-label dataset without an official split.

The dataset is GoEmotions mapped to Ekman's six emotions plus neutral (the grouping its authors publish), keeping
the comments whose labels fall into exactly one group. Two disjoint random samples are drawn from it:

1. the search sample: `emotion ingest`, then `emotion tune` (Optuna on its train/validation split) writes the best
   trial as a recipe file;
2. the evaluation sample, a CSV with no split column: `emotion run --set evaluate.cv_folds=5` with the default
   settings, then with `--recipe <the tuned file>`, each in a project of its own. Both runs split it the same way
   (data.split_seed) and so cross-validate on the same folds of train + validation; test is left to the final model.

The search never sees the evaluation sample, so the comparison is not flattered by the search. Per-fold scores,
their mean and standard deviation, the per-fold paired differences and the final models' test metrics (with their
95% intervals) go to bench/results/bench_cv.json with the machine and the bf16 matmul peak of the same run.

    python bench/bench_cv.py                     # about an hour on 2 cores
    python bench/bench_cv.py --smoke             # minutes: small samples, 5 steps per model, 2 trials, 2 folds

Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from common import REPO, machine, matmul_gflops, run_emotion, write_result

DATA = REPO.parent / "shared" / "data" / "goemotions"
# Demszky et al. (2020), data/ekman_mapping.json of google-research/goemotions; "neutral" stays itself.
EKMAN = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": [
        "joy",
        "amusement",
        "approval",
        "excitement",
        "gratitude",
        "love",
        "optimism",
        "relief",
        "pride",
        "admiration",
        "desire",
        "caring",
    ],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
    "neutral": ["neutral"],
}
SMOKE = {"tune_rows": 1500, "cv_rows": 1500, "trials": 2, "folds": 2}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA, help="the GoEmotions folder (train/dev/test.tsv, labels.txt)")
    p.add_argument("--tune-rows", type=int, default=3000, help="rows of the search sample")
    p.add_argument("--cv-rows", type=int, default=4000, help="rows of the evaluation sample")
    p.add_argument("--trials", type=int, default=8, help="Optuna trials")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the two samples")
    p.add_argument("--project", type=Path, help="folder for the samples and the three projects (kept)")
    p.add_argument("--smoke", action="store_true", help="small samples, 5 steps per model: checks the path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to tune and both runs")
    args = p.parse_args()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.set = ["train.max_steps=5", *args.set]
    return args


def ekman_rows(folder: Path) -> pd.DataFrame:
    """Every GoEmotions comment (all three official files) whose labels map to exactly one Ekman group."""
    names = (folder / "labels.txt").read_text().split()
    group = {label: ekman for ekman, labels in EKMAN.items() for label in labels}
    rows = []
    for split in ("train", "dev", "test"):
        for line in (folder / f"{split}.tsv").read_text(encoding="utf-8").splitlines():
            text, ids, _ = line.split("\t")
            groups = {group[names[int(i)]] for i in ids.split(",")}
            if len(groups) == 1:
                rows.append((text, groups.pop()))
    frame = pd.DataFrame(rows, columns=["text", "label"])
    return frame.drop_duplicates("text", keep=False).reset_index(drop=True)  # a text twice may carry two groups


def samples(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The two disjoint samples as CSV files (text,label; no split column) and their label counts."""
    frame = ekman_rows(args.data).sample(frac=1.0, random_state=args.seed)
    if len(frame) < args.tune_rows + args.cv_rows:
        raise SystemExit(f"{len(frame)} single-group rows, {args.tune_rows + args.cv_rows} asked")
    parts = {"tune": frame.iloc[: args.tune_rows], "cv": frame.iloc[args.tune_rows : args.tune_rows + args.cv_rows]}
    info: dict[str, Any] = {"single_group_rows": len(frame)}
    for name, part in parts.items():
        part.to_csv(root / f"{name}.csv", index=False)
        info[name] = {"rows": len(part), "labels": part["label"].value_counts().to_dict()}
    return info


def common_overrides(project: Path, source: Path, args: argparse.Namespace) -> list[str]:
    """A scratch project (no DVC tracking), the sample as the source, the labels inferred from it."""
    return [f"project_dir={project}", f"data.source={source}", "data.labels=null", "data.dvc_track=false", *args.set]


def tune(args: argparse.Namespace, root: Path) -> tuple[Path, float]:
    """Ingest the search sample, run the study; the recipe file it writes and the wall minutes."""
    overrides = common_overrides(root / "tune", root / "tune.csv", args)
    recipe = root / "tuned.yaml"
    started = time.perf_counter()
    run_emotion(["ingest"], overrides)
    run_emotion(["tune", "--trials", str(args.trials)], [*overrides, f"tune.recipe={recipe}"])
    return recipe, (time.perf_counter() - started) / 60


def cross_validate(args: argparse.Namespace, root: Path, name: str, recipe: Path | None) -> dict[str, Any]:
    """`emotion run` with K-fold CV on the evaluation sample; its CV record, final test metrics and minutes."""
    overrides = common_overrides(root / name, root / "cv.csv", args) + [f"evaluate.cv_folds={args.folds}"]
    started = time.perf_counter()
    summary = json.loads(run_emotion(["run", "--json", *(["--recipe", str(recipe)] if recipe else [])], overrides))
    minutes = (time.perf_counter() - started) / 60
    cv = summary["cross_validation"]
    shown = ["emotion run", *([f"--recipe {recipe.name}"] if recipe else []), *(f"--set {o}" for o in overrides)]
    return {
        "emotion_run": " ".join(shown),
        "wall_minutes": round(minutes, 1),
        "cv_mean": {k: round(v, 4) for k, v in cv["mean"].items()},
        "cv_std": {k: round(v, 4) for k, v in cv["std"].items()},
        "per_fold": cv["per_fold"],
        "held_out_rows": cv["held_out_rows"],
        "final_test": summary["metrics"],
    }


def compare(default: dict[str, Any], tuned: dict[str, Any], metric: str) -> dict[str, Any]:
    """Mean gain, both standard deviations, and the paired per-fold differences (same folds in both runs)."""
    gains = [t[metric] - d[metric] for d, t in zip(default["per_fold"], tuned["per_fold"], strict=True)]
    gain = tuned["cv_mean"][metric] - default["cv_mean"][metric]
    return {
        "gain": round(gain, 4),
        "default_std": default["cv_std"][metric],
        "tuned_std": tuned["cv_std"][metric],
        "gain_over_default_std": round(gain / default["cv_std"][metric], 2) if default["cv_std"][metric] else None,
        "paired_fold_gains": [round(g, 4) for g in gains],
        "paired_gain_std": round(statistics.stdev(gains), 4) if len(gains) > 1 else None,
        "met": gain > max(default["cv_std"][metric], tuned["cv_std"][metric]),
    }


def main() -> int:
    args = parse_args()
    import torch

    peak = round(matmul_gflops(torch.bfloat16), 1)
    with tempfile.TemporaryDirectory(prefix="bench-cv-") as scratch:
        root = (args.project or Path(scratch)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        data = samples(args, root)
        recipe, tune_minutes = tune(args, root)
        recipe_text = recipe.read_text()
        default = cross_validate(args, root, "default", None)
        tuned = cross_validate(args, root, "tuned", recipe)
    payload = {
        "machine": machine(),
        "bf16_matmul_gflops": peak,
        "dataset": "GoEmotions mapped to Ekman's 6 emotions + neutral, single-group comments, two disjoint samples",
        "samples": data,
        "folds": args.folds,
        "tune": {"trials": args.trials, "wall_minutes": round(tune_minutes, 1), "recipe": recipe_text},
        "default": default,
        "tuned": tuned,
        "macro_f1": compare(default, tuned, "macro_f1"),
        "accuracy": compare(default, tuned, "accuracy"),
    }
    path = write_result(f"bench_cv{'_smoke' if args.smoke else ''}", payload)
    m = payload["macro_f1"]
    print(
        f"{args.folds}-fold CV macro-F1: default {default['cv_mean']['macro_f1']} ± {m['default_std']}, tuned "
        f"{tuned['cv_mean']['macro_f1']} ± {m['tuned_std']} (gain {m['gain']}, met: {m['met']}) -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
