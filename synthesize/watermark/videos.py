"""Watermarks in a video file, in bounded memory.

A clip whose decoded frames fit in WHOLE_CLIP_BYTES is read whole and goes through
`apply_watermark_policy`. A longer one (a minute of 720p is 5 GB of RGB, and the strip
holds several copies: a 26-second 720p clip took 8.2 GB read whole) is judged on the
frames the detector samples anyway (`sample_indices`), kept from one streaming decode, so
the finding is the one the whole clip would give; a strip then decodes it again and
removes the mark SEGMENT_BYTES of frames at a time with that one mask, each segment
checked by `strip_damage` as a whole clip is, and encoded as it goes.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthesize.watermark.config import Detection, WatermarkAction, WatermarkConfig
from synthesize.watermark.frames import sample_indices
from synthesize.watermark.policy import (
    apply_watermark_policy,
    describe,
    detect_shown,
    detection_fields,
    kept_fields,
    load_classifier,
    show_detection,
)
from synthesize.watermark.removal import strip

WHOLE_CLIP_BYTES = 512 << 20  # decoded RGB read at once; longer clips go by segments
SEGMENT_BYTES = 256 << 20  # decoded RGB stripped at once in a longer clip
MIN_SEGMENT_FRAMES = 16  # fewer frames give the strip too few donors and moments


@dataclass(frozen=True)
class VideoVerdict:
    """What the watermark stage made of one video file.

    Args:
        fields: `watermark_score`, `watermark_box`, `watermark_action`, `watermark_reason`.
        mp4: the re-encoded clip when the strip changed its pixels; None when the clip
            keeps its bytes or is dropped.
        dropped: whether the policy dropped it.
        frames, width, height: the clip's frame count and size (the re-encoded clip's,
            when it was re-encoded).
        notes: what else a user should know (an odd side cut to even for the encoder).
    """

    fields: dict[str, Any]
    mp4: bytes | None
    dropped: bool
    frames: int
    width: int
    height: int
    notes: tuple[str, ...] = ()


class StripRefused(Exception):
    """A segment's strip would damage the clip; the message says how and where."""


def read_sampled(source: bytes | os.PathLike, wanted: int, expected: int | None = None
                 ) -> tuple[np.ndarray, int]:
    """The frames `sample_indices` picks for a clip of the container's frame count
    (`expected`, when the caller has probed it), from one streaming decode (the rest are
    never held), and the count of frames decoded.

    Raises:
        VideoError: the file cannot be read or decodes to no frames.
    """
    from datakit.io.video import VideoError, describe_source, iter_frames, probe, read_frames

    if expected is None:
        try:
            expected = probe(source).frames
        except VideoError:  # read_frames says why it cannot decode, or reads what probe cannot
            frames = read_frames(source)
            return frames[sample_indices(len(frames), wanted)], len(frames)
    picks = set(sample_indices(max(1, expected), wanted).tolist())
    kept, count = [], 0
    for count, frame in enumerate(iter_frames(source), 1):
        if count - 1 in picks:
            kept.append(frame)
    if not count:
        raise VideoError(f"{describe_source(source)}: no frames")
    if not kept:  # the container promised frames the decoder never gave
        kept = [frame]
    return np.stack(kept), count


def segment_lengths(count: int, frame_bytes: int) -> list[int]:
    """Frames per segment: as even as possible, each at most SEGMENT_BYTES (but at least
    MIN_SEGMENT_FRAMES long), so no segment is a short tail with too few donors."""
    most = max(MIN_SEGMENT_FRAMES, SEGMENT_BYTES // max(1, frame_bytes))
    parts = max(1, math.ceil(count / most))
    return [count // parts + (index < count % parts) for index in range(parts)]


class SegmentStrip:
    """The clip's frames with the mark removed, segment by segment, from a second
    streaming decode; iterate once. `action` is the strip's ("stripped" or "cropped").

    Each segment is stripped together with `context`, the frames the detector sampled over
    the whole clip: donors from anywhere in it fill a spot the camera reveals elsewhere,
    where a short segment alone reveals less (a pan of 40 frames in 3 segments: MSE in the
    mark 1234 alone, 298 with them, 455 for the whole clip at once; tested).

    Raises (while iterating):
        StripRefused: a segment's strip would damage it (the clip must keep its bytes).
    """

    def __init__(self, source: bytes | os.PathLike, count: int, detection: Detection,
                 config: WatermarkConfig, context: np.ndarray):
        self.source, self.count, self.detection, self.config = source, count, detection, config
        self.context = context
        self.action = "stripped"

    def __iter__(self) -> Iterator[np.ndarray]:
        from datakit.io.video import iter_frames

        frames = iter_frames(self.source)
        first = next(frames)
        pending, start = [first], 0
        for length in segment_lengths(self.count, first.nbytes):
            pending.extend(frame for _, frame in zip(range(length - len(pending)), frames,
                                                     strict=False))
            if not pending:  # the decoder gave fewer frames than the first pass counted
                return
            segment, pending = np.stack(pending), []
            both = np.concatenate([segment, self.context])
            cleaned, self.action, refused = strip(both, self.detection, self.config)
            if refused:
                raise StripRefused(f"{refused} (frames {start}-{start + len(segment) - 1})")
            yield from even_frames(cleaned[:len(segment)])
            start += len(segment)


def watermark_video(source: bytes | os.PathLike, config: WatermarkConfig, classifier=None,
                    fps: float = 8.0, crf: int = 18, preset: str = "medium") -> VideoVerdict:
    """Detect, then keep, flag, strip or drop, in memory bounded by WHOLE_CLIP_BYTES (see
    the module docstring).

    Args:
        source: an MP4 (or any video PyAV reads) as bytes or a path.
        config: the action and thresholds.
        classifier: a loaded `WatermarkClassifier`, or None.
        fps, crf, preset: how a stripped clip is encoded.

    Raises:
        VideoError: the file cannot be read.
    """
    from datakit.io.video import VideoError, probe, source_notes

    try:
        info = probe(source)
    except VideoError:  # read whole: read_frames says why it cannot decode
        info = None
    verdict = _judge(source, info, config, classifier, fps, crf, preset)
    if verdict.mp4 is None and not verdict.dropped and info is not None:
        # kept byte for byte, a clip is still HDR or interlaced: say so, as a re-encoded
        # one says it was tone-mapped or deinterlaced (`_encoded`)
        verdict = dataclasses.replace(
            verdict, notes=(*verdict.notes, *source_notes(info, kept=True)))
    return verdict


def _judge(source, info, config: WatermarkConfig, classifier, fps: float, crf: int,
           preset: str) -> VideoVerdict:
    """`watermark_video` once the clip is probed (`info`, None when it cannot be)."""
    from datakit.io.video import encode_video, frame_times, read_frames

    def timing(count: int) -> list[float] | None:
        """A variable frame rate's own times for a re-encoded clip of `count` frames."""
        times = frame_times(source)
        return times if times is not None and len(times) == count else None

    if info is None or info.frames * info.width * info.height * 3 <= WHOLE_CLIP_BYTES:
        frames = read_frames(source)
        kept, fields = apply_watermark_policy(frames, config, classifier,
                                              info.pixel_aspect if info else 1.0)
        if kept is None or fields["watermark_action"] not in ("stripped", "cropped"):
            return VideoVerdict(fields, None, kept is None, len(frames), frames.shape[2],
                                frames.shape[1])
        mp4 = encode_video(even_frames(kept), fps, crf=crf, preset=preset, threads=1,
                           pixel_aspect=info.pixel_aspect if info else 1.0,
                           times=timing(len(kept)))
        return _encoded(fields, mp4, len(frames), frames.shape[2], frames.shape[1], info)
    if config.action is WatermarkAction.KEEP:
        return VideoVerdict(kept_fields(), None, False, info.frames, info.width, info.height)
    sampled, count = read_sampled(source, config.sample_frames, info.frames)
    size = {"frames": count, "width": sampled.shape[2], "height": sampled.shape[1]}
    detection = detect_shown(sampled, config, classifier, info.pixel_aspect)
    fields = detection_fields(detection)
    if not detection.found or config.action is WatermarkAction.FLAG:
        return VideoVerdict(fields, None, False, **size)
    if config.action is WatermarkAction.DROP:
        return VideoVerdict({**fields, "watermark_action": "dropped"}, None, True, **size)
    segments = SegmentStrip(source, count, detection, config, sampled)
    try:
        mp4 = encode_video(segments, fps, crf=crf, preset=preset, threads=1,
                           pixel_aspect=info.pixel_aspect, times=timing(count))
    except StripRefused as refused:
        return VideoVerdict({**fields, "watermark_reason": str(refused)}, None, False, **size)
    return _encoded({**fields, "watermark_action": segments.action}, mp4, **size, info=info)


def even_frames(frames: np.ndarray) -> np.ndarray:
    """The frames cut to even sides (yuv420p needs them: the last row or column goes)."""
    from datakit.io.video import even_size

    width, height = even_size(frames.shape[2], frames.shape[1])
    return frames[:, :height, :width]


def _encoded(fields: dict[str, Any], mp4: bytes, frames: int, width: int, height: int,
             info=None) -> VideoVerdict:
    """The verdict on a re-encoded clip, at the size it was encoded at, with what the
    re-encode changed that its pixels do not say (`video.source_notes` of `info`, the
    input's `VideoInfo`: an interlaced input deinterlaced, an HDR one tone-mapped)."""
    from datakit.io.video import even_size, source_notes

    new_width, new_height = even_size(width, height)
    notes = () if (new_width, new_height) == (width, height) else (
        f"re-encoded at {new_width}x{new_height}: the input's {width}x{height} has an odd "
        "side, and yuv420p needs even ones (the last row or column is cut)",)
    notes += tuple(source_notes(info)) if info is not None else ()
    return VideoVerdict(fields, mp4, False, frames, new_width, new_height, notes)


def show_watermark(src: Path, picture: Path, config: WatermarkConfig) -> dict[str, Any]:
    """Detect in one video or image file, write a picture of the finding to `picture` (PNG)
    and return the finding (`datakit watermark FILE --show PICTURE`). A video is judged on
    the frames the detector samples, read in one streaming pass (`read_sampled`).

    Raises:
        UserError: `src` is not one readable video or image, or `picture` cannot be written.
    """
    from PIL import Image

    from datakit.io.atomic import atomic_write
    from datakit.io.errors import UserError
    from datakit.io.images import ImageError, load_image
    from datakit.io.video import VideoError, probe
    from manifests.sources import IMAGE_EXTENSIONS

    if not src.is_file():
        raise UserError(f"{src}: --show needs one video or image file")
    if src.suffix.lower() == ".tar":
        raise UserError(f"{src}: --show needs one video or image file, not a shard (take one "
                        f"out: tar -xf {src.name} KEY.mp4)")
    image = src.suffix.lower() in IMAGE_EXTENSIONS
    try:
        frames = load_image(src)[None] if image else read_sampled(src, config.sample_frames)[0]
        aspect = 1.0 if image else probe(src).pixel_aspect
    except ImageError as error:
        raise UserError(f"{src}: {error}") from None
    except VideoError as error:  # its message names the file
        raise UserError(str(error)) from None
    detection = detect_shown(frames, config, load_classifier(config), aspect)
    buffer = io.BytesIO()
    Image.fromarray(show_detection(frames, detection)).save(buffer, format="PNG")
    try:
        atomic_write(picture, buffer.getvalue())
    except OSError as error:
        raise UserError(f"{picture}: cannot write ({error.strerror or error})") from None
    return {"file": str(src), **describe(detection), "picture": str(picture)}
