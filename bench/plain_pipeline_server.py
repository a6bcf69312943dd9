"""The server a user writes first, as a contender in bench_side_by_side.py: FastAPI, one POST route, and
`transformers.pipeline("text-classification")` called once per request on the model folder given.

    python bench/plain_pipeline_server.py MODEL_DIR --port 8001

The route is a plain ``def`` (FastAPI runs it in its thread pool, so requests do not block the event loop), one
uvicorn worker, the pipeline's defaults (fp32, batch size 1, torch's default threads). ``GET /health`` answers once
the model is loaded. Not a test and not part of the product.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Item(BaseModel):
    text: str


def build_app(model_dir: str) -> FastAPI:
    from transformers import pipeline

    classify = pipeline("text-classification", model=model_dir, tokenizer=model_dir)
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(item: Item) -> Any:
        return classify(item.text)[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_dir), host=args.host, port=args.port, access_log=False)


if __name__ == "__main__":
    main()
