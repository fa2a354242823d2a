"""Removal: take a found mark out of every frame with one fixed mask, and refuse a strip that
would damage the clip.

`remove_watermark` crops a mark in a border band away, fills from frames that reveal the
spot, inverts a semi-transparent blend (a faint bold mark of one colour through its
letters' matte, `matte.py`; any other from the frames' own variation), and fills the rest
(docs/watermarks.md). `strip` runs it and then measures what it changed
(`strip_damage`): a change outside the mark's support, a mask over a large share of the
frame, or a change that no constant alpha and colour per pixel explains means the mask was
not a mark's, and the clip is kept as it was.
"""

from __future__ import annotations

import numpy as np

from synthesize.watermark.config import Detection, WatermarkConfig
from synthesize.watermark.evidence import track_camera
from synthesize.watermark.frames import (
    box_of,
    check_frames,
    compose,
    grow_box,
    sample_indices,
    shrink,
)
from synthesize.watermark.matte import invert_faint_mark


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
            matrix = compose(inverse[s], compose(transforms[t], shift))
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
        usable = np.stack(valid)
        backgrounds[t] = donor_median(np.stack(stack).astype(np.float32), usable)
        counts[t] = usable.sum(0)
    return backgrounds, counts


def donor_median(pictures: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per pixel, the median of `pictures` (D, h, w, C) over the donors that are `usable`
    (D, h, w) there, 0 where none is: `np.nanmedian` with the rest set to NaN, value for
    value (tested), in one sort. nanmedian's path for small stacks works slice by slice
    and warns at every pixel no donor shows; it took 10.9 of a 264-frame 720p strip's 27 s,
    half of it in 8.5 million filtered warnings."""
    stack = np.where(usable[..., None], pictures, np.float32(np.inf))
    stack.sort(axis=0)
    count = usable.sum(0)[None, ..., None]
    low = np.take_along_axis(stack, np.maximum(count - 1, 0) // 2, axis=0)[0]
    high = np.take_along_axis(stack, np.minimum(count // 2, len(stack) - 1), axis=0)[0]
    return np.where(count[0] > 0, (low + high) / 2, np.float32(0))


MIN_FRAMES_FOR_MATTING = 4
OPAQUE = 0.9  # estimated alpha above this: nothing of the frame shows through


def scene_moments(region: np.ndarray, hole: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The region's temporal mean and spread per pixel, and the scene's: the same two
    inpainted over the hole (Telea) from around it, where they vary smoothly."""
    import cv2

    mean, spread = region.mean(0), region.std(0)
    missing = hole.astype(np.uint8)
    scene_mean = cv2.inpaint(np.clip(mean, 0, 255).astype(np.uint8), missing, 3,
                             cv2.INPAINT_TELEA).astype(np.float32)
    scale = 4.0  # the spread inpainted in quarter grey levels (8-bit images only)
    scene_spread = cv2.inpaint(np.clip(spread * scale, 0, 255).astype(np.uint8), missing, 3,
                               cv2.INPAINT_TELEA).astype(np.float32) / scale
    return mean, spread, scene_mean, scene_spread


def restore_moments(region: np.ndarray, hole: np.ndarray,
                    moments: tuple[np.ndarray, ...] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The scene behind a static semi-transparent mark from the frames' own variation.

    Under I_t = a*W + (1-a)*J_t, a pixel's temporal mean is a*W + (1-a)*mean(J) and its
    temporal spread (1-a)*spread(J), so J_t = mean(J) + (I_t - mean(I)) * spread(J) /
    spread(I): alpha and the mark's colour are estimated per pixel from all frames at once,
    given the scene's mean and spread there, which vary smoothly and come from the surround
    (`scene_moments`, or `moments` when given). Returns the region so restored and the
    pixels where it holds: not where the mark is opaque (its spread under 1 - OPAQUE of the
    scene's: nothing shows through) or the scene does not move (nothing to measure).
    """
    mean, spread, scene_mean, scene_spread = moments or scene_moments(region, hole)
    grey_spread, grey_scene = spread.mean(-1), scene_spread.mean(-1)
    restored = hole & (grey_scene >= 2.0) & (grey_spread >= (1.0 - OPAQUE) * grey_scene)
    # 1 / (1 - alpha), one for the three channels (alpha is): per-channel gains would tint
    # the fill wherever the channels' spreads are noisy
    gain = np.clip(grey_scene / np.maximum(grey_spread, 1e-3), 1.0, 1.0 / (1.0 - OPAQUE))
    return scene_mean + (region - mean) * gain[..., None], restored


def restore_behind(region: np.ndarray, hole: np.ndarray, letters: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The scene behind a semi-transparent mark, and where it holds: the blend inverted for
    a faint mark of one colour in bold letters (`matte.invert_faint_mark`, the whole
    hole), else the moments fill (`restore_moments`)."""
    moments = scene_moments(region, hole)
    inverted = invert_faint_mark(region, hole, letters, *moments)
    if inverted is not None:
        return inverted, hole.copy()
    return restore_moments(region, hole, moments)


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
    frames = check_frames(frames)
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
    bx0, by0, bx1, by1 = box_of(mask)
    box = grow_box((bx0, by0, bx1, by1), (height, width), pad, pad)
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
        grey, scale = shrink(frames, config.analysis_size)
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
    #    temporal moments from the frame's own variation, or invert a faint bold one.
    if len(frames) >= MIN_FRAMES_FOR_MATTING and not known.all():
        behind, restored = restore_behind(region, hole, detection.mask[y0:y1, x0:x1])
        restored = restored[None] & ~known
        filled[restored] = behind[restored]
        known |= restored
    # 5. What is still unknown (an opaque mark no frame reveals): the smoothest fill from
    #    around it, one solve for the frames that miss the same pixels.
    unknown = hole[None] & ~known
    groups: dict[bytes, list[int]] = {}
    for t in range(len(frames)):
        groups.setdefault(np.packbits(unknown[t]).tobytes(), []).append(t)
    for members in groups.values():
        region_filled = np.clip(filled[members], 0, 255).astype(np.uint8)
        if unknown[members[0]].any():
            region_filled = membrane_fill(region_filled, unknown[members[0]])
        for t, picture in zip(members, region_filled, strict=True):
            out[t, y0:y1, x0:x1][hole] = picture[hole]
    return (out[0] if single else out), "stripped"


FILL_FRAMES = 8  # frames solved at once: the float64 copies stay a few frames' size


def membrane_fill(images: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """`images` (N, h, w, C) with the pixels of `missing` (h, w) replaced by the smoothest
    surface that meets the rest at the hole's edge: Laplace's equation over the hole, each
    pixel the mean of its four neighbours (the images' own edge bounds it), factorised once
    and solved for every image and channel, FILL_FRAMES images at a time. What a hole hides
    is unknown, and a smooth fill errs least on average: on the real bench's 36 strips it
    gains 0.25 dB in the mark over OpenCV's Navier-Stokes inpainting, which carries the
    surround's edges into the hole (docs/watermarks.md, removal). Returns the images in
    their dtype (integers rounded). Every part of a hole meets a known pixel, unless nothing
    is known: then there is nothing to fill from, and the images are given back as they
    are."""
    import scipy.sparse as sparse
    from scipy.sparse.linalg import splu

    count, height, width, channels = images.shape
    if missing.all():
        return images
    ys, xs = np.nonzero(missing)
    index = np.full((height, width), -1)
    index[ys, xs] = np.arange(len(ys))
    degree = np.zeros(len(ys))
    inner_rows, inner_columns, edges = [], [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        degree += inside
        unknowns, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        hidden = missing[ny, nx]
        inner_rows.append(unknowns[hidden])
        inner_columns.append(index[ny[hidden], nx[hidden]])
        edges.append((unknowns[~hidden], ny[~hidden], nx[~hidden]))
    rows, columns = np.concatenate(inner_rows), np.concatenate(inner_columns)
    laplacian = (sparse.diags(degree)
                 - sparse.csr_matrix((np.ones(len(rows)), (rows, columns)),
                                     shape=(len(ys), len(ys))))
    solver = splu(laplacian.tocsc())
    out = images.copy()
    for start in range(0, count, FILL_FRAMES):
        part = images[start:start + FILL_FRAMES].astype(np.float64)
        values = np.zeros((len(ys), len(part) * channels))
        for unknowns, ny, nx in edges:  # each known neighbour adds its value
            known = part[:, ny, nx].transpose(1, 0, 2)
            np.add.at(values, unknowns, known.reshape(len(unknowns), len(part) * channels))
        solution = solver.solve(values).reshape(len(ys), len(part), channels)
        if np.issubdtype(out.dtype, np.integer):
            limits = np.iinfo(out.dtype)
            solution = np.clip(np.round(solution), limits.min, limits.max)
        out[start:start + len(part), ys, xs] = solution.transpose(1, 0, 2)
    return out


STRIP_AREA = 0.2  # a mask over this share of the frame is not stripped (priors.LARGE_AREA)
UNEXPLAINED = 6.0  # grey levels of temporal spread a strip may take away at a pixel
UNEXPLAINED_SHARE = 0.25  # share of the changed pixels allowed to lose more than that


def strip_damage(before: np.ndarray, after: np.ndarray, mask: np.ndarray,
                 margin: int) -> str | None:
    """Why a filled strip must not be kept, or None when its change can be a mark's.

    A mark changed the pixels under it, and only those, as `I_t = a*W + (1-a)*J_t` with
    one alpha `a` in [0, 1] and one colour `W` per pixel: it can only shrink the scene's
    temporal spread there (`spread(I) = (1-a) * spread(J)`). So a right strip (`after`, the
    estimate of J) changes nothing outside the mask grown by the margin, and varies over
    time at least as much as the input at every pixel it changed. The strip is refused when
    it changed pixels outside that support, when the mask covers more than STRIP_AREA of
    the frame (no mark is that large: detection refuses such boxes without text), or when
    over UNEXPLAINED_SHARE of the changed pixels lost more than UNEXPLAINED grey levels of
    temporal spread: no alpha explains that, the fill replaced content that moves on its own
    (a face, a hand) with a still surround.

    Args:
        before, after: RGB uint8 (T, H, W, 3), the input and the stripped frames.
        mask: the mark's mask (H, W) the strip used.
        margin: the mask margin the strip added (`WatermarkConfig.mask_margin`).
    """
    import cv2

    side = 2 * margin + 1
    support = cv2.dilate(mask.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    changed = np.zeros(before.shape[1:], bool)
    for frame_before, frame_after in zip(before, after, strict=True):  # no (T, H, W, 3) copy
        changed |= frame_before != frame_after
    changed = changed.any(-1)
    outside = int((changed & ~support).sum())
    if outside:
        return f"strip refused: it changed {outside} pixels outside the mark"
    if mask.mean() > STRIP_AREA:
        return f"strip refused: the mask covers {mask.mean():.0%} of the frame"
    if len(before) < 2 or not changed.any():
        return None
    spread_in = before[:, changed].astype(np.float32).mean(-1).std(0)
    spread_out = after[:, changed].astype(np.float32).mean(-1).std(0)
    lost = float((spread_in - spread_out > UNEXPLAINED).mean())
    if lost > UNEXPLAINED_SHARE:
        return (f"strip refused: it took away motion no mark explains at {lost:.0%} of the "
                "changed pixels")
    return None


def strip(frames: np.ndarray, detection: Detection, config: WatermarkConfig
          ) -> tuple[np.ndarray, str, str]:
    """Remove the mark, unless the result would damage the clip (`strip_damage`).

    Returns:
        the frames to keep (the input, unchanged, when refused or when there is no mask),
        the action ("stripped", "cropped" or "flagged") and its reason ("" when stripped
        or cropped).
    """
    cleaned, how = remove_watermark(frames, detection, config)
    if how == "none":
        return frames, "flagged", "no mask to strip"
    if how == "stripped":
        damage = strip_damage(check_frames(frames), check_frames(cleaned), detection.mask,
                              config.mask_margin)
        if damage:
            return frames, "flagged", damage
    return cleaned, how, ""
