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
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

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
        window: records sent to Ray at a time.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else max(1, workers),
                 include_dashboard=False, log_to_driver=False, configure_logging=False,
                 ignore_reinit_error=True)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # datakit's own bar counts records
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no execution-plan chatter
    report = EngineReport(model=ModelTiming() if isinstance(stage, ModelStage) else None)
    started = time.perf_counter()
    try:
        with ProgressBar(description, total, enabled=progress) as advance, \
                StopSignals(on_abort=on_abort) as stop:
            iterator = iter(records)
            while not stop.requested:
                chunk = list(islice(iterator, window))
                if not chunk:
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
