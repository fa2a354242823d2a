"""Run a stage over records on this machine: a process pool feeding one writer.

A stage is a picklable callable `stage(record) -> list[Sample | dict]` (a Sample for each
output, a manifest row dict for an input that produced none). Results are handed to the
writer in input order, so the same inputs and seed give the same shards whatever the number
of workers. A stage that raises does not stop the run: its record becomes a failed row.

A model stage (`ModelStage`) comes in two parts, the shape of Ray Data's `flat_map` +
`map_batches(callable class)`: a per-record `prepare` (CPU: probe, key frames, re-encode)
that runs in the pool and returns final results and/or `ModelItem`s, and a batched model
(a callable class, loaded once here in the main process, owning the device) that takes
column batches of items; `finish` turns each model output row into samples or rows. While
the model works on one batch, the workers keep preparing the next ones (the window of
records in flight covers two batches), so the device does not wait for decoding.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from manifests.schema import Status, make_row

logger = logging.getLogger(__name__)

Stage = Callable[[Any], list]
_END = object()


@dataclass
class ModelItem:
    """A prepared input for the batched model: one row of columns (e.g. `key`, `frames`,
    `label` and whatever `finish` needs later, passed through the model untouched)."""

    row: dict[str, Any]


@dataclass
class ModelStage:
    """A stage whose middle part is a batched model.

    Args:
        prepare: picklable `record -> list[Sample | row dict | ModelItem]`, run in the pool.
        load_model: picklable zero-argument callable returning the batched model, a callable
            `dict[str, list] -> dict[str, list]` (same number of rows out as in). Called once,
            in the main process, when the first input needs it.
        finish: `model output row -> list[Sample | row dict]`, run in the main process.
        batch_size: model items per call.
    """

    prepare: Stage
    load_model: Callable[[], Callable[[dict[str, list]], dict[str, list]]]
    finish: Callable[[dict[str, Any]], list]
    batch_size: int = 8


@dataclass
class ModelTiming:
    """How busy the model part was: its seconds against the run's wall time."""

    calls: int = 0
    items: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def busy_share(self) -> float | None:
        wall = self.wall_seconds - self.load_seconds
        return round(self.seconds / wall, 4) if wall > 0 else None


@dataclass
class EngineReport:
    """What a run did: counts by status, and whether it was interrupted."""

    records: int = 0
    status: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    signal: int | None = None  # the signal that stopped the run, if one did
    model: ModelTiming | None = None

    def count(self, status: str) -> None:
        self.status[status] = self.status.get(status, 0) + 1


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C and SIGTERM to the main process, which stops the run cleanly
    (a terminal or `kill -- -PGID` signals the whole process group), and exit as soon as the
    main process is gone, even when it was SIGKILLed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True,
                     name="datakit-parent-watch").start()


def _exit_with(parent: int, interval: float = 0.5) -> None:
    import time

    while True:
        time.sleep(interval)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # the pid was reused by another user's process: gone too
            os._exit(1)


def _failure_row(record: Any, error: str) -> dict[str, Any]:
    return make_row(record.key, Status.FAILED, source=record.source, error=error)


def safe_call(stage: Stage, record: Any) -> list:
    """Run the stage on one record; an unexpected exception becomes a failed row."""
    try:
        return stage(record)
    except Exception as error:  # a bug in a stage must not lose the other inputs
        logger.warning("stage failed on %s:\n%s", record.key, traceback.format_exc())
        return [_failure_row(record, f"internal error: {type(error).__name__}: {error}")]


def run_local(
    records: Iterable[Any],
    stage: Stage | ModelStage,
    consume: Callable[[Any, list], None],
    workers: int = 1,
    total: int | None = None,
    description: str = "processing",
    progress: bool = True,
    on_abort: Callable[[int], None] | None = None,
    sample_timeout: float | None = None,
) -> EngineReport:
    """Run `stage` on every record and pass `(record, results)` to `consume`, in input order.

    The first SIGINT or SIGTERM stops the run after the inputs in flight (no new work; the
    report says `interrupted` and which signal); a second one kills the workers and calls
    `on_abort(signum)` (which should save what is committed and exit), or raises
    KeyboardInterrupt when there is none.

    Args:
        records: the inputs (any iterable; read lazily).
        stage: picklable callable mapping a record to a list of results, or a `ModelStage`.
        consume: called in the parent process with each record and its results (the writer).
        workers: processes; 1 runs the stage in this process (no pickling, easy to debug).
        total: number of records, for the progress bar's ETA (None if unknown).
        description: label of the progress bar.
        progress: show a rich progress bar (on stderr).
        on_abort: what a second signal does after the workers are killed.
        sample_timeout: seconds a record may take in a worker before it is failed as timed
            out and its worker killed (None: no limit).
    """
    report = EngineReport()

    def deliver(record: Any, results: list) -> None:
        consume(record, results)
        report.records += 1
        for result in results:
            report.count(result["status"] if isinstance(result, dict) else "ok")
        advance()

    with ProgressBar(description, total, enabled=progress) as advance, \
            StopSignals(on_abort=on_abort) as stop:
        if isinstance(stage, ModelStage):
            report.model = _run_model_stage(records, stage, deliver, workers, stop,
                                            sample_timeout)
        else:
            for record, results in _results(records, stage, workers, stop=stop,
                                            timeout=sample_timeout):
                deliver(record, results)
        report.interrupted = stop.requested
        report.signal = stop.signal
    return report


def _run_model_stage(
    records: Iterable[Any], stage: ModelStage, deliver: Callable[[Any, list], None],
    workers: int, stop: StopSignals, timeout: float | None = None,
) -> ModelTiming:
    """Prepare in the pool, batch the items through the model, finish, deliver in order."""
    import time

    timing = ModelTiming()
    started = time.perf_counter()
    model = None
    waiting: list[tuple[Any, list]] = []  # prepared records whose items await the model
    queued = 0

    def flush() -> None:
        nonlocal model, queued
        items = [r for _, results in waiting for r in results if isinstance(r, ModelItem)]
        outputs: list[dict[str, Any]] = []
        if items:
            if model is None:
                load_started = time.perf_counter()
                model = stage.load_model()
                timing.load_seconds += time.perf_counter() - load_started
            outputs, seconds = call_model(model, items)
            timing.seconds += seconds
            timing.calls += 1
            timing.items += len(items)
        position = 0
        for record, results in waiting:
            final = []
            for result in results:
                if isinstance(result, ModelItem):
                    final.extend(finish_output(stage, record, outputs[position]))
                    position += 1
                else:
                    final.append(result)
            deliver(record, final)
        waiting.clear()
        queued = 0

    window = max(workers * 4, 2 * stage.batch_size)
    for record, results in _results(records, stage.prepare, workers, window, stop, timeout):
        waiting.append((record, results))
        queued += sum(isinstance(r, ModelItem) for r in results)
        if queued >= stage.batch_size:
            flush()
    flush()
    timing.wall_seconds = time.perf_counter() - started
    return timing


def call_model(model: Callable[[dict[str, list]], dict[str, list]],
               items: list[ModelItem]) -> tuple[list[dict[str, Any]], float]:
    """One call of a batched model: the items' rows as columns in, one row per item out,
    and the seconds the call took."""
    import time

    columns = {name: [item.row.get(name) for item in items]
               for name in dict.fromkeys(n for item in items for n in item.row)}
    started = time.perf_counter()
    answer = model(columns)
    seconds = time.perf_counter() - started
    return [{name: values[i] for name, values in answer.items()}
            for i in range(len(items))], seconds


def finish_output(stage: ModelStage, record: Any, output: dict[str, Any]) -> list:
    """`stage.finish` on one model output; a bug there fails this input, not the run."""
    try:
        return stage.finish(output)
    except Exception as error:
        logger.warning("finish failed on %s:\n%s", record.key, traceback.format_exc())
        key = output.get("key", record.key)
        return [make_row(key, Status.FAILED, source=record.source, input_key=record.key,
                         error=f"internal error: {type(error).__name__}: {error}")]


class StopSignals:
    """SIGINT and SIGTERM in the main process: the first asks the run to stop after the
    inputs in flight (nothing is left half-written); the second stops at once: the workers
    are killed and `on_abort(signum)` runs (or KeyboardInterrupt is raised without one).

    Args:
        on_abort: called with the signal number on the second signal; should not return.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_abort: Callable[[int], None] | None = None):
        self.requested = False
        self.signal: int | None = None
        self.on_abort = on_abort
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            # Killing the workers makes the executor's own threads fail while this process
            # writes what it keeps; they die with it, so their errors are not worth a
            # traceback on the user's terminal.
            threading.excepthook = lambda args: None
            _kill_workers()
            if self.on_abort is not None:
                self.on_abort(signum)
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        logger.warning("%s: stopping after the inputs in flight (send it again to stop at "
                       "once)", signal.Signals(signum).name)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)


_POOLS: list[ProcessPoolExecutor] = []  # the pools alive now, for a hard stop


def _kill_workers() -> None:
    """SIGKILL every worker of every live pool (a second signal: stop now)."""
    # ProcessPoolExecutor keeps its workers as {pid: Process} in `_processes`; there is no
    # public way to kill a pool whose workers are busy.
    for pool in list(_POOLS):
        _kill_pool(pool)


def _results(
    records: Iterable[Any], stage: Stage, workers: int, window: int | None = None,
    stop: StopSignals | None = None, timeout: float | None = None,
) -> Iterator[tuple[Any, list]]:
    """`(record, results)` in input order. Once `stop` is requested no record is started;
    those already running in a worker are finished and yielded, the others dropped (a rerun
    does them). With `timeout`, a record whose result has not come `timeout` seconds after
    it became the oldest in flight is failed as timed out: the pool is killed (a hung
    decoder cannot be interrupted otherwise) and the other records in flight are submitted
    again to a fresh pool (a pool is used even for one worker)."""
    stopping = (lambda: stop.requested) if stop is not None else (lambda: False)
    if workers <= 1 and timeout is None:
        for record in records:
            if stopping():
                return
            yield record, safe_call(stage, record)
        return
    context = multiprocessing.get_context("forkserver")
    # Import the stage's module once in the fork server, not once per worker, and make the
    # server ignore group signals before it forks anything (a no-op when it already runs).
    context.set_forkserver_preload(["datakit.run.forkserver_signals",
                                    getattr(stage, "__module__", None) or __name__])
    window = window or workers * 4  # in flight: enough to keep workers busy, bounded memory
    pending: deque[tuple[Any, Future]] = deque()
    iterator = iter(records)
    pool = _new_pool(workers, context)
    try:
        exhausted = False
        while True:
            if stopping() and not exhausted:
                exhausted = True  # submit nothing more; keep what already runs
                pending = deque((r, f) for r, f in pending if not f.cancel())
            while not exhausted and len(pending) < window:
                record = next(iterator, _END)
                if record is _END:
                    exhausted = True
                    break
                pending.append((record, pool.submit(safe_call, stage, record)))
            if not pending:
                break
            record, future = pending.popleft()
            try:
                results = future.result(timeout=timeout)
            except FutureTimeout:
                yield record, [_failure_row(record, f"timeout: no result after {timeout:g} s "
                                            "(--sample-timeout); the worker was stopped")]
                _kill_pool(pool)
                pool = _new_pool(workers, context)
                pending = deque((other, pool.submit(safe_call, stage, other))
                                for other, _ in pending)
                continue
            except BrokenProcessPool:
                # A worker died (segfault, out of memory): everything in flight fails with a
                # reason, and a fresh pool takes the rest.
                yield record, [_failure_row(record, _CRASHED)]
                for other, other_future in pending:
                    yield other, _result_or_crash(other, other_future)
                pending.clear()
                _close_pool(pool, wait=False)
                pool = _new_pool(workers, context)
                continue
            yield record, results
    finally:
        _close_pool(pool, wait=True)


def _new_pool(workers: int, context) -> ProcessPoolExecutor:
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                               initargs=(os.getpid(),))
    _POOLS.append(pool)
    return pool


def _kill_pool(pool: ProcessPoolExecutor) -> None:
    """SIGKILL a pool's workers (one of them hangs) and forget the pool."""
    for pid in list(getattr(pool, "_processes", None) or ()):  # see _kill_workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _close_pool(pool, wait=False)


def _close_pool(pool: ProcessPoolExecutor, wait: bool) -> None:
    pool.shutdown(wait=wait, cancel_futures=True)
    if pool in _POOLS:
        _POOLS.remove(pool)


_CRASHED = "worker crashed: a process died while this input was in flight"


def _result_or_crash(record: Any, future: Future) -> list:
    try:
        return future.result(timeout=0)
    except Exception:
        return [_failure_row(record, _CRASHED)]


class ProgressBar:
    """A rich progress bar with rate and ETA; a no-op when disabled."""

    def __init__(self, description: str, total: int | None, enabled: bool):
        self.description, self.total, self.enabled = description, total, enabled
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled or self.total == 0:  # nothing to do: no 0/0 bar
            return lambda: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total)
        return lambda: self._progress.advance(task)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()


def _RateColumn():
    """Items per second, blank until the rate is known."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f}/s" if speed else "  -/s", style="progress.data.speed")

    return RateColumn()
