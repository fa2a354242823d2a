"""`datakit watermark`: re-process existing shards. Every sample keeps its key and files, its
json gains the watermark fields, its mp4 is re-encoded only when its pixels changed; a
dropped sample becomes a `watermarked` row."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from synthesize.watermark.config import WatermarkConfig
from synthesize.watermark.policy import LazyClassifier
from synthesize.watermark.videos import watermark_video


@dataclass(frozen=True)
class ShardSample:
    """One sample of an existing shard: its key, where it came from and its files (by
    extension, lower case).

    Args:
        video: the extension of its video member (any of `VIDEO_EXTENSIONS`: a shard another
            tool wrote may hold .webm or .MP4 clips); None when it has none.
        error: why it cannot be processed (a link member, no video, a shard that breaks
            off here); the sample becomes a failed row that says so.
        notes: what reading it ignored (an unreadable json).
    """

    key: str
    source: str
    files: dict[str, bytes]
    video: str | None = "mp4"
    error: str | None = None
    notes: tuple[str, ...] = ()


def read_shard_samples(src: str | os.PathLike) -> Iterator[ShardSample]:
    """The samples of a `.tar` shard or of every `.tar` under a folder (sorted), each with
    its members grouped by key as webdataset does (the name up to the first dot), read as
    every command reads shards (`manifests.sources.shard_records`): a link member, a sample
    without a video and a shard that breaks off part way each give a sample with its
    `error`, never an exception.

    Raises:
        UserError: SRC does not exist or holds no shards, or a shard given as SRC does not
            open.
    """
    from pathlib import Path

    from datakit.io.errors import UserError
    from manifests.sources import Record, check_tar, shard_records

    src = Path(src).absolute()
    if not src.exists():
        raise UserError(f"{src}: no such file or folder")
    tars = [src] if src.is_file() else sorted(src.rglob("*.tar"))
    if not tars:
        raise UserError(f"{src}: no .tar shards")
    if src.is_file():
        check_tar(src)
    for record in shard_records(src, tars, _shard_sample):
        if isinstance(record, Record):  # refused, or where a shard breaks off
            yield ShardSample(record.key, record.source, {}, None, record.error)
        else:
            yield record


def _shard_sample(sample, tar_key: str, seen: set[str]):
    """A `manifests.sources.ShardSample` as the stage takes it (a failed `Record` when it
    has no readable video member). It keeps its own key, as re-processing must."""
    from manifests.sources import claim_key
    from manifests.videos import VIDEO_EXTENSIONS

    video = sample.media(VIDEO_EXTENSIONS, "video", sample.key(), seen)
    if not isinstance(video, tuple):
        return video
    name, _ = video
    files = {extension: data for extension, (_, data) in sample.members.items()}
    extension = next(e for e, (member, _) in sample.members.items() if member == name)
    _, problem = sample.json()
    return ShardSample(claim_key(sample.key(), sample.source(name), seen), sample.source(name),
                       files, extension,
                       notes=(f"{problem}; replaced by the watermark fields",) if problem
                       else ())


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
        # 1. A sample with a link member, without a video or past a shard's break: a row.
        if sample.error or sample.video not in sample.files:
            return [make_row(sample.key, Status.FAILED, source=sample.source,
                             error=sample.error or "no video member in the sample")]
        video = sample.files[sample.video]
        try:
            info = json.loads(sample.files["json"]) if "json" in sample.files else {}
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {"json": info}
        # 2. Detect and act, in memory bounded by the clip's length (`watermark_video`).
        try:
            fps = float(info.get("fps") or probe(video).fps or 8.0)
            verdict = watermark_video(video, self.config, self.classifier(),
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
        files, notes = dict(sample.files), [*sample.notes, *verdict.notes]
        if verdict.mp4 is not None:  # the pixels changed: an H.264 mp4 in the clip's place
            del files[sample.video]
            files["mp4"] = verdict.mp4
            info.update({side: common[side] for side in ("width", "height") if side in info})
            if sample.video != "mp4":
                notes.append(f"re-encoded as mp4 (was {sample.video})")
        files["json"] = json.dumps({**info, **fields}, sort_keys=True, default=str).encode()
        caption = sample.files.get("txt", b"").decode("utf-8", "replace") or None
        row = make_row(sample.key, Status.OK, caption=caption, **common, **fields,
                       notes=notes or None, seconds=time.perf_counter() - started)
        return [Sample(sample.key, files, row)]


def watermark_shards(src, out, config: WatermarkConfig, options, crf: int = 18,
                     preset: str = "medium") -> dict[str, Any]:
    """Re-process every sample of the shards under `src` into OUT's shards (same keys);
    return the run's stats.

    Args:
        src: a `.tar` shard or a folder of them (datakit's, or any whose samples hold a
            video member: KEY.mp4, KEY.webm, ...).
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
