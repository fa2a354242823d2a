"""What a pipeline calls per sample: detect, then keep, flag, strip or drop; and the
classifier, loaded once per worker."""

from __future__ import annotations

from typing import Any

import numpy as np

from synthesize.watermark.config import Detection, WatermarkAction, WatermarkConfig
from synthesize.watermark.detection import detect_video
from synthesize.watermark.frames import box_of, check_frames, sample_indices, temporal_median
from synthesize.watermark.removal import strip


def load_classifier(config: WatermarkConfig):
    """The classifier `config.model` names (loaded now), or None without one."""
    if config.model is None:
        return None
    from synthesize.watermark.classifier import WatermarkClassifier

    return WatermarkClassifier(config.model, device=config.device)


class LazyClassifier:
    """The classifier a `WatermarkConfig` names, loaded on first call in each process.

    Stages hold one and call it per sample; it pickles empty, so every worker of an engine
    loads its own copy once instead of receiving weights. None without a model.

    Args:
        config: the watermark settings (`model` names the weights).
    """

    def __init__(self, config: WatermarkConfig):
        self.config = config
        self._model = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_model": None}

    def __call__(self):
        if self._model is None and self.config.model is not None:
            self._model = load_classifier(self.config)
        return self._model


def detect_shown(frames: np.ndarray, config: WatermarkConfig, classifier=None,
                 pixel_aspect: float = 1.0) -> Detection:
    """`detect_video` on the frames as players show them, for an anamorphic clip (stored
    pixels `pixel_aspect` as wide as tall: a DVD's 16:9, HDV's 1440x1080) stretched to
    square pixels first, the mask and box given back on the stored pixels. Squeezed, text
    and logos are narrower than any the detector learned: of the real bench's 56 marks
    stored at 3/4 of their width, 48 were found as stored and 52 as shown."""
    import dataclasses

    import cv2

    from datakit.io.video import square_pixels, square_width

    frames = check_frames(frames)
    height, width = frames.shape[1:3]
    shown_width = square_width(width, pixel_aspect)
    if square_pixels(pixel_aspect) or shown_width == width:
        return detect_video(frames, config, classifier)
    shown = np.stack([cv2.resize(f, (shown_width, height), interpolation=cv2.INTER_LINEAR)
                      for f in frames])
    detection = detect_video(shown, config, classifier)
    if detection.mask is None:
        return detection
    mask = cv2.resize(detection.mask.astype(np.float32), (width, height),
                      interpolation=cv2.INTER_AREA) > 0
    return dataclasses.replace(detection, mask=mask, box=box_of(mask))


def apply_watermark_policy(frames: np.ndarray, config: WatermarkConfig, classifier=None,
                           pixel_aspect: float = 1.0
                           ) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Detect, then keep, flag, strip or drop, as `config.action` says.

    Args:
        frames: RGB uint8 (T, H, W, 3), or one image (H, W, 3).
        config: the action and thresholds.
        classifier: a loaded `WatermarkClassifier` (see `load_classifier`), or None.
        pixel_aspect: a stored pixel's width over its height: an anamorphic clip is judged
            as players show it (`detect_shown`) and stripped on its stored pixels.

    Returns:
        (frames, fields): the frames to keep, same shape as given (None when the sample is
        dropped), and `watermark_score`, `watermark_box`, `watermark_action` and
        `watermark_reason` for the manifest row and the json. A strip that would damage the
        clip (`removal.strip_damage`) keeps the frames as given and records "flagged" with
        the reason.
    """
    if config.action is WatermarkAction.KEEP:
        return frames, kept_fields()
    detection = detect_shown(frames, config, classifier, pixel_aspect)
    fields = detection_fields(detection)
    if not detection.found or config.action is WatermarkAction.FLAG:
        return frames, fields
    if config.action is WatermarkAction.DROP:
        return None, {**fields, "watermark_action": "dropped"}
    cleaned, action, refused = strip(frames, detection, config)
    if refused:
        return frames, {**fields, "watermark_action": action, "watermark_reason": refused}
    return cleaned, {**fields, "watermark_action": action}


def kept_fields() -> dict[str, Any]:
    """The watermark fields of a sample no one looked at (`--watermarks keep`)."""
    return {"watermark_score": None, "watermark_box": None, "watermark_action": "kept",
            "watermark_reason": None}


def detection_fields(detection: Detection) -> dict[str, Any]:
    """The watermark fields of a detection, before any action: "flagged" or "clean"."""
    return {
        "watermark_score": round(float(detection.score), 4),
        "watermark_box": list(detection.box) if detection.found and detection.box else None,
        "watermark_action": "flagged" if detection.found else "clean",
        "watermark_reason": detection.reason,
    }


def describe(detection: Detection) -> dict[str, Any]:
    """The detection as json: score, found, box, kind, reason and the evidence."""
    return {"score": round(float(detection.score), 4), "found": detection.found,
            "box": list(detection.box) if detection.box else None, "kind": detection.kind,
            "reason": detection.reason, "details": detection.details}


def show_detection(frames: np.ndarray, detection: Detection) -> np.ndarray:
    """A picture to check a detection by eye: the clip's median frame with the mask tinted
    red and the box outlined, beside the bare median frame."""
    import cv2

    frames = check_frames(frames)
    median = temporal_median(frames[sample_indices(len(frames), 16)]).astype(np.uint8)
    marked = median.copy()
    if detection.mask is not None:
        tint = np.array([255, 0, 0], np.float32)
        marked[detection.mask] = (0.5 * marked[detection.mask] + 0.5 * tint).astype(np.uint8)
    if detection.box is not None:
        x0, y0, x1, y1 = detection.box
        colour = (255, 0, 0) if detection.found else (255, 255, 0)
        cv2.rectangle(marked, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
    return np.concatenate([marked, median], axis=1)
