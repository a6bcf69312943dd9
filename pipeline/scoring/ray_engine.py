"""The Ray Data engine: the same chunks, the same ``score_chunk``, spread over a Ray cluster's actors.

The driver reads the inputs with the scorer's own reader and writes each pending chunk's valid texts as a Parquet
input shard (tagged with its shard index and row position). Ray Data reads those shards, scores them with
``map_batches`` on an actor pool (one ``Predictor`` or ``OnnxPredictor`` per actor, a GPU each when the cluster has
GPUs) and writes Parquet partitioned by shard. The driver then puts each shard's rows back in input order into the usual
``part-NNNNN.parquet``, so resuming and merging are the local engine's.

Workers read the model folder and the staging folder (``OUT.parts/ray/``) by path: on a cluster of several machines
both must be on a shared filesystem, and the workers need this project installed in the same Python environment.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.data.formats import blank_records
from pipeline.errors import PipelineError
from pipeline.ops import ray_cluster
from pipeline.registry.model_spec import ModelRef
from pipeline.scoring import backends, shards
from pipeline.scoring.backends import ScoringModel
from pipeline.scoring.local import score_chunk, valid_texts
from pipeline.scoring.reader import ROW_ID

log = logging.getLogger(__name__)

STAGING = "ray"
SHARD = "_shard"  # the chunk a row came from
ORDER = "_row"  # its position among the chunk's valid texts
NODE = "_node"  # the Ray node that scored it
ACTOR_START_SECONDS = 600  # an actor pool that has not started by then does not fit the cluster


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is (None = start a local Ray) and how each actor's scorer runs."""

    address: str | None
    precision: str
    max_length: int
    batch_size: int  # texts per forward pass (a Ray batch is a whole chunk)
    chosen: ScoringModel  # the backend and its ONNX file (read by path, like the model folder)


class ScorerActor:
    """One per actor: loads the model once, then scores Ray batches with the local engine's ``score_chunk``."""

    def __init__(self, folder: str, name: str, version: str, settings: RaySettings, threads: int) -> None:
        import ray

        self.model = ModelRef(name, version, None, Path(folder))
        self.predictor = backends.scorer(
            self.model, settings.chosen, settings.precision, settings.max_length, settings.batch_size, threads
        )
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        scored = score_chunk(batch[[ROW_ID, "text"]].reset_index(drop=True), self.predictor, self.model)
        scored[SHARD], scored[ORDER], scored[NODE] = batch[SHARD].to_numpy(), batch[ORDER].to_numpy(), self.node
        return scored


def connect(address: str | None) -> None:
    """Join the cluster (``ops.ray_cluster.connect``), then quiet Ray Data and let the whole actor pool start before
    the first batch goes out."""
    from ray.data import DataContext

    ray_cluster.connect(address)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.wait_for_min_actors_s = ACTOR_START_SECONDS


def _stage_inputs(
    chunks: Iterator[pd.DataFrame], parts: Path, done: set[int], skip_invalid: bool, inputs: Path
) -> tuple[list[Path], dict[int, shards.Counts]]:
    """Every shard path in order, and for each pending chunk its row counts; its valid texts go to ``inputs`` as one
    Parquet file."""
    paths: list[Path] = []
    pending: dict[int, shards.Counts] = {}
    inputs.mkdir(parents=True)
    for index, chunk in enumerate(chunks):
        paths.append(shards.shard_path(parts, index))
        if index in done:
            continue
        valid, skipped = valid_texts(chunk, skip_invalid)
        pending[index] = shards.Counts(len(chunk), skipped, blank_records(chunk))
        if len(valid):
            staged = valid[[ROW_ID, "text"]].copy()
            staged[SHARD], staged[ORDER] = index, range(len(valid))
            staged.to_parquet(inputs / f"in-{index:05d}.parquet", index=False)
    return paths, pending


def actor_layout(resources: dict[str, float]) -> tuple[int, int, int]:
    """GPUs, actors and intra-op threads per actor for a cluster's resources: an actor per GPU, else one per CPU but
    one (kept for Ray Data's reading and writing), each with its share of the CPUs as threads. Ray itself gives a
    1-CPU actor one thread, which on one 2-core machine left a core idle (the engine ran at half the local one)."""
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    actors = gpus or max(1, cpus - 1)
    return gpus, actors, max(1, cpus // actors)


def _score_on_cluster(inputs: Path, outputs: Path, model: ModelRef, settings: RaySettings) -> None:
    """Ray Data: read the input shards, score on an actor pool (one model per actor), write by shard."""
    import ray

    assert model.folder is not None
    gpus, actors, threads = actor_layout(ray.cluster_resources())
    log.info("scoring on Ray: %d actor(s) of %d thread(s), %s", actors, threads, f"{gpus} GPU(s)" if gpus else "CPU")
    files = sorted(str(p) for p in inputs.glob("*.parquet"))
    dataset = ray.data.read_parquet(files).repartition(len(files))  # a block per chunk, spread over the actors
    scored = dataset.map_batches(
        ScorerActor,
        fn_constructor_args=(
            str(model.folder),
            model.name,
            model.version,
            settings,
            threads,
        ),
        # one chunk at a time per actor: with several queued on the first actor up, a small job left the others idle
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        batch_size=None,  # a chunk per call, length-sorted inside as the local engine does it
        batch_format="pandas",
        num_cpus=0 if gpus else 1,
        num_gpus=1 if gpus else 0,
        scheduling_strategy="SPREAD",  # actors over the nodes, not packed on the one with the most free CPUs
    )
    scored.write_parquet(str(outputs), partition_cols=[SHARD])


def _collect(outputs: Path, index: int) -> pd.DataFrame:
    """One shard's scored rows, in input order, without the engine's own columns (but with the node ids)."""
    folder = outputs / f"{SHARD}={index}"
    frame = pd.concat([pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))], ignore_index=True)
    return frame.sort_values(ORDER, kind="stable").drop(columns=[ORDER, SHARD], errors="ignore").reset_index(drop=True)


def run_ray(
    chunks: Iterator[pd.DataFrame],
    parts: Path,
    done: set[int],
    model: ModelRef,
    settings: RaySettings,
    skip_invalid: bool,
) -> tuple[list[Path], int, list[str]]:
    """Score every chunk not in ``done`` on Ray into its shard; returns all shard paths in order, the rows scored
    now and the ids of the Ray nodes that scored them."""
    import ray

    staging = parts / STAGING
    shutil.rmtree(staging, ignore_errors=True)  # a crashed run's leftovers: its finished shards are kept
    inputs, outputs = staging / "in", staging / "out"
    paths, pending = _stage_inputs(chunks, parts, done, skip_invalid, inputs)
    if any(inputs.iterdir()):
        connect(settings.address)
        try:
            _score_on_cluster(inputs, outputs, model, settings)
        except ray.exceptions.GetTimeoutError as exc:
            raise PipelineError(
                f"the Ray actors did not start within {ACTOR_START_SECONDS}s: the cluster lacks the CPUs, GPUs or "
                "memory for one model per actor (see `ray status`)"
            ) from exc
        finally:
            ray.shutdown()
    scored, nodes = 0, set[str]()
    for index, counts in pending.items():
        has_rows = (outputs / f"{SHARD}={index}").is_dir()
        frame = _collect(outputs, index) if has_rows else pd.DataFrame({ROW_ID: [], "text": []})
        if NODE in frame:
            nodes.update(frame.pop(NODE))
        shards.write_shard(parts, index, frame, counts)
        scored += len(frame)
    shutil.rmtree(staging)
    return paths, scored, sorted(nodes)
