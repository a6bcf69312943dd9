"""The MLflow pyfunc flavor of a trained classifier, so `mlflow.pyfunc.load_model` and `mlflow models serve` work.

Logged as a model from code (MLflow 3's recommended form): this file is copied into the model and
runs on load, so no pickled object is involved.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc.model import PythonModel

from pipeline.registry.run_log import HF_ARTIFACT


class EmotionClassifier(PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings). Output: label, score, prob_<label>."""

    def load_context(self, context: Any) -> None:
        from pathlib import Path

        from pipeline.model.predict import Predictor, find_model_folder

        self.predictor = Predictor(find_model_folder(Path(context.artifacts[HF_ARTIFACT])))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would validate against them
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        predictions = self.predictor.predict(texts)
        return pd.DataFrame(
            [
                {
                    "label": p.label,
                    "labels": ",".join(p.labels),
                    "score": p.score,
                    **{f"prob_{k}": v for k, v in p.probabilities.items()},
                }
                for p in predictions
            ]
        )


set_model(EmotionClassifier())
