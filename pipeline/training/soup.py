"""Greedy model soup (Wortsman et al., 2022): one model from the weights of several fine-tuning runs.

Runs that start from the same encoder and the same new classifier head (``train.init_seed``) and differ only in
batch order and dropout end up in one basin, where the average of their weights predicts about as well as
their ensemble, at the cost of one model. Greedy: runs are added best first, each kept only if validation
macro-F1 does not drop, so the soup is never worse on validation than the best single run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.config import ModelConfig
from pipeline.data.encode import PreparedData
from pipeline.errors import PipelineError
from pipeline.model.modeling import load_classifier, load_tokenizer
from pipeline.model.runtime import choose_runtime
from pipeline.training.train import running_average, save_model, validation_scores

log = logging.getLogger(__name__)


@dataclass
class Soup:
    model_dir: Path
    ingredients: list[str]  # the runs averaged into the model, best first
    run_scores: dict[str, float]  # validation macro-F1 of each run alone
    val_macro_f1: float  # of the soup
    calibration: dict[str, float]


def _mean(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    average = running_average(None, states[0], 0)
    for count, state in enumerate(states[1:], start=1):
        average = running_average(average, state, count)
    return average


def greedy_soup(
    run_dirs: list[Path],
    data: PreparedData,
    output_dir: Path,
    model_cfg: ModelConfig,
    device: str = "auto",
    precision: str = "auto",
) -> Soup:
    """Average the runs in ``run_dirs`` (model folders) that help on validation; save the soup to ``output_dir``.
    ``model_cfg``: the sizes validation is scored with (``max_length``, ``inference_batch_size``)."""
    if not run_dirs:
        raise PipelineError("a soup needs at least one trained model folder")
    runtime = choose_runtime(device, precision)
    model = load_classifier(str(run_dirs[0])).to(runtime.device)
    tokenizer = load_tokenizer(str(run_dirs[0]))
    reference = {k: v.shape for k, v in model.state_dict().items()}
    states, scores = {}, {}
    for run in run_dirs:
        state = {k: v.detach().clone() for k, v in load_classifier(str(run)).state_dict().items()}
        if {k: v.shape for k, v in state.items()} != reference:
            raise PipelineError(f"{run} is not the same architecture as {run_dirs[0]}: it cannot join the soup")
        model.load_state_dict(state)
        states[run.name], scores[run.name] = (
            state,
            validation_scores(model, tokenizer, data, runtime, model_cfg)["val_macro_f1"],
        )
    ranked = sorted(scores, key=scores.__getitem__, reverse=True)
    kept, best = ranked[:1], scores[ranked[0]]
    for name in ranked[1:]:
        model.load_state_dict(_mean([states[k] for k in kept + [name]]))
        f1 = validation_scores(model, tokenizer, data, runtime, model_cfg)["val_macro_f1"]
        log.info(
            "soup %s + %s: val macro-F1 %.4f (best so far %.4f) -> %s",
            "+".join(kept),
            name,
            f1,
            best,
            "kept" if f1 >= best else "left out",
        )
        if f1 >= best:
            kept, best = kept + [name], f1
    model.load_state_dict(_mean([states[k] for k in kept]))
    calibration = save_model(model, tokenizer, data, runtime, model_cfg, output_dir)
    return Soup(output_dir, kept, scores, best, calibration)
