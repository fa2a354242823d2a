"""Checks on finished videos: do the chunks join up, does the video hold still, does it drift?

Every metric needs no model weights. A video is decoded once for the metrics (the shot
detector reads it again for scene cuts), frame by frame (memory stays that of a few frames
whatever its length), at an analysis size whose longer side is at most `max_side` pixels.
Per pair of consecutive frames:

- frame difference: mean absolute RGB difference, in grey levels (0..255);
- optical flow both ways with OpenCV (`dis`, the default, or `farneback`), reported in pixels
  of the original video (flow at the analysis size times original width / analysis width), so
  `motion`, `flow_std`, the flow vectors and the seam directions do not depend on `max_side`
  (tested at two sizes). Tested on pans of known speed and direction: DIS is within 3% of the
  true speed; Farneback reads about 20% low (0.8x) with these parameters, so it is kept only
  as an option. The warp error is a per-pixel colour residual at the analysis size; it (and
  so `mawe`, whose denominator is in original pixels) still grows as frames are downscaled
  (more texture per pixel): compare runs at one `max_side`;
- warp error: the next frame warped back along the forward flow, compared with this one:
  mean over non-occluded pixels of the squared RGB difference (channels in [0, 1], summed).
  Occlusions are found by forward-backward consistency (Sundaram et al. 2010): a pixel is
  occluded when `|F + B(x+F)|^2 > 0.01 (|F|^2 + |B(x+F)|^2) + 0.5`, or when it flows out
  of the frame;
- motion vector: the mean flow vector of the pixels that move (more than `MOVING_PX`), (0, 0)
  when under `MIN_MOVING_SHARE` of them do, so a 64x64 object on a still background has the
  object's direction instead of a whole-frame mean diluted a hundredfold;
- flow acceleration (pairs 1 .. n-2): the mean over pixels of `|F_i - (F_{i-1} + F_{i+1})/2|`,
  how far a pair's flow field departs from the average of its neighbours': about 0 for any
  steady motion (pan, zoom, a moving object), large where the motion jumps;
- colour shift: the mean CIELAB difference between the next frame warped back and this one,
  over the non-occluded pixels: how much the colour of the same scene points changed. A pair
  with under `MATCHED_SHARE` of its pixels matched (a cut: nothing follows) shifts nothing.

Per video:

- `seam_jump`: for a seam at frame s (the first frame of a chunk), the frame difference across
  it (s-1 -> s) over the median frame difference inside chunks (floored at 0.5 grey levels so
  a still video does not divide by zero). About 1 means the seam is invisible; a hard cut
  between unrelated clips gives tens. A seam whose next frames replay the previous chunk
  backwards scores about 1 here, which is why each seam also has:
- `direction`: the cosine between the mean motion vector of the `SEAM_CONTEXT` pairs before
  the seam and of those after it, the pair across the seam in neither (None when either side
  moves less than `MIN_DIRECTION_PX`);
  `reversal` is true when it is below `REVERSAL_COSINE` (-0.5): the motion turned back at the
  seam (a rewind). `seam_reversals` counts them per video.
- `seam_warp_error`: the mean warp error of the pairs from s-2 to s+1 (the seam pair and its
  neighbours), where a rewind or the release of pinned frames shows.
- `warp_jump`: the seam pair's warp error over the median warp error of the pairs inside
  chunks (floored at `WARP_FLOOR`). Unlike `seam_jump` it holds under motion: the warp error
  follows the motion, so a fast pan keeps it small inside chunks while a cut or a re-rendered
  seam (the same layout, new detail) leaves a residual no flow explains (hundreds to
  thousands; 1 for a steady pan).
- `motion_jump`: the seam pair's flow acceleration over the median acceleration of the pairs
  inside chunks whose neighbours are inside chunks too (floored at `ACCELERATION_FLOOR_PX`):
  a camera that jumps ahead at the seam (tens) or a cut (hundreds), about 1 for steady
  motion.
- `warp_error`: the mean of the per-pair warp errors (lower is steadier).
- `mawe`: StreamingT2V's motion-aware warp error as defined in its paper, warp error over
  `c` times the mean squared flow magnitude, with `c = 9.5` as in their code. Our flow is
  OpenCV's at the analysis size, not RAFT, so values are comparable between our runs, not
  with the paper's table.
- `flicker`: VBench's temporal-flickering score, `(255 - mean frame difference) / 255`;
  1 is perfectly steady.
- `flow_std`: standard deviation over pairs of the mean flow magnitude (StreamingT2V's
  ablation measure: jumps at seams raise it).
- `motion`: mean flow magnitude in pixels per frame, and `stagnant_fraction`, the share of
  pairs that barely move (flow under 0.1 px and difference under 0.5 grey levels).
- `scene_cuts`: frames where a new shot starts (`datakit.io.scenes`, PySceneDetect's adaptive
  method), with those that fall on a seam counted apart.
- `repetition`: with T_c the mean 32x32 thumbnail of chunk c and d the mean absolute
  difference in grey levels, the largest d(c, c+1) - d(c, c+2) over the chunks: positive when
  a chunk looks more like the one two before it than like the one just before (an A/B/A/B
  look); None with fewer than 3 chunks.
- drift: per chunk, the mean CIELAB colour, contrast (std of L) and sharpness (variance of
  the Laplacian); against the first chunk, colour distance (`colour_delta_e`, Delta E 1976:
  it includes content that changes, a pan from sky to grass), contrast ratio and sharpness
  ratio (log2). `colour_drift` is the drift alone: with D_f the sum of the colour shifts of
  the pairs before frame f (the colour change of the scene points the flow follows), the
  Delta E between the chunk's mean D and the first chunk's. A steady pan over one photo
  drifts by about 0 however much its colours change; a video that darkens or tints drifts
  by the change. Without chunk boundaries the video is cut into equal segments.

Each headline figure has a documented threshold (`THRESHOLDS`); `fails` lists the figures
of a video that cross theirs, and the report shows those videos first with the failing cells
marked.

Chunk boundaries come from the caller, else from the `chunk_starts` of the `NAME.json`
`datakit generate` writes beside `NAME.mp4`, else from `chunk_frames`; a video with none has
no seam metrics (`seams` is empty) and drift over `DRIFT_SEGMENTS` equal segments.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datakit.io.atomic import atomic_write
from generate.thresholds import failing

logger = logging.getLogger(__name__)

FLOWS = ("dis", "farneback")
SEAM_CONTEXT = 3
MIN_DIRECTION_PX = 0.25
REVERSAL_COSINE = -0.5
MAWE_SCALE = 9.5
MOVING_PX = 0.5
MIN_MOVING_SHARE = 0.002
WARP_FLOOR = 1e-4
ACCELERATION_FLOOR_PX = 0.25
MATCHED_SHARE = 0.25
SEAM_FLOOR = 0.5
STILL_FLOW_PX = 0.1
STILL_DIFF = 0.5
DRIFT_SEGMENTS = 4
RESULT_SUFFIX = ".checks.json"

REPETITION_THUMB = 32


@dataclass(frozen=True)
class CheckSettings:
    """How videos are analysed.

    Args:
        flow: `dis` (OpenCV's DIS, medium preset) or `farneback` (OpenCV's dense Farneback;
            reads pans about 20% slow).
        max_side: longer side of the analysis size; larger videos are area-downscaled.
        min_scene_frames: shortest scene the cut detector may report.
        thumbnails: frames per chunk in the contact sheet (pairs of consecutive frames).
    """

    flow: str = "dis"
    max_side: int = 512
    min_scene_frames: int = 8
    thumbnails: int = 6

    def __post_init__(self):
        if self.flow not in FLOWS:
            raise ValueError(f"flow must be one of {', '.join(FLOWS)}, got {self.flow!r}")
        if self.max_side < 16:
            raise ValueError(f"max_side must be at least 16, got {self.max_side}")
        if self.min_scene_frames < 1 or self.thumbnails < 1:
            raise ValueError("min_scene_frames and thumbnails must be at least 1")


# -- per pair of frames ----------------------------------------------------------------------


def analysis_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(width, height))
    return max(8, round(width * scale)), max(8, round(height * scale))


def flow_function(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function (gray a, gray b) -> flow (H, W, 2) with a(x) ~ b(x + flow(x))."""
    import cv2

    if name == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return lambda a, b: dis.calc(a, b, None)


def follow(forward: np.ndarray, backward: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each pixel of the first frame lands in the second (`map_x`, `map_y`) and which
    pixels are visible in both (forward-backward consistent and inside the frame)."""
    import cv2

    height, width = forward.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32),
                                 np.arange(height, dtype=np.float32))
    map_x, map_y = grid_x + forward[..., 0], grid_y + forward[..., 1]
    back = cv2.remap(backward, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mismatch = ((forward + back) ** 2).sum(-1)
    bound = 0.01 * ((forward**2).sum(-1) + (back**2).sum(-1)) + 0.5
    inside = (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)
    return map_x, map_y, (mismatch <= bound) & inside


def warp_back(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """The second frame's `image` sampled where the first frame's pixels land."""
    import cv2

    return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def warp_pair(previous: np.ndarray, current: np.ndarray, forward: np.ndarray,
              backward: np.ndarray) -> tuple[float, float]:
    """Warp error of `current` warped back onto `previous`, and the share of occluded pixels.

    Frames are RGB float32 in [0, 1]; flows as from `flow_function`.
    """
    map_x, map_y, visible = follow(forward, backward)
    if not visible.any():
        return float("nan"), 1.0
    error = ((warp_back(current, map_x, map_y) - previous) ** 2).sum(-1)[visible].mean()
    return float(error), float(1 - visible.mean())


def motion_vector(flow: np.ndarray, magnitude: np.ndarray) -> tuple[float, float]:
    """Mean of `flow` (original pixels) over the pixels moving more than `MOVING_PX`; (0, 0)
    when under `MIN_MOVING_SHARE` of them do."""
    moving = magnitude > MOVING_PX
    if moving.mean() < MIN_MOVING_SHARE:
        return 0.0, 0.0
    x, y = flow[moving].mean(0)
    return float(x), float(y)


def flow_acceleration(before: np.ndarray, flow: np.ndarray, after: np.ndarray) -> float:
    """Mean over pixels of how far `flow` departs from the mean of its neighbours' flows."""
    return float(np.sqrt(((flow - (before + after) / 2) ** 2).sum(-1)).mean())


def lab_statistics(frame: np.ndarray) -> np.ndarray:
    """[L, a, b, contrast, sharpness] of an RGB uint8 frame (CIELAB, L in 0..100)."""
    import cv2

    lab = cv2.cvtColor(frame.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    sharpness = cv2.Laplacian(gray, cv2.CV_64F).var()
    return np.array([*lab.reshape(-1, 3).mean(0), lab[..., 0].std(), sharpness])


# -- chunk boundaries ------------------------------------------------------------------------


def chunk_starts_for(video: Path, frames: int, chunk_starts: Sequence[int] | None = None,
                     chunk_frames: int | None = None) -> tuple[list[int], str]:
    """Where chunks begin in `video` (always starting with 0) and where that was learnt."""
    origin = "given"
    if chunk_starts is None:
        sidecar = video.with_suffix(".json")
        if sidecar.is_file():
            try:
                chunk_starts = json.loads(sidecar.read_text()).get("chunk_starts")
                origin = f"{sidecar.name}"
            except (ValueError, AttributeError):
                chunk_starts = None
    if chunk_starts is None and chunk_frames:
        chunk_starts, origin = list(range(0, frames, chunk_frames)), f"every {chunk_frames} frames"
    if chunk_starts is None:
        return [0], "none"
    starts = sorted({int(s) for s in chunk_starts if 0 <= int(s) < frames} | {0})
    return starts, origin


def segments(frames: int, starts: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each chunk; a video with no seams is cut into equal segments."""
    if len(starts) == 1:
        count = max(1, min(DRIFT_SEGMENTS, frames))
        starts = sorted({round(i * frames / count) for i in range(count)})
    ends = starts[1:] + [frames]
    return list(zip(starts, ends, strict=True))


# -- one video -------------------------------------------------------------------------------


def scene_cuts(video: Path, min_scene_frames: int) -> list[int]:
    """Frames where a new shot starts (`datakit.io.scenes`: PySceneDetect's adaptive method)."""
    from datakit.io.scenes import detect_shots

    return detect_shots(video, min_scene_frames=min_scene_frames)


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values: Iterable[float]) -> float | None:
    values = _finite(values)
    return float(np.mean(values)) if values else None


def _round(value: Any, digits: int = 6) -> Any:
    """Floats to `digits` significant digits (json stays readable); NaN and inf to None."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v, digits) for v in value]
    return value


def contact_frames(start: int, end: int, count: int) -> list[int]:
    """Frames of [start, end) for the contact sheet: `count // 2` evenly spaced pairs of
    consecutive frames (an odd `count` adds one more frame), so a flicker that alternates from
    frame to frame shows in the sheet instead of being sampled in one phase."""
    pairs = max(1, count // 2)
    last = max(start, end - 2)
    picked = set()
    for i in range(pairs):
        first = round(start + (last - start) * i / max(1, pairs - 1))
        picked |= {first, min(first + 1, end - 1)}
    if count % 2:
        picked.add(round((start + end - 1) / 2))
    return sorted(picked)


def repetition(thumbs: Sequence[np.ndarray]) -> float | None:
    """max over c of d(c, c+1) - d(c, c+2), d the mean absolute difference of the chunks'
    mean thumbnails (grey levels); None with fewer than 3 chunks."""
    if len(thumbs) < 3:
        return None
    d = lambda a, b: float(np.abs(thumbs[a] - thumbs[b]).mean())  # noqa: E731
    return max(d(c, c + 1) - d(c, c + 2) for c in range(len(thumbs) - 2))


def seam_direction(vectors: Sequence[tuple[float, float]], seam: int,
                   context: int = SEAM_CONTEXT) -> float | None:
    """Cosine between the mean of `vectors` (the pairs' motion vectors) over the `context`
    pairs before `seam` (both frames in the previous chunk) and over the `context` pairs after
    it (both in the new chunk): the pair that crosses the seam is in neither, since a jump
    there would turn steady motion into a false reversal. None when a side is missing or
    moves less than `MIN_DIRECTION_PX` per frame."""
    before = vectors[max(0, seam - 1 - context):max(0, seam - 1)]
    after = vectors[seam:seam + context]
    if not before or not after:
        return None
    a, b = np.mean(before, axis=0), np.mean(after, axis=0)
    if min(np.linalg.norm(a), np.linalg.norm(b)) < MIN_DIRECTION_PX:
        return None
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


SERIES = ("difference", "flow", "warp_error", "occluded", "flow_vector", "motion_vector",
          "acceleration", "colour_shift")


def analysis_views(small: np.ndarray) -> dict[str, np.ndarray]:
    """The forms of an analysis-size RGB frame the pair measures read."""
    import cv2

    as_float = small.astype(np.float32) / 255
    return {"rgb": small, "gray": cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), "float": as_float,
            "lab": cv2.cvtColor(as_float, cv2.COLOR_RGB2LAB)}


def measure_pair(previous: dict, current: dict, flow: Callable, scale: float
                 ) -> tuple[np.ndarray, dict[str, Any]]:
    """The forward flow (original pixels) and the per-pair figures of two `analysis_views`
    (the module docstring defines each)."""
    forward, backward = flow(previous["gray"], current["gray"]), flow(current["gray"],
                                                                      previous["gray"])
    map_x, map_y, visible = follow(forward, backward)
    scaled = forward * scale
    magnitude = np.sqrt((scaled**2).sum(-1))
    matched = visible.mean()
    error = shift = None
    if matched > 0:
        error = float(((warp_back(current["float"], map_x, map_y) - previous["float"]) ** 2)
                      .sum(-1)[visible].mean())
    if matched >= MATCHED_SHARE:
        shift = (warp_back(current["lab"], map_x, map_y) - previous["lab"])[visible].mean(0)
    return scaled, {
        "difference": float(np.abs(current["rgb"].astype(np.int16) - previous["rgb"]).mean()),
        "flow": float(magnitude.mean()),
        "squared_flow": float((magnitude**2).mean()),
        "warp_error": float("nan") if error is None else error,
        "occluded": float(1 - matched),
        "flow_vector": [float(v) for v in scaled.reshape(-1, 2).mean(0)],
        "motion_vector": list(motion_vector(scaled, magnitude)),
        "colour_shift": np.zeros(3) if shift is None else shift.astype(np.float64),
    }


def _typical(values: Iterable[float | None], floor: float) -> float:
    """The median of the finite `values`, at least `floor`."""
    finite = _finite(values)
    return max(float(np.median(finite)) if finite else 0.0, floor)


def score_seams(series: dict[str, list], seams: Sequence[int]) -> list[dict[str, Any]]:
    """Per seam (first frame s of a chunk; pair s-1 crosses it) the figures of the module
    docstring, each measured against the pairs inside chunks."""
    crossing = {s - 1 for s in seams}
    differences, warp, acceleration = (series["difference"], series["warp_error"],
                                       series["acceleration"])
    inside = [d for i, d in enumerate(differences) if i not in crossing] or differences
    typical = max(float(np.median(inside)), SEAM_FLOOR)
    warp_typical = _typical((w for i, w in enumerate(warp) if i not in crossing), WARP_FLOOR)
    # (a pair next to a seam has the crossing pair as a neighbour: not typical either)
    near = crossing | {i - 1 for i in crossing} | {i + 1 for i in crossing}
    acceleration_typical = _typical((a for i, a in enumerate(acceleration) if i not in near),
                                    ACCELERATION_FLOOR_PX)
    scored = []
    for s in seams:
        direction = seam_direction(series["motion_vector"], s)
        seam_warp, seam_acceleration = warp[s - 1], acceleration[s - 1]
        scored.append({
            "frame": s, "difference": differences[s - 1], "jump": differences[s - 1] / typical,
            "flow": series["flow"][s - 1], "direction": direction,
            "reversal": direction is not None and direction < REVERSAL_COSINE,
            "seam_warp_error": _mean(warp[max(0, s - 2):s + 2]),
            "warp_jump": seam_warp / warp_typical if math.isfinite(seam_warp) else None,
            "motion_jump": None if seam_acceleration is None
            else seam_acceleration / acceleration_typical,
        })
    return scored


def check_video(
    video: str | os.PathLike,
    settings: CheckSettings | None = None,
    chunk_starts: Sequence[int] | None = None,
    chunk_frames: int | None = None,
    on_frame: Callable[[], None] | None = None,
) -> tuple[dict[str, Any], list[list[np.ndarray]]]:
    """Measure one video; return its results (json-ready) and its contact-sheet rows.

    Args:
        video: an MP4 (any video PyAV reads).
        settings: the `CheckSettings`.
        chunk_starts: first frame of each chunk (default: from the generate json beside it).
        chunk_frames: chunk length to assume when nothing else says where chunks begin.
        on_frame: called after every decoded frame (progress bars).

    Raises:
        datakit.io.video.VideoError: the video cannot be read.
        ValueError: the video has fewer than 2 frames.
    """
    import cv2

    from datakit.io.video import iter_frames, probe

    settings = settings or CheckSettings()
    video = Path(video)
    # 1. Probe, and find the chunks
    info = probe(video)
    if info.frames < 2:
        raise ValueError(f"{video}: {info.frames} frame(s); the checks need at least 2")
    starts, origin = chunk_starts_for(video, info.frames, chunk_starts, chunk_frames)
    spans = segments(info.frames, starts)
    size = analysis_size(info.width, info.height, settings.max_side)
    sheet_indices = [contact_frames(a, b, settings.thumbnails) for a, b in spans]
    wanted = {i: (row, col) for row, indices in enumerate(sheet_indices)
              for col, i in enumerate(indices)}
    sheet: list[list[np.ndarray]] = [[] for _ in spans]
    thumb_height = 96
    thumb_width = max(2, round(thumb_height * info.width / info.height))

    # 2. One pass over the frames (flow in original pixels: times `scale`)
    flow = flow_function(settings.flow)
    scale = info.width / size[0]
    series: dict[str, list] = {name: [] for name in SERIES}
    squared: list[float] = []
    flows: list[np.ndarray] = []  # the last three pairs' flow fields, for the acceleration
    chunk_stats = [np.zeros(5) for _ in spans]
    chunk_thumbs = [np.zeros((REPETITION_THUMB, REPETITION_THUMB, 3)) for _ in spans]
    chunk_of = np.zeros(info.frames, dtype=int)
    for row, (a, b) in enumerate(spans):
        chunk_of[a:b] = row
    previous = None
    count = 0
    for index, frame in enumerate(iter_frames(video)):
        if index >= info.frames:  # a container that under-reports its frame count
            break
        if index in wanted:
            sheet[wanted[index][0]].append(cv2.resize(frame, (thumb_width, thumb_height),
                                                      interpolation=cv2.INTER_AREA))
        small = frame if (frame.shape[1], frame.shape[0]) == size else cv2.resize(
            frame, size, interpolation=cv2.INTER_AREA)
        current = analysis_views(small)
        chunk_stats[chunk_of[index]] += lab_statistics(small)
        chunk_thumbs[chunk_of[index]] += cv2.resize(small, (REPETITION_THUMB,) * 2,
                                                    interpolation=cv2.INTER_AREA)
        if previous is not None:
            forward, figures = measure_pair(previous, current, flow, scale)
            squared.append(figures.pop("squared_flow"))
            for name, value in figures.items():
                series[name].append(value)
            series["acceleration"].append(None)  # (known once the next pair is)
            flows = [*flows[-2:], forward]
            if len(flows) == 3:
                series["acceleration"][-2] = flow_acceleration(*flows)
        previous = current
        count += 1
        if on_frame:
            on_frame()
    if count < 2:
        raise ValueError(f"{video}: decoded {count} frame(s); the checks need at least 2")
    frames = count
    spans = [(a, min(b, frames)) for a, b in spans if a < frames]

    # 3. Seams: each measure at the seam pair over its typical value inside chunks
    seams = score_seams(series, [s for s in starts[1:] if s < frames])
    differences, magnitudes = series["difference"], series["flow"]
    drift = np.cumsum([np.zeros(3), *series["colour_shift"]], axis=0)

    # 4. Cuts, drift and the summary
    cuts = scene_cuts(video, settings.min_scene_frames)
    seam_frames = {s["frame"] for s in seams}
    at_seams = [c for c in cuts if any(abs(c - s) <= 1 for s in seam_frames)]
    per_chunk = []
    for (a, b), total in zip(spans, chunk_stats, strict=False):
        mean = total / (b - a)
        per_chunk.append({"start": a, "frames": b - a, "lab": mean[:3].tolist(),
                          "drift": drift[a:b].mean(0).tolist(),
                          "contrast": float(mean[3]), "sharpness": float(mean[4])})
    first = per_chunk[0]
    for chunk in per_chunk:
        chunk["colour_delta_e"] = float(np.linalg.norm(np.subtract(chunk["lab"], first["lab"])))
        chunk["colour_drift"] = float(np.linalg.norm(np.subtract(chunk["drift"],
                                                                 first["drift"])))
        chunk["contrast_ratio"] = chunk["contrast"] / max(first["contrast"], 1e-6)
        chunk["sharpness_log2_ratio"] = math.log2(max(chunk["sharpness"], 1e-6)
                                                  / max(first["sharpness"], 1e-6))
    thumbs = [total / (b - a) for (a, b), total in zip(spans, chunk_thumbs, strict=False)]
    warp_error = _mean(series["warp_error"])
    mean_squared_flow = float(np.mean(squared))
    jumps = [s["jump"] for s in seams]
    metrics = {
        "seam_jump_max": max(jumps) if jumps else None,
        "seam_jump_mean": float(np.mean(jumps)) if jumps else None,
        "seam_reversals": sum(s["reversal"] for s in seams),
        "seam_warp_error_max": max(_finite(s["seam_warp_error"] for s in seams), default=None),
        "seam_warp_jump_max": max(_finite(s["warp_jump"] for s in seams), default=None),
        "seam_motion_jump_max": max(_finite(s["motion_jump"] for s in seams), default=None),
        "warp_error": warp_error,
        "mawe": None if warp_error is None
        else warp_error / max(MAWE_SCALE * mean_squared_flow, 1e-9),
        "flicker": (255 - float(np.mean(differences))) / 255,
        "flow_std": float(np.std(magnitudes)),
        "motion": float(np.mean(magnitudes)),
        "stagnant_fraction": float(np.mean([m < STILL_FLOW_PX and d < STILL_DIFF
                                            for m, d in zip(magnitudes, differences,
                                                            strict=True)])),
        "scene_cuts": len(cuts),
        "scene_cuts_off_seams": len(cuts) - len(at_seams),
        "colour_drift_max": max(c["colour_drift"] for c in per_chunk),
        "colour_change_max": max(c["colour_delta_e"] for c in per_chunk),
        "sharpness_drift_max": max(abs(c["sharpness_log2_ratio"]) for c in per_chunk),
        "repetition": repetition(thumbs),
    }
    result = {
        "video": str(video),
        "name": video.stem,
        "frames": frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "analysis_size": list(size),
        "flow": settings.flow,
        "chunk_starts": starts,
        "chunks_from": origin,
        "metrics": metrics,
        "fails": failing(metrics),
        "seams": seams,
        "scene_cut_frames": cuts,
        "chunks": per_chunk,
        "series": {**series, "colour_shift": [list(v) for v in series["colour_shift"]]},
    }
    return _round(result), sheet


def check_videos(
    videos: Sequence[str | os.PathLike],
    folder: str | os.PathLike,
    settings: CheckSettings | None = None,
    chunk_frames: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Check every video into `folder`: `NAME.checks.json` and `NAME_sheet.png` per video.

    A video that cannot be checked gets a result with its `error` and the others go on.
    Returns the results in order. `report.write_report` turns them into the HTML report.
    """
    from datakit.io.video import VideoError, probe
    from generate.report import write_contact_sheet

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = settings or CheckSettings()
    results = []
    bar = _progress(progress)
    with bar:
        for video in map(Path, videos):
            try:
                total = probe(video).frames
            except VideoError:
                total = None
            task = bar.add_task(video.name, total=total)
            try:
                result, sheet = check_video(video, settings, chunk_frames=chunk_frames,
                                            on_frame=lambda t=task: bar.advance(t))
                write_contact_sheet(sheet, result, folder / f"{video.stem}_sheet.png")
                result["contact_sheet"] = f"{video.stem}_sheet.png"
            except (VideoError, ValueError, OSError) as error:
                logger.info("%s: cannot check: %s", video, error)
                result = {"video": str(video), "name": video.stem, "error": str(error)}
            atomic_write(folder / f"{video.stem}{RESULT_SUFFIX}",
                         json.dumps(result, indent=1) + "\n")
            results.append(result)
            bar.remove_task(task)
    return results


def collect_videos(inputs: Sequence[Path], unpack_to: Path) -> tuple[list[Path], list[str]]:
    """The videos `datakit check` reads: files as given, a folder's `.mp4` files (not
    recursive), and the samples of `.tar` shards unpacked into `unpack_to`; and a note for
    each folder that held other files (the command prints them).

    Raises:
        UserError: an input does not exist, a folder holds no video or shard, or two videos
            share a name (their results would overwrite each other).
    """
    from datakit.io.errors import UserError

    paths: list[Path] = []
    shards: list[Path] = []
    notes: list[str] = []
    for path in inputs:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            found = [p for p in files if p.suffix.lower() == ".mp4"]
            tars = [p for p in files if p.suffix.lower() == ".tar"]
            skipped = [p.name for p in files if p.suffix.lower() not in (".mp4", ".json", ".tar")]
            if skipped:
                notes.append(f"{path}: skipped {len(skipped)} file(s) that are not .mp4 or .tar: "
                             f"{', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
            if not found and not tars:
                raise UserError(f"{path}: no .mp4 files or .tar shards in this folder")
            paths.extend(found)
            shards.extend(tars)
        elif path.is_file() and path.suffix.lower() == ".tar":
            shards.append(path)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"{path}: no such file or folder")
    if shards:  # the toolkit's own shards: their videos, unpacked next to the report
        paths.extend(videos_from_shards(shards, unpack_to))
    names = [p.stem for p in paths]
    clash = next((n for n in names if names.count(n) > 1), None)
    if clash:
        raise UserError(f"two videos are named {clash!r}; check them into separate --out folders")
    return paths, notes


def videos_from_shards(shards: Sequence[str | os.PathLike], folder: str | os.PathLike
                       ) -> list[Path]:
    """Write the `mp4` of every sample in `shards` (the toolkit's WebDataset tars, read as a
    trainer reads them) to `folder/KEY.mp4`, with the sample's `json` beside it when it has
    one (its `chunk_starts` then gives the seams); return the video paths."""
    from datakit.run.shards import read_shard

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for shard in shards:
        for sample in read_shard(shard):
            if "mp4" not in sample:
                continue
            video = folder / f"{sample['__key__']}.mp4"
            video.write_bytes(sample["mp4"])
            if "json" in sample:
                video.with_suffix(".json").write_bytes(sample["json"])
            videos.append(video)
    return videos


def load_results(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """Every check result saved in `folder`, by video name."""
    paths = sorted(Path(folder).glob(f"*{RESULT_SUFFIX}"))
    return [json.loads(path.read_text()) for path in paths]


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("checking {task.description}"), BarColumn(),
                    MofNCompleteColumn(), TimeRemainingColumn(), disable=not enabled,
                    transient=True)
