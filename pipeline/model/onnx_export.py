"""ONNX export and int8 quantization (dynamic, or static with calibrated activation ranges) of a trained
classifier, and an ONNX Runtime session that the ``Predictor`` can run in place of the torch model (same tokenizer,
batching, cleaning and calibration).

The ONNX graph computes logits only; probabilities (calibrated softmax or sigmoids) are applied afterwards exactly as
for the torch model, so both backends answer alike.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
STATIC_INT8_FILE = "model-int8-static.onnx"  # cached beside ONNX_FILE: calibration runs once per export
OPSET = 17
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _input_names(model: Any, tokenizer: Any) -> list[str]:
    """The inputs both the tokenizer produces and the model's forward takes (token_type_ids only for BERT-likes)."""
    produced = set(tokenizer(["a"])) & set(MODEL_INPUTS)
    accepted = set(inspect.signature(model.forward).parameters)
    return [name for name in MODEL_INPUTS if name in produced and name in accepted]


def export_onnx(model_dir: Path, out: Path, opset: int = OPSET) -> Path:
    """Export ``model_dir``'s classifier (fp32, CPU) to ``out`` with dynamic batch and sequence axes."""
    import torch

    from pipeline.model.modeling import load_classifier, load_tokenizer

    start = time.perf_counter()
    model = load_classifier(str(model_dir)).float().eval()
    tokenizer = load_tokenizer(str(model_dir))
    names = _input_names(model, tokenizer)
    sample = tokenizer(["an example text to trace", "short"], padding=True, return_tensors="pt")

    class Logits(torch.nn.Module):
        """The classifier with positional inputs and the logits as its only output."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs))).logits

    out.parent.mkdir(parents=True, exist_ok=True)
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks in transformers
        torch.onnx.export(
            Logits(),
            tuple(sample[name] for name in names),
            str(out),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    log.info("exported %s to ONNX (%s) in %.1fs", model_dir, out, time.perf_counter() - start)
    return out


class _QuietQuantizer(logging.Filter):
    """ONNX Runtime's quantizer logs a line per tensor (and a pre-processing hint) on the root logger: dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Only the quantizer's own records on the root logger are dropped; every named logger is left as it is."""
    root, quiet = logging.getLogger(), _QuietQuantizer()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def quantize_int8(source: Path, out: Path) -> Path:
    """Dynamic int8 quantization (per-channel weights, activations quantized on the fly) of an fp32 ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_quantizer():
        quantize_dynamic(str(source), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def quantize_static_int8(source: Path, out: Path, batches: Iterable[dict[str, np.ndarray]]) -> Path:
    """Static int8 quantization of an fp32 ONNX file in QDQ format: per-channel int8 weights, and activation ranges
    fixed from ``batches`` (tokenizer outputs of calibration texts) instead of measured per batch at run time.

    Only MatMul/Gemm inputs are quantized (layer norms, softmax and GELU stay fp32), which keeps most of the
    accuracy that quantizing every activation loses. Written to a temporary name and renamed, so a crash never
    leaves a half-written file where the cache is looked up.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    start = time.perf_counter()
    names = [i.name for i in onnx.load(str(source), load_external_data=False).graph.input]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds: Iterator[dict[str, np.ndarray]] = (feed(names, batch) for batch in batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(prefix="emotion-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)  # shapes and folding for QDQ
        partial = out.with_name(out.name + ".partial")
        quantize_static(
            str(prepared),
            str(partial),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the fast int8 kernels on x86
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    partial.replace(out)
    log.info("statically quantized %s to int8 (%s) in %.1fs", source, out, time.perf_counter() - start)
    return out


def feed(input_names: list[str], inputs: Any) -> dict[str, np.ndarray]:
    """The session's inputs from a tokenizer's (numpy or torch) outputs; a ``token_type_ids`` the padded batch
    leaves out is all zeros, the torch model's default."""

    def array(value: Any) -> np.ndarray:
        return value.numpy() if hasattr(value, "numpy") else np.asarray(value)

    ids = array(inputs["input_ids"])
    return {
        name: np.ascontiguousarray(array(inputs[name]) if name in inputs else np.zeros_like(ids), dtype=np.int64)
        for name in input_names
    }


def session(path: Path, threads: int) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (the graph is held in memory once built).

    ORT's memory options stay at their defaults, measured with MiniLM for batch scoring's peak RSS (bench/README.md,
    memory): no arena doubled the peak (705 against 419 MiB) and halved the speed, as glibc then keeps the freed
    blocks; no memory pattern saved 10-30 MiB with a speed loss not ruled out on a shared machine; kSameAsRequested
    growth, no pre-packing, no spinning and arena shrinkage after each run moved it by less than the noise. What
    bounds it is the padded tokens per forward pass (``onnx_predict.MAX_BATCH_TOKENS``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise PipelineError(f"cannot load the ONNX model {path}: {exc}. Delete it to export it again") from exc


class OnnxClassifier:
    """An ONNX Runtime session called like the torch classifier by ``predict_outputs``: ``model(**inputs).logits``.

    It returns logits only: ``output_hidden_states`` (embeddings for drift monitoring) needs the torch model.
    """

    def __init__(self, onnx_session: Any, config: Any) -> None:
        self.session = onnx_session
        self.config = config
        self.input_names = [i.name for i in onnx_session.get_inputs()]

    def eval(self) -> OnnxClassifier:
        return self

    def __call__(self, output_hidden_states: bool = False, **inputs: Any) -> SimpleNamespace:
        import torch

        if output_hidden_states:
            raise PipelineError("the ONNX backends give logits only: use a torch backend for embeddings")
        (logits,) = self.session.run(["logits"], feed(self.input_names, inputs))
        return SimpleNamespace(logits=torch.from_numpy(logits))


EXPORT_CHECK_TEXTS = ["an example text to check the export", "short", "i feel wonderful today, and nothing is wrong"]
EXPORT_ATOL = 1e-4  # largest logit difference between the export and the torch model on the check texts


def export_checked(model_dir: Path, out: Path) -> Path:
    """``export_onnx``, then the export's logits compared with the torch model's on a few texts: a graph that
    answers differently is never used. For a process that must not import torch, run it as
    ``python -m pipeline.model.onnx_export MODEL_DIR OUT``."""
    import torch

    from pipeline.model.modeling import load_classifier, load_tokenizer

    export_onnx(model_dir, out)
    model, tokenizer = load_classifier(str(model_dir)).float().eval(), load_tokenizer(str(model_dir))
    inputs = tokenizer(EXPORT_CHECK_TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**inputs).logits.numpy()
    onnx_session = session(out, 1)
    names = [i.name for i in onnx_session.get_inputs()]
    (got,) = onnx_session.run(["logits"], feed(names, inputs))
    difference = float(np.abs(got - expected).max())
    if difference > EXPORT_ATOL:
        out.unlink()
        raise PipelineError(f"the ONNX export of {model_dir} differs from the torch model's logits by {difference:.2e}")
    return out


if __name__ == "__main__":
    import sys

    try:
        if sys.argv[1] == "--int8":  # batch scoring quantizes in a child: onnx's copies of the graph stay out of it
            quantize_int8(Path(sys.argv[2]), Path(sys.argv[3]))
        else:
            export_checked(Path(sys.argv[1]), Path(sys.argv[2]))
    except PipelineError as exc:
        sys.exit(f"error: {exc}")
