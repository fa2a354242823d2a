"""`datakit watermark`: re-process existing shards. Every sample keeps its key and files, its
json gains the watermark fields, its mp4 is re-encoded only when its pixels changed; a
dropped sample becomes a `watermarked` row."""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from synthesize.watermark.config import WatermarkConfig
from synthesize.watermark.policy import LazyClassifier
from synthesize.watermark.videos import watermark_video


@dataclass(frozen=True)
class ShardSample:
    """One sample of an existing shard: its key, where it came from and its files."""

    key: str
    source: str
    files: dict[str, bytes]
    refused: str | None = None  # why a member of it was not read (a link, a device)


def read_shard_samples(src: str | os.PathLike):
    """The samples of a `.tar` shard or of every `.tar` under a folder (sorted), each with
    its members grouped by key as webdataset does (the name up to the first dot).

    Raises:
        UserError: SRC holds no shards, or a shard cannot be opened.
    """
    import tarfile
    from pathlib import Path

    from datakit.io.errors import UserError
    from manifests.sources import not_a_file_reason

    src = Path(src)
    tars = [src] if src.is_file() else sorted(src.rglob("*.tar"))
    if not tars:
        raise UserError(f"{src}: no .tar shards")
    for tar_path in tars:
        try:
            tar = tarfile.open(tar_path)  # noqa: SIM115 (closed below; generator)
        except (tarfile.TarError, OSError) as error:
            raise UserError(f"{tar_path}: cannot open shard ({error})") from None
        with tar:
            key, files, refused = None, {}, None
            for member in tar:
                if member.isdir():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                stem, _, extension = name.partition(".")
                if stem != key and (files or refused):
                    yield ShardSample(key, f"{tar_path}::{key}", files, refused)
                    files, refused = {}, None
                key = stem
                if member.isfile():
                    files[extension] = tar.extractfile(member).read()
                else:  # never followed, but never silent: the sample fails with the reason
                    refused = refused or f"{member.name}: {not_a_file_reason(member)}"
            if files or refused:
                yield ShardSample(key, f"{tar_path}::{key}", files, refused)


class WatermarkStage:
    """Re-process one shard sample: detect in its mp4, then keep, flag, strip or drop
    (a plain callable, picklable; the classifier loads once per worker on first use).

    Args:
        config: what to do with marks.
        crf, preset: x264 settings for clips whose pixels change (others keep their bytes).
    """

    def __init__(self, config: WatermarkConfig, crf: int = 18, preset: str = "medium"):
        self.config = config
        self.crf = crf
        self.preset = preset
        self.classifier = LazyClassifier(config)

    @staticmethod
    def output_keys(sample: ShardSample) -> list[str]:
        return [sample.key]

    def __call__(self, sample: ShardSample) -> list:
        from datakit.io.video import VideoError, probe
        from datakit.run.shards import Sample
        from manifests.schema import Status, make_row

        started = time.perf_counter()
        # 1. A sample with a link member or without an mp4 is a failed row.
        if sample.refused:
            return [make_row(sample.key, Status.FAILED, source=sample.source,
                             error=sample.refused)]
        if "mp4" not in sample.files:
            return [make_row(sample.key, Status.FAILED, source=sample.source,
                             error="no mp4 in the sample")]
        try:
            info = json.loads(sample.files["json"]) if "json" in sample.files else {}
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        # 2. Detect and act, in memory bounded by the clip's length (`watermark_video`).
        try:
            fps = float(info.get("fps") or probe(sample.files["mp4"]).fps or 8.0)
            verdict = watermark_video(sample.files["mp4"], self.config, self.classifier(),
                                      fps=fps, crf=self.crf, preset=self.preset)
        except VideoError as error:
            return [make_row(sample.key, Status.FAILED, source=sample.source, error=str(error))]
        fields = verdict.fields
        common = {"source": sample.source, "input_key": info.get("input_key", sample.key),
                  "width": verdict.width, "height": verdict.height, "frames": verdict.frames,
                  "fps": fps}
        if verdict.dropped:
            return [make_row(sample.key, Status.WATERMARKED, **common, **fields,
                             seconds=time.perf_counter() - started)]
        files = dict(sample.files)
        if verdict.mp4 is not None:
            files["mp4"] = verdict.mp4
            info.update({side: common[side] for side in ("width", "height") if side in info})
        files["json"] = json.dumps({**info, **fields}, sort_keys=True, default=str).encode()
        caption = sample.files.get("txt", b"").decode("utf-8", "replace") or None
        row = make_row(sample.key, Status.OK, caption=caption, **common, **fields,
                       notes=list(verdict.notes) or None, seconds=time.perf_counter() - started)
        return [Sample(sample.key, files, row)]


def watermark_shards(src, out, config: WatermarkConfig, options, crf: int = 18,
                     preset: str = "medium") -> dict[str, Any]:
    """Re-process every sample of the shards under `src` into OUT's shards (same keys);
    return the run's stats.

    Args:
        src: a `.tar` shard or a folder of them (datakit's or any with KEY.mp4 members).
        out: the output folder (resumed if it holds an earlier run with the same settings).
        config: what to do with marks.
        options: how to run (`datakit.run.pipeline.RunOptions`).
        crf, preset: x264 settings for clips whose pixels change.
    """
    from datakit.io.errors import UserError
    from datakit.run.pipeline import run_pipeline

    stage = WatermarkStage(config, crf=crf, preset=preset)
    stage.classifier()  # a bad --watermark-model fails here, once, not in every worker
    records = read_shard_samples(src)
    first = next(records, None)  # report a bad SRC now, not from inside the pool
    if first is None:
        raise UserError(f"{src}: the shards hold no samples")
    settings = {"pipeline": "watermark", **config.settings(), "crf": crf, "preset": preset}
    return run_pipeline(itertools.chain([first], records), stage, stage.output_keys, out,
                        settings, options, description="watermark")
