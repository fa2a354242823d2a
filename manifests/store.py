"""Parquet manifests that survive a kill at any moment and let a rerun resume.

Rows are committed in parts (`OUT/.datakit/parts/{n:06d}.parquet`), each written atomically
at the moment the shard its samples went into is complete, so a part is the commit record of
its shard: a shard file that no part names is an orphan of a killed run. `OUT/manifest.parquet`
is rebuilt from the parts (latest row per key wins) at the end of every run.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakit.io.atomic import atomic_write, remove_partials
from manifests.schema import COLUMNS, MANIFEST_SCHEMA, Status, rows_to_table

STATE_DIR = ".datakit"
MANIFEST_NAME = "manifest.parquet"
STATS_NAME = "stats.json"


class ManifestStore:
    """The manifest of one output folder.

    Args:
        out_dir: the run's output folder; parts live under `out_dir/.datakit/parts`.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.parts_dir = self.out_dir / STATE_DIR / "parts"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        remove_partials(self.parts_dir)
        self._next_part = 1 + max((int(p.stem) for p in self._part_paths()), default=-1)

    def _part_paths(self) -> list[Path]:
        return sorted(p for p in self.parts_dir.glob("*.parquet") if p.stem.isdigit())

    def commit(self, rows: list[dict[str, Any]]) -> Path | None:
        """Write `rows` as one new part, atomically. Nothing is written for no rows."""
        if not rows:
            return None
        buffer = io.BytesIO()
        pq.write_table(rows_to_table(rows), buffer)
        path = self.parts_dir / f"{self._next_part:06d}.parquet"
        atomic_write(path, buffer.getvalue())
        self._next_part += 1
        return path

    def read(self) -> pd.DataFrame:
        """All committed rows, the latest row per key (a retried key replaces its old row)."""
        parts = self._part_paths()
        if not parts:
            return MANIFEST_SCHEMA.empty_table().to_pandas()
        frame = pd.concat(
            [pq.read_table(p, schema=MANIFEST_SCHEMA).to_pandas() for p in parts],
            ignore_index=True,
        )
        return frame.drop_duplicates("key", keep="last").reset_index(drop=True)

    def recorded_keys(self, statuses: tuple[str, ...] | None = None) -> set[str]:
        """Keys already committed, optionally only those with one of `statuses`."""
        frame = self.read()
        if statuses is not None:
            frame = frame[frame["status"].isin(statuses)]
        return set(frame["key"])

    def referenced_shards(self) -> set[str]:
        frame = self.read()
        return set(frame["shard"].dropna())

    def write_manifest(self) -> Path:
        """Rebuild `OUT/manifest.parquet` from the parts."""
        frame = self.read()
        buffer = io.BytesIO()
        table = pa.Table.from_pandas(frame[list(COLUMNS)], schema=MANIFEST_SCHEMA,
                                        preserve_index=False)
        pq.write_table(table, buffer)
        path = self.out_dir / MANIFEST_NAME
        atomic_write(path, buffer.getvalue())
        return path


_NO_ERROR_STATUSES = (Status.OK.value, Status.SPLIT.value)


def summarize(frame: pd.DataFrame, top_errors: int = 20) -> dict[str, Any]:
    """Counts by status and the most common errors of a manifest."""
    counts = Counter(frame["status"])
    errors = Counter(
        error_kind(e)
        for e in frame.loc[~frame["status"].isin(_NO_ERROR_STATUSES), "error"]
    )
    return {
        "rows": len(frame),
        "inputs": int(frame["input_key"].nunique()) if len(frame) else 0,
        "status": {s.value: counts.get(s.value, 0) for s in Status},
        "errors": dict(errors.most_common(top_errors)),
        "error_kinds": len(errors),
        "notes": dict(Counter(note for notes in frame["notes"].dropna() for note in notes)),
    }


def error_kind(error: str) -> str:
    """Group errors by their first clause so the histogram counts kinds, not file names."""
    return (error or "unknown").split(":")[0].strip()[:120]


def write_stats(
    store: ManifestStore,
    config: dict[str, Any],
    started: float,
    processed_this_run: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `OUT/stats.json`: the summary, this run's throughput and resolved config."""
    elapsed = time.time() - started
    stats = summarize(store.read())
    stats["run"] = {
        "processed": processed_this_run,
        "seconds": round(elapsed, 3),
        "per_second": round(processed_this_run / elapsed, 3) if elapsed > 0 else None,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if extra:
        stats.update(extra)
    stats["config"] = config
    atomic_write(store.out_dir / STATS_NAME, json.dumps(stats, indent=2, default=str) + "\n")
    return stats
