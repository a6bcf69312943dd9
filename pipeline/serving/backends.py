"""Fast CPU inference for serving and benchmarks: the ``Predictor``'s length-sorted, dynamically padded batches,
with the model's weights in bf16 (fast on CPUs with AMX / AVX512-BF16), its Linear layers quantized to int8, or the
model exported to ONNX and run by ONNX Runtime (fp32, or int8 quantized at load: dynamically, or statically with
activation ranges calibrated on validation texts).

A fast backend is only used after a parity check: its accuracy on a labelled test split must be within
``tolerance`` (0.003 = 0.3 points) of the fp32 model's; otherwise ``build_classifier`` falls back to fp32 and
says why. For onnx-int8, a dynamic quantization that fails the check is followed by a static one (calibrated on the
parity source's validation split, never on the test texts that judge it), checked the same way.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model.predict import Prediction

log = logging.getLogger(__name__)

FP32, BF16, INT8 = "torch-fp32", "torch-bf16", "int8"
ONNX_FP32, ONNX_INT8, ONNX_INT8_STATIC = "onnx-fp32", "onnx-int8", "onnx-int8-static"
BACKENDS = (FP32, BF16, INT8, ONNX_FP32, ONNX_INT8, ONNX_INT8_STATIC)
QUANTIZATION = {INT8: "dynamic", ONNX_INT8: "dynamic", ONNX_INT8_STATIC: "static"}
CALIBRATION_TEXTS = 256  # validation texts whose activation ranges fix the static int8 scales (all held in memory)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise PipelineError(f"unknown inference backend '{backend}': choose one of {', '.join(BACKENDS)}")


class FastClassifier:
    """A ``Predictor`` (same text cleaning, calibration and label decisions as `emotion predict`) whose model runs
    one backend: fp32, bf16 weights, int8 dynamically quantized Linear layers, or an ONNX Runtime session.

    Not meant to be called from several threads at once (the service runs all inference on one worker thread).
    """

    def __init__(self, predictor: Any, backend: str = FP32) -> None:
        _check_backend(backend)
        self.predictor = predictor
        self.backend = backend

    @classmethod
    def load(cls, model_dir: str | Path, backend: str, max_length: int, batch_size: int) -> FastClassifier:
        """Load a Hugging Face model folder on CPU in fp32, then convert it to ``backend``; the sizes are the
        caller's config (``model.max_length``, ``serve.batch_size``)."""
        from pipeline.model.predict import Predictor

        _check_backend(backend)
        fp32 = cls(
            Predictor(Path(model_dir), device="cpu", precision="fp32", max_length=max_length, batch_size=batch_size),
            FP32,
        )
        return fp32 if backend == FP32 else fp32.converted(backend)

    def converted(
        self, backend: str, onnx_file: Path | None = None, calibration_texts: list[str] | None = None
    ) -> FastClassifier:
        """A copy of this fp32 classifier running ``backend`` (this one is left unchanged).

        The ONNX backends run ``onnx_file`` (the fp32 export logged with the version) or, without one, export the
        model now; onnx-int8 quantizes it here, onnx-int8-static reuses the calibrated file beside ``onnx_file``
        or calibrates on ``calibration_texts`` and leaves the result there.
        """
        if self.backend != FP32:
            raise PipelineError(f"convert from the fp32 model, not from {self.backend}")
        _check_backend(backend)
        if backend.startswith("onnx"):
            model: Any = self._onnx_model(backend, onnx_file, calibration_texts or [])
        else:
            model = self._torch_model(backend)
        predictor = copy.copy(self.predictor)  # shares the tokenizer, cleaning policy and calibration
        predictor.model = model.eval()
        return FastClassifier(predictor, backend)

    def _onnx_model(self, backend: str, onnx_file: Path | None, calibration_texts: list[str]) -> Any:
        """An ONNX Runtime session of this model, with as many threads as torch uses (serve.threads)."""
        import tempfile

        import torch

        from pipeline.model import onnx_export

        with tempfile.TemporaryDirectory(prefix="emotion-onnx-") as tmp:
            source = onnx_file or onnx_export.export_onnx(self.predictor.model_dir, Path(tmp) / onnx_export.ONNX_FILE)
            if backend == ONNX_INT8:
                source = onnx_export.quantize_int8(source, Path(tmp) / "model-int8.onnx")
            elif backend == ONNX_INT8_STATIC:
                source = self._static_int8(source, calibration_texts)
            session = onnx_export.session(source, torch.get_num_threads())
        return onnx_export.OnnxClassifier(session, self.predictor.model.config)

    def _static_int8(self, source: Path, texts: list[str]) -> Path:
        """The statically quantized file beside ``source``: reused when there, else calibrated on ``texts``."""
        from pipeline.model import onnx_export

        cached = source.with_name(onnx_export.STATIC_INT8_FILE)
        if cached.exists():
            log.info("using the calibrated int8 model %s", cached)
            return cached
        if not texts:
            raise PipelineError(
                "static int8 needs calibration texts: give the parity source a validation (or train) split"
            )
        return onnx_export.quantize_static_int8(source, cached, self.calibration_batches(texts))

    def calibration_batches(self, texts: list[str]) -> list[dict[str, Any]]:
        """``texts`` cleaned, tokenized and padded in length-sorted batches, as the served model sees them."""
        from pipeline.model.inference import length_sorted_batches

        tok, predictor = self.predictor.tokenizer, self.predictor
        encoded = tok(predictor.prepare(texts), truncation=True, max_length=predictor.max_length)["input_ids"]
        return [
            dict(tok.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="np"))
            for batch in length_sorted_batches([len(ids) for ids in encoded], predictor.batch_size)
        ]

    def _torch_model(self, backend: str) -> Any:
        import torch

        model = copy.deepcopy(self.predictor.model)
        if backend == BF16:
            model = model.to(torch.bfloat16)
        elif backend == INT8:
            with warnings.catch_warnings():  # torch.ao.quantization is deprecated (-> torchao); it works in 2.13
                warnings.simplefilter("ignore")
                from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

                # per-output-channel int8 weights: same speed as per-tensor, and closer to fp32 accuracy
                linears = {
                    name: per_channel_dynamic_qconfig
                    for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Linear)
                }
                model = quantize_dynamic(model, linears, dtype=torch.qint8)
        return model

    @property
    def labels(self) -> list[str]:
        return self.predictor.labels

    @property
    def quantization(self) -> str | None:
        """How int8 scales are found: "dynamic" (per batch at run time), "static" (calibrated), None (no int8)."""
        return QUANTIZATION.get(self.backend)

    @property
    def model(self) -> Any:
        return self.predictor.model

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Every label's probability per text, in input order (length-sorted batches inside)."""
        return self.predictor.predict_proba(list(texts))

    def predict(self, texts: list[str]) -> list[Prediction]:
        return self.predictor.predict(list(texts))


@dataclass(frozen=True)
class ParityData:
    """A labelled test split for the parity check, and unlabelled texts of another split to calibrate static int8."""

    texts: list[str]
    labels: list[str]
    source: str
    calibration_texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParityReport:
    backend: str
    passed: bool
    reason: str
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    agreement: float | None = None  # share of texts where both backends pick the same label(s)
    tolerance: float | None = None
    n: int = 0
    source: str | None = None
    seconds: float | None = None
    metric: str = "accuracy"  # what reference_ and candidate_accuracy hold: accuracy, or micro-F1 for multi-label
    dynamic: dict[str, Any] | None = None  # onnx-int8: the refused dynamic quantization's check, when static followed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_parity_data(data_cfg: Any, base_dir: Path) -> ParityData:
    """The test split of ``data_cfg.source`` (read like ingest reads it), e.g. the emotion test split, and a seeded
    sample of its validation split (else train) for static int8 calibration."""
    from pipeline.data import ingest

    frame = ingest.normalize(ingest.read_source(data_cfg, base_dir))
    if "split" not in frame or "label" not in frame:
        raise PipelineError(f"parity data {data_cfg.source!r} has no split/label columns")
    frame = frame[frame["text"].notna() & frame["text"].astype(str).str.strip().astype(bool)]
    test = frame[(frame["split"] == "test") & frame["label"].notna()]
    if test.empty:
        raise PipelineError(f"parity data {data_cfg.source!r} has no labelled test split")
    calibration = frame[frame["split"] == "validation"]
    if calibration.empty:
        calibration = frame[frame["split"] == "train"]
    sample = calibration.sample(min(len(calibration), CALIBRATION_TEXTS), random_state=0)
    return ParityData(test["text"].tolist(), test["label"].tolist(), data_cfg.source, sample["text"].tolist())


def _compare(reference: FastClassifier, candidate: FastClassifier, data: ParityData) -> tuple[str, float, float, float]:
    """(metric, reference score, candidate score, agreement): accuracy of the top label for single-label models,
    micro-F1 of the thresholded label sets for multi-label ones (whose gold labels are lists)."""
    ref_probs, cand_probs = reference.predict_proba(data.texts), candidate.predict_proba(data.texts)
    if not reference.predictor.multi_label:
        gold = np.array([reference.labels.index(label) for label in data.labels])
        ref, cand = ref_probs.argmax(axis=1), cand_probs.argmax(axis=1)
        return "accuracy", float((ref == gold).mean()), float((cand == gold).mean()), float((ref == cand).mean())
    from sklearn.metrics import f1_score

    from pipeline.model.calibration import multi_label_decisions

    thresholds = reference.predictor.thresholds  # the tuned per-label thresholds (0.5 where none were tuned)
    gold = np.zeros_like(ref_probs, dtype=int)
    for i, item in enumerate(data.labels):
        gold[i, [reference.labels.index(label) for label in ([item] if isinstance(item, str) else item)]] = 1
    ref, cand = multi_label_decisions(ref_probs, thresholds), multi_label_decisions(cand_probs, thresholds)
    return (
        "micro-F1",
        float(f1_score(gold, ref, average="micro", zero_division=0)),
        float(f1_score(gold, cand, average="micro", zero_division=0)),
        float((ref == cand).all(axis=1).mean()),
    )


def parity_check(
    reference: FastClassifier, candidate: FastClassifier, data: ParityData, tolerance: float
) -> ParityReport:
    """Compare the candidate's accuracy (micro-F1 for a multi-label model) with the reference's on the same
    labelled texts."""
    start = time.perf_counter()
    given = {label for item in data.labels for label in ([item] if isinstance(item, str) else item)}
    unknown = sorted(given - set(reference.labels))
    if unknown:
        return ParityReport(
            candidate.backend,
            False,
            f"parity data {data.source!r} has labels the model does not know "
            f"({', '.join(unknown[:5])}): "
            "cannot check parity",
            tolerance=tolerance,
            n=len(data.texts),
            source=data.source,
        )
    if not reference.predictor.multi_label and any(not isinstance(item, str) for item in data.labels):
        return ParityReport(
            candidate.backend,
            False,
            f"parity data {data.source!r} is multi-label but the model is single-label: cannot check parity; "
            "set serve.parity_source to single-label data",
            tolerance=tolerance,
            source=data.source,
        )
    if candidate.labels != reference.labels:
        return ParityReport(
            candidate.backend,
            False,
            "candidate and reference have different label sets",
            tolerance=tolerance,
            source=data.source,
        )
    metric, ref_score, cand_score, agreement = _compare(reference, candidate, data)
    diff = cand_score - ref_score
    passed = abs(diff) <= tolerance + 1e-9
    reason = (
        f"{candidate.backend} {metric} {cand_score:.4f} vs {reference.backend} {ref_score:.4f} on "
        f"{len(data.texts)} test texts of {data.source!r}: difference {diff * 100:+.2f} points, "
        f"{'within' if passed else 'outside'} the tolerance of {tolerance * 100:.2f} points"
    )
    return ParityReport(
        candidate.backend,
        passed,
        reason,
        ref_score,
        cand_score,
        agreement,
        tolerance,
        len(data.texts),
        data.source,
        round(time.perf_counter() - start, 3),
        metric,
    )


def build_classifier(
    model_dir: str | Path,
    backend: str,
    parity_data: ParityData | None,
    tolerance: float,
    max_length: int,
    batch_size: int,
    parity_error: str | None = None,
    onnx_file: Path | None = None,
) -> tuple[FastClassifier, ParityReport | None]:
    """Load ``model_dir`` for ``backend``; a non-fp32 backend is used only if it passes the parity check.
    ``onnx_file``: the version's logged ONNX export, for the ONNX backends (None = export it now).

    Returns the classifier to use and the parity report (None for fp32). When the check fails or cannot run,
    the fp32 classifier is returned and the reason is logged.
    """
    reference = FastClassifier.load(model_dir, FP32, max_length, batch_size)
    if backend == FP32:
        reference.predict_proba(["warm up"])
        return reference, None
    if parity_data is None:
        report = ParityReport(
            backend,
            False,
            f"no parity data ({parity_error or 'none configured'}): {backend} cannot be checked",
            tolerance=tolerance,
        )
        log.warning("refusing backend %s, serving fp32 instead: %s", backend, report.reason)
        return reference, report
    calibration = parity_data.calibration_texts
    candidate = reference.converted(backend, onnx_file, calibration)
    report = parity_check(reference, candidate, parity_data, tolerance)
    if not report.passed and backend == ONNX_INT8:
        candidate, report = static_int8_fallback(reference, report, parity_data, tolerance, onnx_file)
    if report.passed:
        log.info("parity check passed: %s", report.reason)
        return candidate, report
    log.warning("refusing backend %s, serving fp32 instead: %s", backend, report.reason)
    return reference, report


def static_int8_fallback(
    reference: FastClassifier,
    dynamic: ParityReport,
    data: ParityData,
    tolerance: float,
    onnx_file: Path | None = None,
) -> tuple[FastClassifier, ParityReport]:
    """After dynamic int8 failed its parity check: the statically calibrated int8 model and its own check (which
    keeps the dynamic one under ``dynamic``). Fixed activation ranges from validation texts often hold the accuracy
    that per-batch ranges lose on outlier activations; if not, or if it cannot be built, the report says so."""
    try:
        static = reference.converted(ONNX_INT8_STATIC, onnx_file, data.calibration_texts)
    except Exception as exc:  # onnxruntime's quantizer raises its own types; fp32 is served either way
        log.warning("static int8 quantization failed: %s", exc)
        reason = f"{dynamic.reason}; static int8 could not be built ({type(exc).__name__}: {exc})"
        failed = ParityReport(ONNX_INT8_STATIC, False, reason, tolerance=tolerance, source=data.source)
        return reference, replace(failed, dynamic=dynamic.to_dict())
    report = parity_check(reference, static, data, tolerance)
    reason = f"dynamic int8 refused ({dynamic.reason}); static int8 (calibrated): {report.reason}"
    return static, replace(report, reason=reason, dynamic=dynamic.to_dict())
