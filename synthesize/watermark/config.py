"""Watermark settings (`WatermarkConfig`, what the CLI maps its options onto) and what the
detector returns (`Detection`)."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np


class WatermarkAction(str, Enum):
    KEEP = "keep"
    FLAG = "flag"
    STRIP = "strip"
    DROP = "drop"


@dataclass(frozen=True)
class WatermarkConfig:
    """Settings of watermark detection and removal; the CLI maps its options onto these.

    Args:
        action: keep (do not check), flag (record score and box), strip (remove the mark),
            drop (skip the sample with status `watermarked`).
        threshold: the heuristic score at which a mark counts as found.
        model: a LAION watermark classifier (weights file or folder), or None for the
            weights-free heuristics only.
        classifier_threshold: `pwatermark` at which the classifier's verdict is "watermark".
        device: where the classifier runs ("auto", "cpu", "cuda", "cuda:N").
        sample_frames: frames of a clip the detector (and the classifier) looks at.
        analysis_size: detection works on frames shrunk to at most this many pixels on the
            longer side (cost), then scales the mask back.
        crop_band: a mark lying within this fraction of the frame from one edge is cropped
            away rather than filled (0 never crops).
        mask_margin: pixels added around the found mask before removal (soft mark edges,
            compression halos). 2 measured best on the real bench's strips once the
            marks are burned in before x264 (1 leaves compressed rims, 3 fills further
            from the mark than it needs): docs/watermarks.md, removal.
    """

    action: WatermarkAction = WatermarkAction.FLAG
    threshold: float = 0.5
    model: str | None = None
    classifier_threshold: float = 0.8
    device: str = "auto"
    sample_frames: int = 16
    analysis_size: int = 320
    crop_band: float = 0.12
    mask_margin: int = 2

    def __post_init__(self):
        try:
            object.__setattr__(self, "action", WatermarkAction(self.action))
        except ValueError:
            choices = "|".join(a.value for a in WatermarkAction)
            raise ValueError(f"watermarks must be one of {choices}, got {self.action!r}") from None
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"watermark threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.classifier_threshold <= 1.0:
            raise ValueError("watermark classifier threshold must be in (0, 1], got "
                             f"{self.classifier_threshold}")
        if self.sample_frames < 2:
            raise ValueError(f"watermark sample_frames must be at least 2, got "
                             f"{self.sample_frames}")
        if self.analysis_size < 32:
            raise ValueError(f"watermark analysis_size must be at least 32, got "
                             f"{self.analysis_size}")
        if not 0.0 <= self.crop_band < 0.5:
            raise ValueError(f"watermark crop_band must be in [0, 0.5), got {self.crop_band}")
        if self.mask_margin < 0:
            raise ValueError(f"watermark mask_margin must be at least 0, got {self.mask_margin}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"--watermark-device: expected auto, cpu, cuda or cuda:N, got "
                             f"{self.device!r}")
        if self.model is not None and not os.path.exists(self.model):
            raise ValueError(f"--watermark-model {self.model}: no such file or folder")

    def settings(self) -> dict[str, Any]:
        """What decides a run's output, for its resume check: where the classifier runs
        does not, so a run started on a GPU may be finished on the CPU."""
        return {k: v for k, v in asdict(self).items() if k != "device"}


@dataclass
class Detection:
    """What the detector found in a clip or a still.

    Args:
        score: the heuristic score in [0, 1], or `pwatermark` for a still judged by a
            classifier.
        found: whether the score (or the classifier) passed its threshold.
        mask: where the mark is, bool (H, W) at the input's size; None when nothing stood out.
        box: the mask's bounding box (x0, y0, x1, y1), end exclusive; None without a mask.
        kind: "static-overlay" (from motion), "still-scene" (a clip without motion, judged
            as a still), "still" (one image).
        details: the evidence (per-cue numbers, pwatermark max and mean, frames used).
        reason: one line saying what decided: the evidence for a mark, or why there is
            none ("no evidence: still camera, no text found").
    """

    score: float
    found: bool
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None
    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self):
        # the detectors compare numpy floats: keep plain Python values, so the json of
        # `datakit watermark FILE` says `true`, not the string "True"
        self.score, self.found = float(self.score), bool(self.found)
