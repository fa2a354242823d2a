"""A faint mark of one colour in bold letters over a textured scene, taken out by inverting
its blend.

Under a semi-transparent overlay, `I_t = alpha*W + (1 - alpha)*J_t` with one colour `W` and,
per pixel, `alpha = a * coverage`: the mark's opacity times how much of the pixel its
letters cover. Knowing both, `J_t = (I_t - alpha*W) / (1 - alpha)` gives the scene back with
its texture, where the moments fill (`removal.restore_moments`) inpaints the scene's mean
and so smooths it: the real bench's large faint words over textured scenes came back 4 to
18 dB short of what inversion gives (docs/watermarks.md, removal).

The coverage is solved as a matte (Levin, Lischinski and Weiss, "A Closed-Form Solution to
Natural Image Matting", 2008) over the clip's mean picture: 1 on the letters' cores, 0
outside the mask, the edges in between from the local linear colour model. A coverage error
at an edge costs `a * |W - J| / (1 - a)` times itself, so the inversion is used only where
it measured a gain: strokes whose cores pin the matte, an opacity it can measure and whose
errors it does not magnify much, one colour, and a textured surround (over a flat one,
inpainting the mean loses little). Anything else keeps the moments fill.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

CORE_SHARE = 0.3  # the letters' cores (the mask eroded CORE_DEPTH px) must be this share of it
CORE_DEPTH = 2  # the mask is the strokes grown 1 px: its cores lie 1 px inside them
FAINTEST, STRONGEST = 0.15, 0.6  # the opacities inverted: above, errors grow by 1/(1 - a)
COLOUR_SPREAD = 25.0  # grey levels: one colour must explain the cores to within this
COLOUR_SLACK = 10.0  # grey levels past 0..255 a fitted colour may reach (noise, not a mark)
MIN_CORE_PIXELS = 200
FLAT_SURROUND = 3.0  # median Sobel magnitude of the mean picture around the hole: below, flat
MATTE_EPSILON = 1e-7  # the matting Laplacian's regulariser (the paper's value)


def matting_laplacian(image: np.ndarray, rows: np.ndarray) -> csr_matrix:
    """The closed-form matting Laplacian of `image` (h, w, 3, floats 0..1), over its 3x3
    windows whose centre is in `rows` (h, w) bool: only those touch the unknown pixels."""
    import scipy.sparse as sparse
    from numpy.lib.stride_tricks import sliding_window_view

    height, width, _ = image.shape
    index = np.arange(height * width).reshape(height, width)
    centres = rows[1:-1, 1:-1]
    windows = sliding_window_view(image, (3, 3), axis=(0, 1))[centres]  # (n, 3, 3, 3)
    windows = windows.reshape(-1, 3, 9).transpose(0, 2, 1)  # (n, 9, 3)
    ids = sliding_window_view(index, (3, 3))[centres].reshape(-1, 9)
    deviation = windows - windows.mean(1, keepdims=True)
    covariance = np.einsum("nki,nkj->nij", deviation, deviation) / 9
    inverse = np.linalg.inv(covariance + (MATTE_EPSILON / 9) * np.eye(3))
    affinity = (1 + np.einsum("nki,nij,nlj->nkl", deviation, inverse, deviation)) / 9
    values = np.eye(9)[None] - affinity
    row_ids = np.repeat(ids[:, :, None], 9, 2).ravel()
    column_ids = np.repeat(ids[:, None, :], 9, 1).ravel()
    return sparse.csr_matrix((values.ravel(), (row_ids, column_ids)),
                             shape=(height * width, height * width))


def letter_coverage(image: np.ndarray, cores: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """How much of each pixel the letters cover (h, w, 0..1): 1 on `cores`, 0 on `outside`,
    between them the matte that the local linear colour model fits to `image` (RGB floats
    0..255)."""
    import cv2
    from scipy.sparse.linalg import spsolve

    known = cores | outside
    # every 3x3 window with an unknown pixel in it
    touching = cv2.dilate((~known).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    laplacian = matting_laplacian(image / 255.0, touching).tocsc()
    unknown = np.flatnonzero(~known)
    fixed = np.flatnonzero(known)
    values = cores.ravel()[fixed].astype(float)
    # L_uu c_u = -L_uk c_k: the known values held exactly
    right = -(laplacian[unknown][:, fixed] @ values)
    solved = spsolve(laplacian[unknown][:, unknown].tocsc(), right)
    coverage = cores.astype(float).ravel()
    coverage[unknown] = solved
    return np.clip(coverage.reshape(cores.shape), 0.0, 1.0)


def surround_texture(mean: np.ndarray, hole: np.ndarray) -> float:
    """The median gradient (Sobel magnitude, grey) of the mean picture in a 5 px ring
    around the hole: how much texture inpainting the scene's mean over the hole loses."""
    import cv2

    grey = mean.mean(-1).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    ring = cv2.dilate(hole.astype(np.uint8), np.ones((11, 11), np.uint8)) > 0
    ring &= ~hole
    return float(np.median(gradient[ring])) if ring.any() else 0.0


def invert_faint_mark(region: np.ndarray, hole: np.ndarray, letters: np.ndarray,
                      mean: np.ndarray, spread: np.ndarray, scene_mean: np.ndarray,
                      scene_spread: np.ndarray) -> np.ndarray | None:
    """The scene behind a faint one-colour mark in bold letters, or None when the mark is
    not one: its letters too thin for their cores to pin the matte (CORE_SHARE), its
    opacity outside FAINTEST..STRONGEST (under FAINTEST the spread did not show the mark:
    a still scene), its cores not one colour (COLOUR_SPREAD) or of a colour no pixel has
    (past 0..255 by COLOUR_SLACK: the opacity was measured wrong), or its surround flat
    (FLAT_SURROUND).

    Args:
        region: the frames around the mark (T, h, w, 3) float32.
        hole: the pixels to restore (the mask grown by its margin), (h, w) bool.
        letters: the mark's own mask, (h, w) bool.
        mean, spread: the region's temporal mean and spread, (h, w, 3) each.
        scene_mean, scene_spread: the same inpainted over the hole: the scene's
            (`removal.scene_moments` gives all four).

    The opacity comes from the spread the letters' cores keep of the scene's (where the
    scene moves at least 2 grey levels), the colour from their mean; both as medians, so a
    few cores over a moving edge do not move them.
    """
    import cv2

    side = 2 * CORE_DEPTH + 1
    cores = cv2.erode(letters.astype(np.uint8), np.ones((side, side), np.uint8)) > 0
    if cores.sum() < MIN_CORE_PIXELS or cores.sum() < CORE_SHARE * letters.sum():
        return None
    grey_spread, scene = spread.mean(-1), scene_spread.mean(-1)
    measured = cores & (scene >= 2.0)
    if measured.sum() < MIN_CORE_PIXELS // 10:
        return None
    opacity = float(1.0 - np.median(np.clip(grey_spread[measured] / scene[measured], 0.0,
                                            1.5)))
    if not FAINTEST <= opacity <= STRONGEST:
        return None
    colours = (mean[cores] - (1.0 - opacity) * scene_mean[cores]) / opacity
    colour = np.median(colours, axis=0)
    if (colour < -COLOUR_SLACK).any() or (colour > 255 + COLOUR_SLACK).any():
        return None
    if np.median(np.abs(colours - colour).mean(-1)) > COLOUR_SPREAD:
        return None
    if surround_texture(mean, hole) < FLAT_SURROUND:
        return None
    outside = ~(cv2.dilate(hole.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    alpha = opacity * letter_coverage(mean, cores, outside)
    alpha = alpha[None, ..., None].astype(np.float32)
    return (region - alpha * colour.astype(np.float32)) / (1.0 - alpha)
