"""ONNX export and int8 quantization of a trained classifier, and an ONNX Runtime session that the ``Predictor``
can run in place of the torch model (same tokenizer, batching, cleaning and calibration).

The ONNX graph computes logits only; probabilities (calibrated softmax or sigmoids) are applied afterwards exactly as
for the torch model, so both backends answer alike.
"""

from __future__ import annotations

import inspect
import logging
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
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


def quantize_int8(source: Path, out: Path) -> Path:
    """Dynamic int8 quantization (per-channel weights, activations quantized on the fly) of an fp32 ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out


def session(path: Path, threads: int) -> Any:
    """A CPU ONNX Runtime session with ``threads`` intra-op threads (the graph is held in memory once built)."""
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
        ids = inputs["input_ids"].numpy()
        # token_type_ids the padded batch leaves out are all zeros, the torch model's default
        feed = {
            name: np.ascontiguousarray(inputs[name].numpy() if name in inputs else np.zeros_like(ids), dtype=np.int64)
            for name in self.input_names
        }
        (logits,) = self.session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))
