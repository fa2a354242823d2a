"""Shot boundaries: where a video cuts from one shot to the next.

The method is the adaptive content detector PySceneDetect documents as `AdaptiveDetector`
(written here from its description; PySceneDetect itself is not a dependency, because its
current releases require a second OpenCV wheel beside opencv-python-headless):

1. Each frame, read small (at most 256 px wide, converted by the decoder's scaler), is
   compared with the one before in HSV: the content change is the mean absolute difference
   of hue, saturation and value, averaged over the three channels (0-255 scale).
2. A frame's adaptive ratio is its change divided by the mean change of the `window` frames
   on each side of it. A steady pan changes every frame about as much as its neighbours
   (ratio near 1), a cut changes one frame far more than its neighbours.
3. A frame starts a new shot when its ratio is at least `threshold` (3.0), its change at
   least `min_change` (15.0) and it is at least `min_scene_frames` (15) after the last cut.

One frame is held at a time besides the list of per-frame changes.
"""

from __future__ import annotations

import numpy as np

from datakit.io.video import (
    VideoError,
    VideoSource,
    describe_source,
    open_container,
    timed_frames,
)

ANALYSIS_WIDTH = 256


def content_changes(source: VideoSource, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray]:
    """HSV content change of every decoded frame against the one before (the first frame:
    0), and each frame's time in seconds from the first (`datakit.io.video.timed_frames`;
    `fps` only times frames without a timestamp)."""
    import cv2

    changes, times = [], []
    previous = None
    try:
        with open_container(source) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            width, height = stream.codec_context.width, stream.codec_context.height
            if width > ANALYSIS_WIDTH:
                height = max(2, int(round(height * ANALYSIS_WIDTH / width / 2)) * 2)
                width = ANALYSIS_WIDTH
            for time, frame in timed_frames(container, stream, fps):
                rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
                hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.int16)
                changes.append(0.0 if previous is None
                               else float(np.abs(hsv - previous).mean()))
                times.append(time)
                previous = hsv
    except Exception as error:
        raise VideoError(f"{describe_source(source)}: cannot decode ({error})") from error
    return np.asarray(changes, dtype=np.float64), np.asarray(times, dtype=np.float64)


def adaptive_cuts(
    changes: np.ndarray,
    threshold: float = 3.0,
    min_change: float = 15.0,
    min_scene_frames: int = 15,
    window: int = 2,
) -> list[int]:
    """Frames that start a new shot, from `content_changes` (see the module docstring).

    Args:
        changes: per-frame content change.
        threshold: how many times its neighbours' mean change a frame's change must be.
        min_change: the least change that can be a cut (a fade of tiny steps is not one).
        min_scene_frames: the shortest shot; a cut closer than this to the last is ignored.
        window: neighbours on each side averaged for the ratio.
    """
    cuts: list[int] = []
    last = 0
    for index in range(1, len(changes)):
        lo, hi = max(1, index - window), min(len(changes), index + window + 1)
        neighbours = [changes[j] for j in range(lo, hi) if j != index]
        if not neighbours:
            continue
        mean = float(np.mean(neighbours))
        ratio = changes[index] / mean if mean > 1e-6 else (np.inf if changes[index] else 0)
        if (ratio >= threshold and changes[index] >= min_change
                and index - last >= min_scene_frames):
            cuts.append(index)
            last = index
    return cuts


def detect_shots(
    source: VideoSource, threshold: float = 3.0, min_scene_frames: int = 15
) -> list[int]:
    """Frames where a new shot starts (not counting frame 0)."""
    return adaptive_cuts(content_changes(source)[0], threshold=threshold,
                         min_scene_frames=min_scene_frames)
