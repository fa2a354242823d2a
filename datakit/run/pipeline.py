"""Reader -> stage -> writer, with resume: what every shard-writing pipeline shares.

A pipeline names its records (from `manifests.sources`), a stage that turns one record into
samples or manifest rows, and the keys each record will produce. This module checks the
output folder, skips what an earlier run finished, runs the stage on an engine, writes shards
and manifest parts as results arrive, and leaves `manifest.parquet` and `stats.json` behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datakit.io.atomic import atomic_write
from datakit.io.errors import UserError
from datakit.run.local_engine import ModelStage, run_local
from datakit.run.shards import LOST_PREFIX, SHARDS_DIR, Sample, ShardWriter
from manifests.schema import Status
from manifests.store import (
    MANIFEST_NAME,
    STATE_DIR,
    STATS_NAME,
    ManifestStore,
    error_kind,
    write_stats,
)

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
SOURCES_NAME = "sources.json"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # s3://b/x, once a Path, reads s3:/b/x


def check_sources(out: Path, src: str | os.PathLike | None, append: bool) -> list[str]:
    """OUT remembers the SRC(s) it was made from: another one is refused unless `append`.

    Raises:
        UserError: SRC is not among OUT's sources and `append` is off.
    """
    path = out / STATE_DIR / SOURCES_NAME
    sources = json.loads(path.read_text()) if path.exists() else []
    if src is None:
        return sources
    resolved = str(Path(src).resolve())
    if resolved not in sources:
        if sources and not append:
            raise UserError(
                f"{out} was made from {sources[0]}"
                + (f" (and {len(sources) - 1} more)" if len(sources) > 1 else "")
                + f", not {resolved}; use another --out, or --append to add these inputs"
            )
        sources.append(resolved)
        atomic_write(path, json.dumps(sources, indent=2) + "\n")
    return sources


def fingerprint(record: Any) -> str | None:
    """A cheap identity of an input's content, to notice an input that changed since it was
    written: size and modification time of a file, a hash of bytes read from a shard, plus
    the part of the file a record covers."""
    data = getattr(record, "data", None)
    path = getattr(record, "path", None)
    if data is not None:
        identity = "sha1:" + hashlib.sha1(data).hexdigest()[:16]
    elif path:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        identity = f"{stat.st_size}:{stat.st_mtime_ns}"
    else:
        return None
    start, end = getattr(record, "start", None), getattr(record, "end", None)
    return identity if start is None and end is None else f"{identity}@{start}-{end}"


@dataclass
class RunOptions:
    """How to run, as opposed to what to make (which is the pipeline's own config).

    Args:
        workers: worker processes (1 runs in this process).
        shard_size: samples per shard.
        shard_bytes: start a new shard past this many bytes (None: no limit).
        retry_failed: redo inputs an earlier run recorded as failed.
        overwrite: delete datakit's earlier outputs in OUT first instead of resuming.
        append: let OUT take inputs from another SRC than the one(s) it was made from.
        progress: show a progress bar.
        engine: local (a process pool here) or ray (Ray Data; `datakit.run.ray_engine`).
        ray_address: the Ray cluster to join (None: start Ray on this machine).
        gpus_per_worker: GPUs each model actor asks Ray for.
        model_workers: model actors on Ray (each loads the model once).
        sample_timeout: seconds one input may take before it is failed as timed out and its
            worker killed (local engine; None: no limit).
    """

    workers: int = 1
    shard_size: int = 1000
    shard_bytes: int | None = None
    retry_failed: bool = False
    overwrite: bool = False
    append: bool = False
    progress: bool = True
    engine: str = "local"
    ray_address: str | None = None
    gpus_per_worker: float = 0.0
    model_workers: int = 1
    sample_timeout: float | None = None


def prepare_out_dir(out: str | os.PathLike, config: dict[str, Any], overwrite: bool) -> Path:
    """Create OUT (or reuse it for a resume with the same settings) and save the config.

    Raises:
        UserError: OUT cannot be written, or holds a run made with other settings.
    """
    out = Path(out)
    if _URL.match(str(out)):
        raise UserError(f"{out}: --out must be a folder of this machine's file system (the "
                        "driver writes every shard there); mount the bucket and give the "
                        "mount point")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: --out exists and is not a folder")
    try:
        (out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        probe = out / STATE_DIR / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"{out}: cannot write to --out ({error.strerror or error})") from None
    saved = out / STATE_DIR / CONFIG_NAME
    config = json.loads(json.dumps(config, sort_keys=True, default=str))  # as saved
    if overwrite:
        for name in (SHARDS_DIR, STATE_DIR):  # the sources list goes too
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MANIFEST_NAME, STATS_NAME):
            (out / name).unlink(missing_ok=True)
        (out / STATE_DIR).mkdir(parents=True)
    elif saved.exists():
        earlier = json.loads(saved.read_text())
        changed = sorted(k for k in set(earlier) | set(config) if earlier.get(k) != config.get(k))
        if changed:
            first = changed[0]
            raise UserError(
                f"{out} holds a run made with other settings ({first}: {earlier.get(first)!r} "
                f"then, {config.get(first)!r} now); use another --out, or --overwrite"
            )
    atomic_write(saved, json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")
    return out


def run_pipeline(
    records: Iterable[Any],
    stage: Callable[[Any], list] | ModelStage,
    output_keys: Callable[[Any], list[str]],
    out: str | os.PathLike,
    config: dict[str, Any],
    options: RunOptions,
    total: int | None = None,
    description: str = "processing",
    src: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run `stage` over `records` into OUT's shards and manifest; return the stats.

    Args:
        records: inputs, each with `.key` and `.source`.
        stage: picklable callable: record -> list of `Sample` or manifest row dicts; or a
            `ModelStage` (per-record prepare, batched model, finish).
        output_keys: the sample keys a record produces when it succeeds, used to skip
            records an earlier run finished.
        out: the output folder.
        config: the pipeline's resolved settings (saved, and compared on resume).
        options: how to run.
        total: number of records, for the progress bar.
        description: progress bar label.
        src: the input the records come from (OUT remembers it; see `check_sources`).
    """
    with out_of_space_is_a_user_error(out):
        return _run_pipeline(records, stage, output_keys, Path(out), config, options, total,
                             description, src)


OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def out_of_space_is_a_user_error(out: Path):
    """A full disk (or quota) under OUT ends the run with one line and exit 1, not a
    traceback: what was committed stays, and a rerun after freeing space resumes.

    Raises:
        UserError: an `OSError` ENOSPC or EDQUOT came through.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in OUT_OF_SPACE:
            raise
        raise UserError(
            f"{out}: disk full ({error.strerror or error}); the finished "
            "shards and their manifest rows are kept; free some space and rerun the same "
            "command to resume",
            exit_code=1) from None


def _run_pipeline(records, stage, output_keys, out: Path, config, options: RunOptions, total,
                  description, src) -> dict[str, Any]:
    started = time.time()
    out = prepare_out_dir(out, config, options.overwrite)
    sources = check_sources(out, src, options.append)
    store = ManifestStore(out)
    writer = ShardWriter(out, store, max_count=options.shard_size, max_bytes=options.shard_bytes)
    finished_statuses = (
        tuple(s.value for s in Status if s is not Status.FAILED) if options.retry_failed else None
    )
    recorded = store.read()
    recorded = recorded[~recorded["error"].fillna("").str.startswith(LOST_PREFIX)]
    if finished_statuses is not None:
        recorded = recorded[recorded["status"].isin(finished_statuses)]
    done = set(recorded["key"])
    resumed = len(done)
    # (an input without a fingerprint was written with None, which the manifest reads as NaN)
    written_from = {key: identity for key, identity in
                    zip(recorded["input_key"], recorded["fingerprint"], strict=True)
                    if isinstance(identity, str)}
    changed: list[str] = []
    failures: dict[str, list] = {}  # this run's failed rows by kind: [count, first reason]

    def is_done(record: Any) -> bool:
        finished = record.key in done or all(k in done for k in output_keys(record))
        if finished:
            before = written_from.get(record.key)
            if before is not None and before != fingerprint(record):
                changed.append(record.source)
        return finished

    def consume(record: Any, results: list) -> None:
        identity = fingerprint(record)
        listed = list(getattr(record, "notes", ()))  # what the listing changed in the input
        for result in results:
            row = result.row if isinstance(result, Sample) else result
            row["fingerprint"] = identity
            if listed:
                row["notes"] = [*(row.get("notes") or []), *listed]
            if row["status"] == Status.FAILED.value:
                failures.setdefault(error_kind(row["error"]), [0, row["error"]])[0] += 1
            if isinstance(result, Sample):
                if result.key not in done:
                    writer.add(result)
            elif result["key"] not in done:
                writer.add_row(result)

    def abort(signum: int) -> None:
        """A second SIGINT/SIGTERM: keep what is committed, drop the open shard, exit now."""
        name = signal.Signals(signum).name
        writer.discard_open()
        store.write_manifest()
        write_stats(store, config, started, 0,
                    extra={"resumed_keys": resumed, "interrupted": True, "stopped_by": name,
                           "stopped_at_once": True, "shards": _shard_count(out)})
        if sys.stderr.isatty():
            sys.stderr.write("\x1b[?25h\n")  # the progress bar hid the cursor
        sys.stderr.write(f"stopped at once ({name}): finished shards and their manifest rows "
                         f"are kept in {out}; rerun the same command to resume\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    todo = (r for r in records if not is_done(r))
    engine = functools.partial(run_local, sample_timeout=options.sample_timeout)
    if options.engine == "ray":
        from datakit.run.ray_engine import run_ray

        engine = functools.partial(run_ray, address=options.ray_address,
                                   gpus_per_worker=options.gpus_per_worker,
                                   model_workers=options.model_workers,
                                   shared_paths=[] if src is None else [os.path.abspath(src)])
    try:
        report = engine(
            todo, stage, consume, workers=options.workers,
            total=None if total is None else max(0, total - recorded["input_key"].nunique()),
            description=description, progress=options.progress, on_abort=abort,
        )
    except BaseException as error:
        writer.abort()
        try:
            store.write_manifest()
        except OSError as late:  # the disk that stopped the run can stop this too
            if not (isinstance(error, OSError) and late.errno in OUT_OF_SPACE):
                raise
        raise
    writer.close()
    store.write_manifest()
    extra = {"resumed_keys": resumed, "interrupted": report.interrupted,
             "this_run": report.status, "shards": _shard_count(out)}
    if report.signal is not None:
        extra["stopped_by"] = signal.Signals(report.signal).name
    holds_samples = bool((store.read()["status"] == Status.OK.value).any())
    cause = every_input_failed(report.status, failures, out / MANIFEST_NAME, holds_samples)
    if cause is not None:
        extra["every_input_failed"] = cause
    if writer.lost_keys:
        extra["redone_from_damaged_shards"] = len(writer.lost_keys)
    if changed:
        logger.warning("%d input(s) changed since they were written (e.g. %s); they were not "
                       "redone: rerun with --overwrite to redo everything", len(changed),
                       changed[0])
        extra["changed_inputs"] = {"count": len(changed), "examples": changed[:10]}
    extra["sources"] = sources
    if report.model is not None:
        timing = report.model
        extra["model"] = {"calls": timing.calls, "items": timing.items,
                          "seconds": round(timing.seconds, 3),
                          "load_seconds": round(timing.load_seconds, 3),
                          "busy_share": timing.busy_share}
    return write_stats(store, config, started, report.records, extra=extra)


def every_input_failed(status: dict[str, int], failures: dict[str, list],
                       manifest: Path, holds_samples: bool) -> str | None:
    """The one-line cause of a run in which every input failed and OUT holds no sample (the
    CLI exits 1 with it), or None: a run that made or skipped something, a run with nothing
    to do, and a resume whose only leftovers were bad files next to finished samples are no
    failure.

    Args:
        status: this run's rows by status (a split video's own row does not count).
        failures: this run's failed rows by error kind: [count, first reason].
        manifest: where each row's reason is.
        holds_samples: OUT has ok samples (from this run or an earlier one).
    """
    made = {name for name, count in status.items() if count} - {Status.SPLIT.value}
    if made != {Status.FAILED.value} or holds_samples:
        return None
    count, example = max(failures.values(), key=lambda pair: pair[0])
    others = f", {len(failures) - 1} other kind(s)" if len(failures) > 1 else ""
    return (f"every input of this run failed ({status[Status.FAILED.value]} rows; "
            f"{count} x {example}{others}); each row's reason is in {manifest}")


def _shard_count(out: Path) -> int:
    return len(list((out / SHARDS_DIR).glob("*.tar")))
