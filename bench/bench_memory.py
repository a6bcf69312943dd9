"""Peak memory and time of `emotion inspect` and `emotion score` on a large CSV with a broken tail (issue 27).

The file is built in a temporary folder: ``--rows`` valid rows, then blank lines, records of only blank cells and
1 MB lines of commas up to ``--size-mb``, as docs/formats.md describes. Each command runs in its own process under
``/usr/bin/time -v``, whose maximum resident set size is the figure reported (the target: score under 500 MB).
``--model`` scores with a model folder, or with a registered version (``@champion``, ``models:/NAME/VERSION``) of the
store in ``--project-dir`` (its ``mlflow.db``, e.g. /tmp/bench-proj from `make bench-model`: the real-size MiniLM);
without it, with the tiny 2-layer BERT the tests use (what the first docs table measured). ``--texts FILE`` takes
the valid rows from a dair-ai ``text;label`` file (e.g. the emotion train texts) instead of one short made-up
sentence: ONNX Runtime's memory grows with the texts' length, so real texts are the honest measure.
``--backend onnx-fp32|onnx-int8`` scores with ONNX Runtime (no torch in the scoring process): a first
`emotion score` of a 2-row file exports the model once (in a torch subprocess) into the project's cache, timed apart,
so the measured run is the one a user repeats. Writes bench/results/bench_memory.json (``--name`` to change).

    nice -n 10 .venv/bin/python bench/bench_memory.py            # 1 GB, about 5 minutes on 2 shared cores
    .venv/bin/python bench/bench_memory.py --size-mb 64          # a quick look
    nice -n 10 .venv/bin/python bench/bench_memory.py --backend onnx-fp32 --name bench_memory-onnx-fp32
    nice -n 10 .venv/bin/python bench/bench_memory.py --project-dir /tmp/bench-proj --model @champion \
        --texts ../shared/data/emotion/train.txt --backend onnx-fp32 --name bench_memory-minilm-onnx-fp32
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import REPO, machine, write_result

sys.path.insert(0, str(REPO))  # tests.tiny_bert: the tests' tiny model

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TIME = "/usr/bin/time"


def build_file(path: Path, rows: int, size: int, texts: Path | None = None) -> Path:
    """``rows`` valid rows (made up, or the first of ``texts``), then sparse junk up to ``size`` bytes: what an
    export with a broken tail looks like."""
    import csv

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "label"])
        if texts is not None:
            lines = texts.read_text(encoding="utf-8").splitlines()[:rows]
            writer.writerows(line.rsplit(";", 1) for line in lines)
        else:
            writer.writerows([f"row {i} of the export which I liked a lot", LABELS[i % 6]] for i in range(rows))
        block = "\n" * 3000 + ",\n" * 3000 + " , \n" * 1000 + "," * 1_000_000 + "\n"
        while fh.tell() < size:
            fh.write(block)
    return path


def tiny_model(folder: Path) -> Path:
    """The tests' tiny BERT (2 layers, hidden 32, the embedded tokenizer) as an untrained six-emotion classifier."""
    from pipeline.model.modeling import load_classifier, load_tokenizer
    from tests.tiny_bert import save_tiny_bert

    base, out = save_tiny_bert(folder / "tiny-bert"), folder / "tiny-classifier"
    load_classifier(str(base), LABELS, False).save_pretrained(out)
    load_tokenizer(str(base)).save_pretrained(out)
    return out


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One command under /usr/bin/time -v: its exit code, wall time and peak RSS (its largest process)."""
    done = subprocess.run([TIME, "-v", *argv], cwd=cwd, env=env, capture_output=True, text=True)
    report = done.stderr

    def field(name: str) -> str:
        found = re.search(rf"^\s*{re.escape(name)}: (.+)$", report, re.MULTILINE)
        if found is None:
            raise SystemExit(f"{TIME} printed no {name!r}:\n{report[-2000:]}")
        return found.group(1).strip()

    wall = [float(part) for part in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    seconds = sum(value * 60**power for power, value in enumerate(reversed(wall)))
    if done.returncode:
        print(report[-3000:], file=sys.stderr)
    return {
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)")) / 1024, 1),
        "stdout_tail": done.stdout[-600:],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--model", help="a model folder or, with --project-dir, a registered version (@champion)")
    parser.add_argument("--project-dir", type=Path, help="the store of --model's registered versions (its mlflow.db)")
    parser.add_argument("--texts", type=Path, help="valid rows from this text;label file (default: made up)")
    parser.add_argument("--name", default="bench_memory", help="the results file's name")
    parser.add_argument("--set", action="append", default=[], help="extra --set for emotion score")
    parser.add_argument("--backend", default="torch", help="score.backend: torch, onnx-fp32 or onnx-int8")
    args = parser.parse_args()
    emotion = str(Path(sys.executable).parent / "emotion")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")}
    env.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        folder = Path(tmp)
        model = args.model or str(tiny_model(folder))
        big = build_file(folder / "big.csv", args.rows, args.size_mb << 20, args.texts)
        size_mb = round(big.stat().st_size / 2**20, 1)
        print(f"{big}: {size_mb} MB; inspecting", flush=True)
        inspected = timed([emotion, "inspect", str(big)], folder, env)
        print(f"inspect: {inspected['seconds']} s, {inspected['peak_rss_mb']} MB; scoring", flush=True)
        config = ["--config", str(REPO / "params.yaml"), "--set", f"project_dir={folder}"]
        if args.project_dir is not None:  # the store only; exports and outputs stay in the temporary folder
            config += ["--set", f"mlflow.tracking_uri=sqlite:///{args.project_dir.resolve()}/mlflow.db"]
        extra = [item for value in args.set for item in ("--set", value)] + ["--backend", args.backend]
        first = None
        if args.backend != "torch":  # the one-off export (a torch subprocess), so the measured run finds it cached
            small = folder / "two.csv"
            small.write_text("text\ni am happy\ni am sad\n")
            warm = [emotion, "score", str(small), "-o", str(folder / "two.parquet"), "--model", model]
            first = timed([*warm, *config, *extra], folder, env)
            print(f"first run (export): {first['seconds']} s, {first['peak_rss_mb']} MB", flush=True)
        argv = [emotion, "score", str(big), "-o", str(folder / "out.parquet"), "--model", model, "--json"]
        scored = timed([*argv, *config, *extra], folder, env)
        print(f"score: {scored['seconds']} s, {scored['peak_rss_mb']} MB (exit {scored['exit']})", flush=True)
    path = write_result(
        args.name,
        {
            "file": {"size_mb": size_mb, "valid_rows": args.rows, "tail": "blank lines, `,`, ` , `, 1 MB of commas"},
            "model": args.model or "tiny BERT (2 layers, hidden 32), untrained head",
            "project_dir": str(args.project_dir) if args.project_dir else None,
            "valid_rows_from": str(args.texts) if args.texts else "made up (one short sentence)",
            "score_sets": args.set,
            "backend": args.backend,
            "first_run_with_export": first,
            "inspect": inspected,
            "score": scored,
            "score_target_mb": 500,
            "machine": machine(),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
