"""Cache keys for Prefect task results: skip work whose inputs have not changed.

Validation is a pure function of the snapshot bytes (their DVC hash), the declared labels, the check settings
and the checking code, so an unchanged snapshot need not be validated twice. Ingest itself is not cached: its
job is the side effect (``data/`` and ``data.dvc``), and ``dvc add`` already skips unchanged content.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


def code_hash(*modules: str) -> str:
    """md5 over the source of ``pipeline/<module>.py`` files: a code change invalidates cached results."""
    digest = hashlib.md5()
    for module in modules:
        path = PIPELINE / f"{module}.py"
        digest.update(path.read_bytes() if path.exists() else module.encode())
    return digest.hexdigest()


def validation_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Key for a validate task called as ``validate_task(cfg, frame, data_hash)``; None (no caching) without a hash."""
    cfg, data_hash = parameters["cfg"], parameters.get("data_hash")
    if not data_hash:
        return None
    # the whole data section: how the source was read (bad_rows policy, ...) shapes the report, not only the bytes
    parts = [
        data_hash,
        cfg.data.model_dump(),
        cfg.checks.model_dump(),
        code_hash("data/validate", "data/encode", "stages"),
    ]
    return "validate-" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]
