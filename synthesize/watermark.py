"""Watermarks: find static overlays in clips and marks in stills, then flag, strip or drop.

Contract. Frames are RGB uint8 arrays of shape (T, H, W, 3); a still is a clip of one frame.

- `detect_video(frames, config)` samples up to `config.sample_frames` frames and looks for a
  static overlay over moving content: at a mark's pixels the image gradient is the same
  vector in (nearly) every frame (its temporal mean is as long as its mean length, and it is
  there in at least 80% of the frames), while moving content's gradients change and cancel.
  When the camera moves (tracked with ORB), an edge running along the motion also stays put
  on screen; the scene's own gradients carried back along the camera path explain it, and it
  is dropped (a track step counts only when it lines the frames up better than no motion: an
  object crossing a still shot is not the camera). An edge holds in place when its local
  pattern matches the temporal median best at zero shift in enough frames, which a swaying
  scene's does not: under a still camera a static edge must also hold; under a moving one,
  holding stands in for presence (a mark over dark content fades out in some frames). The
  remaining static edges are closed into blobs (holes filled: a logo's flat inside has no
  edges), and each blob is scored in [0, 1] by the share of static pixels among the edges
  next to them and by how many static edge pixels it holds, or by its group's score (a faint
  word's letters) when that is better. The mask is then the mark's own pixels: around the
  chosen blobs, the temporal median of the full-size frames' gradients is integrated (a
  Poisson solve) into a picture of the overlay, which is thresholded (`matte_mask`). Last, an
  overlay sits on the same pixels in every frame: the share of frames whose gradient
  magnitudes on the mask match their temporal median best with no shift (of 7x7 shifts),
  over 0.75, scales the score (capped at 1): under 0.75 it rejects scene structures the
  camera carries that the edge tests took for an overlay. Up to CANDIDATES blobs or groups
  are judged this way, best first. When the whole picture is static (a still scene, a tripod
  shot of a wall) time says nothing, and the still-image detector runs on the temporal
  median frame instead (`kind="still-scene"`).
- `detect_image(image, config, classifier)` has no motion to use: it looks for text and logo
  strokes (thin structures found by top-hat and black-hat filtering, closed into lines) of
  one colour, weighted by a prior for corners and the centre. With a classifier (LAION's,
  see `synthesize.watermark_classifier`) its `pwatermark` decides and the strokes give the box.
- `remove_watermark(frames, detection, config)` uses ONE mask for every frame, so the fill is
  stable over time. A mark inside a border band is cropped away (same aspect ratio, resized
  back to the input size). Otherwise frames are aligned on their content outside the mask
  (ORB features, a RANSAC similarity per frame) and each frame's masked pixels are the median
  of the other sampled frames that show that spot unmarked. Where no frame reveals it, under a
  semi-transparent mark, the blend `I = a*W + (1-a)*J` is inverted per pixel from all frames
  at once: the pixel's temporal mean and spread, against the scene's (inpainted from the
  surround, where they vary smoothly), give
  `J_t = mean(J) + (I_t - mean(I)) * spread(J) / spread(I)`, which keeps the frame's own
  changes. What is left (an opaque mark no frame reveals) is inpainted spatially (OpenCV
  Telea). The output has the input's shape.
- `apply_watermark_policy(frames, config, classifier)` is what a pipeline calls per sample:
  it returns the frames to keep (None when dropped) and the fields for the manifest row and
  the json: `watermark_score` (float or None), `watermark_box` ([x0, y0, x1, y1] in pixels,
  end exclusive, or None) and `watermark_action`: "kept" (not checked: `keep`), "clean"
  (checked, nothing found), "flagged", "stripped", "cropped" or "dropped".
- `watermark_shards(src, out, config, options)` (`datakit watermark`) re-processes existing
  shards: every sample keeps its key and files, its json gains the three fields, its mp4 is
  re-encoded only when its pixels changed; a dropped sample becomes a `watermarked` row.

Scores: without a classifier, `score` is the heuristic in [0, 1] and a mark is found at
`score >= config.threshold` (0.5). With a classifier, a still is found at
`pwatermark >= config.classifier_threshold` (0.8; 0.5 flags ordinary text) and its score is
`pwatermark`; a clip is found when either its temporal score or the largest `pwatermark` of
its sampled frames passes its threshold (the mean is kept in `details`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import warnings
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
            compression halos).
    """

    action: WatermarkAction = WatermarkAction.FLAG
    threshold: float = 0.5
    model: str | None = None
    classifier_threshold: float = 0.8
    device: str = "auto"
    sample_frames: int = 16
    analysis_size: int = 320
    crop_band: float = 0.12
    mask_margin: int = 3

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
    """

    score: float
    found: bool
    mask: np.ndarray | None
    box: tuple[int, int, int, int] | None
    kind: str
    details: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"expected RGB uint8 frames (T, H, W, 3), got {frames.dtype} "
                         f"{frames.shape}")
    return frames


def sample_indices(count: int, wanted: int) -> np.ndarray:
    """Up to `wanted` frame indices spread evenly over `count` frames, first and last included."""
    return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(int))


def _shrink(images: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Grey float32 images with the longer side at most `size` (area filtered), and the
    factor from input to analysis pixels."""
    import cv2

    height, width = images.shape[1:3]
    scale = min(1.0, size / max(height, width))
    out_size = (max(8, round(width * scale)), max(8, round(height * scale)))
    grey = []
    for image in images:
        g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            g = cv2.resize(g, out_size, interpolation=cv2.INTER_AREA)
        grey.append(g.astype(np.float32))
    return np.stack(grey), out_size[0] / width


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine that applies b, then a."""
    bottom = [0.0, 0.0, 1.0]
    return (np.vstack([a, bottom]) @ np.vstack([b, bottom]))[:2]


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _to_input_size(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    height, width = shape
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height),
                      interpolation=cv2.INTER_NEAREST).astype(bool)


def _score_blobs(labels: np.ndarray, count: int, evidence: np.ndarray, support: np.ndarray,
                 unit: float) -> np.ndarray:
    """Score blobs 1..count-1 of a label image: (share of their edge pixels that are evidence)
    x (1 - exp(-evidence pixels / unit)). Returns scores indexed by label (index 0, the
    background, scores 0)."""
    hits = np.bincount(labels[evidence], minlength=count).astype(float)
    edges = np.bincount(labels[support], minlength=count).astype(float)
    scores = hits / np.maximum(edges, 1.0) * (1.0 - np.exp(-hits / unit))
    scores[0] = 0.0
    return scores


# ---------------------------------------------------------------------------------------------
# Detection

EDGE_SLOPE = 4.0  # grey levels per pixel: weaker gradients are texture or noise
COHERENCE = 0.75  # |mean gradient| / mean |gradient| above this: the same edge in every frame
PRESENT = 0.2  # a static edge may be missing (under half EDGE_SLOPE) in this share of frames
CAMERA_MOVED = 8.0  # analysis pixels: less camera motion than this is no motion
EXPLAINED = 0.5  # a screen edge the moving scene reproduces to this share is the scene's
STATIC_SCENE = 0.5  # a clip whose edges are this static overall has no usable motion


def track_camera(grey: np.ndarray, ignore: np.ndarray | None = None
                 ) -> tuple[list[np.ndarray], float]:
    """Per frame, the similarity taking it onto frame 0 (ORB matches between neighbouring
    frames, RANSAC, chained; identity where a step cannot be matched), and the largest
    distance any frame corner moved, in pixels.

    Args:
        grey: grey frames (T, h, w).
        ignore: pixels whose features are not used (the mark), or None.
    """
    import cv2

    orb = cv2.ORB_create(500)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    height, width = grey.shape[1:]
    use = None if ignore is None else (~ignore).astype(np.uint8) * 255
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float).T
    features = [orb.detectAndCompute(np.clip(g, 0, 255).astype(np.uint8), use) for g in grey]
    transforms, moved = [np.eye(2, 3)], 0.0
    for index in range(1, len(grey)):
        (keys, desc), (prev_keys, prev_desc) = features[index], features[index - 1]
        step = None
        matches = matcher.match(desc, prev_desc) if desc is not None and prev_desc is not None \
            else []
        if len(matches) >= 8:
            src = np.float32([keys[m.queryIdx].pt for m in matches])
            dst = np.float32([prev_keys[m.trainIdx].pt for m in matches])
            # RANSAC draws from OpenCV's per-thread RNG, whose state depends on everything
            # this process did before: seed it, so the same frames always give the same
            # track (a worker and a long-lived process, the local and the Ray engine).
            cv2.setRNGSeed(0)
            step, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                  ransacReprojThreshold=1.5)
        if step is not None and not _fits_better(grey[index], grey[index - 1], step):
            step = None  # the matches followed something moving across a still shot
        matrix = _compose(transforms[-1], np.eye(2, 3) if step is None else step)
        transforms.append(matrix)
        moved = max(moved, float(np.abs(matrix @ corners - corners[:2]).max()))
    return transforms, moved


def _fits_better(frame: np.ndarray, previous: np.ndarray, step: np.ndarray) -> bool:
    """Whether `step` (frame onto previous) lines up most of the two frames better than no
    motion does: the median absolute difference over the pixels both show. An object crossing
    a still shot gives matches of its own, whose motion fits it alone."""
    import cv2

    height, width = frame.shape
    warped = cv2.warpAffine(frame, step, (width, height), flags=cv2.INTER_LINEAR)
    seen = cv2.warpAffine(np.ones_like(frame), step, (width, height)) > 0.999
    if seen.mean() < 0.25:
        return True
    moved = float(np.median(np.abs(warped - previous)[seen]))
    still = float(np.median(np.abs(frame - previous)[seen]))
    return moved < still


def _coherence(gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(length of the mean gradient vector, mean gradient length) over frames, per pixel;
    NaN marks frames where a pixel is not seen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels seen in no frame
        coherent = np.nan_to_num(np.hypot(np.nanmean(gx, 0), np.nanmean(gy, 0)))
        strength = np.nan_to_num(np.nanmean(np.hypot(gx, gy), 0))
    return coherent, strength


MATTE_GROW = 0.5  # the region searched around a found mark, as a share of its box per side
MATTE_SIDE = 640  # the matte is integrated at most this many pixels on the region's longer side
MATTE_LEVEL = 0.3  # of the matte's near-peak |value|: weaker pixels are not the mark
MATTE_FLOOR = 4.0  # grey levels: a mark fainter than this is not worth a mask pixel
MATTE_ROUNDS = 3  # regrow the region around the new mask until its box stops changing
MATTE_REACH = 4  # analysis pixels: the matte's pixels lie this near a kept gradient (or inside)


def _integrate(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """The image whose forward differences best match (gx, gy) in least squares, zero outside
    the grid: a Poisson equation, solved exactly with the type-I discrete sine transform."""
    from scipy.fft import dstn, idstn

    divergence = gx.copy()
    divergence[:, 1:] -= gx[:, :-1]
    divergence += gy
    divergence[1:] -= gy[:-1]
    height, width = divergence.shape
    ky = 2.0 * np.cos(np.pi * np.arange(1, height + 1) / (height + 1)) - 2.0
    kx = 2.0 * np.cos(np.pi * np.arange(1, width + 1) / (width + 1)) - 2.0
    return idstn(dstn(divergence, type=1) / (ky[:, None] + kx[None, :]), type=1)


def _matte(frames: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The static overlay's own picture inside `box` (signed grey levels over the scene's
    mean, float32 at the box's size): the temporal median of the frames' gradients
    (Dekel et al.'s estimate of the mark's gradients: the overlay's is in every frame, the
    moving scene's differs from frame to frame), integrated. A median that does not stand out
    of its frames' spread is the scene's and is left out. Also returns where the matte has
    support: pixels within MATTE_REACH of a kept gradient, and what they enclose. Away from
    them the integrated picture holds only the halo of gradients the test could not keep."""
    import cv2

    x0, y0, x1, y1 = box
    grey, _ = _shrink(np.ascontiguousarray(frames[:, y0:y1, x0:x1]), MATTE_SIDE)
    dx = np.zeros_like(grey)
    dy = np.zeros_like(grey)
    dx[:, :, :-1] = np.diff(grey, axis=2)
    dy[:, :-1] = np.diff(grey, axis=1)
    fields = []
    for d in (dx, dy):
        median = np.median(d, axis=0)
        spread = np.median(np.abs(d - median), axis=0)
        fields.append(np.where(np.abs(median) > 2.0 * spread + 1.0, median, 0.0))
    matte = _integrate(*fields).astype(np.float32)
    kept = ((fields[0] != 0) | (fields[1] != 0)).astype(np.uint8)
    reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MATTE_REACH + 1,) * 2)
    support = _fill_holes(cv2.dilate(kept, reach) > 0).astype(np.uint8)
    size = (x1 - x0, y1 - y0)
    return (cv2.resize(matte, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(support, size, interpolation=cv2.INTER_NEAREST).astype(bool))


def _grown(box: tuple[int, int, int, int], shape: tuple[int, int], share: float,
           pad: int) -> tuple[int, int, int, int]:
    height, width = shape
    x0, y0, x1, y1 = box
    grow_x, grow_y = round((x1 - x0) * share) + pad, round((y1 - y0) * share) + pad
    return max(0, x0 - grow_x), max(0, y0 - grow_y), min(width, x1 + grow_x), \
        min(height, y1 + grow_y)


def _matte_once(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = region = _grown(_box(mask), mask.shape, MATTE_GROW, 8)
    matte, support = _matte(frames, region)
    if not support.any():  # no gradient stands out of the scene's: nothing to matte
        return np.zeros(mask.shape, bool)
    matte = np.abs(matte)
    level = max(MATTE_FLOOR, MATTE_LEVEL * float(np.percentile(matte[support], 99.5)))
    refined = np.zeros(mask.shape, bool)
    refined[y0:y1, x0:x1] = (matte > level) & support
    return refined


def matte_mask(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mark's pixels, at the frames' size, around a rough mask of it (closed edge blobs).

    The static overlay's gradients (temporal median over the frames) are integrated into
    the mark's own picture, whose non-zero pixels are the mask: strokes without the gaps
    between them, a logo's flat inside included, a ring's hole left out. The region grows
    around each new mask until its box settles, so a part the rough mask missed is found
    when it is near. Falls back to the rough mask when the matte holds nothing.
    """
    current = mask
    for _ in range(MATTE_ROUNDS):
        refined = _matte_once(frames, current)
        if not refined.any():
            return current
        if _box(refined) == _box(current):
            return refined
        current = refined
    return current


STAYS_PUT = 0.75  # share of frames matching at zero shift that leaves a score as it is
STAYS_PUT_REACH = 3  # pixels searched each way for a better match


def _stays_put(frames: np.ndarray, mask: np.ndarray) -> float:
    """The share of frames whose gradient magnitudes on the mask (grown by 2 pixels) match
    their temporal median best with no shift, searching STAYS_PUT_REACH pixels each way."""
    import cv2

    reach = STAYS_PUT_REACH
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    x0, y0, x1, y1 = _box(near)
    ys, xs = np.nonzero(near[y0:y1, x0:x1])
    magnitudes = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grey = cv2.copyMakeBorder(grey, reach, reach, reach, reach, cv2.BORDER_REFLECT)
        grey = grey[y0:y1 + 2 * reach, x0:x1 + 2 * reach]
        magnitudes.append(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0),
                                   cv2.Sobel(grey, cv2.CV_32F, 0, 1)))
    magnitudes = np.stack(magnitudes)
    template = np.median(magnitudes, 0)[ys + reach, xs + reach]
    if float(template.std()) < 1e-3:  # nothing to line up
        return 0.0
    shifts = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
    errors = np.stack([np.abs(magnitudes[:, ys + reach + dy, xs + reach + dx] - template).mean(1)
                       for dy, dx in shifts], axis=1)  # (frames, shifts)
    centre = shifts.index((0, 0))
    return float((errors[:, centre] <= errors.min(1)).mean())


HOLD_REACH = 2  # analysis pixels searched each way for a better local match
HOLD_WINDOW = 5  # side of the window whose pattern is matched
HOLDS = 0.3  # share of frames a pixel's pattern must match best at zero shift to hold


def _holds_in_place(magnitudes: np.ndarray) -> np.ndarray:
    """Per pixel, the share of frames whose local pattern of gradient magnitudes (a
    HOLD_WINDOW square) matches the temporal median's best with no shift, searching
    HOLD_REACH pixels each way. An overlay's strokes never move; a scene that sways or
    breathes under a still camera moves its edges by a pixel or more in some frames."""
    import cv2

    reach, window = HOLD_REACH, (HOLD_WINDOW, HOLD_WINDOW)
    template = np.median(magnitudes, 0)
    height, width = template.shape
    padded = np.pad(magnitudes, ((0, 0), (reach, reach), (reach, reach)), mode="edge")
    centre = None
    best = np.full(magnitudes.shape, np.inf, np.float32)
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            shifted = padded[:, reach + dy:reach + dy + height, reach + dx:reach + dx + width]
            errors = np.stack([cv2.boxFilter((s - template) ** 2, -1, window) for s in shifted])
            if (dy, dx) == (0, 0):
                centre = errors
            else:
                np.minimum(best, errors, out=best)
    return (centre <= best).mean(0)


CANDIDATES = 4  # blobs (or groups) judged on their mattes, best first


def _candidates(own: np.ndarray, grouped: np.ndarray, group_of: np.ndarray
                ) -> list[tuple[float, tuple[int, ...]]]:
    """Candidate marks, best first: each blob alone (score `own`, by label), or its whole
    group where the group scores better (`grouped`, by label); each set once."""
    candidates, seen = [], set()
    best = np.maximum(own, grouped)
    for label in np.argsort(-best[1:], kind="stable") + 1:
        if best[label] <= 0:
            break
        members = (int(label),)
        if grouped[label] > own[label]:
            members = tuple(int(m) for m in np.nonzero(group_of == group_of[label])[0] if m)
        if members not in seen:
            seen.add(members)
            candidates.append((float(best[label]), members))
    return candidates


def detect_video(frames: np.ndarray, config: WatermarkConfig,
                 classifier=None) -> Detection:
    """Find a static overlay in a clip (see the module docstring for the method).

    Args:
        frames: RGB uint8 (T, H, W, 3); T = 1 is judged as a still.
        config: thresholds and sampling.
        classifier: a loaded `WatermarkClassifier`, or None.
    """
    import cv2

    # 1. Check inputs; one frame has no motion.
    frames = _check_frames(frames)
    if len(frames) == 1:
        return detect_image(frames[0], config, classifier)
    indices = sample_indices(len(frames), config.sample_frames)
    grey, scale = _shrink(frames[indices], config.analysis_size)
    height, width = grey.shape[1:]
    # 2. Edges that stay put on screen (Sobel / 8: grey levels per pixel).
    gx = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) for g in grey]) / 8.0
    gy = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) for g in grey]) / 8.0
    on_screen, strength = _coherence(gx, gy)
    edges = strength > EDGE_SLOPE
    # An edge sweeping past also points one way; a mark's edge is there in (nearly) every
    # frame (or, over dark or flat content, holds in place where it shows: step 4).
    magnitudes = np.hypot(gx, gy)
    present = (magnitudes > EDGE_SLOPE / 2).mean(0) >= 1.0 - PRESENT
    static = (on_screen > EDGE_SLOPE) & (on_screen > COHERENCE * strength)
    # 3. When the camera moves, an edge running along the motion also stays put on screen,
    #    but the scene explains it: the scene's own gradient field (frames aligned on frame
    #    0 and averaged), carried back along each frame's camera, gives the same vector on
    #    screen. A mark's screen edge meets varying scene gradients along its path instead.
    transforms, moved = track_camera(grey)
    camera_moved = moved >= CAMERA_MOVED
    if camera_moved:
        size, warp = (width, height), cv2.INTER_LINEAR
        seen = np.stack([cv2.warpAffine(np.ones((height, width), np.float32), m, size,
                                        flags=warp) > 0.999 for m in transforms])
        scene_x = np.stack([cv2.warpAffine(g, m, size, flags=warp)
                            for g, m in zip(gx, transforms, strict=True)])
        scene_y = np.stack([cv2.warpAffine(g, m, size, flags=warp)
                            for g, m in zip(gy, transforms, strict=True)])
        # a similarity rotates gradient vectors too; the angles here are tiny, so ignored
        scene_x[~seen], scene_y[~seen] = np.nan, np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scene points no frame saw
            field_x = np.nan_to_num(np.nanmean(scene_x, 0))
            field_y = np.nan_to_num(np.nanmean(scene_y, 0))
        back = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        explained_x = np.mean([cv2.warpAffine(field_x, m, size, flags=back)
                               for m in transforms], axis=0)
        explained_y = np.mean([cv2.warpAffine(field_y, m, size, flags=back)
                               for m in transforms], axis=0)
        mean_x, mean_y = gx.mean(0), gy.mean(0)
        along = (explained_x * mean_x + explained_y * mean_y) / np.maximum(on_screen, 1e-6)
        static &= along < EXPLAINED * on_screen
    # 4. An overlay's strokes match their median with no shift; a scene's edges only a pixel
    #    or more away in a good share of the frames. Under a still camera a swaying or
    #    breathing scene, or a hand-held camera's jitter (under CAMERA_MOVED), holds edges on
    #    screen well enough for the tests above: there an edge must be present and hold.
    #    Under a moving camera a mark over dark or flat content fades out in some frames and
    #    fails the presence test, but holds where it shows: present or holding is enough.
    holds = _holds_in_place(magnitudes) >= HOLDS
    static &= (present | holds) if camera_moved else (present & holds)
    static_share = float(static.sum() / max(1, edges.sum()))
    details: dict[str, Any] = {"frames_used": len(indices), "static_edge_share": static_share,
                               "camera_moved": camera_moved}
    pwatermark = _classify(frames[indices], classifier, details)
    # 5. No motion: time cannot separate a mark from the scene.
    if static_share >= STATIC_SCENE:
        median = np.median(frames[indices], axis=0).astype(np.uint8)
        still = detect_image(median, config, None)
        found = still.found or (pwatermark is not None
                                and pwatermark >= config.classifier_threshold)
        return Detection(still.score, found, still.mask, still.box, "still-scene",
                         {**details, **still.details})
    # 6. Close static edges into blobs (a word, a logo) and score each on its edges; the
    #    mask fills the blobs' holes (a logo's flat inside has no edges).
    radius = max(2, round(0.012 * max(height, width)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    blobs = cv2.morphologyEx(static.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    blobs = cv2.morphologyEx(blobs, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    unit = max(12.0, 0.0015 * height * width)
    near = cv2.dilate(static.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    evidence, support = static & blobs, ((edges & near) | static) & blobs
    count, labels = cv2.connectedComponents(blobs.astype(np.uint8), connectivity=8)
    scores = _score_blobs(labels, count, evidence, support, unit)
    #    A faint word breaks into letters; each blob may instead take the score of its
    #    group (blobs a few closing radii apart), counted on the blobs' own pixels.
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (6 * radius + 1, 6 * radius + 1))
    groups_count, groups = cv2.connectedComponents(
        cv2.morphologyEx(blobs.astype(np.uint8), cv2.MORPH_CLOSE, wide), connectivity=8)
    group_scores = _score_blobs(groups, groups_count, evidence, support, unit)
    group_of = np.zeros(count, int)
    group_of[labels[blobs]] = groups[blobs]
    candidates = _candidates(scores, group_scores[group_of], group_of)
    # 7. An overlay sits on the same pixels in every frame; a scene structure the camera
    #    carries (which the edge tests can take for one) lines up with its median picture
    #    only a shift away in most frames. The best candidates are judged on their mattes;
    #    others that pass as well as the best join its mask (two marks).
    judged = []
    for pre_score, members in candidates[:CANDIDATES]:
        if judged and pre_score / STAYS_PUT < config.threshold:
            break  # could not pass even if it stayed put in every frame
        rough = _to_input_size(_fill_holes(np.isin(labels, members)), frames.shape[1:3])
        matte = matte_mask(frames[indices], rough)
        still = _stays_put(frames[indices], matte)
        judged.append((min(1.0, pre_score * still / STAYS_PUT), still, matte))
    score, mask = 0.0, None
    if judged:
        score, details["stays_put"], mask = max(judged, key=lambda j: j[0])
        for other_score, _, other in judged:
            if other_score >= max(config.threshold, 0.9 * score):
                mask = mask | other
    found = score >= config.threshold or (
        pwatermark is not None and pwatermark >= config.classifier_threshold)
    details.update(blobs=count - 1, analysis_scale=scale)
    return Detection(score, found, mask, _box(mask) if mask is not None else None,
                     "static-overlay", details)


def _classify(frames: np.ndarray, classifier, details: dict[str, Any]) -> float | None:
    """Largest `pwatermark` over `frames` (mean and max recorded in details), or None."""
    if classifier is None:
        return None
    scores = classifier(list(frames))
    details.update(pwatermark_max=float(max(scores)), pwatermark_mean=float(np.mean(scores)))
    return float(max(scores))


STROKE_CONTRAST = 40.0  # grey levels a text stroke stands out from its surround


def detect_image(image: np.ndarray, config: WatermarkConfig, classifier=None) -> Detection:
    """Find text or a logo in one image from stroke cues (and the classifier, if given).

    A candidate is a line of thin strokes (top-hat or black-hat response above
    `STROKE_CONTRAST`, closed along the line) whose strokes share one colour. Its score is
    (stroke density in [0.1, 0.6] of its box) x (colour uniformity) x (placement prior: 1 in
    the corners and the centre, 0.6 elsewhere), each in [0, 1].

    Args:
        image: RGB uint8 (H, W, 3).
        config: thresholds.
        classifier: a loaded `WatermarkClassifier`, or None.
    """
    import cv2

    image = _check_frames(image)[0]
    grey, scale = _shrink(image[None], config.analysis_size)
    grey = grey[0]
    height, width = grey.shape
    # 1. Thin bright (top-hat) and dark (black-hat) structures: strokes up to ~1.5% of the
    #    image; each polarity on its own, since a mark's strokes are one or the other.
    stroke = max(3, round(0.015 * max(height, width))) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (stroke, stroke))
    join = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, round(0.05 * width)), 5))
    min_area = 0.001 * height * width
    best, best_mask = 0.0, None
    for operation in (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT):
        response = cv2.morphologyEx(grey, operation, kernel)
        strokes = response > STROKE_CONTRAST
        # 2. Join the strokes of a word or a logo, score each candidate.
        blobs = _fill_holes(cv2.morphologyEx(strokes.astype(np.uint8), cv2.MORPH_CLOSE, join) > 0)
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(blobs.astype(np.uint8))
        for label in range(1, count):
            x, y, w, h, area = stats[label]
            if area < min_area or h > 0.25 * height or w > 0.6 * width:
                continue
            inside = labels[y:y + h, x:x + w] == label
            hits = strokes[y:y + h, x:x + w] & inside
            density = hits.sum() / max(1, inside.sum())
            # the strokes' cores (their stronger half): antialiased rims are mixed colours
            strength = response[y:y + h, x:x + w][hits]
            values = grey[y:y + h, x:x + w][hits][strength >= np.median(strength)]
            uniform = 1.0 - min(1.0, float(values.std()) / 48.0) if len(values) > 4 else 0.0
            cx, cy = centroids[label] / (width, height)
            corner = min(cx, 1 - cx) < 0.3 and min(cy, 1 - cy) < 0.3
            centre = abs(cx - 0.5) < 0.2 and abs(cy - 0.5) < 0.2
            prior = 1.0 if corner or centre else 0.6
            shape = 1.0 if 0.1 <= density <= 0.6 else 0.5
            score = shape * uniform * prior
            if score > best:
                best, best_mask = score, labels == label
    mask = _to_input_size(best_mask, image.shape[:2]) if best_mask is not None else None
    box = _box(mask) if mask is not None else None
    details: dict[str, Any] = {"heuristic_score": best}
    pwatermark = _classify(image[None], classifier, details)
    if pwatermark is not None:
        return Detection(pwatermark, pwatermark >= config.classifier_threshold, mask, box,
                         "still", details)
    return Detection(best, best >= config.threshold, mask, box, "still", details)


# ---------------------------------------------------------------------------------------------
# Removal


def crop_window(box: tuple[int, int, int, int], shape: tuple[int, int],
                band: float) -> tuple[int, int, int, int] | None:
    """The largest window of the frame's aspect ratio that leaves out a box lying within
    `band` of one edge, as (x0, y0, x1, y1); None when the box is not in a border band."""
    height, width = shape
    x0, y0, x1, y1 = box
    # How much of the frame each side's cut removes (as a share of that dimension).
    cuts = {"top": y1 / height, "bottom": (height - y0) / height,
            "left": x1 / width, "right": (width - x0) / width}
    side, share = min(cuts.items(), key=lambda item: item[1])
    if share > band:
        return None
    keep = 1.0 - share
    new_w, new_h = max(2, round(width * keep)), max(2, round(height * keep))
    # Place the window off the cut side; centred on the other axis.
    left = (width - new_w) // 2
    top = (height - new_h) // 2
    if side == "top":
        top = height - new_h
    elif side == "bottom":
        top = 0
    elif side == "left":
        left = width - new_w
    else:
        left = 0
    return left, top, left + new_w, top + new_h


def _revealed(frames: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int],
              transforms: list[np.ndarray], donors: np.ndarray, tolerance: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """For each frame, the median over donor frames of what they show (aligned) inside the
    box where their own mark is not, with a count of donors per pixel.

    A donor whose aligned picture differs from the frame by more than `tolerance` grey levels
    around the mask (failed alignment, content that moved on its own) is not used.
    """
    import cv2

    x0, y0, x1, y1 = box
    ring = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~mask
    ring_box = ring[y0:y1, x0:x1]
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0]])  # box coordinates -> frame coordinates
    inverse = [cv2.invertAffineTransform(m) for m in transforms]
    size = (x1 - x0, y1 - y0)
    backgrounds = np.zeros((len(frames), y1 - y0, x1 - x0, 3), np.float32)
    counts = np.zeros((len(frames), y1 - y0, x1 - x0), np.int32)
    unmarked = (~mask).astype(np.uint8)
    for t, frame in enumerate(frames):
        target = frame[y0:y1, x0:x1].astype(np.float32)
        stack, valid = [], []
        for s in donors:
            if s == t:
                continue
            # target box pixel -> frame t -> frame 0 -> frame s
            matrix = _compose(inverse[s], _compose(transforms[t], shift))
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            picture = cv2.warpAffine(frames[s], matrix, size, flags=flags,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            clear = cv2.warpAffine(unmarked, matrix, size, flags=cv2.INTER_NEAREST
                                   | cv2.WARP_INVERSE_MAP, borderValue=0).astype(bool)
            inside = cv2.warpAffine(np.ones(frame.shape[:2], np.uint8), matrix, size,
                                    flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                    borderValue=0).astype(bool)
            check = ring_box & inside
            if not check.any():
                continue
            error = np.abs(picture.astype(np.float32) - target)[check].mean()
            if error > tolerance:
                continue
            stack.append(picture)
            valid.append(clear & inside)
        if not stack:
            continue
        pictures = np.stack(stack).astype(np.float32)
        usable = np.stack(valid)
        pictures[~usable] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # pixels no donor shows
            backgrounds[t] = np.nan_to_num(np.nanmedian(pictures, axis=0))
        counts[t] = usable.sum(0)
    return backgrounds, counts


MIN_FRAMES_FOR_MATTING = 4
OPAQUE = 0.9  # estimated alpha above this: nothing of the frame shows through


def _restore_moments(region: np.ndarray, hole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scene behind a static semi-transparent mark from the frames' own variation.

    Under I_t = a*W + (1-a)*J_t, a pixel's temporal mean is a*W + (1-a)*mean(J) and its
    temporal spread (1-a)*spread(J), so J_t = mean(J) + (I_t - mean(I)) * spread(J) /
    spread(I): alpha and the mark's colour are estimated per pixel from all frames at once,
    given the scene's mean and spread there, which vary smoothly and come from the surround
    (inpainted over the mask). Returns the region so restored and the pixels where it holds:
    not where the mark is opaque (its spread under 1 - OPAQUE of the scene's: nothing shows
    through) or the scene does not move (nothing to measure).
    """
    import cv2

    mean, spread = region.mean(0), region.std(0)
    missing = hole.astype(np.uint8)
    scene_mean = cv2.inpaint(np.clip(mean, 0, 255).astype(np.uint8), missing, 3,
                             cv2.INPAINT_TELEA).astype(np.float32)
    scale = 4.0  # the spread inpainted in quarter grey levels (8-bit images only)
    scene_spread = cv2.inpaint(np.clip(spread * scale, 0, 255).astype(np.uint8), missing, 3,
                               cv2.INPAINT_TELEA).astype(np.float32) / scale
    grey_spread, grey_scene = spread.mean(-1), scene_spread.mean(-1)
    restored = hole & (grey_scene >= 2.0) & (grey_spread >= (1.0 - OPAQUE) * grey_scene)
    # 1 / (1 - alpha), one for the three channels (alpha is): per-channel gains would tint
    # the fill wherever the channels' spreads are noisy
    gain = np.clip(grey_scene / np.maximum(grey_spread, 1e-3), 1.0, 1.0 / (1.0 - OPAQUE))
    return scene_mean + (region - mean) * gain[..., None], restored


def remove_watermark(frames: np.ndarray, detection: Detection,
                     config: WatermarkConfig) -> tuple[np.ndarray, str]:
    """Remove the detected mark from every frame with one fixed mask.

    Args:
        frames: RGB uint8 (T, H, W, 3) (or one image (H, W, 3)).
        detection: what `detect_video` / `detect_image` found on these frames.
        config: crop band and mask margin.

    Returns:
        the frames (same shape and dtype as given) and how: "cropped", "stripped" or "none"
        (no mask).
    """
    import cv2

    single = np.asarray(frames).ndim == 3
    frames = _check_frames(frames)
    if detection.mask is None or detection.box is None:
        return (frames[0] if single else frames), "none"
    if detection.mask.shape != frames.shape[1:3]:
        raise ValueError(f"mask {detection.mask.shape} does not fit frames {frames.shape}")
    height, width = frames.shape[1:3]
    # 1. A mark in a border band: crop it away, keep the aspect, scale back.
    window = crop_window(detection.box, (height, width), config.crop_band)
    if window is not None:
        x0, y0, x1, y1 = window
        out = np.stack([cv2.resize(f[y0:y1, x0:x1], (width, height),
                                   interpolation=cv2.INTER_CUBIC) for f in frames])
        return (out[0] if single else out), "cropped"
    # 2. One mask for every frame, grown by the margin; work inside its box only.
    margin = 2 * config.mask_margin + 1
    mask = cv2.dilate(detection.mask.astype(np.uint8), np.ones((margin, margin), np.uint8)) > 0
    pad = 12
    bx0, by0, bx1, by1 = _box(mask)
    box = (max(0, bx0 - pad), max(0, by0 - pad), min(width, bx1 + pad), min(height, by1 + pad))
    x0, y0, x1, y1 = box
    hole = mask[y0:y1, x0:x1]
    out = frames.copy()
    region = frames[:, y0:y1, x0:x1].astype(np.float32)
    filled = region.copy()
    known = np.zeros(region.shape[:3], bool)
    # 3. What other frames show where camera motion reveals it: aligned on the content
    #    outside the mask, the median of those that show the spot unmarked.
    if len(frames) > 1:
        donors = sample_indices(len(frames), config.sample_frames)
        grey, scale = _shrink(frames, config.analysis_size)
        small_mask = cv2.resize(mask.astype(np.uint8), grey.shape[:0:-1],
                                interpolation=cv2.INTER_NEAREST) > 0
        to_small = np.diag([scale, scale, 1.0])
        to_full = np.diag([1 / scale, 1 / scale, 1.0])
        transforms = [(to_full @ np.vstack([m, [0, 0, 1]]) @ to_small)[:2]
                      for m in track_camera(grey, small_mask)[0]]
        backgrounds, counts = _revealed(frames, mask, box, transforms, donors, tolerance=12.0)
        revealed = counts > 0
        filled[revealed] = backgrounds[revealed]
        known |= revealed
    # 4. Under a semi-transparent mark, where no frame reveals it: restore the scene's
    #    temporal moments from the frame's own variation.
    if len(frames) >= MIN_FRAMES_FOR_MATTING and not known.all():
        behind, restored = _restore_moments(region, hole)
        restored = restored[None] & ~known
        filled[restored] = behind[restored]
        known |= restored
    # 5. What is still unknown (an opaque mark no frame reveals): inpaint spatially, per frame.
    for t in range(len(frames)):
        frame_region = np.clip(filled[t], 0, 255).astype(np.uint8)
        missing = (hole & ~known[t]).astype(np.uint8)
        if missing.any():
            frame_region = cv2.inpaint(frame_region, missing, 3, cv2.INPAINT_TELEA)
        out[t, y0:y1, x0:x1][hole] = frame_region[hole]
    return (out[0] if single else out), "stripped"


# ---------------------------------------------------------------------------------------------
# Policy


def load_classifier(config: WatermarkConfig):
    """The classifier `config.model` names (loaded now), or None without one."""
    if config.model is None:
        return None
    from synthesize.watermark_classifier import WatermarkClassifier

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


def apply_watermark_policy(frames: np.ndarray, config: WatermarkConfig,
                           classifier=None) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Detect, then keep, flag, strip or drop, as `config.action` says.

    Args:
        frames: RGB uint8 (T, H, W, 3), or one image (H, W, 3).
        config: the action and thresholds.
        classifier: a loaded `WatermarkClassifier` (see `load_classifier`), or None.

    Returns:
        (frames, fields): the frames to keep, same shape as given (None when the sample is
        dropped), and `watermark_score`, `watermark_box`, `watermark_action` for the
        manifest row and the json.
    """
    if config.action is WatermarkAction.KEEP:
        return frames, {"watermark_score": None, "watermark_box": None,
                        "watermark_action": "kept"}
    frames_array = _check_frames(frames)
    detection = detect_video(frames_array, config, classifier)
    fields: dict[str, Any] = {
        "watermark_score": round(float(detection.score), 4),
        "watermark_box": list(detection.box) if detection.found and detection.box else None,
        "watermark_action": "flagged" if detection.found else "clean",
    }
    if not detection.found or config.action is WatermarkAction.FLAG:
        return frames, fields
    if config.action is WatermarkAction.DROP:
        return None, {**fields, "watermark_action": "dropped"}
    cleaned, how = remove_watermark(frames, detection, config)
    return cleaned, {**fields, "watermark_action": "flagged" if how == "none" else how}


def describe(detection: Detection) -> dict[str, Any]:
    """The detection as json: score, found, box, kind and the evidence."""
    return {"score": round(float(detection.score), 4), "found": detection.found,
            "box": list(detection.box) if detection.box else None, "kind": detection.kind,
            "details": detection.details}


def show_detection(frames: np.ndarray, detection: Detection) -> np.ndarray:
    """A picture to check a detection by eye: the clip's median frame with the mask tinted
    red and the box outlined, beside the bare median frame."""
    import cv2

    frames = _check_frames(frames)
    median = np.median(frames[sample_indices(len(frames), 16)], axis=0).astype(np.uint8)
    marked = median.copy()
    if detection.mask is not None:
        tint = np.array([255, 0, 0], np.float32)
        marked[detection.mask] = (0.5 * marked[detection.mask] + 0.5 * tint).astype(np.uint8)
    if detection.box is not None:
        x0, y0, x1, y1 = detection.box
        colour = (255, 0, 0) if detection.found else (255, 255, 0)
        cv2.rectangle(marked, (x0, y0), (x1 - 1, y1 - 1), colour, 2)
    return np.concatenate([marked, median], axis=1)


# ---------------------------------------------------------------------------------------------
# Re-processing shards


@dataclass(frozen=True)
class ShardSample:
    """One sample of an existing shard: its key, where it came from and its files."""

    key: str
    source: str
    files: dict[str, bytes]


def read_shard_samples(src: str | os.PathLike):
    """The samples of a `.tar` shard or of every `.tar` under a folder (sorted), each with
    its members grouped by key as webdataset does (the name up to the first dot).

    Raises:
        UserError: SRC holds no shards, or a shard cannot be opened.
    """
    import tarfile
    from pathlib import Path

    from datakit.io.errors import UserError

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
            key, files = None, {}
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                stem, _, extension = name.partition(".")
                if stem != key and files:
                    yield ShardSample(key, f"{tar_path}::{key}", files)
                    files = {}
                key = stem
                files[extension] = tar.extractfile(member).read()
            if files:
                yield ShardSample(key, f"{tar_path}::{key}", files)


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
        from datakit.io.video import VideoError, encode_video, probe, read_frames
        from datakit.run.shards import Sample
        from manifests.schema import Status, make_row

        started = time.perf_counter()
        # 1. Decode; a sample without a readable mp4 is a failed row.
        if "mp4" not in sample.files:
            return [make_row(sample.key, Status.FAILED, source=sample.source,
                             error="no mp4 in the sample")]
        try:
            info = json.loads(sample.files["json"]) if "json" in sample.files else {}
        except ValueError:
            info = {}
        info = info if isinstance(info, dict) else {}
        try:
            frames = read_frames(sample.files["mp4"])
            fps = float(info.get("fps") or probe(sample.files["mp4"]).fps or 8.0)
        except VideoError as error:
            return [make_row(sample.key, Status.FAILED, source=sample.source, error=str(error))]
        height, width = frames.shape[1:3]
        common = {"source": sample.source, "input_key": info.get("input_key", sample.key),
                  "width": width, "height": height, "frames": len(frames), "fps": fps}
        # 2. Detect and act.
        kept, fields = apply_watermark_policy(frames, self.config, self.classifier())
        if kept is None:
            return [make_row(sample.key, Status.WATERMARKED, **common, **fields,
                             seconds=time.perf_counter() - started)]
        files = dict(sample.files)
        if fields["watermark_action"] in ("stripped", "cropped"):
            files["mp4"] = encode_video(kept, fps, crf=self.crf, preset=self.preset, threads=1)
        files["json"] = json.dumps({**info, **fields}, sort_keys=True, default=str).encode()
        caption = sample.files.get("txt", b"").decode("utf-8", "replace") or None
        row = make_row(sample.key, Status.OK, caption=caption, **common, **fields,
                       seconds=time.perf_counter() - started)
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
