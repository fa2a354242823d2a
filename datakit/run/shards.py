"""WebDataset shards: an atomic, resumable writer and a verifier.

Layout: `OUT/shards/{n:05d}.tar` holding `KEY.mp4`, `KEY.txt`, `KEY.json` per sample (adjacent,
as WebDataset requires), plus `{n:05d}_stats.json` beside each finished shard. A shard is
written under a temporary name, fsynced and renamed; its manifest rows are committed right
after, and that commit is what makes the shard count. On start the writer deletes shards no
committed row names (orphans of a killed run), so a rerun never holds a key twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datakit.io.atomic import atomic_file, atomic_write, remove_partials
from manifests.schema import Status, make_row

if TYPE_CHECKING:  # the store brings pandas, which a worker making samples never needs
    from manifests.store import ManifestStore

logger = logging.getLogger(__name__)

SHARDS_DIR = "shards"
TAR_MTIME = 0  # fixed, so the same samples give byte-identical tars
LOST_PREFIX = "lost:"  # the error of a row whose sample was in a damaged shard (redone)


def shard_problem(path: Path, keys: list[str]) -> str | None:
    """Why a committed shard does not hold `keys` in words, or None when it reads back: the
    tar opens, every member reads to its end, and every key has its members."""
    if not path.is_file():
        return "the file is missing"
    found: set[str] = set()
    try:
        with tarfile.open(path, mode="r:") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    if handle is None or len(handle.read()) != member.size:
                        return f"{member.name} is cut short"
                    found.add(member.name.split(".", 1)[0])
    except (tarfile.TarError, OSError, EOFError) as error:
        return f"it does not read as a tar ({error})"
    missing = [key for key in keys if key not in found]
    if missing:
        return f"{len(missing)} of its samples are not in it, e.g. {missing[0]}"
    return None


def shard_name(index: int) -> str:
    return f"{index:05d}"


def write_tar_sample(tar: tarfile.TarFile, key: str, files: dict[str, bytes]) -> None:
    """Append a sample's files as adjacent `KEY.EXT` members, in extension order.

    Owner, group, mode and mtime are fixed, so the same samples give byte-identical tars.
    (The standard library rather than webdataset's `TarWriter`: importing webdataset imports
    torch, two seconds of start-up for every run that only writes tars.)
    """
    for extension in sorted(files):
        data = files[extension]
        info = tarfile.TarInfo(f"{key}.{extension}")
        info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
        info.uname = info.gname = "datakit"
        tar.addfile(info, io.BytesIO(data))


def check_key(key: str) -> str:
    """WebDataset splits member names at the first dot: a key must have none (nor a slash)."""
    if not key or "." in key or "/" in key:
        raise ValueError(f"invalid sample key {key!r}: must be non-empty, without '.' or '/'")
    return key


@dataclass
class Sample:
    """One output sample: the files that go into the shard and its manifest row."""

    key: str
    files: dict[str, bytes]  # extension -> bytes, e.g. {"mp4": ..., "txt": ..., "json": ...}
    row: dict[str, Any]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.files.values())


@dataclass
class _OpenShard:
    index: int
    context: Any
    tar: Any
    temp: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    size: int = 0
    started: float = field(default_factory=time.time)


class ShardWriter:
    """Write samples into size-bounded shards and commit their manifest rows with them.

    Args:
        out_dir: the run's output folder (shards go to `out_dir/shards`).
        store: the manifest the rows are committed to.
        max_count: start a new shard after this many samples.
        max_bytes: start a new shard once a shard holds this many bytes (None: no limit).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        store: ManifestStore,
        max_count: int = 1000,
        max_bytes: int | None = None,
    ):
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.store = store
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.shards_dir = Path(out_dir) / SHARDS_DIR
        self.shards_dir.mkdir(parents=True, exist_ok=True)
        self.written_keys: set[str] = set()
        self._pending_rows: list[dict[str, Any]] = []
        self._shard: _OpenShard | None = None
        self._next_index = self._recover()

    def _recover(self) -> int:
        """Delete what a killed run left half-done, and committed shards that no longer read
        back (their samples are marked lost, so this run redoes them); return the next free
        shard index."""
        remove_partials(self.shards_dir)
        rows = self.store.read()
        committed = set(rows["shard"].dropna())
        for path in sorted(self.shards_dir.glob("*.tar")):
            if path.stem not in committed:
                logger.warning("removing %s: no manifest row names it (an interrupted run)", path)
                path.unlink()
                (self.shards_dir / f"{path.stem}_stats.json").unlink(missing_ok=True)
        self.lost_keys = self._drop_damaged(rows)
        indices = [int(name) for name in committed if name.isdigit()]
        return max(indices, default=-1) + 1

    def _drop_damaged(self, rows) -> list[str]:
        """Committed shards that are missing or do not hold their samples: delete them and
        commit `lost` rows for their samples (and for the `split` rows of their inputs)."""
        ok = rows[rows["status"] == Status.OK.value]
        lost_rows = []
        for name, group in ok.groupby("shard"):
            path = self.shards_dir / f"{name}.tar"
            problem = shard_problem(path, list(group["key"]))
            if problem is None:
                continue
            logger.warning("shard %s is damaged (%s): its %d samples are redone", name,
                           problem, len(group))
            path.unlink(missing_ok=True)
            (self.shards_dir / f"{name}_stats.json").unlink(missing_ok=True)
            reason = f"{LOST_PREFIX} shard {name} was damaged ({problem}); redone on rerun"
            inputs = set(group["input_key"])
            parents = rows[(rows["status"] == Status.SPLIT.value) & rows["key"].isin(inputs)]
            for row in [*group.itertuples(), *parents.itertuples()]:
                lost_rows.append(make_row(row.key, Status.FAILED, source=row.source,
                                          input_key=row.input_key, error=reason))
        self.store.commit(lost_rows)
        return [row["key"] for row in lost_rows]

    def add(self, sample: Sample) -> None:
        """Append a sample to the open shard, opening or rotating shards as needed."""
        check_key(sample.key)
        if sample.key in self.written_keys:
            raise ValueError(f"key {sample.key!r} written twice in one run")
        if self._shard is None:
            index = self._next_index
            self._next_index += 1
            path = self.shards_dir / f"{shard_name(index)}.tar"
            context = atomic_file(path)
            handle = context.__enter__()
            tar = tarfile.open(fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self._shard = _OpenShard(index, context, tar, Path(handle.name))
        shard = self._shard
        write_tar_sample(shard.tar, sample.key, sample.files)
        row = dict(sample.row, shard=shard_name(shard.index), bytes=sample.size)
        shard.rows.append(row)
        shard.count += 1
        shard.size += sample.size
        self.written_keys.add(sample.key)
        if shard.count >= self.max_count or (
            self.max_bytes is not None and shard.size >= self.max_bytes
        ):
            self._finish_shard()

    def add_row(self, row: dict[str, Any]) -> None:
        """Record an input that produced no sample (failed or skipped)."""
        if row["status"] == Status.OK.value:
            raise ValueError("an ok row needs its sample: use add()")
        self._pending_rows.append(row)
        if self._shard is None and len(self._pending_rows) >= self.max_count:
            self._commit_rows([])

    def _finish_shard(self) -> None:
        shard = self._shard
        self._shard = None
        shard.tar.close()  # flushes the tar stream; the atomic context fsyncs and renames
        shard.context.__exit__(None, None, None)
        name = shard_name(shard.index)
        stats = {
            "shard": name,
            "count": shard.count,
            "bytes": shard.size,
            "status": dict(Counter(r["status"] for r in shard.rows)),
            "seconds": round(time.time() - shard.started, 3),
        }
        atomic_write(self.shards_dir / f"{name}_stats.json", json.dumps(stats, indent=2) + "\n")
        self._commit_rows(shard.rows)

    def _commit_rows(self, rows: list[dict[str, Any]]) -> None:
        self.store.commit(rows + self._pending_rows)
        self._pending_rows = []

    def close(self) -> None:
        """Finish the open shard and commit every pending row."""
        if self._shard is not None:
            self._finish_shard()
        elif self._pending_rows:
            self._commit_rows([])

    def abort(self) -> None:
        """Drop the open shard without committing it (its inputs are redone on resume)."""
        if self._shard is not None:
            shard, self._shard = self._shard, None
            # Close the tar stream now, whatever it can still write (a full disk: nothing),
            # or its finalizer writes into the closed file and prints an ignored exception.
            with contextlib.suppress(OSError, ValueError):
                shard.tar.close()
            shard.context.__exit__(RuntimeError, RuntimeError("aborted"), None)
        if self._pending_rows:
            self._commit_rows([])

    def discard_open(self) -> None:
        """Delete the open shard's temporary file and nothing else (for a process about to
        exit at once: no tar state is touched, no row is committed)."""
        if self._shard is not None:
            self._shard.temp.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass
class ShardCheck:
    """What verification found in one shard."""

    name: str
    samples: int = 0
    bytes: int = 0
    frames: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    shards: list[ShardCheck]
    problems: list[str]  # problems across shards and manifest

    @property
    def ok(self) -> bool:
        return not self.problems and not any(s.problems for s in self.shards)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)


def read_shard(path: str | os.PathLike):
    """Iterate a shard's samples as dicts (`__key__`, `mp4`, `txt`, `json`, ...) with the
    webdataset library, exactly as a trainer would read it."""
    import webdataset as wds

    dataset = wds.WebDataset(
        os.fspath(path), shardshuffle=False, empty_check=False, handler=wds.reraise_exception
    )
    yield from dataset


def verify_shards(out_dir: str | os.PathLike, decode: bool = True) -> VerifyReport:
    """Read every shard in OUT back, decode every video, and compare with the manifest.

    Checks: each shard reads with webdataset; each sample has a video (`KEY.mp4`; a sample
    `datakit watermark` passed through from another tool's shard may keep its `.webm`...),
    a json, and a txt when its manifest row has a caption; each video decodes and has the
    frame count its json states; no key appears twice; every ok manifest row's sample is in
    the shard it names, and every sample has such a row; each shard's `_stats.json` count
    matches.
    """
    import pandas as pd

    from datakit.io.video import read_frames
    from manifests.store import MANIFEST_NAME

    out_dir = Path(out_dir)
    shards_dir = out_dir / SHARDS_DIR
    manifest_path = out_dir / MANIFEST_NAME
    problems: list[str] = []
    if not manifest_path.exists():
        problems.append(f"{manifest_path}: missing")
        manifest = pd.DataFrame(columns=["key", "status", "shard"])
    else:
        try:
            manifest = pd.read_parquet(manifest_path)
        except Exception as error:  # a damaged manifest is a finding, not a crash
            problems.append(f"{manifest_path}: unreadable ({error})")
            manifest = pd.DataFrame(columns=["key", "status", "shard"])
    if manifest["key"].duplicated().any():
        problems.append(f"manifest: {int(manifest['key'].duplicated().sum())} duplicate keys")
    expected = {
        row.key: row.shard for row in manifest.itertuples() if row.status == Status.OK.value
    }
    captioned = set(manifest.loc[manifest["status"] == Status.OK.value].dropna(
        subset=["caption"])["key"]) if "caption" in manifest else set(expected)
    seen: dict[str, str] = {}
    checks = []
    for path in sorted(shards_dir.glob("*.tar")):
        check = ShardCheck(path.stem, bytes=path.stat().st_size)
        checks.append(check)
        try:
            for sample in read_shard(path):
                key = sample["__key__"]
                check.samples += 1
                check.problems.extend(_check_sample(sample, key, path.stem, seen, expected,
                                                   key in captioned, decode, read_frames,
                                                   check))
                seen[key] = path.stem
        except Exception as error:  # any read error means an unreadable shard
            check.problems.append(f"unreadable: {error or type(error).__name__}")
        stats_path = shards_dir / f"{path.stem}_stats.json"
        if not stats_path.exists():
            check.problems.append("no _stats.json")
            continue
        try:
            counted = json.loads(stats_path.read_text())["count"]
        except ValueError:
            check.problems.append("_stats.json is not valid json")
            continue
        except (KeyError, TypeError):
            check.problems.append("_stats.json has no sample count")
            continue
        if counted != check.samples:
            check.problems.append("_stats.json count differs from the samples read")
    missing = sorted(set(expected) - set(seen))
    if missing:
        problems.append(f"{len(missing)} ok manifest rows have no sample, e.g. {missing[0]}")
    problems.extend(_run_problems(out_dir))
    return VerifyReport(checks, problems)


def _run_problems(out_dir: Path) -> list[str]:
    """An output whose last run did not finish is incomplete, however well its shards read."""
    from manifests.store import STATS_NAME

    path = out_dir / STATS_NAME
    if not path.exists():
        return ["incomplete: no stats.json, the run never finished; rerun the same command"]
    try:
        stats = json.loads(path.read_text())
    except ValueError:
        return ["stats.json is not valid json"]
    if isinstance(stats, dict) and stats.get("interrupted"):
        how = stats.get("stopped_by", "an interruption")
        return [f"incomplete: the last run was stopped by {how} before it finished; rerun the "
                "same command to finish it"]
    return []


def _check_sample(sample, key, shard, seen, expected, captioned, decode, read_frames,
                  check) -> list[str]:
    from manifests.videos import VIDEO_EXTENSIONS

    problems = []
    if key in seen:
        problems.append(f"{key}: also in shard {seen[key]}")
    if expected.get(key) != shard:
        where = expected.get(key)
        problems.append(f"{key}: no ok manifest row names it" if where is None
                        else f"{key}: the manifest puts it in shard {where}")
    video = next((ext for ext in ("mp4", *(e[1:] for e in VIDEO_EXTENSIONS)) if ext in sample),
                 None)
    lacking = [*(["mp4"] if video is None else []), *(["txt"] if captioned else []), "json"]
    lacking = [ext for ext in lacking if ext not in sample]
    if lacking:
        return [*problems, f"{key}: no {', '.join(lacking)}"]
    try:
        info = json.loads(sample["json"])
    except ValueError as error:
        return [*problems, f"{key}: json does not parse ({error})"]
    if not isinstance(info, dict):
        return [*problems, f"{key}: json is not an object"]
    if decode:
        try:
            frames = len(read_frames(sample[video]))
        except Exception as error:
            return [*problems, f"{key}: {video} does not decode ({error})"]
        check.frames += frames
        if "frames" in info and frames != info["frames"]:
            problems.append(f"{key}: {frames} frames decoded, json says {info['frames']}")
    return problems
