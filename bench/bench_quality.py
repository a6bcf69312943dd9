"""Model quality within a training budget: dair-ai/emotion (single-label) or GoEmotions (28 labels, multi-label).

The benchmark is the product: it runs

    emotion run --recipe <dataset>-distill --set data.source=../shared/data/<dataset>

in a project folder of its own (a temporary one unless --project), and records what that run did. The recipe
trains the teachers (one MLflow child run each) and then the student, which learns from their mean predictions
and the labels (pipeline/training/teachers.py, distill.py); the student is the model evaluated on the official
test split, gated and registered. Model selection uses validation only.

    python bench/bench_quality.py --dataset emotion
    python bench/bench_quality.py --dataset goemotions
    python bench/bench_quality.py --dataset emotion --seeds 42,43      # teachers 42, 43; the student seed 44
    python bench/bench_quality.py --dataset emotion --smoke            # minutes: sample data, 5 steps per model

Writes bench/results/bench_quality_<dataset>.json (``_smoke`` for --smoke). Not a test: never collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, machine, matmul_gflops, run_emotion, write_result

DATA = REPO.parent / "shared" / "data"
REFERENCES = {
    "emotion": {
        "target": {"accuracy": 0.935, "macro_f1": 0.900},
        "roberta-base (verified)": {"accuracy": 0.931, "macro_f1": 0.882},
        "distilbert-base-uncased (verified)": {"accuracy": 0.927, "macro_f1": 0.8825},
        "MiniLM fine-tuned (model card)": {"accuracy": 0.9135, "macro_f1": 0.8605},
        "TF-IDF + linear SVM": {"accuracy": 0.8725, "macro_f1": 0.808},
    },
    "goemotions": {"target": {"macro_f1": 0.53}, "BERT-base (Demszky et al. 2020)": {"macro_f1": 0.46}},
}
SMOKE = ["train.max_steps=5", "train.distill.teacher_seeds=[42, 43]", "train.seed=44"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--dataset", choices=sorted(REFERENCES), default="emotion", help="also the recipe: recipes/<dataset>-distill"
    )
    p.add_argument(
        "--seeds", help="comma-separated teacher seeds instead of the recipe's; the student's seed is the last + 1"
    )
    p.add_argument("--data", type=Path, help="the dataset's folder (default: ../shared/data/<dataset>)")
    p.add_argument("--project", type=Path, help="project folder for the run (kept); default: a temporary one")
    p.add_argument("--smoke", action="store_true", help="the shipped sample data, 5 steps per model: checks the path")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to `emotion run` after the recipe, e.g. --set train.epochs=3",
    )
    args = p.parse_args()
    if args.smoke and (args.dataset != "emotion" or args.data):
        p.error("--smoke runs the shipped sample, which is emotion data: use --dataset emotion without --data")
    return args


def run_overrides(args: argparse.Namespace, project: Path) -> list[str]:
    """The run's --set values: its own project folder (no DVC tracking: a scratch copy), the data, then the user's."""
    source = "sample" if args.smoke else (args.data or DATA / args.dataset).resolve()
    overrides = [f"project_dir={project}", "data.dvc_track=false", f"data.source={source}"]
    if args.seeds:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        overrides += [f"train.distill.teacher_seeds={json.dumps(seeds)}", f"train.seed={seeds[-1] + 1}"]
    return overrides + (SMOKE if args.smoke else []) + args.set


def emotion_run(args: argparse.Namespace, project: Path) -> tuple[dict[str, Any], list[str], float]:
    """`emotion run --json` with the dataset's distillation recipe; its summary, the --set values and wall seconds."""
    overrides = run_overrides(args, project)
    started = time.perf_counter()
    out = run_emotion(["run", "--json", "--recipe", f"{args.dataset}-distill"], overrides, cwd=project)
    return json.loads(out), overrides, time.perf_counter() - started


def result(
    args: argparse.Namespace, summary: dict[str, Any], overrides: list[str], wall: float, project: Path
) -> dict[str, Any]:
    """The JSON record: the run's figures with the machine and the settings that produced them."""
    from pipeline.config import load_config
    from pipeline.registry.versioning import git_commit

    cfg = load_config(REPO / "params.yaml", overrides, environ={}, recipes=[f"{args.dataset}-distill"])
    student = json.loads((Path(summary["run_dir"]) / "training_summary.json").read_text())  # the run's own folder
    teacher_seconds = sum(t["train_seconds"] for t in summary["teachers"])
    metrics = summary["metrics"]
    return {
        "machine": machine(),
        "git_commit": git_commit(REPO),
        "emotion_run": f"emotion run --recipe {args.dataset}-distill " + " ".join(f"--set {o}" for o in overrides),
        "dataset": args.dataset,
        "rows": summary["rows"],
        "model": "all-MiniLM-L6-v2 (embedded)" if cfg.model.name == "embedded" else cfg.model.name,
        "recipe_file": f"recipes/{args.dataset}-distill.yaml",
        "recipe": cfg.train.model_dump(exclude={"checkpoint_dir", "teachers"}),
        "training_minutes": round((teacher_seconds + student["train_seconds"]) / 60, 1),
        "wall_minutes": round(wall / 60, 1),
        "teachers": {
            t["name"]: {"val_macro_f1": t["val_macro_f1"], "minutes": round(t["train_seconds"] / 60, 1)}
            for t in summary["teachers"]
        },
        "student": {
            "seed": cfg.train.seed,
            "val_macro_f1": round(student["val_macro_f1"], 4),
            "minutes": round(student["train_seconds"] / 60, 1),
            "best_epoch": student["best_epoch"],
            "weight_average_kept": student["averaged"],
            "samples_per_second": round(student["samples_per_second"], 1),
        },
        "training": summary["training"],
        "test": metrics,
        "gate": summary["gate"],
        "registered": {"model": summary["model"], "version": summary["version"], "aliases": summary["aliases"]},
        "references": REFERENCES[args.dataset],
        "met": all(metrics.get(k, 0) >= v for k, v in REFERENCES[args.dataset]["target"].items()),
    }


def main() -> int:
    args = parse_args()
    import torch

    peak = round(matmul_gflops(torch.bfloat16), 1)  # before the run: what this machine gives now
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as scratch:
        project = (args.project or Path(scratch)).resolve()
        project.mkdir(parents=True, exist_ok=True)
        summary, overrides, wall = emotion_run(args, project)
        payload = result(args, summary, overrides, wall, project) | {"bf16_matmul_gflops": peak}
    path = write_result(f"bench_quality_{args.dataset}{'_smoke' if args.smoke else ''}", payload)
    metrics = payload["test"]
    print(
        f"{args.dataset}: test accuracy {metrics['accuracy']}, macro-F1 {metrics['macro_f1']} (student seed "
        f"{payload['student']['seed']} of {', '.join(payload['teachers'])}) after {payload['training_minutes']} min "
        f"of training -> {path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
