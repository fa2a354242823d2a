"""Evidence that a pattern lies over the content: edges that stay put on screen while the
content moves (the picture's own frame, a letterbox's bars or a scan's gate, left out), the
camera's track, a static overlay's own picture (its matte), and whether the content changes
under a candidate.

Frames here are grey float32 (T, h, w) at the analysis size (`frames.shrink`), except where a
function says it takes RGB frames at the input's size.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from synthesize.watermark.frames import (
    box_of,
    compose,
    fill_holes,
    grow_box,
    shrink,
    temporal_median,
)

EDGE_SLOPE = 4.0  # grey levels per pixel: weaker gradients are texture or noise
COHERENCE = 0.75  # |mean gradient| / mean |gradient| above this: the same edge in every frame
PRESENT = 0.2  # a static edge may be missing (under half EDGE_SLOPE) in this share of frames
CAMERA_MOVED = 8.0  # analysis pixels: less camera motion than this is no motion
TRACK_FIT = 1.5  # analysis pixels: a match this near a motion's prediction fits it (RANSAC)
TRACK_STEP = 3.0  # analysis pixels: a step moving no frame corner this far is not judged
TRACK_GRID = 4  # cells per side over which a step's matches are counted
TRACK_CELL = 3  # matches a cell needs to count
EXPLAINED = 0.5  # a screen edge the moving scene reproduces to this share is the scene's
CROSSING = 0.5  # share of the camera's motion across an edge (cos of the angle) that counts
STATIC_SCENE = 0.5  # a clip whose edges are this static overall has no usable motion
CUT_STEP = 30.0  # grey levels of mean change between sampled frames that make a cut ...
CUT_RATIO = 6.0  # ... when also this many times the clip's median step
MIN_SHOT = 3  # sampled frames a shot needs for its own edges to be judged


def slopes(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The x and y derivatives of grey frames (T, h, w), float32, in grey levels per pixel
    (Sobel / 8), the unit of EDGE_SLOPE."""
    import cv2

    gx = np.stack([cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) for g in grey]) / 8.0
    gy = np.stack([cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) for g in grey]) / 8.0
    return gx, gy


def track_camera(grey: np.ndarray, ignore: np.ndarray | None = None
                 ) -> tuple[list[np.ndarray], float]:
    """Per frame, the similarity taking it onto frame 0 (ORB matches between neighbouring
    frames, RANSAC, chained; identity where a step cannot be matched, where one region
    carries it while the rest of the frame stands still, or where it lines the frames up no
    better than no motion), and the largest distance any frame corner moved, in pixels.

    Args:
        grey: grey frames (T, h, w).
        ignore: pixels whose features are not used (the mark), or None.
    """
    import cv2

    orb = cv2.ORB_create(500)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    height, width = grey.shape[1:]
    use = None if ignore is None else (~ignore).astype(np.uint8) * 255
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
            step, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                        ransacReprojThreshold=TRACK_FIT)
            if step is not None and _region_moves(src, dst, inliers, step, (height, width)):
                step = None  # one region (a person) moved; the rest of the frame stood still
        if step is not None and not _fits_better(grey[index], grey[index - 1], step):
            step = None  # the matches followed something moving across a still shot
        matrix = compose(transforms[-1], np.eye(2, 3) if step is None else step)
        transforms.append(matrix)
        moved = max(moved, _corner_shift(matrix, (height, width)))
    return transforms, moved


def _corner_shift(matrix: np.ndarray, shape: tuple[int, int]) -> float:
    """The largest distance a frame corner moves under `matrix` (2x3), in pixels."""
    height, width = shape
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float).T
    return float(np.abs(matrix @ corners - corners[:2]).max())


def _region_moves(src: np.ndarray, dst: np.ndarray, inliers: np.ndarray, step: np.ndarray,
                  shape: tuple[int, int]) -> bool:
    """Whether a step's motion is carried by one region while the rest of the frame stands
    still: of the TRACK_GRID x TRACK_GRID cells holding TRACK_CELL matches or more, some
    have most of their matches still (moved under TRACK_FIT pixels), and at least as many as
    have most of theirs follow the step. A camera's motion moves the whole frame, so the
    step's cells are the many; a person moving in front of a still camera carries RANSAC's
    consensus from a few cells while the still background fills the others. A step too
    small to tell the two apart (no corner moves TRACK_STEP pixels) is kept."""
    if _corner_shift(step, shape) < TRACK_STEP:
        return False
    height, width = shape
    cell = (np.minimum(src[:, 1] * TRACK_GRID // height, TRACK_GRID - 1) * TRACK_GRID
            + np.minimum(src[:, 0] * TRACK_GRID // width, TRACK_GRID - 1)).astype(int)
    cells = TRACK_GRID * TRACK_GRID
    count = np.bincount(cell, minlength=cells)
    follow = np.bincount(cell[inliers.ravel() > 0], minlength=cells)
    still = np.bincount(cell[np.hypot(*(src - dst).T) < TRACK_FIT], minlength=cells)
    used = count >= TRACK_CELL
    still_cells = int((still[used] * 2 > count[used]).sum())
    return still_cells >= max(1, int((follow[used] * 2 > count[used]).sum()))


def _fits_better(frame: np.ndarray, previous: np.ndarray, step: np.ndarray) -> bool:
    """Whether `step` (frame onto previous) lines up most of the two frames better than no
    motion does: the median absolute difference over the pixels both show. An object crossing
    a still shot gives matches of its own, whose motion fits it alone. A step under which the
    frames share under a quarter of their pixels cannot be checked and is no camera motion:
    a cut, or matches on something that moved across a still shot (a card lifted off a
    table: a similarity folding the frame to 0.3 of its size)."""
    import cv2

    height, width = frame.shape
    warped = cv2.warpAffine(frame, step, (width, height), flags=cv2.INTER_LINEAR)
    seen = cv2.warpAffine(np.ones_like(frame), step, (width, height)) > 0.999
    if seen.mean() < 0.25:
        return False
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


def integrate(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
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


def _matte_picture(frames: np.ndarray, box: tuple[int, int, int, int]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The static overlay's own picture inside `box` (signed grey levels over the scene's
    mean, float32 at the box's size): the temporal median of the frames' gradients
    (Dekel et al.'s estimate of the mark's gradients: the overlay's is in every frame, the
    moving scene's differs from frame to frame), integrated. A median that does not stand out
    of its frames' spread is the scene's and is left out. Also returns where the matte has
    support: pixels within MATTE_REACH of a kept gradient, and what they enclose. Away from
    them the integrated picture holds only the halo of gradients the test could not keep."""
    import cv2

    x0, y0, x1, y1 = box
    grey, _ = shrink(np.ascontiguousarray(frames[:, y0:y1, x0:x1]), MATTE_SIDE)
    dx = np.zeros_like(grey)
    dy = np.zeros_like(grey)
    dx[:, :, :-1] = np.diff(grey, axis=2)
    dy[:, :-1] = np.diff(grey, axis=1)
    fields = []
    for d in (dx, dy):
        median = temporal_median(d)
        spread = temporal_median(np.abs(d - median))
        fields.append(np.where(np.abs(median) > 2.0 * spread + 1.0, median, 0.0))
    matte = integrate(*fields).astype(np.float32)
    kept = ((fields[0] != 0) | (fields[1] != 0)).astype(np.uint8)
    reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MATTE_REACH + 1,) * 2)
    support = fill_holes(cv2.dilate(kept, reach) > 0).astype(np.uint8)
    size = (x1 - x0, y1 - y0)
    return (cv2.resize(matte, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(support, size, interpolation=cv2.INTER_NEAREST).astype(bool))


def _grown(box: tuple[int, int, int, int], shape: tuple[int, int], share: float,
           pad: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return grow_box(box, shape, round((x1 - x0) * share) + pad, round((y1 - y0) * share) + pad)


def _matte_once(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = region = _grown(box_of(mask), mask.shape, MATTE_GROW, 8)
    matte, support = _matte_picture(frames, region)
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
        if box_of(refined) == box_of(current):
            return refined
        current = refined
    return current


STAYS_PUT = 0.75  # share of frames matching at zero shift that leaves a score as it is
STAYS_PUT_REACH = 3  # pixels searched each way for a better match


def stays_put(frames: np.ndarray, mask: np.ndarray) -> float:
    """The share of frames whose gradient magnitudes on the mask (grown by 2 pixels) match
    their temporal median best with no shift, searching STAYS_PUT_REACH pixels each way."""
    return float(matches_unshifted(frames, mask).mean())


def matches_unshifted(frames: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per frame, whether its gradient magnitudes on the mask (grown by 2 pixels) match
    their temporal median best with no shift, searching STAYS_PUT_REACH pixels each way
    (all False when the median is flat there: nothing to line up)."""
    import cv2

    reach = STAYS_PUT_REACH
    near = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    x0, y0, x1, y1 = box_of(near)
    ys, xs = np.nonzero(near[y0:y1, x0:x1])
    magnitudes = []
    for frame in frames:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        grey = cv2.copyMakeBorder(grey, reach, reach, reach, reach, cv2.BORDER_REFLECT)
        grey = grey[y0:y1 + 2 * reach, x0:x1 + 2 * reach]
        magnitudes.append(np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0),
                                   cv2.Sobel(grey, cv2.CV_32F, 0, 1)))
    magnitudes = np.stack(magnitudes)
    template = temporal_median(magnitudes)[ys + reach, xs + reach]
    if float(template.std()) < 1e-3:
        return np.zeros(len(frames), bool)
    shifts = [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)]
    errors = np.stack([np.abs(magnitudes[:, ys + reach + dy, xs + reach + dx] - template).mean(1)
                       for dy, dx in shifts], axis=1)  # (frames, shifts)
    centre = shifts.index((0, 0))
    return errors[:, centre] <= errors.min(1)


CARRIED_FRAMES = 3  # frames in which the camera must carry the scene away from a line


def held_while_carried(frames: np.ndarray, mask: np.ndarray, transforms: list[np.ndarray],
                       scale: float) -> float:
    """Occlusion order under a moving camera for text found on the clip's median frame.
    The median shows what sits on the same pixels in most frames: an overlay, but also the
    scene's own text where the camera rested for most of the clip. In the frames where the
    camera carried the scene under the line STAYS_PUT_REACH pixels or more from where it
    lies in the median, an overlay's strokes still match with no shift, and the scene's
    text has moved on with the scene. Returns the share of those frames that match; 0 when
    the camera carried the scene away in fewer than CARRIED_FRAMES frames.

    Args:
        frames: the sampled RGB frames (T, H, W, 3).
        mask: bool (H, W), the line's strokes.
        transforms: per frame, the similarity onto frame 0 at the analysis size
            (`StaticEdges.transforms`).
        scale: analysis size / input size.
    """
    x0, y0, x1, y1 = box_of(mask)
    centre = np.array([(x0 + x1) / 2 * scale, (y0 + y1) / 2 * scale, 1.0])
    under = np.array([matrix @ centre for matrix in transforms])  # scene point under it
    carried = np.hypot(*(under - np.median(under, axis=0)).T) / scale >= STAYS_PUT_REACH
    if carried.sum() < CARRIED_FRAMES:
        return 0.0
    return float(matches_unshifted(frames, mask)[carried].mean())


HOLD_REACH = 2  # analysis pixels searched each way for a better local match
HOLD_WINDOW = 5  # side of the window whose pattern is matched
HOLDS = 0.3  # share of frames a pixel's pattern must match best at zero shift to hold


def holds_in_place(magnitudes: np.ndarray) -> np.ndarray:
    """Per pixel, the share of frames whose local pattern of gradient magnitudes (a
    HOLD_WINDOW square) matches the temporal median's best with no shift, searching
    HOLD_REACH pixels each way. An overlay's strokes never move; a scene that sways or
    breathes under a still camera moves its edges by a pixel or more in some frames."""
    import cv2

    reach, window = HOLD_REACH, (HOLD_WINDOW, HOLD_WINDOW)
    template = temporal_median(magnitudes)
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


BAR_STEADY = 8.0  # grey levels: a bar's pixel varies less than this over the clip
BAR_FLAT = 12.0  # grey levels: and stays this near the colour of the frame's outermost line
BAR_ROW = 0.9  # share of a line's pixels that must be the bar's for the line to be bar
BAR_DEPTH = 0.3  # a bar reaches at most this share of the frame in from its side
BAR_REACH = 2  # analysis pixels either side of a bar's inner edge that belong to that edge
BAR_RAGGED = 4  # analysis pixels: how far in a gate's ragged edge may run past the bar
SIDE_NEAR = 2  # analysis pixels from a side: an edge this near and along it is the frame's


def bar_edges(grey: np.ndarray) -> np.ndarray:
    """The inner edges of flat bars along the frame's sides: a letterbox, a pillarbox, the
    dark gate of a film scan. Each is an edge across the whole frame that stays put while
    the camera moves, yet it is the picture's frame, not an overlay on the picture.

    A bar is the run of lines in from a side, up to BAR_DEPTH of the frame, of which BAR_ROW
    of the pixels keep the outermost line's colour (BAR_FLAT) all clip long (BAR_STEADY); a
    mark inside a bar covers too little of its lines to end it, and keeps its own edges. Its
    inner edge runs from the first line that is not bar to the first with under 1 - BAR_ROW
    of bar pixels (a film gate's edge is ragged), at most BAR_RAGGED lines on, and BAR_REACH
    pixels either side. Bool (h, w).
    """
    median = temporal_median(grey)
    steady = grey.max(0) - grey.min(0) < BAR_STEADY
    height, width = median.shape
    inner = np.zeros((height, width), bool)
    # Each side as lines running along it, outermost first: rows from the top and the
    # bottom, columns from the left and the right (views: setting `edge` sets `inner`).
    sides = ((median, steady, inner), (median[::-1], steady[::-1], inner[::-1]),
             (median.T, steady.T, inner.T), (median.T[::-1], steady.T[::-1], inner.T[::-1]))
    for values, still, edge in sides:
        colour = float(np.median(values[0]))
        share = (still & (np.abs(values - colour) < BAR_FLAT)).mean(1)
        depth = int(np.argmax(share < BAR_ROW)) if (share < BAR_ROW).any() else len(share)
        if 0 < depth <= BAR_DEPTH * len(share):
            content = share[depth:depth + BAR_RAGGED] < 1.0 - BAR_ROW
            end = depth + (int(np.argmax(content)) if content.any() else BAR_RAGGED)
            edge[max(0, depth - BAR_REACH):end + BAR_REACH] = True
    return inner


def side_lines(mean_x: np.ndarray, mean_y: np.ndarray) -> np.ndarray:
    """Edges along a side of the frame, within SIDE_NEAR pixels of it (their gradient points
    across the side): a scan's frame line, an analogue capture's blanking, a shadow of the
    gate. A mark keeps a margin from the frame's sides; where it reaches one, its edges
    there run across the side. Bool (h, w), from the clip's mean gradient."""
    near = SIDE_NEAR
    across_rows = np.abs(mean_y) > np.abs(mean_x)
    lines = np.zeros(mean_x.shape, bool)
    lines[:near], lines[-near:] = across_rows[:near], across_rows[-near:]
    lines[:, :near], lines[:, -near:] = ~across_rows[:, :near], ~across_rows[:, -near:]
    return lines


@dataclass
class StaticEdges:
    """Where edges stay put on screen in a clip, and what the camera did.

    Args:
        static: bool (h, w): edges that stay put, are not explained by the camera's motion,
            and are present or hold in place (see `static_edges`).
        edges: bool (h, w): every edge of the clip (mean gradient over EDGE_SLOPE).
        camera_moved: the camera moved CAMERA_MOVED analysis pixels or more.
        share: static edge pixels / edge pixels: STATIC_SCENE or more is a clip without
            usable motion.
        across: float32 (h, w): how far the camera carried the scene across each pixel's
            edge (along its mean gradient), the most over the frames, in analysis pixels;
            zeros under a still camera (see `motion_across`).
        transforms: per frame, the similarity taking it onto frame 0 (`track_camera`).
    """

    static: np.ndarray
    edges: np.ndarray
    camera_moved: bool
    share: float
    across: np.ndarray
    transforms: list[np.ndarray]


def motion_across(transforms: list[np.ndarray], gx: np.ndarray, gy: np.ndarray
                  ) -> np.ndarray:
    """Per pixel, the most any frame's camera motion (`transforms`: frame onto frame 0)
    moves the scene across the edge there: |displacement . unit gradient|, in pixels, counted
    only where the motion crosses the edge at an angle (its share across, CROSSING or more).

    The aperture problem: motion along an edge leaves it where it was, so an edge that
    stays put while the camera slides along it (a tower's rows of windows under a pan) is
    no evidence of an overlay. Only edges the scene would have crossed tell.
    """
    height, width = gx.shape
    length = np.maximum(np.hypot(gx, gy), 1e-6)
    ux, uy = gx / length, gy / length
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    across = np.zeros((height, width), np.float32)
    for matrix in transforms:
        dx = (matrix[0, 0] - 1) * xs + matrix[0, 1] * ys + matrix[0, 2]
        dy = matrix[1, 0] * xs + (matrix[1, 1] - 1) * ys + matrix[1, 2]
        normal = np.abs(ux * dx + uy * dy)
        normal[normal < CROSSING * np.hypot(dx, dy)] = 0.0  # slid along more than across
        np.maximum(across, normal, out=across)
    return across


def static_edges(grey: np.ndarray) -> StaticEdges:
    """The edges of a clip that stay put on screen while its content moves.

    At a mark's pixels the image gradient is the same vector in (nearly) every frame: its
    temporal mean is as long as its mean length (COHERENCE), and it is there in at least
    1 - PRESENT of the frames, while moving content's gradients change and cancel.

    Args:
        grey: the sampled frames, grey float32 (T, h, w) at the analysis size.
    """
    import cv2

    height, width = grey.shape[1:]
    # 1. Edges that stay put on screen.
    gx, gy = slopes(grey)
    on_screen, strength = _coherence(gx, gy)
    bars = bar_edges(grey)  # a letterbox's edge stays put too: it frames the picture
    edges = (strength > EDGE_SLOPE) & ~bars
    # An edge sweeping past also points one way; a mark's edge is there in (nearly) every
    # frame (or, over dark or flat content, holds in place where it shows: step 3).
    magnitudes = np.hypot(gx, gy)
    present = (magnitudes > EDGE_SLOPE / 2).mean(0) >= 1.0 - PRESENT
    mean_x, mean_y = gx.mean(0), gy.mean(0)
    static = (on_screen > EDGE_SLOPE) & (on_screen > COHERENCE * strength) & ~bars
    static &= ~side_lines(mean_x, mean_y)
    # An overlay added after capture is on every shot of an edited clip; an edge of one
    # shot, averaged with the other shot's smooth content, can look steady over the clip.
    for shot in shots(grey):
        if len(shot) >= MIN_SHOT:
            steady, total = _coherence(gx[shot], gy[shot])
            static &= (steady > EDGE_SLOPE) & (steady > COHERENCE * total)
    # 2. When the camera moves, an edge running along the motion also stays put on screen,
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
        along = (explained_x * mean_x + explained_y * mean_y) / np.maximum(on_screen, 1e-6)
        static &= along < EXPLAINED * on_screen
    # 3. An overlay's strokes match their median with no shift; a scene's edges only a pixel
    #    or more away in a good share of the frames. Under a still camera a swaying or
    #    breathing scene, or a hand-held camera's jitter (under CAMERA_MOVED), holds edges on
    #    screen well enough for the tests above: there an edge must be present and hold.
    #    Under a moving camera a mark over dark or flat content fades out in some frames and
    #    fails the presence test, but holds where it shows: present or holding is enough.
    holds = holds_in_place(magnitudes) >= HOLDS
    static &= (present | holds) if camera_moved else (present & holds)
    across = (motion_across(transforms, mean_x, mean_y) if camera_moved
              else np.zeros((height, width), np.float32))
    return StaticEdges(static, edges, camera_moved, float(static.sum() / max(1, edges.sum())),
                       across, transforms)


def shots(grey: np.ndarray) -> list[np.ndarray]:
    """The sampled frames' indices split at hard cuts (a mean change over CUT_STEP grey
    levels and CUT_RATIO times the clip's median step between neighbours); one shot, all
    frames, when there is no cut."""
    steps = np.abs(np.diff(grey, axis=0)).mean((1, 2))
    if not len(steps):
        return [np.arange(len(grey))]
    cuts = np.nonzero((steps > CUT_STEP) & (steps > CUT_RATIO * np.median(steps)))[0] + 1
    return np.split(np.arange(len(grey)), cuts)


CHANGE = 16.0  # grey levels from a pixel's temporal median that count as a change
CHANGE_FRAMES = 3  # frames (of the sampled ones) that must change for a pixel to change
#                    (8 levels in 2 frames: the noise of a still pavement in bikes-1 counted)
CHANGE_REACH = 2  # analysis pixels: an edge this near a changing pixel has change under it


def changing(grey: np.ndarray) -> np.ndarray:
    """Pixels whose content changes during the clip: at least CHANGE_FRAMES of the sampled
    frames differ from the pixel's temporal median by more than CHANGE grey levels (an
    object that passes once changes a pixel in a few frames only, so no median of the
    change would see it). Bool (h, w) at the analysis size."""
    median = temporal_median(grey)
    return (np.abs(grey - median) > CHANGE).sum(0) >= CHANGE_FRAMES


HOLDS_OVER_CHANGE = 0.75  # share of the frames with change beside an edge that it must outlast


def passes_behind(grey: np.ndarray) -> np.ndarray:
    """Occlusion order under a still camera, per pixel: whether its edge persists over
    change. In the sampled frames where content changes within CHANGE_REACH of the pixel
    (by more than CHANGE grey levels from its temporal median), its gradient must still
    point its usual way (EDGE_SLOPE / 2 or more along the temporal mean's direction) in
    HOLDS_OVER_CHANGE of them, and there must be CHANGE_FRAMES such frames. Things pass
    behind a mark, whose edges stay on top; they pass in front of the scene's edges and hide
    them. Bool (h, w) at the analysis size."""
    import cv2

    gx, gy = slopes(grey)
    mean_x, mean_y = gx.mean(0), gy.mean(0)
    length = np.maximum(np.hypot(mean_x, mean_y), 1e-6)
    held = (gx * mean_x + gy * mean_y) / length > EDGE_SLOPE / 2
    median = temporal_median(grey)
    reach = np.ones((2 * CHANGE_REACH + 1,) * 2, np.uint8)
    near = np.stack([cv2.dilate((np.abs(g - median) > CHANGE).astype(np.uint8), reach) > 0
                     for g in grey])
    frames = near.sum(0)
    return (frames >= CHANGE_FRAMES) & ((near & held).sum(0) >= HOLDS_OVER_CHANGE * frames)


def change_under(region_edges: np.ndarray, behind: np.ndarray) -> float:
    """Occlusion evidence under a still camera: the share of a candidate's static edge
    pixels that persist over content changing beside them (`passes_behind`). A mark's edges
    do, as things pass behind it; a static part of the scene (a bench in the background, a
    wall) has nothing changing at its edges, and a sign that people walk in front of loses
    its edges whenever they do."""
    if not region_edges.any():
        return 0.0
    return float(behind[region_edges].mean())
