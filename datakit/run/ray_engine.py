"""Run a stage on Ray Data: the same stage objects, the same writer, the same output.

`run_ray` has the contract of `datakit.run.local_engine.run_local` (records in, `consume(record,
results)` called in input order, an `EngineReport` out), so `datakit.run.pipeline` switches
engines with one option and everything else (keys, resume, manifest, shards) stays the same:

- A plain stage runs as Ray Data `map` tasks, one record per row.
- A `ModelStage` runs its `prepare` as `map` tasks and its batched model as an actor pool
  (`map_batches` with a callable class: the model is loaded once per actor, `num_gpus` per
  actor, `concurrency` actors, `batch_size` records per call); `finish` runs in the driver.
- Results come back in input order (`preserve_order`) and the driver writes them with the
  local engine's writer: shard numbers cannot collide, the manifest is the same parquet
  store, and the same inputs and seed give byte-identical shards on either engine.

On a cluster (`address` given), the driver first asks every live node whether it sees SRC
(`check_reachable`): records carry absolute paths (`manifests.sources` makes them so in the
driver), and a node without the shared storage would fail every input it gets.

Records are sent in windows of `window` records, so a driver never holds a huge input's
records (or a shard's image bytes) at once, and a first Ctrl-C stops at the end of the
records in flight. Every row crosses the object store pickled: samples are bytes, whatever
the stage puts in them.

What this costs on a cluster: every sample's bytes travel to the driver, which writes all
shards; that suits a cluster whose work is the model or the decoding (captioning), less one
whose work is light and whose samples are large.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from datakit.io.errors import UserError
from datakit.run.local_engine import (
    EngineReport,
    ModelItem,
    ModelStage,
    ModelTiming,
    ProgressBar,
    Stage,
    StopSignals,
    call_model,
    finish_output,
    safe_call,
)

logger = logging.getLogger(__name__)


class _RunStage:
    """A plain stage as a Ray Data row function (no Ray import in any stage module)."""

    def __init__(self, stage: Stage):
        self.stage = stage

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        record = pickle.loads(row["record"])
        return {"index": row["index"], "results": pickle.dumps(safe_call(self.stage, record))}


class _ModelActor:
    """The batched model of a `ModelStage` as a Ray Data callable class: loaded once per
    actor, called on batches of prepared records, each record's `ModelItem`s replaced by
    the model's output rows."""

    def __init__(self, load_model: Callable[[], Callable[[dict[str, list]], dict[str, list]]]):
        started = time.perf_counter()
        self.model = load_model()
        self.load_seconds = time.perf_counter() - started
        self.loaded_once = False

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        results = [pickle.loads(blob) for blob in batch["results"]]
        items = [r for rs in results for r in rs if isinstance(r, ModelItem)]
        outputs, seconds = call_model(self.model, items) if items else ([], 0.0)
        position = 0
        replaced = []
        for rs in results:
            row = []
            for result in rs:
                if isinstance(result, ModelItem):
                    row.append(_Output(outputs[position]))
                    position += 1
                else:
                    row.append(result)
            replaced.append(pickle.dumps(row))
        timing = [(seconds if i == 0 else 0.0, len(items) if i == 0 else 0,
                   0.0 if self.loaded_once or i else self.load_seconds)
                  for i in range(len(replaced))]
        self.loaded_once = True
        return {"index": list(batch["index"]), "results": replaced,
                "timing": [pickle.dumps(t) for t in timing]}


class _Output:
    """A model output row travelling back to the driver, where `finish` turns it into
    samples."""

    def __init__(self, row: dict[str, Any]):
        self.row = row


def run_ray(
    records: Iterable[Any],
    stage: Stage | ModelStage,
    consume: Callable[[Any, list], None],
    workers: int = 1,
    total: int | None = None,
    description: str = "processing",
    progress: bool = True,
    on_abort: Callable[[int], None] | None = None,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    model_workers: int = 1,
    window: int = 2048,
    window_bytes: int = 256 << 20,
    shared_paths: Sequence[str] = (),
) -> EngineReport:
    """Run `stage` on Ray Data and pass `(record, results)` to `consume`, in input order.

    Args:
        records, stage, consume, total, description, progress, on_abort: as for
            `datakit.run.local_engine.run_local`.
        workers: CPUs of the local Ray instance started when `address` is None (a cluster's
            own resources otherwise).
        address: a running cluster (`auto`, or `ray://host:10001`); None starts Ray here.
        gpus_per_worker: GPUs each model actor asks for (0: the model runs on CPUs).
        model_workers: model actors (each loads the model once).
        window, window_bytes: records sent to Ray at a time, and the most bytes they carry
            (`record_windows`: shard members travel as bytes, a whole clip each).
        shared_paths: absolute paths every node of a cluster must see (SRC): refused, before
            any work, when a node does not.

    Raises:
        UserError: the cluster cannot be joined, or one of its nodes does not see a path of
            `shared_paths`.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else max(1, workers),
                     include_dashboard=False, log_to_driver=False, configure_logging=False,
                     ignore_reinit_error=True)
        except Exception as error:  # Ray raises ConnectionError, RuntimeError, its own
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(f"cannot join the Ray cluster at {address or 'this machine'}: "
                            f"{first} (a cluster with token authentication needs "
                            "RAY_AUTH_MODE=token and its token here too: docs/ray.md)") from None
    if address is not None:
        try:
            check_reachable(ray, shared_paths)
        except UserError:
            if started_here:
                ray.shutdown()
            raise
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # datakit's own bar counts records
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no execution-plan chatter
    report = EngineReport(model=ModelTiming() if isinstance(stage, ModelStage) else None)
    started = time.perf_counter()
    try:
        with ProgressBar(description, total, enabled=progress) as advance, \
                StopSignals(on_abort=on_abort) as stop:
            for chunk in record_windows(records, window, window_bytes):
                if stop.requested:
                    break
                for record, results in _run_chunk(ray, chunk, stage, report,
                                                  gpus_per_worker, model_workers):
                    consume(record, results)
                    report.records += 1
                    for result in results:
                        report.count(result["status"] if isinstance(result, dict) else "ok")
                    advance()
            report.interrupted = stop.requested
            report.signal = stop.signal
    finally:
        if report.model is not None:
            report.model.wall_seconds = time.perf_counter() - started
        if started_here:
            ray.shutdown()
    return report


def held_bytes(record) -> int:
    """The bytes a record carries to the workers: a shard member's `data`, or a re-processed
    sample's `files`."""
    size = len(getattr(record, "data", None) or b"")
    files = getattr(record, "files", None)
    return size + (sum(len(v) for v in files.values()) if isinstance(files, dict) else 0)


def record_windows(records: Iterable[Any], count: int, most_bytes: int
                   ) -> Iterator[list[Any]]:
    """`records` in windows of `count`, each closed early once the bytes it holds reach
    `most_bytes` (2048 clips of a shard, read into the driver at once, held about 10 GB)."""
    window, held = [], 0
    for record in records:
        window.append(record)
        held += held_bytes(record)
        if len(window) >= count or held >= most_bytes:
            yield window
            window, held = [], 0
    if window:
        yield window


def check_reachable(ray, paths: Sequence[str], timeout: float = 120.0) -> None:
    """Ask every live node of the cluster whether it sees `paths` (records carry paths, not
    files, so SRC must be on storage every node mounts at the same path).

    Raises:
        UserError: a node does not see one of them, or did not answer in `timeout` seconds.
    """
    if not paths:
        return
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(missing_paths)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    answers = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        node["NodeID"], soft=False)).remote(list(paths)) for node in nodes]
    try:
        missing = ray.get(answers, timeout=timeout)
    except Exception as error:  # GetTimeoutError, a node lost meanwhile
        raise UserError(f"could not ask every Ray node whether it sees {paths[0]} "
                        f"({type(error).__name__}); is the cluster healthy?") from None
    for node, gone in zip(nodes, missing, strict=True):
        if gone:
            raise UserError(f"{gone[0]}: not found on Ray node {node['NodeManagerAddress']}; "
                            "every node must see SRC at the same path (shared storage: "
                            "docs/ray.md)")


def missing_paths(paths: list[str]) -> list[str]:
    """The paths this process cannot see (run on each node by `check_reachable`)."""
    import os

    return [path for path in paths if not os.path.exists(path)]


def _run_chunk(ray, chunk: list, stage, report: EngineReport, gpus_per_worker: float,
               model_workers: int) -> Iterator[tuple[Any, list]]:
    rows = [{"index": i, "record": pickle.dumps(record)} for i, record in enumerate(chunk)]
    dataset = ray.data.from_items(rows, override_num_blocks=min(len(rows), 200))
    if isinstance(stage, ModelStage):
        resources = {"num_gpus": gpus_per_worker} if gpus_per_worker else {}
        dataset = dataset.map(_RunStage(stage.prepare)).map_batches(
            _ModelActor, fn_constructor_args=(stage.load_model,), batch_size=stage.batch_size,
            concurrency=max(1, model_workers), batch_format="numpy", **resources,
        )
    else:
        dataset = dataset.map(_RunStage(stage))
    for row in dataset.iter_rows():
        record = chunk[int(row["index"])]
        results = pickle.loads(row["results"])
        if isinstance(stage, ModelStage):
            seconds, items, load = pickle.loads(row["timing"])
            timing = report.model
            timing.seconds += seconds
            timing.items += items
            timing.calls += bool(items)
            timing.load_seconds += load
            results = [finished for result in results for finished in (
                finish_output(stage, record, result.row) if isinstance(result, _Output)
                else [result])]
        yield record, results
