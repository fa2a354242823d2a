"""Cut, remux and re-encode clips of a video, in one decoding pass.

A caption sample's mp4 is the input itself when it can be (H.264 in an MP4-family container,
within the size limit: the video stream is copied, no pixel is touched), else it is
re-encoded to H.264 (yuv420p), optionally resized and resampled in time. A long video split
into clips (`plan_fixed`, `plan_scenes`) is decoded once for all its clips, frame by frame,
so memory holds one frame plus the clips' encoded bytes, never the decoded video. While it
decodes, the pass keeps the frames the caller asks for (the key frames), so re-encoded clips
need no second decode.

Clips are planned and cut by time, not by frame number: a clip covers seconds `[start, end)`
of the source, counted from its first decoded frame. A re-encoded clip has a constant frame
rate (`--fps`, else the source's nominal rate); its frame j, at `start + j / rate`, shows the
latest source frame whose timestamp is at most half a source frame later. So an AVI whose
header counts 444 frame slots but which codes 68 frames (empty packets repeat the frame
before, as AVI writers store still stretches) and variable-frame-rate footage are cut where
their pictures are, and a constant-rate video gives the same frames as counting would. The
video ends where its last decoded frame ends (as FFmpeg's constant-rate output does): a clip
after that fails with its own range, a clip that runs past it is cut short.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from datakit.io.video import (
    VideoError,
    VideoSource,
    VideoWriter,
    describe_source,
    hdr_peak,
    open_container,
    shown_size,
    square_pixels,
    stream_pixel_aspect,
    timed_frames,
    upright_rgb,
)

logger = logging.getLogger(__name__)

REMUX_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")


@dataclass(frozen=True)
class ClipSpec:
    """Seconds `[start, end)` of the source (from its first frame) that one clip covers."""

    start: float
    end: float

    def describe(self) -> str:
        return f"clip {self.start:.2f}-{self.end:.2f} s"


@dataclass(frozen=True)
class ClipFailure:
    """A clip that could not be cut, and why (the reason names the clip's own range)."""

    spec: ClipSpec
    reason: str


@dataclass(frozen=True)
class OutputFormat:
    """How re-encoded clips look.

    Args:
        size: (width, height) to resize and centre-crop to, or None to keep the source size.
        max_side: when `size` is None, downscale (keeping the aspect ratio) so the longer side
            is at most this many pixels; None: no limit. Larger inputs are re-encoded.
        fps: output frame rate (frames are dropped or repeated to match), None: the source's.
        crf, preset: x264 quality and speed.
    """

    size: tuple[int, int] | None = None
    max_side: int | None = None
    fps: float | None = None
    crf: int = 18
    preset: str = "medium"

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The output size for a source of `width` x `height` (always even)."""
        if self.size is not None:
            return self.size
        scale = 1.0
        if self.max_side and max(width, height) > self.max_side:
            scale = self.max_side / max(width, height)
        out_w = max(2, int(round(width * scale / 2)) * 2)
        out_h = max(2, int(round(height * scale / 2)) * 2)
        return out_w, out_h


@dataclass
class EncodedClip:
    """One finished clip: its mp4 and the frames kept on the way (output index -> RGB)."""

    spec: ClipSpec
    mp4: bytes
    frames: int
    fps: float
    width: int
    height: int
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    source_keyframes: list[int] = field(default_factory=list)  # output indices of I-frames


def can_copy(info, container_format: str, output: OutputFormat) -> bool:
    """Whether the source's video stream can go into the sample as it is."""
    if info.codec != "h264" or output.size is not None or output.fps is not None:
        return False
    if output.max_side and max(info.width, info.height) > output.max_side:
        return False
    if info.width % 2 or info.height % 2:
        return False
    if not square_pixels(info.pixel_aspect):  # samples have square pixels (loaders ignore it)
        return False
    if info.hidden_frames:  # an edit list hides a cut's pre-roll, which decord-based
        return False        # loaders read as frames (`video.trims_its_start`)
    if info.interlaced:  # a copy keeps the fields woven; a re-encode is deinterlaced
        return False
    if info.transfer:  # a copy stays HDR, which loaders decode washed out; a re-encode is
        return False   # tone-mapped to SDR
    return any(name in REMUX_FORMATS for name in container_format.split(","))


def container_format(source: VideoSource) -> str:
    """The demuxer's name, e.g. 'mov,mp4,m4a,3gp,3g2,mj2' or 'matroska,webm'."""
    try:
        with open_container(source) as container:
            return container.format.name
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot open ({error})") from error


def remux_video(source: VideoSource) -> bytes:
    """The video stream of `source`, copied packet for packet into an MP4 (audio and other
    streams dropped)."""
    import av

    buffer = io.BytesIO()
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            with av.open(buffer, mode="w", format="mp4") as output:
                copied = output.add_stream_from_template(stream)
                for packet in container.demux(stream):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    packet.stream = copied
                    output.mux(packet)
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot copy the video stream "
                         f"({error})") from error
    return buffer.getvalue()


def plan_fixed(seconds: float, fps: float, clip_seconds: float, min_clip_seconds: float,
               offset: float = 0.0) -> list[ClipSpec]:
    """Consecutive clips of `clip_seconds` over `seconds` (from `offset`), their bounds on the
    `fps` frame grid; a last piece shorter than `min_clip_seconds` is dropped (the caller
    records it), a longer one kept."""
    if seconds <= 0 or fps <= 0:
        return []
    slots = int(math.floor(seconds * fps + 1e-6))  # whole frame slots of the grid
    length = max(1, int(round(clip_seconds * fps)))
    shortest = max(1, int(math.ceil(min_clip_seconds * fps - 1e-6)))
    clips = []
    for start in range(0, slots, length):
        end = min(slots, start + length)
        if end - start >= shortest:
            clips.append(ClipSpec(offset + start / fps, offset + end / fps))
    return clips


def plan_scenes(
    source: VideoSource,
    fps: float,
    clip_seconds: float,
    min_clip_seconds: float,
    threshold: float = 3.0,
) -> list[ClipSpec]:
    """Clips at shot boundaries (`detect_scenes`); a scene longer than `clip_seconds` is cut
    into pieces of about that length, scenes shorter than `min_clip_seconds` are dropped.

    Args:
        source: the video (decoded once here to find the shots).
        fps: the source's nominal frame rate (the grid the pieces are cut on).
        clip_seconds: the longest clip.
        min_clip_seconds: the shortest clip kept.
        threshold: how many times a frame's content change must exceed its neighbours'
            average to be a cut (3, as PySceneDetect's AdaptiveDetector).
    """
    clips = []
    for start, end in detect_scenes(source, fps, threshold):
        clips += plan_fixed(end - start, fps, clip_seconds, min_clip_seconds, offset=start)
    return clips


def detect_scenes(source: VideoSource, fps: float,
                  threshold: float = 3.0) -> list[tuple[float, float]]:
    """Shots as `[start, end)` seconds (`datakit.io.scenes`: an adaptive detector, which does
    not cut steady pans the way a fixed content threshold does); one shot when there is no
    cut. The video ends where its last frame ends (its time plus 1/`fps`)."""
    from datakit.io.scenes import adaptive_cuts, content_changes

    changes, times = content_changes(source, fps)
    if not len(times):
        return []
    bounds = [0.0, *(float(times[cut]) for cut in adaptive_cuts(changes, threshold=threshold)),
              float(times[-1]) + 1.0 / fps]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def output_rate(source_fps: float, output: OutputFormat) -> float:
    """Frames per second of a re-encoded clip: `output.fps`, else the source's."""
    return output.fps or source_fps or 25.0


def output_frame_count(spec: ClipSpec, rate: float) -> int:
    """Frames of a clip at `rate`: one per 1/rate seconds from its start, before its end."""
    return max(1, int(math.ceil((spec.end - spec.start) * rate - 1e-6)))


def transcode_clips(
    source: VideoSource,
    clips: list[ClipSpec],
    source_fps: float,
    output: OutputFormat,
    keep: Callable[[ClipSpec, int], list[int]] | None = None,
) -> Iterator[EncodedClip | ClipFailure]:
    """Encode each clip of `clips` (sorted, not overlapping) in one pass over `source`.

    Args:
        source: the video.
        clips: source time ranges.
        source_fps: the source's nominal frame rate (times of frames without a timestamp,
            and the half-frame tolerance with which output times pick source frames).
        output: size, frame rate and encoder settings.
        keep: given a clip and its output frame count, the output indices whose RGB frames
            (at the output size) to keep in `EncodedClip.kept`.

    Yields one result per clip, in order, as soon as it is known: its `EncodedClip`, or a
    `ClipFailure` naming the clip's range (the video ends before it, or stops decoding).
    """
    import cv2

    fps = source_fps or 25.0
    cutter = _Cutter(list(clips), output_rate(fps, output), 0.5 / fps, output, keep, cv2)
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            cutter.pixel_aspect = stream_pixel_aspect(stream)
            last = None
            for time, frame in timed_frames(container, stream, fps):
                if cutter.peak_nits is None:
                    cutter.peak_nits = hdr_peak(frame)
                yield from cutter.until(time)
                cutter.shown, last = frame, time
                if cutter.done:
                    return
    except Exception as error:
        reason = str(error) if isinstance(error, VideoError) else f"cannot decode ({error})"
        yield from cutter.fail(reason)
        return
    if last is None:
        yield from cutter.fail("no frame decoded")
        return
    end = last + 1.0 / fps
    yield from cutter.until(end)
    yield from cutter.fail(f"the video ends at {end:.2f} s")


class _Cutter:
    """Output frames of the clips, in time order: every output time earlier than a newly
    decoded frame (less the tolerance) shows the frame decoded before it (`shown`)."""

    def __init__(self, pending: list[ClipSpec], rate: float, tolerance: float,
                 output: OutputFormat, keep, cv2):
        self.pending, self.rate, self.tolerance = pending, rate, tolerance
        self.output, self.keep, self.cv2 = output, keep, cv2
        self.current: _OpenClip | None = None
        self.shown = None  # the latest decoded frame
        self.pixel_aspect = 1.0  # the stream's sample aspect ratio (set once it is open)
        self.peak_nits: float | None = None  # an HDR stream's tone-mapping peak (first frame)

    @property
    def done(self) -> bool:
        return self.current is None and not self.pending

    def until(self, time: float) -> Iterator[EncodedClip]:
        """Write every output frame whose time is before `time` (less the tolerance)."""
        while not self.done:
            if self.current is None:
                if self.pending[0].start + self.tolerance >= time:
                    return
                spec = self.pending.pop(0)
                self.current = _OpenClip(spec, self.rate, self.output, self.keep,
                                         *shown_size(self.shown, self.pixel_aspect),
                                         self.pixel_aspect, self.peak_nits)
            clip = self.current
            while clip.next_out < clip.count and clip.next_time() + self.tolerance < time:
                clip.add(self.shown, self.cv2)
            if clip.next_out < clip.count:
                return
            yield clip.finish()
            self.current = None

    def fail(self, reason: str) -> Iterator[EncodedClip | ClipFailure]:
        """The video has no more frames: the open clip ends short, the others fail."""
        if self.current is not None and self.current.next_out:
            yield self.current.finish()
        elif self.current is not None:
            self.pending.insert(0, self.current.spec)
        self.current = None
        for spec in self.pending:
            yield ClipFailure(spec, f"{spec.describe()}: {reason}")
        self.pending = []


class _OpenClip:
    """The clip being encoded: writes its output frames, keeps the asked ones."""

    def __init__(self, spec: ClipSpec, rate: float, output: OutputFormat, keep, width, height,
                 pixel_aspect: float = 1.0, peak_nits: float | None = None):
        self.spec, self.fps, self.output = spec, rate, output
        self.pixel_aspect, self.peak_nits = pixel_aspect, peak_nits
        self.count = output_frame_count(spec, rate)
        self.width, self.height = output.target_size(width, height)
        self.buffer = io.BytesIO()
        self.writer = VideoWriter(self.buffer, self.width, self.height, self.fps,
                                  crf=output.crf, preset=output.preset, threads=1)
        self.wanted = set(keep(spec, self.count)) if keep else set()
        self.kept: dict[int, np.ndarray] = {}
        self.iframes: list[int] = []
        self.next_out = 0  # the next output frame to write
        self._last: tuple[object, np.ndarray] | None = None  # (source frame, its RGB)

    def next_time(self) -> float:
        return self.spec.start + self.next_out / self.fps

    def add(self, frame, cv2) -> None:
        """Write `frame` as the next output frame (converted once however often it shows)."""
        if self._last is None or self._last[0] is not frame:
            rgb = _resized(upright_rgb(frame, self.pixel_aspect, self.peak_nits), self.width,
                           self.height, cv2)
            if frame.key_frame:
                self.iframes.append(self.next_out)
            self._last = (frame, rgb)
        rgb = self._last[1]
        self.writer.write(rgb)
        if self.next_out in self.wanted:
            self.kept[self.next_out] = rgb
        self.next_out += 1

    def finish(self) -> EncodedClip:
        self.writer.close()
        return EncodedClip(self.spec, self.buffer.getvalue(), self.next_out, self.fps,
                           self.width, self.height, self.kept, self.iframes)


def _resized(rgb: np.ndarray, width: int, height: int, cv2) -> np.ndarray:
    """Centre-crop to the target aspect, then resize (area filter when shrinking)."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    target = width / height
    if abs(w / h - target) > 1e-3:
        if w / h > target:
            new_w = int(round(h * target))
            x0 = (w - new_w) // 2
            rgb = rgb[:, x0:x0 + new_w]
        else:
            new_h = int(round(w / target))
            y0 = (h - new_h) // 2
            rgb = rgb[y0:y0 + new_h]
    shrink = rgb.shape[1] > width
    return cv2.resize(rgb, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
