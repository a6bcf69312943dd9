"""The MLflow pyfunc flavor of a trained classifier, so `mlflow.pyfunc.load_model` and `mlflow models serve` work."""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

HF_ARTIFACT = "hf_model"


class EmotionClassifier(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with a ``text`` column (or a list of strings). Output: label, score, prob_<label>."""

    def load_context(self, context: Any) -> None:
        from pipeline.predict import Predictor, find_model_folder
        from pathlib import Path

        self.predictor = Predictor(find_model_folder(Path(context.artifacts[HF_ARTIFACT])))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        predictions = self.predictor.predict(texts)
        return pd.DataFrame([
            {"label": p.label, "score": p.score, **{f"prob_{k}": v for k, v in p.probabilities.items()}}
            for p in predictions
        ])
