"""The model a scoring job runs: the torch ``Predictor`` (``score.backend=torch``), or ONNX Runtime without torch in
the scoring process (``onnx-fp32``, ``onnx-int8``), which keeps `emotion score` about 400 MB smaller
(262 MB on a 1 GB file with a tiny model, 402 MiB with MiniLM; docs/formats.md).

The ONNX file is the registered version's logged ``onnx/model.onnx``, downloaded with the version in a child process
(``registered``), so the scoring process imports neither MLflow nor torch. A model folder without one (or a version
registered without it) is exported once, in a subprocess that loads torch while this process does not, checked
against the torch model's logits and cached under ``artifacts/onnx/<folder digest>/``. onnx-int8 is that file
quantized dynamically (as serving's onnx-int8) and is used only after the serving parity check against fp32 on
the labelled test split of ``serve.parity_source`` (else ``data.source``); a failed or impossible check refuses
the job with the reason. There is no silent fallback to another backend.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.registry.connection import RegistryUnavailable
from pipeline.registry.model_spec import ModelRef, UnknownModel

log = logging.getLogger(__name__)

TORCH, ONNX_FP32, ONNX_INT8 = "torch", "onnx-fp32", "onnx-int8"  # score.backend (the config checks the name)
ONNX_CACHE = "onnx"  # under artifacts_dir: one exported model.onnx per model folder digest
REFUSED = 3  # a child's exit code for a user error it wrote to its output file (1 and 2 are Python's own)
USER_ERRORS = {error.__name__: error for error in (PipelineError, UnknownModel, RegistryUnavailable)}


@dataclass(frozen=True)
class ScoringModel:
    """How each engine builds its scorer: ``backend`` and, for the ONNX backends, the file to run."""

    backend: str
    onnx_file: Path | None = None
    parity: dict[str, Any] | None = None  # the onnx-int8 parity report that admitted it


def scorer(
    model: ModelRef, chosen: ScoringModel, precision: str, max_length: int, batch_size: int, threads: int = 0
) -> Any:
    """A ``Predictor`` (torch) or an ``OnnxPredictor`` for ``chosen``; both score with ``predict_proba``.
    ``threads``: intra-op threads (0 = the library's default: torch's setting, ONNX Runtime's one per core)."""
    assert model.folder is not None
    if chosen.onnx_file is None:
        import torch

        from pipeline.model.predict import Predictor

        if threads:
            torch.set_num_threads(threads)
        return Predictor(model.folder, precision=precision, max_length=max_length, batch_size=batch_size)
    from pipeline.model.onnx_predict import OnnxPredictor

    return OnnxPredictor(model.folder, chosen.onnx_file, chosen.backend, max_length, batch_size, threads)


def choose(cfg: Config, model: ModelRef, work: Path, logged: Path | None = None) -> ScoringModel:
    """The scoring model for ``cfg.score.backend``: the ONNX file (``logged`` with the version, else found or
    exported), int8 quantized into ``work`` and parity-checked; a PipelineError when it cannot be had or fails the
    check."""
    backend = cfg.score.backend
    if backend == TORCH:
        return ScoringModel(TORCH)
    fp32 = onnx_file(model, cfg.artifacts / ONNX_CACHE, logged)
    if backend == ONNX_FP32:
        return ScoringModel(ONNX_FP32, fp32)
    int8 = quantize_in_subprocess(fp32, work / "model-int8.onnx")
    report = int8_parity(cfg, model, fp32, int8)
    return ScoringModel(ONNX_INT8, int8, report)


def onnx_file(model: ModelRef, cache: Path, logged: Path | None) -> Path:
    """The version's ``logged`` ONNX export, else the cached export of its folder, else a new export into that
    cache."""
    from pipeline.model.onnx_export import ONNX_FILE
    from pipeline.registry import model_spec

    assert model.folder is not None
    if logged is not None:
        log.info("scoring with the ONNX export logged with %s version %s", model.name, model.version)
        return logged
    cached = cache / model_spec.folder_version(model.folder) / ONNX_FILE
    if cached.exists():
        log.info("scoring with the cached ONNX export %s", cached)
        return cached
    return export_in_subprocess(model.folder, cached)


def export_in_subprocess(folder: Path, out: Path) -> Path:
    """Export ``folder`` to ``out`` in a child process (it loads torch; this process never does), checked against
    the torch model's logits, written under a temporary name and renamed, so a cache entry is always whole."""
    log.warning(
        "%s has no ONNX export: exporting it once in a subprocess that loads torch (a minute at most for "
        "MiniLM), cached in %s",
        folder,
        out,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    try:
        args = str(folder), str(partial)
        in_child("pipeline.model.onnx_export", *args, failed=f"exporting {folder} to ONNX", fix="--backend torch")
    except PipelineError:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return out


def in_child(module: str, *args: str, failed: str, fix: str) -> None:
    """``python -m MODULE ARGS`` in a child process, whose memory and imports (torch for an export, onnx for a
    quantization, MLflow for a registered version) are returned when it ends; the last of ``ARGS`` is the file it
    writes. A child that refuses (exit ``REFUSED``, see ``refuse``) has its error raised here as it was raised
    there; any other failure is named by its last stderr line as ``failed (...): score with fix``."""
    out = Path(args[-1])
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if done.returncode == REFUSED and out.exists():
        refused = json.loads(out.read_text())
        raise USER_ERRORS.get(refused["error"], PipelineError)(refused["message"])
    if done.returncode != 0 or not out.exists():
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise PipelineError(f"{failed} failed ({lines[-1] if lines else f'exit {done.returncode}'}): score with {fix}")


def refuse(out: Path, error: PipelineError) -> NoReturn:
    """In a child run by ``in_child``: hand a user error (its kind and message) to the parent, which raises it."""
    out.write_text(json.dumps({"error": type(error).__name__, "message": str(error)}))
    sys.exit(REFUSED)


class Answered:
    """A scorer's answers on the parity texts, computed before the candidate is built and without keeping the
    scorer: the fp32 session (about 200 MiB with MiniLM, with its arena) is freed before the int8 one loads, so the
    check never holds both and the job's peak memory stays that of one session."""

    def __init__(self, scorer: Any, texts: list[str]) -> None:
        self.labels, self.multi_label, self.thresholds = scorer.labels, scorer.multi_label, scorer.thresholds
        self.backend = scorer.backend
        self.texts, self.answers = texts, scorer.predict_proba(texts)

    def predict_proba(self, texts: list[str]) -> Any:
        if texts is not self.texts:
            raise ValueError("Answered holds the answers of the parity texts only")
        return self.answers


def quantize_in_subprocess(fp32: Path, out: Path) -> Path:
    """``onnx_export.quantize_int8`` in a child process: quantizing loads the graph into Python (onnx) and copies
    it, which took the scoring process to 568 MiB with MiniLM; the child's memory is returned when it ends."""
    args = "--int8", str(fp32), str(out)
    in_child("pipeline.model.onnx_export", *args, failed=f"quantizing {fp32} to int8", fix="--backend onnx-fp32")
    return out


def int8_parity(cfg: Config, model: ModelRef, fp32: Path, int8: Path) -> dict[str, Any]:
    """Serving's parity check of the int8 file against the fp32 export on the labelled test split of
    ``serve.parity_source`` (else ``data.source``), with ``serve.parity_tolerance``; refused unless it passes."""
    from pipeline.model.onnx_predict import OnnxPredictor
    from pipeline.model.parity import load_parity_data, parity_check

    assert model.folder is not None
    source = cfg.serve.parity_source or cfg.data.source
    fix = (
        "Give labelled data with a test split as --set serve.parity_source=PATH, or score with --backend onnx-fp32 "
        "(the fp32 model's answers)"
    )
    try:
        data = load_parity_data(cfg.data.model_copy(update={"source": source}), Path(cfg.project_dir).resolve())
    except PipelineError as exc:
        raise PipelineError(
            f"onnx-int8 is used only after a parity check, whose data could not be read: {exc}. {fix}"
        ) from exc
    sizes = cfg.model.max_length, cfg.score.batch_size
    reference = Answered(OnnxPredictor(model.folder, fp32, ONNX_FP32, *sizes), data.texts)
    candidate = OnnxPredictor(model.folder, int8, ONNX_INT8, *sizes)
    report = parity_check(reference, candidate, data, cfg.serve.parity_tolerance)
    if not report.passed:
        raise PipelineError(f"refusing --backend onnx-int8: {report.reason}. {fix}")
    log.info("parity check passed: %s", report.reason)
    return report.to_dict()
