"""Run a stage over records on this machine: a process pool feeding one writer.

A stage is a picklable callable `stage(record) -> list[Sample | dict]` (a Sample for each
output, a manifest row dict for an input that produced none). Results are handed to the
writer in input order, so the same inputs and seed give the same shards whatever the number
of workers. A stage that raises does not stop the run: its record becomes a failed row.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from manifests.schema import Status, make_row

logger = logging.getLogger(__name__)

Stage = Callable[[Any], list]
_END = object()


@dataclass
class EngineReport:
    """What a run did: counts by status, and whether it was interrupted."""

    records: int = 0
    status: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def count(self, status: str) -> None:
        self.status[status] = self.status.get(status, 0) + 1


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops the run cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    stage: Stage,
    consume: Callable[[Any, list], None],
    workers: int = 1,
    total: int | None = None,
    description: str = "processing",
    progress: bool = True,
) -> EngineReport:
    """Run `stage` on every record and pass `(record, results)` to `consume`, in input order.

    Args:
        records: the inputs (any iterable; read lazily).
        stage: picklable callable mapping a record to a list of results.
        consume: called in the parent process with each record and its results (the writer).
        workers: processes; 1 runs the stage in this process (no pickling, easy to debug).
        total: number of records, for the progress bar's ETA (None if unknown).
        description: label of the progress bar.
        progress: show a rich progress bar (on stderr).
    """
    report = EngineReport()
    with _progress_bar(description, total, enabled=progress) as advance, _StopOnCtrlC() as stop:
        for record, results in _results(records, stage, workers):
            consume(record, results)
            report.records += 1
            for result in results:
                report.count(result["status"] if isinstance(result, dict) else "ok")
            advance()
            if stop.requested:
                report.interrupted = True
                break
    return report


class _StopOnCtrlC:
    """The first Ctrl-C asks the run to stop after the current record (so no sample is left
    half-written); a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("stopping after the current input (Ctrl-C again to abort)")

    def __enter__(self) -> _StopOnCtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _results(records: Iterable[Any], stage: Stage, workers: int) -> Iterator[tuple[Any, list]]:
    if workers <= 1:
        for record in records:
            yield record, safe_call(stage, record)
        return
    context = multiprocessing.get_context("forkserver")
    # Import the stage's module once in the fork server, not once per worker (a no-op when
    # the server is already running).
    context.set_forkserver_preload([getattr(stage, "__module__", None) or __name__])
    window = workers * 4  # in flight: enough to keep workers busy, bounded memory
    pending: deque[tuple[Any, Future]] = deque()
    iterator = iter(records)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_sigint)
    try:
        exhausted = False
        while True:
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
                results = future.result()
            except BrokenProcessPool:
                # A worker died (segfault, out of memory): everything in flight fails with a
                # reason, and a fresh pool takes the rest.
                yield record, [_failure_row(record, _CRASHED)]
                for other, other_future in pending:
                    yield other, _result_or_crash(other, other_future)
                pending.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool = ProcessPoolExecutor(workers, mp_context=context,
                                           initializer=_ignore_sigint)
                continue
            yield record, results
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_CRASHED = "worker crashed: a process died while this input was in flight"


def _result_or_crash(record: Any, future: Future) -> list:
    try:
        return future.result(timeout=0)
    except Exception:
        return [_failure_row(record, _CRASHED)]


class _progress_bar:
    """A rich progress bar with rate and ETA; a no-op when disabled."""

    def __init__(self, description: str, total: int | None, enabled: bool):
        self.description, self.total, self.enabled = description, total, enabled
        self._progress = None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
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
