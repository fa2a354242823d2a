"""Cut, remux and re-encode clips of a video, in one decoding pass.

A caption sample's mp4 is the input itself when it can be (H.264 in an MP4-family container,
within the size limit: the video stream is copied, no pixel is touched), else it is
re-encoded to H.264 (yuv420p), optionally resized and resampled in time. A long video split
into clips (`plan_fixed`, `plan_scenes`) is decoded once for all its clips, frame by frame,
so memory holds one frame plus the clips' encoded bytes, never the decoded video. While it
decodes, the pass keeps the frames the caller asks for (the key frames), so re-encoded clips
need no second decode.

Frame numbers are counted from the first decoded frame of the file (index = position in
decode order of presented frames), the same numbering decord and `datakit.io.video.read_frames`
use; a clip covers source frames `[start, end)`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from datakit.io.video import VideoError, VideoSource, VideoWriter, describe_source, open_container

logger = logging.getLogger(__name__)

REMUX_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")


@dataclass(frozen=True)
class ClipSpec:
    """Source frames `[start, end)` of one clip."""

    start: int
    end: int

    @property
    def frames(self) -> int:
        return self.end - self.start


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


def plan_fixed(frames: int, fps: float, clip_seconds: float, min_clip_seconds: float) -> list:
    """Consecutive clips of `clip_seconds`; a last piece shorter than `min_clip_seconds` is
    dropped (the caller records it), a longer one kept."""
    if frames <= 0 or fps <= 0:
        return []
    length = max(1, int(round(clip_seconds * fps)))
    shortest = max(1, int(math.ceil(min_clip_seconds * fps)))
    clips = []
    for start in range(0, frames, length):
        end = min(frames, start + length)
        if end - start >= shortest:
            clips.append(ClipSpec(start, end))
    return clips


def plan_scenes(
    source: VideoSource,
    frames: int,
    fps: float,
    clip_seconds: float,
    min_clip_seconds: float,
    threshold: float = 3.0,
) -> list[ClipSpec]:
    """Clips at shot boundaries (`detect_scenes`); a scene longer than
    `clip_seconds` is cut into pieces of about that length, scenes shorter than
    `min_clip_seconds` are dropped.

    Args:
        source: the video (bytes are written to a temporary file for the detector).
        frames, fps: from `datakit.io.video.probe`.
        clip_seconds: the longest clip.
        min_clip_seconds: the shortest clip kept.
        threshold: how many times a frame's content change must exceed its neighbours'
            average to be a cut (3, as PySceneDetect's AdaptiveDetector).
    """
    scenes = detect_scenes(source, threshold)
    if not scenes:
        scenes = [(0, frames)]
    clips = []
    for start, end in scenes:
        end = min(end, frames)
        for piece in plan_fixed(end - start, fps, clip_seconds, min_clip_seconds):
            clips.append(ClipSpec(start + piece.start, start + piece.end))
    return clips


def detect_scenes(source: VideoSource, threshold: float = 3.0) -> list[tuple[int, int]]:
    """Shots as `[start, end)` frame ranges (`datakit.io.scenes`: an adaptive detector, which does
    not cut steady pans the way a fixed content threshold does); empty for a single shot."""
    from datakit.io.scenes import adaptive_cuts, content_changes

    changes = content_changes(source)
    cuts = adaptive_cuts(changes, threshold=threshold)
    if not cuts:
        return []
    bounds = [0, *cuts, len(changes)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def output_frame_count(spec: ClipSpec, source_fps: float, output: OutputFormat) -> int:
    """Frames of the clip once resampled to `output.fps`."""
    if not output.fps or not source_fps:
        return spec.frames
    return max(1, int(math.floor(spec.frames / source_fps * output.fps + 1e-6)))


def _source_index(out_index: int, spec: ClipSpec, source_fps: float, output: OutputFormat) -> int:
    if not output.fps or not source_fps:
        return spec.start + out_index
    return min(spec.end - 1, spec.start + int(round(out_index * source_fps / output.fps)))


def transcode_clips(
    source: VideoSource,
    clips: list[ClipSpec],
    source_fps: float,
    output: OutputFormat,
    keep: Callable[[ClipSpec, int], list[int]] | None = None,
) -> Iterator[EncodedClip]:
    """Encode each clip of `clips` (sorted, not overlapping) in one pass over `source`.

    Args:
        source: the video.
        clips: source frame ranges.
        source_fps: the source's frame rate.
        output: size, frame rate and encoder settings.
        keep: given a clip and its output frame count, the output indices whose RGB frames
            (at the output size) to keep in `EncodedClip.kept`.

    Yields each clip as soon as its last frame is encoded.
    """
    import cv2

    if not clips:
        return
    pending = list(clips)
    current: _OpenClip | None = None
    index = -1
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                index += 1
                while current is None or index >= current.spec.end:
                    if current is not None:
                        yield current.finish()
                        current = None
                    if not pending:
                        return
                    if index < pending[0].start:
                        break
                    current = _OpenClip(pending.pop(0), source_fps, output, keep,
                                        frame.width, frame.height)
                if current is None or index < current.spec.start:
                    continue
                current.add(index, frame, cv2)
            if current is not None:
                yield current.finish()
    except VideoError:
        raise
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error
    if pending:
        raise VideoError(f"{describe_source(source)}: the video ends at frame {index + 1}, before "
                         f"clip {pending[0].start}-{pending[0].end}")



class _OpenClip:
    """The clip being encoded: maps source frames to output frames, keeps the asked ones."""

    def __init__(self, spec, source_fps, output: OutputFormat, keep, width, height):
        self.spec, self.source_fps, self.output = spec, source_fps, output
        self.count = output_frame_count(spec, source_fps, output)
        self.width, self.height = output.target_size(width, height)
        self.buffer = io.BytesIO()
        self.fps = output.fps or source_fps or 25.0
        self.writer: VideoWriter | None = None  # opened at the first frame
        self.wanted = set(keep(spec, self.count)) if keep else set()
        self.kept: dict[int, np.ndarray] = {}
        self.iframes: list[int] = []
        self.next_out = 0  # the next output frame to write

    def add(self, index: int, frame, cv2) -> None:
        # An output frame j shows the source frame nearest its time; one source frame may
        # feed several output frames (slower output rate: none).
        rgb = None
        while (self.next_out < self.count
               and _source_index(self.next_out, self.spec, self.source_fps, self.output) == index):
            if rgb is None:
                rgb = _resized(frame.to_ndarray(format="rgb24"), self.width, self.height, cv2)
                if frame.key_frame:
                    self.iframes.append(self.next_out)
            if self.writer is None:
                self.writer = VideoWriter(self.buffer, self.width, self.height, self.fps,
                                          crf=self.output.crf, preset=self.output.preset,
                                          threads=1)
            self.writer.write(rgb)
            if self.next_out in self.wanted:
                self.kept[self.next_out] = rgb
            self.next_out += 1

    def finish(self) -> EncodedClip:
        if self.writer is None:
            raise VideoError(f"clip {self.spec.start}-{self.spec.end}: no frames decoded")
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
