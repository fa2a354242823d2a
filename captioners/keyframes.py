"""Which frames of a clip a captioner sees, decoded without decoding the clip.

Three modes (`--keyframe-mode`):

- `uniform` (default): N frames at fixed fractions of the clip, 0.1 / 0.5 / 0.9 for N = 3
  (the common recipe: away from fades at the ends), evenly spread between 0.1 and 0.9 for
  other N, the middle for N = 1. Only those frames are decoded (decord `get_batch`; PyAV
  for what decord cannot read).
- `iframes`: the coded key frames (I-frames) nearest those positions. PyAV is told to skip
  every other frame (`skip_frame = "NONKEY"`), so nothing but I-frames is decoded: the
  fastest mode, with positions only as exact as the encoder's key-frame spacing.
- `scene`: one frame per shot-like segment: the clip is read once at a tiny size (64 px gray,
  converted by the decoder's scaler, one frame in memory at a time), split at its N-1
  largest content changes, and the middle frame of each segment is decoded at full size.
  A clip without clear changes falls back to `uniform`.

Indices count presented frames from 0, as decord and `datakit.io.video.read_frames` do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.io.video import VideoSource, describe_source, open_container, read_frames

KEYFRAME_MODES = ("uniform", "iframes", "scene")
_SIGNAL_WIDTH = 64
_MIN_CHANGE = 12.0  # mean absolute gray-level difference that counts as a content change


@dataclass
class Keyframes:
    """The chosen frames of a clip: indices (ascending) and RGB arrays (N, H, W, 3)."""

    indices: list[int]
    frames: np.ndarray
    mode: str  # the mode that produced them ("uniform" when scene fell back)


def uniform_positions(count: int) -> list[float]:
    """Fractions of the clip for `count` key frames: [0.5]; [0.1, 0.9]; [0.1, 0.5, 0.9] ..."""
    if count < 1:
        raise ValueError(f"key frame count must be at least 1, got {count}")
    if count == 1:
        return [0.5]
    return [0.1 + 0.8 * i / (count - 1) for i in range(count)]


def uniform_indices(frame_count: int, count: int) -> list[int]:
    """Frame indices at `uniform_positions`, distinct where the clip has enough frames."""
    if frame_count < 1:
        return []
    indices = sorted({min(frame_count - 1, int(round(p * (frame_count - 1))))
                      for p in uniform_positions(count)})
    return indices


def nearest(candidates: list[int], targets: list[int]) -> list[int]:
    """For each target, the nearest candidate (distinct, ascending)."""
    if not candidates:
        return []
    array = np.asarray(candidates)
    return sorted({int(array[np.abs(array - t).argmin()]) for t in targets})


def scene_indices(change: np.ndarray, count: int) -> list[int] | None:
    """Middle frames of the `count` segments between the `count - 1` largest changes.

    Args:
        change: `change[i]` = content change between frames i-1 and i (change[0] = 0).
        count: key frames wanted.

    Returns None when the clip has fewer than `count - 1` clear changes (caller falls back).
    """
    frames = len(change)
    if count == 1 or frames < 2:
        return [frames // 2] if frames else []
    order = np.argsort(-change[1:], kind="stable") + 1
    cuts: list[int] = []
    spacing = max(1, frames // (4 * count))  # one change, not its neighbours twice
    for index in order:
        if change[index] < _MIN_CHANGE or len(cuts) == count - 1:
            break
        if all(abs(int(index) - c) >= spacing for c in cuts):
            cuts.append(int(index))
    if len(cuts) < count - 1:
        return None
    bounds = [0, *sorted(cuts), frames]
    return [(bounds[i] + bounds[i + 1] - 1) // 2 for i in range(count)]


def change_signal(source: VideoSource) -> np.ndarray:
    """Mean absolute gray-level change between consecutive frames, read at 64 px width."""
    values = [0.0]
    previous = None
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            width = _SIGNAL_WIDTH
            height = max(2, int(round(width * stream.codec_context.height
                                      / max(1, stream.codec_context.width) / 2)) * 2)
            for frame in container.decode(stream):
                small = frame.to_ndarray(format="gray", width=width, height=height)
                small = small.astype(np.float32)
                if previous is not None:
                    values.append(float(np.abs(small - previous).mean()))
                previous = small
    except Exception as error:
        from datakit.io.video import VideoError

        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error
    if previous is None:
        return np.zeros(0, np.float32)
    return np.asarray(values, dtype=np.float32)


def iframe_indices(source: VideoSource, fps: float) -> list[int]:
    """Indices of the coded key frames, decoding nothing else."""
    indices = []
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.codec_context.skip_frame = "NONKEY"
            start = stream.start_time or 0
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                seconds = float((frame.pts - start) * stream.time_base)
                indices.append(int(round(seconds * fps)))
    except Exception as error:
        from datakit.io.video import VideoError

        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error
    return indices


def read_keyframes(
    source: VideoSource, frame_count: int, fps: float, count: int, mode: str = "uniform"
) -> Keyframes:
    """Choose and decode the key frames of a whole video file.

    Args:
        source: the clip (path or bytes).
        frame_count, fps: from `datakit.io.video.probe`.
        count: key frames wanted (fewer when the clip is shorter).
        mode: uniform, iframes or scene (see the module docstring).
    """
    if mode not in KEYFRAME_MODES:
        raise ValueError(f"--keyframe-mode: expected one of {', '.join(KEYFRAME_MODES)}, "
                         f"got {mode!r}")
    used = mode
    targets = uniform_indices(frame_count, count)
    if mode == "iframes":
        indices = nearest(iframe_indices(source, fps), targets)
        indices = [i for i in indices if i < frame_count] or targets
    elif mode == "scene":
        indices = scene_indices(change_signal(source), count)
        if indices is None:
            indices, used = targets, "uniform"
    else:
        indices = targets
    return Keyframes(indices, read_frames(source, indices), used)


def shrink(frames: np.ndarray, max_side: int) -> np.ndarray:
    """Key frames downscaled (area filter) so the longer side is at most `max_side`: what a
    worker sends to the model process (every processor resizes further anyway)."""
    import cv2

    if frames.size == 0 or max(frames.shape[1:3]) <= max_side:
        return frames
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
