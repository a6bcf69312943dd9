"""A registered version for the ONNX backends, resolved and downloaded in a child process.

Resolving a registry spec (``@champion``, a version, ``models:/...``) and downloading the version's folder and
logged ``onnx/model.onnx`` import the MLflow client, about 100 MiB that the scoring process would hold to its end:
with MiniLM on a 1 GB file, `emotion score --backend onnx-fp32 --model @champion` peaked at 502 MiB against 402
with the model's folder. So the ONNX backends run ``python -m pipeline.scoring.registered REQUEST OUT`` through
``backends.in_child`` and get plain data back; the child's errors (an unknown alias or version, a store that cannot
answer) are raised in the scoring process with the same type and message. The torch backend resolves in process:
torch's own import dwarfs MLflow's.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.config import RegistrySettings
from pipeline.errors import PipelineError
from pipeline.registry.model_spec import ModelRef
from pipeline.scoring import backends

log = logging.getLogger(__name__)

MODULE = "pipeline.scoring.registered"  # run as the child: python -m MODULE REQUEST OUT
REQUEST, FETCHED = "fetch-request.json", "fetched.json"  # in the job's temporary folder, beside the download


@dataclass(frozen=True)
class Fetched:
    """A registered version on disk: its folder and, when it was logged with one, its ONNX export."""

    name: str
    version: str
    uri: str
    run_id: str | None
    folder: Path
    onnx_file: Path | None

    @property
    def model(self) -> ModelRef:
        return ModelRef(self.name, self.version, self.uri, self.folder)


def fetch_in_child(registry: RegistrySettings, spec: str | None, work: Path) -> Fetched:
    """The version ``spec`` names, downloaded into ``work`` by a child process. The store's settings go in a file
    of the private temporary folder, not on the command line, where a URI's password would show in `ps`."""
    request, out = work / REQUEST, work / FETCHED
    request.write_text(json.dumps({"spec": spec, "registry": asdict(registry), "work": str(work)}, default=str))
    shown = spec or "@champion"  # logged only once fetched: a refused job writes no log file (console.later_log)
    fix = "a model folder (--model DIR) or --backend torch"
    backends.in_child(MODULE, str(request), str(out), failed=f"fetching --model {shown}", fix=fix)
    found = json.loads(out.read_text())
    log.info(
        "fetched %s (version %s) in a child process: the MLflow client stays out of this one", shown, found["version"]
    )
    onnx_file = found["onnx_file"]
    return Fetched(
        found["name"],
        found["version"],
        found["uri"],
        found["run_id"],
        Path(found["folder"]),
        Path(onnx_file) if onnx_file else None,
    )


def fetch(registry: RegistrySettings, spec: str | None, work: Path) -> Fetched:
    """In the child: resolve ``spec`` (pinned to one version), download its folder and logged ONNX export."""
    from pipeline.registry import model_spec, run_log

    ref = model_spec.download(model_spec.resolve(spec, model_spec.Registry.of(registry)), work)
    assert ref.uri is not None and ref.folder is not None  # a registry spec: a folder is resolved in the parent
    run_id = getattr(ref.record, "run_id", None)
    return Fetched(ref.name, ref.version, ref.uri, run_id, ref.folder, run_log.download_onnx(run_id, work))


def registry_settings(values: dict[str, Any]) -> RegistrySettings:
    """``RegistrySettings`` from its JSON form (paths as strings)."""
    return RegistrySettings(
        **values | {"artifact_root": Path(values["artifact_root"]), "lock_file": Path(values["lock_file"])}
    )


def main(request_file: Path, out: Path) -> None:
    request = json.loads(request_file.read_text())
    try:
        fetched = fetch(registry_settings(request["registry"]), request["spec"], Path(request["work"]))
    except PipelineError as exc:
        backends.refuse(out, exc)
    out.write_text(json.dumps(asdict(fetched), default=str))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
