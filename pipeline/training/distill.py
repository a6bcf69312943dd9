"""Knowledge distillation: one student learns from the averaged predictions of several fine-tuned teachers.

An ensemble of seeds beats each of its members (its errors average out, and on noisy labels such as
dair-ai/emotion it is less sure of the mislabelled rows), but it costs N forward passes and cannot be saved as
one folder. Training a fresh model on the ensemble's soft targets, blended with the gold labels, keeps much of
that gain in a single model of the same size that `transformers.pipeline` loads as usual.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from pipeline.errors import PipelineError
from pipeline.model.inference import predict_logits, probabilities
from pipeline.model.modeling import load_classifier, load_tokenizer, model_labels
from pipeline.model.runtime import Runtime

log = logging.getLogger(__name__)


def teacher_probabilities(
    teachers: list[str],
    labels: list[str],
    texts: list[str],
    runtime: Runtime,
    max_length: int,
    batch_size: int,
    multi_label: bool,
    temperature: float,
) -> np.ndarray:
    """The teachers' mean probabilities on ``texts`` at ``temperature`` (softmax, or per-label sigmoids).

    Every teacher must be a saved classifier over exactly ``labels`` in the same order, or its votes would land
    on the wrong classes.
    """
    total = np.zeros((len(texts), len(labels)), dtype=np.float32)
    for folder in teachers:
        if not (Path(folder) / "config.json").exists():
            raise PipelineError(f"train.teachers: no saved model in '{folder}'")
        model = load_classifier(folder).to(runtime.device)
        theirs = model_labels(model)
        if theirs != labels:
            raise PipelineError(f"train.teachers: '{folder}' predicts {theirs}, the data has {labels}")
        logits = predict_logits(model, load_tokenizer(folder), texts, runtime, max_length, batch_size)
        total += probabilities(logits / temperature, multi_label)
        log.info("teacher %s scored %d training texts", folder, len(texts))
    return total / len(teachers)


def distillation_loss(
    logits: torch.Tensor, soft_targets: torch.Tensor, multi_label: bool, temperature: float
) -> torch.Tensor:
    """Cross-entropy against the teachers' soft targets at ``temperature``, scaled by T² so its gradients keep
    the size of the hard-label loss whatever T is (Hinton et al. 2015)."""
    scaled = logits.float() / temperature
    if multi_label:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scaled, soft_targets)
    else:
        loss = -(soft_targets * torch.log_softmax(scaled, dim=-1)).sum(dim=-1).mean()
    return loss * temperature**2
