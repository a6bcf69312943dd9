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
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.model.parity import CALIBRATION_TEXTS as CALIBRATION_TEXTS  # re-exported for the bench
from pipeline.model.parity import ParityData as ParityData
from pipeline.model.parity import ParityReport as ParityReport
from pipeline.model.parity import load_parity_data as load_parity_data
from pipeline.model.parity import parity_check as parity_check
from pipeline.model.predict import Prediction

log = logging.getLogger(__name__)

FP32, BF16, INT8 = "torch-fp32", "torch-bf16", "int8"
ONNX_FP32, ONNX_INT8, ONNX_INT8_STATIC = "onnx-fp32", "onnx-int8", "onnx-int8-static"
BACKENDS = (FP32, BF16, INT8, ONNX_FP32, ONNX_INT8, ONNX_INT8_STATIC)
QUANTIZATION = {INT8: "dynamic", ONNX_INT8: "dynamic", ONNX_INT8_STATIC: "static"}


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
    def multi_label(self) -> bool:
        return bool(self.predictor.multi_label)

    @property
    def thresholds(self) -> np.ndarray | None:
        return self.predictor.thresholds

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
