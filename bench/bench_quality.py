"""Model quality within a training budget: dair-ai/emotion (single-label) or GoEmotions (28 labels, multi-label).

Fine-tunes the embedded all-MiniLM-L6-v2 with our training step, selects the model on validation only
(best epoch by macro-F1; for GoEmotions per-label thresholds tuned on dev), then scores the official test split
once. Reference figures are written beside ours.

    python bench/bench_quality.py --dataset emotion --seeds 42,43,44 --distill
    python bench/bench_quality.py --dataset goemotions --seeds 43,44,45 --distill

The settings are params.yaml with recipes/<dataset>.yaml layered over it (as `emotion run --recipe <dataset>`
reads them), then --set. With --distill the seeds' runs are teachers and one more run (seed = last seed + 1)
learns from their mean predictions as well as from the labels (pipeline/training/distill.py); every run, teachers
and student, counts towards the training time, and the model kept is still the best of them on validation.

Writes bench/results/bench_quality_<dataset>.json. Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, write_result

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = REPO.parent / "shared" / "data"
REFERENCES = {
    "emotion": {
        "target": {"accuracy": 0.931, "macro_f1": 0.885},
        "roberta-base (verified)": {"accuracy": 0.931, "macro_f1": 0.882},
        "distilbert-base-uncased (verified)": {"accuracy": 0.927, "macro_f1": 0.8825},
        "MiniLM fine-tuned (model card)": {"accuracy": 0.9135, "macro_f1": 0.8605},
        "TF-IDF + linear SVM": {"accuracy": 0.8725, "macro_f1": 0.808},
    },
    "goemotions": {"target": {"macro_f1": 0.50}, "BERT-base (Demszky et al. 2020)": {"macro_f1": 0.46}},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", choices=sorted(REFERENCES), default="emotion", help="also the recipe: recipes/<dataset>.yaml"
    )
    p.add_argument("--seeds", default="42", help="comma-separated seeds: one run each, the best on validation is kept")
    p.add_argument(
        "--soup",
        action="store_true",
        help="runs share the first seed's head (train.init_seed) and are averaged greedily on validation "
        "(pipeline/training/soup.py) instead of keeping the best one",
    )
    p.add_argument(
        "--distill",
        action="store_true",
        help="the seeds' runs are teachers of one more run (seed = last seed + 1) that also learns from "
        "their mean predictions (train.teachers); the best of all runs on validation is kept",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key over params.yaml and the recipe, e.g. --set train.epochs=6",
    )
    args = p.parse_args()
    if args.soup and args.distill:
        p.error("--soup and --distill are two ways to combine the runs: choose one")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "great_expectations", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pipeline.config import load_config, parse_overrides, read_recipe
    from pipeline.data import encode, ingest
    from pipeline.stages import score_model
    from pipeline.training.soup import greedy_soup
    from pipeline.training.train import train

    # params.yaml < recipes/<dataset>.yaml < --set, as `emotion run --recipe <dataset>` reads them
    overrides = [f"data.source={DATA / args.dataset}", *args.set]
    cfg = load_config(REPO / "params.yaml", overrides, environ={}, recipes=[args.dataset])
    frame = ingest.normalize(ingest.read_source(cfg.data), cfg.data)
    data = encode.encode(frame, encode.label_set(frame, cfg.data.labels))
    # the recipe as recorded in the results: the train settings the recipe file and --set name, typed
    named = read_recipe(args.dataset).get("train", {}) | parse_overrides(args.set).get("train", {})
    recipe = cfg.train.model_dump(include=set(named))
    runs, seeds = [], [int(seed) for seed in args.seeds.split(",")]
    init_seed = seeds[0] if args.soup else None  # a soup needs one shared head
    with tempfile.TemporaryDirectory() as out:
        plan = [(seed, []) for seed in seeds]
        if args.distill:
            plan.append((seeds[-1] + 1, [str(Path(out) / f"seed{seed}") for seed in seeds]))
        for seed, teachers in plan:  # candidates; the best on validation macro-F1 is the model, test is not looked at
            started = time.perf_counter()
            model_dir = Path(out) / f"seed{seed}"
            settings = {"seed": seed, "init_seed": init_seed, "teachers": teachers, "resume": False}
            result = train(data, cfg.model, cfg.train.model_copy(update=settings), model_dir)
            runs.append((result, time.perf_counter() - started))
            logging.info(
                "seed %d%s: val macro-F1 %.4f in %.1f min",
                seed,
                " (student)" if teachers else "",
                result.val_macro_f1,
                runs[-1][1] / 60,
            )
        result, _ = max(runs, key=lambda run: run[0].val_macro_f1)
        seconds = sum(run_seconds for _, run_seconds in runs)
        soup = greedy_soup([r.model_dir for r, _ in runs], data, Path(out) / "soup") if args.soup else None
        evaluation = score_model(cfg, soup.model_dir if soup else result.model_dir, data)
    metrics = {k: round(v, 4) for k, v in evaluation.metrics.items()}
    path = write_result(
        f"bench_quality_{args.dataset}",
        {
            "machine": machine(),
            "dataset": args.dataset,
            "rows": {s: len(f) for s, f in data.splits.items()},
            "model": "all-MiniLM-L6-v2 (embedded)" if cfg.model.name == "embedded" else cfg.model.name,
            "recipe_file": f"recipes/{args.dataset}.yaml",
            "recipe": recipe,
            "training_seconds": round(seconds, 1),
            "seeds": {
                r.model_dir.name: {"val_macro_f1": round(r.val_macro_f1, 4), "minutes": round(t / 60, 1)}
                for r, t in runs
            },
            "kept_seed": result.model_dir.name,
            "student": {"seed": runs[-1][0].model_dir.name, "teachers": [r.model_dir.name for r, _ in runs[:-1]]}
            if args.distill
            else None,
            "soup": {
                "ingredients": soup.ingredients,
                "val_macro_f1": round(soup.val_macro_f1, 4),
                "calibration": soup.calibration,
            }
            if soup
            else None,
            "train_samples_per_second": round(result.samples_per_second, 1),
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "history": result.history,
            "weight_average": {
                "evaluations": result.averaged_checkpoints,
                "val_macro_f1": result.averaged_val_macro_f1,
                "kept": result.averaged,
            },
            "calibration": result.calibration,
            "test": metrics,
            "references": REFERENCES[args.dataset],
            "met": all(metrics.get(k, 0) >= v for k, v in REFERENCES[args.dataset]["target"].items()),
        },
    )
    chosen = (
        f"average of {result.averaged_checkpoints} evaluations" if result.averaged else f"epoch {result.best_epoch}"
    )
    chosen = f"soup of {'+'.join(soup.ingredients)}" if soup else f"{result.model_dir.name}, {chosen}"
    print(
        f"{args.dataset}: test accuracy {metrics['accuracy']}, macro-F1 {metrics['macro_f1']} after "
        f"{seconds / 60:.1f} min (kept: {chosen}) -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
