"""`datakit caption`: classification videos -> captioned clips in WebDataset shards.

Reader -> prepare -> model -> finish -> writer:

1. `manifests.videos` lists the inputs (class trees, Kinetics / Moments-in-Time / VideoLT
   annotations, shards of clips); each record is one video or one clip inside a file.
2. `CaptionStage.prepare` (a worker process, CPU only): probe; cut long videos into clips
   (`--split scenes|fixed`); make each clip's mp4 (the input's own H.264 stream copied when it
   can be, else re-encoded); choose and decode its key frames (nothing else of the clip is
   decoded on the copy path); hand a `ModelItem` per clip to the model. A bad video, a clip
   too short, a missing label for the label captioner: a manifest row with a reason.
3. `CaptionBatch` (the main process, owning the device): captions key frames in batches with
   the label in the prompt, fuses them into one caption (`captioners.base.CaptionModel`), and
   optionally scores caption against frames with CLIP (`--score-clip`).
4. `CaptionStage.finish`: `KEY.mp4` + `KEY.txt` + `KEY.json` and the manifest row.

A split video gets one row of status `split` (its clips' `input_key`) and one row per clip
(`{video_key}__{i:04d}`). Keys, resume and shards are the core's (`datakit.run.pipeline`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from captioners.base import CaptionerConfig
from captioners.fusion import normalize_label
from captioners.keyframes import KEYFRAME_MODES, shrink, uniform_indices
from datakit.io.video import X264_PRESETS

SPLIT_MODES = ("none", "scenes", "fixed")
MAX_FRAME_PIXELS = 8192 * 8192
"""Frames larger than this (twice 8K UHD) are refused before any is decoded: one RGB frame
of a header claiming 16000x16000 is 768 MB, times the frames a worker holds."""


@dataclass(frozen=True)
class CaptionConfig:
    """What the caption pipeline makes of each video (the captioner's own settings are in
    `captioners.base.CaptionerConfig`).

    Args:
        keyframes: key frames per clip.
        keyframe_mode: uniform (0.1/0.5/0.9 of the clip), iframes (coded key frames only,
            fastest) or scene (one per segment between the largest content changes).
        split: none (one sample per input), scenes (cut at shot boundaries) or fixed
            (consecutive pieces of `clip_seconds`).
        clip_seconds: longest clip when splitting.
        min_clip_seconds: shortest clip kept when splitting (shorter pieces are dropped and
            counted in the source video's row).
        scene_threshold: shot detector threshold for `split=scenes` (`datakit.io.scenes`).
        min_frames: a clip with fewer frames is skipped (a one-frame "video" teaches no motion).
        max_size: longest side in pixels; larger inputs are re-encoded down to it (None: no
            limit). H.264 MP4 inputs within it are stream-copied.
        size: (width, height) to re-encode every clip to (centre crop), or None.
        fps: frame rate to re-encode every clip to, or None (keep the source's).
        crf, preset: x264 settings for re-encoded clips.
        keyframe_side: key frames are sent to the model at most this many pixels on the
            longer side (every processor resizes further: BLIP-2 to 224, Qwen-VL by pixels).
        watermark: what to do with watermarks in each clip (`--watermarks`): flag (record
            score and box), strip (remove the mark before the clip is written and
            captioned), drop (status `watermarked`), keep (do not look).
    """

    keyframes: int = 3
    keyframe_mode: str = "uniform"
    split: str = "none"
    clip_seconds: float = 10.0
    min_clip_seconds: float = 2.0
    scene_threshold: float = 3.0
    min_frames: int = 2
    max_size: int | None = None
    size: tuple[int, int] | None = None
    fps: float | None = None
    crf: int = 18
    preset: str = "medium"
    keyframe_side: int = 768
    watermark: Any = field(default_factory=lambda: _default_watermarks())

    def __post_init__(self):
        if self.keyframes < 1:
            raise ValueError(f"--keyframes: must be at least 1, got {self.keyframes}")
        if self.keyframe_mode not in KEYFRAME_MODES:
            raise ValueError(f"--keyframe-mode: expected one of {', '.join(KEYFRAME_MODES)}, "
                             f"got {self.keyframe_mode!r}")
        if self.split not in SPLIT_MODES:
            raise ValueError(f"--split: expected one of {', '.join(SPLIT_MODES)}, "
                             f"got {self.split!r}")
        if not self.clip_seconds > 0:
            raise ValueError(f"--clip-seconds: must be positive, got {self.clip_seconds}")
        if not 0 <= self.min_clip_seconds <= self.clip_seconds:
            raise ValueError(f"--min-clip-seconds: must be between 0 and --clip-seconds "
                             f"({self.clip_seconds}), got {self.min_clip_seconds}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames must be at least 1, got {self.min_frames}")
        if self.max_size is not None and self.max_size < 16:
            raise ValueError(f"--max-size: must be at least 16 pixels, got {self.max_size}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"--fps: must be positive, got {self.fps}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"--crf: must be in 0..51, got {self.crf}")
        if self.preset not in X264_PRESETS:
            raise ValueError(f"--preset: expected one of {', '.join(X264_PRESETS)}, "
                             f"got {self.preset!r}")
        if self.keyframe_side < 32:
            raise ValueError(f"keyframe_side must be at least 32, got {self.keyframe_side}")

    def output_format(self):
        from datakit.io.clips import OutputFormat

        return OutputFormat(size=self.size, max_side=self.max_size, fps=self.fps,
                            crf=self.crf, preset=self.preset)


def _default_watermarks():
    from synthesize.watermark import WatermarkConfig

    return WatermarkConfig()


class CaptionStage:
    """The per-record and per-output parts of the caption pipeline (picklable).

    Args:
        config: what to make of each video.
        captioner: the captioner's settings (only what the stage needs: its name, and whether
            clips without a label can be captioned).
        pixels: decode key frames (False when nothing looks at them: the label captioner
            without --score-clip; the clips are still cut and copied the same way).
    """

    def __init__(self, config: CaptionConfig, captioner: CaptionerConfig, pixels: bool = True):
        from synthesize.watermark import LazyClassifier

        self.config = config
        self.captioner = captioner
        self.pixels = pixels
        self.classifier = LazyClassifier(config.watermark)  # loaded once per worker

    def output_keys(self, record) -> list[str]:
        """The key a finished record leaves: its sample, or its `split` row."""
        return [record.key]

    # -- prepare (worker) ----------------------------------------------------------------------

    def prepare(self, record) -> list:
        from datakit.io.clips import ClipSpec, can_copy, plan_fixed, plan_scenes
        from datakit.io.video import VideoError, probe, source_notes
        from datakit.run.local_engine import ModelItem
        from manifests.schema import Status, make_row

        config = self.config
        started = time.perf_counter()

        def row(status, error, key=None, **columns):
            return make_row(key or record.key, status, source=record.source,
                            input_key=record.key, error=error, label=record.label, **columns)

        # 1. The label: the label captioner cannot describe a clip without one (an input the
        #    listing found bad fails with its own reason at step 2).
        label_words = normalize_label(record.label)
        if label_words is None and self.captioner.captioner == "label" and record.error is None:
            return [row(Status.SKIPPED, "no label: the label captioner needs a class label "
                        "(a class-folder tree, --annotations, or a label in the shard json)")]
        # 2. Probe.
        try:
            source = record.video_input()
            info = probe(source)
        except VideoError as error:
            return [row(Status.FAILED, _video_reason(error))]
        if info.frames < 1:
            return [row(Status.FAILED, "no frames: the video stream holds no frame")]
        if info.width * info.height > MAX_FRAME_PIXELS:
            return [row(Status.FAILED, f"too large: {info.width}x{info.height} frames, more "
                        f"than {MAX_FRAME_PIXELS / 1e6:.0f} Mpx (a broken header or a bomb)")]
        # 3. Clips, in seconds of the source: the whole video, the annotated part of it, or
        #    pieces of a long one; cut by timestamps (`datakit.io.clips`), since a header's
        #    frame count can hold empty slots (AVI) or vary in rate (phone footage).
        fps = info.fps or 25.0
        duration = info.frames / fps
        if config.split == "none":
            start = record.start or 0.0
            end = duration if record.end is None else min(duration, record.end)
            if end <= start:
                return [row(Status.FAILED, f"bad clip: {record.start}-{record.end} s is outside "
                            f"the video ({duration:.2f} s)")]
            clips = [ClipSpec(start, end)]
        else:
            try:
                clips = (plan_scenes(source, fps, config.clip_seconds, config.min_clip_seconds,
                                     config.scene_threshold)
                         if config.split == "scenes" else
                         plan_fixed(duration, fps, config.clip_seconds, config.min_clip_seconds))
            except VideoError as error:
                return [row(Status.FAILED, _video_reason(error))]
            if not clips:
                return [row(Status.SKIPPED, f"too short: {duration:.2f} s, no clip of "
                            f"at least --min-clip-seconds {config.min_clip_seconds}")]
        split = config.split != "none"
        keys = [f"{record.key}__{i:04d}" for i in range(len(clips))] if split else [record.key]
        base = {"record": record, "info": asdict(info), "label_words": label_words,
                "started": started, "notes": source_notes(info)}
        # 4. Each clip's mp4 and key frames; a clip that cannot be cut fails on its own.
        copy = (not split and record.start is None and record.end is None
                and can_copy(info, _format_or_empty(source), config.output_format()))
        try:
            results = ([self._copied_item(source, info, duration, keys[0], base)] if copy
                       else self._encoded_items(source, info, clips, keys, base, row))
        except VideoError as error:
            results = [row(Status.FAILED, _video_reason(error))]
        for index, item in enumerate(results):
            if not isinstance(item, ModelItem):
                continue
            if item.row["payload"]["frames"] < config.min_frames:
                results[index] = row(
                    Status.SKIPPED, f"too short: {item.row['payload']['frames']} frame(s), "
                    f"fewer than {config.min_frames}", key=item.row["key"])
                continue
            try:
                results[index] = self._watermarks(item, row)
            except VideoError as error:
                results[index] = row(Status.FAILED, _video_reason(error), key=item.row["key"])
        if split:
            uncovered = duration - sum(c.end - c.start for c in clips)
            results.insert(0, row(Status.SPLIT, "", frames=info.frames, fps=info.fps,
                                  width=info.width, height=info.height,
                                  seconds=time.perf_counter() - started,
                                  meta={"clips": len(clips), "split": config.split,
                                        "uncovered_seconds": round(max(0.0, uncovered), 3)}))
        return results

    def _copied_item(self, source, info, duration, key, base):
        import numpy as np

        from captioners.keyframes import Keyframes, read_keyframes
        from datakit.io.clips import remux_video

        mp4 = remux_video(source)
        if self.pixels:
            keyframes = read_keyframes(source, info.frames, info.fps or 25.0,
                                       self.config.keyframes, self.config.keyframe_mode)
        else:
            keyframes = Keyframes([], np.zeros((0, 1, 1, 3), np.uint8), "none")
        return self._item(key, base, mp4, keyframes.indices, keyframes.frames, keyframes.mode,
                          frames=info.frames, fps=info.fps, width=info.width,
                          height=info.height, start=0.0, end=duration, encoded="copy")

    def _encoded_items(self, source, info, clips, keys, base, row):
        import numpy as np

        from captioners.keyframes import read_keyframes
        from datakit.io.clips import ClipFailure, transcode_clips
        from datakit.io.video import VideoError
        from manifests.schema import Status

        config = self.config
        uniform = config.keyframe_mode == "uniform" or not self.pixels
        keep = _UniformKeep(config.keyframes) if self.pixels and uniform else None
        items = []
        encoded = transcode_clips(source, clips, info.fps or 25.0, config.output_format(), keep)
        for key, clip in zip(keys, encoded, strict=True):
            if isinstance(clip, ClipFailure):
                items.append(row(Status.FAILED, f"cannot cut: {clip.reason}", key=key))
                continue
            if uniform:
                indices = sorted(clip.kept)
                frames = (np.stack([clip.kept[i] for i in indices]) if indices
                          else np.zeros((0, 1, 1, 3), np.uint8))
                mode = "uniform" if self.pixels else "none"
            else:
                try:
                    chosen = read_keyframes(clip.mp4, clip.frames, clip.fps, config.keyframes,
                                            config.keyframe_mode)
                except VideoError as error:
                    items.append(row(Status.FAILED, _video_reason(error), key=key))
                    continue
                indices, frames, mode = chosen.indices, chosen.frames, chosen.mode
            items.append(self._item(key, base, clip.mp4, indices, frames, mode,
                                    frames=clip.frames, fps=clip.fps, width=clip.width,
                                    height=clip.height, start=clip.spec.start,
                                    end=clip.spec.end, encoded="h264"))
        return items

    def _watermarks(self, item, row):
        """Look for a watermark in the clip and keep, flag, strip or drop it. Detection
        reads the frames it samples; stripping goes through `watermark_video` (the whole
        clip, or segment by segment when it is long), re-encodes it, and the key frames are
        read again from the cleaned clip."""
        from datakit.io.video import read_frames
        from manifests.schema import Status
        from synthesize.watermark import (
            WatermarkAction,
            apply_watermark_policy,
            sample_indices,
            watermark_video,
        )
        from synthesize.watermark.policy import kept_fields

        config = self.config.watermark
        payload = item.row["payload"]
        if config.action is WatermarkAction.KEEP:
            payload.update(kept_fields())
            return item
        cleaned = None
        if config.action is WatermarkAction.STRIP:
            verdict = watermark_video(payload["mp4"], config, self.classifier(),
                                      fps=payload["fps"], crf=self.config.crf,
                                      preset=self.config.preset)
            fields, dropped, cleaned = verdict.fields, verdict.dropped, verdict.mp4
        else:
            indices = sample_indices(payload["frames"], config.sample_frames)
            kept, fields = apply_watermark_policy(read_frames(payload["mp4"], list(indices)),
                                                  config, self.classifier())
            dropped = kept is None
        payload.update(fields)
        if dropped:
            return row(Status.WATERMARKED, f"watermarked: score {fields['watermark_score']}, "
                       f"box {fields['watermark_box']}", key=item.row["key"], **fields)
        if cleaned is not None:
            payload.update(mp4=cleaned, encoded="h264", width=verdict.width,
                           height=verdict.height)
            chosen = payload["keyframe_indices"]
            if self.pixels and chosen:
                item.row["frames"] = shrink(read_frames(cleaned, chosen),
                                            self.config.keyframe_side)
        return item

    def _item(self, key, base, mp4, indices, pictures, mode, **geometry):
        from datakit.run.local_engine import ModelItem

        record = base["record"]
        payload = {
            "source": record.source, "input_key": record.key, "raw_label": record.label,
            "text": record.text, "meta": record.meta, "mp4": mp4, "keyframe_indices": indices,
            "keyframe_mode": mode, "source_info": base["info"], "source_notes": base["notes"],
            "clip_start": round(geometry["start"], 3),  # seconds in the source file
            "clip_end": round(geometry["end"], 3),
            "prepare_seconds": round(time.perf_counter() - base["started"], 3),
            **geometry,
        }
        return ModelItem({"key": key, "frames": shrink(pictures, self.config.keyframe_side),
                          "label": base["label_words"], "payload": payload})

    # -- finish (main process) -----------------------------------------------------------------

    def finish(self, output: dict[str, Any]) -> list:
        from captioners.checks import caption_checks
        from datakit.run.shards import Sample
        from manifests.schema import Status, make_row

        payload = output["payload"]
        key = output["key"]
        if output.get("caption_error"):
            return [make_row(key, Status.FAILED, source=payload["source"],
                             input_key=payload["input_key"], error=output["caption_error"],
                             label=payload["raw_label"])]
        fps = payload["fps"]
        indices = payload["keyframe_indices"]
        answers = output.get("answers") or [output["frame_captions"]]
        model_texts = [text for question in answers for text in question]
        if self.captioner.fuse == "llm":
            model_texts.append(output["caption"])
        truncated = bool(output.get("truncated"))
        checks = caption_checks(output.get("label"), model_texts, truncated,
                                payload.get("watermark_action"),
                                scored=self.captioner.captioner != "label")
        captioner_info = output.get("captioner_info") or {}
        info = {
            "key": key,
            "input_key": payload["input_key"],
            "source": payload["source"],
            "caption": output["caption"],
            "label": payload["raw_label"],
            "label_text": output.get("label"),
            "text": payload["text"],
            "keyframes": {"indices": indices, "times": [round(i / fps, 3) for i in indices],
                          "mode": payload["keyframe_mode"]},
            "frame_captions": output["frame_captions"],
            "prompt": output["prompt"],
            "questions": output.get("questions"),
            "answers": answers if output.get("questions") else None,
            "fuse": self.captioner.fuse,
            "fuse_prompt": output.get("fuse_prompt"),
            "captioner": output.get("captioner_info"),
            "decoding": captioner_info.get("decoding"),
            "truncated": truncated,
            **checks,
            "clip_start": payload["clip_start"],
            "clip_end": payload["clip_end"],
            "width": payload["width"], "height": payload["height"],
            "frames": payload["frames"], "fps": fps,
            "video": {"encoded": payload["encoded"], "source": payload["source_info"]},
            "source_meta": payload["meta"],
        }
        if output.get("clip_score") is not None:
            info["clip_score"] = output["clip_score"]
        marks = {name: payload.get(name) for name in ("watermark_score", "watermark_box",
                                                   "watermark_action", "watermark_reason")}
        info.update(marks)
        row = make_row(
            key, Status.OK, source=payload["source"], input_key=payload["input_key"],
            caption=output["caption"], label=payload["raw_label"], width=payload["width"],
            height=payload["height"], frames=payload["frames"], fps=fps,
            seconds=payload["prepare_seconds"], clip_score=output.get("clip_score"), **marks,
            **checks,
            meta={"keyframes": indices, "encoded": payload["encoded"],
                  "clip": [payload["clip_start"], payload["clip_end"]]},
            notes=payload.get("source_notes") or None,
        )
        files = {"mp4": payload["mp4"], "txt": output["caption"].encode(),
                 "json": json.dumps(info, sort_keys=True, default=str).encode()}
        return [Sample(key, files, row)]


@dataclass(frozen=True)
class _UniformKeep:
    """Which output frames the transcoding pass keeps: the uniform key frames."""

    count: int

    def __call__(self, spec, frame_count: int) -> list[int]:
        return uniform_indices(frame_count, self.count)


def _format_or_empty(source) -> str:
    from datakit.io.clips import container_format

    try:
        return container_format(source)
    except Exception:
        return ""


def _video_reason(error: Exception) -> str:
    """A manifest reason for a video error: a kind first, as image errors read, without the
    path (the row's source names it) or errno noise."""
    import re

    text = str(error)
    detail = text.split(": ", 1)[1] if text.startswith(("<", "/")) and ": " in text else text
    detail = re.sub(r"\[Errno -?\d+\] ", "", detail)
    detail = re.sub(r":\s*'[^']*'\)", ")", detail)
    lower = detail.lower()
    if "no video stream" in lower:
        return "no video stream: the file holds no video (audio only?)"
    if "missing file" in lower or lower.startswith(("unreadable", "corrupt shard", "bad ",
                                                     "empty file", "dangling symlink",
                                                     "not a video", "not a regular file")):
        return detail
    if "end of file" in lower:
        return f"truncated: the file ends early ({detail})"
    if "no such file" in lower or "permission denied" in lower:
        return f"unreadable: {detail}"
    if "invalid data" in lower or "cannot probe" in lower or "cannot open" in lower:
        return f"not a video: {detail}"
    return f"cannot decode: {detail}"


class CaptionBatch:
    """The batched model part: captioner (+ optional CLIP scorer), loaded once (picklable
    recipe, loaded in `__call__`'s process by `load`).

    Args:
        captioner: captioner settings.
        score_clip: CLIP model folder or hub id for `clip_score`, or None.
    """

    def __init__(self, captioner: CaptionerConfig, score_clip: str | None = None):
        from captioners.base import CaptionModel

        self.model = CaptionModel(captioner)
        self.scorer = None
        if score_clip:
            from captioners.clip_score import ClipScorer

            self.scorer = ClipScorer(score_clip, device=captioner.device, dtype=captioner.dtype)
        self.info = self.model.captioner.describe_json()

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        frames = batch["frames"]
        out = self.model(batch)
        out["captioner_info"] = [self.info] * len(out["key"])
        scores: list[float | None] = [None] * len(out["key"])
        if self.scorer is not None:
            rows = [i for i, error in enumerate(out["caption_error"]) if not error]
            if rows:
                values = self.scorer([out["caption"][i] for i in rows], [frames[i] for i in rows])
                for i, value in zip(rows, values, strict=True):
                    scores[i] = None if value is None or math.isnan(value) else float(value)
        out["clip_score"] = scores
        return out


@dataclass(frozen=True)
class LoadCaptionBatch:
    """A picklable recipe for `CaptionBatch` (what an engine calls once per model process)."""

    captioner: CaptionerConfig
    score_clip: str | None = None

    def __call__(self) -> CaptionBatch:
        return CaptionBatch(self.captioner, self.score_clip)


def caption(src, out, config: CaptionConfig, captioner: CaptionerConfig, options,
            annotations=(), score_clip: str | None = None) -> dict[str, Any]:
    """Caption every video under `src` into OUT's shards; return the run's stats.

    Args:
        src: a class-folder tree, a video file, or shards with video members.
        out: the output folder (resumed when it holds an earlier run with the same settings).
        config: clips, key frames and encoding.
        captioner: which captioner and how it runs.
        options: how to run (`datakit.run.pipeline.RunOptions`).
        annotations: Kinetics / Moments-in-Time / VideoLT annotation files.
        score_clip: CLIP model for a caption-to-frames similarity column.
    """
    from datakit.run.local_engine import ModelStage
    from datakit.run.pipeline import run_pipeline
    from manifests.videos import count_video_records, detect_videos, read_video_records

    found = detect_videos(src, annotations)
    records = read_video_records(src, annotations)
    stage = CaptionStage(config, captioner,
                         pixels=captioner.captioner != "label" or bool(score_clip))
    model_stage = ModelStage(stage.prepare, LoadCaptionBatch(captioner, score_clip),
                             stage.finish, batch_size=captioner.batch_size)
    stage.classifier()  # a bad --watermark-model fails here, once, not in every worker
    settings = {"pipeline": "caption", **asdict(config), "watermark": config.watermark.settings(),
                "captioner": {k: v for k, v in asdict(captioner).items()
                              if k not in ("device", "batch_size")},
                "annotations": [str(a) for a in annotations], "score_clip": score_clip}
    return run_pipeline(records, model_stage, stage.output_keys, out, settings, options,
                        total=count_video_records(found), description="caption", src=src)
