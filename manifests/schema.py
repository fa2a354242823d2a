"""Manifest columns, their types and the statuses a row can have.

Every pipeline writes one row per output sample, or one row per input that produced none,
so every input is accounted for. Columns a pipeline does not fill stay null; anything
pipeline-specific goes into `meta` (a JSON string) so the schema stays the same everywhere.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import pyarrow as pa


class Status(str, Enum):
    """What became of an input (or of one of its outputs).

    ok: the sample is in a shard. failed: the input is bad (unreadable, truncated, ...).
    skipped: valid but unusable under the settings (too small, too short, no label, ...).
    watermarked: dropped because a watermark was found (`--watermarks drop`).
    split: a long input cut into clips; each clip has its own row with this row's key as
    its `input_key`, and this row holds no sample.
    """

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    WATERMARKED = "watermarked"
    SPLIT = "split"


MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("input_key", pa.string()),
        pa.field("source", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("frames", pa.int32()),
        pa.field("fps", pa.float32()),
        pa.field("bytes", pa.int64()),
        pa.field("seconds", pa.float32()),
        pa.field("meta", pa.string()),
        pa.field("label", pa.string()),
        pa.field("clip_score", pa.float32()),
        pa.field("watermark_score", pa.float32()),
        pa.field("watermark_box", pa.list_(pa.int32())),
        pa.field("watermark_action", pa.string()),
        pa.field("watermark_reason", pa.string()),
        pa.field("fingerprint", pa.string()),
        pa.field("notes", pa.list_(pa.string())),
        pa.field("label_agreement", pa.float32()),
        pa.field("caption_flags", pa.list_(pa.string())),
    ]
)
COLUMNS = tuple(MANIFEST_SCHEMA.names)


def make_row(
    key: str,
    status: Status | str,
    *,
    source: str | None = None,
    input_key: str | None = None,
    error: str = "",
    meta: dict[str, Any] | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """Build a manifest row; unknown column names are a bug and raise."""
    unknown = set(columns) - set(COLUMNS)
    if unknown:
        raise KeyError(f"not manifest columns: {sorted(unknown)}")
    row = dict.fromkeys(COLUMNS)
    row.update(columns)
    row.update(
        key=key,
        input_key=input_key if input_key is not None else key,
        source=source,
        status=Status(status).value,
        error=error or "",
        meta=json.dumps(meta, sort_keys=True, default=str) if meta else None,
    )
    return row


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
