"""The plate a mark's text sits on: a channel bug's or a caption's box of one colour.

A channel bug is a word on a filled box ("HD 1" in white on red). The text evidence finds
the word, and a strip of the word alone leaves the box in the clip. `plate_under` finds the
box: the colour around the letters, where it is one colour, and the rectangle of that colour
around them, kept only when it ends all round, close to the line. The measurements that
set each constant are in docs/watermarks.md.
"""

from __future__ import annotations

import numpy as np

from synthesize.watermark.frames import box_of, grow_box
from synthesize.watermark.look import robust_spread
from synthesize.watermark.text import TextBox

PLATE_SPREAD = 16.0  # grey levels: the letters' surround spreading more is the scene
PLATE_KEEP = 3.0  # plate spreads: how far from the plate's colour its pixels may lie
PLATE_COLOUR = 10.0  # grey levels (the channels' mean): the least such distance
PLATE_FILL = 0.5  # share of a row or column of the plate's colour: the plate goes on
PLATE_REACH = 1.0  # heights of the line's box (grown): a plate ends within this far of it
LETTER_RIM_FROM = 16  # px: shorter letters' rims are 1 px (2 px hid a 160x120 clip's plate)


def plate_under(image: np.ndarray, line: TextBox, strokes: np.ndarray) -> np.ndarray | None:
    """The mask of the plate under a mark's line, its letters included, or None.

    The box of the letters (`strokes`) less the letters (that box grown by a quarter of its
    height, where it is tight on bold letters and holds little else) is the plate's colour
    when it spreads under PLATE_SPREAD (`robust_spread`); a word over the scene has the
    scene around its letters. A pixel within PLATE_KEEP spreads of that colour
    (PLATE_COLOUR grey levels at least), or a letter's, is the plate's. The plate is the
    rectangle a bug is: from the letters' box, an edge row or column holding under
    PLATE_FILL of such pixels is cut (letters the line took from the scene beside the
    plate), then the rectangle grows by each row or column outside it holding PLATE_FILL
    of them. A rectangle, not the pixels of that colour: the scene beside a bug that is
    of its colour (a shadow, a pipe) joined those pixels and carried the plate to the
    frame's edge, and a bug over a moving scene lets that scene show through in places.
    A plate ends: one that reaches PLATE_REACH heights of the grown box from it, or the
    frame's edge, is a stretch of the scene of one colour, a sky or a wall, and is refused,
    as is one that adds nothing to the line's box. A bug sits a margin in from the frame's
    edges; a bar across the whole frame is refused with the scene.

    Args:
        image: RGB uint8 (H, W, 3), the frame the line was found on.
        line: the mark's line.
        strokes: (H, W) bool, the line's strokes.
    """
    import cv2

    height, width = image.shape[:2]
    core = box_of(strokes) or line.box
    pad = max(2, (core[3] - core[1]) // 4)  # a box tight on bold letters holds little else
    x0, y0, x1, y1 = grow_box(core, (height, width), pad, pad)
    reach = max(2, round(PLATE_REACH * (y1 - y0)))
    wx0, wy0, wx1, wy1 = grow_box((x0, y0, x1, y1), (height, width), reach, reach)
    window = image[wy0:wy1, wx0:wx1].astype(np.float32)
    # the letters' anti-aliased rims, 2 px out, 1 px for letters under LETTER_RIM_FROM tall
    rim = 5 if core[3] - core[1] >= LETTER_RIM_FROM else 3
    letters = cv2.dilate(strokes[wy0:wy1, wx0:wx1].astype(np.uint8),
                         np.ones((rim, rim), np.uint8)) > 0
    left, top, right, bottom = core[0] - wx0, core[1] - wy0, core[2] - wx0, core[3] - wy0
    surround = np.zeros(letters.shape, bool)
    surround[top:bottom, left:right] = True
    surround &= ~letters
    if surround.sum() < 16:
        surround[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = True
        surround &= ~letters
        if surround.sum() < 16:
            return None
    colours = window[surround]
    spread = robust_spread(colours)
    if spread > PLATE_SPREAD:
        return None
    tolerance = max(PLATE_KEEP * spread, PLATE_COLOUR)
    near = np.abs(window - np.median(colours, 0)).mean(2) <= tolerance
    left, top, right, bottom = _rectangle(near, letters, (left, top, right, bottom))
    rows, columns = near.shape
    if top == 0 or left == 0 or bottom == rows or right == columns:
        return None
    x0, y0, x1, y1 = left + wx0, top + wy0, right + wx0, bottom + wy0
    if x0 >= line.x0 and y0 >= line.y0 and x1 <= line.x1 and y1 <= line.y1:
        return None  # within the line's box: nothing to add
    mask = strokes.copy()
    mask[y0:y1, x0:x1] = True
    return mask


def _rectangle(near: np.ndarray, letters: np.ndarray, box: tuple[int, int, int, int]
               ) -> tuple[int, int, int, int]:
    """The rectangle of the plate's colour around the letters' `box` (left, top, right,
    bottom, in the arrays' coordinates). Edges whose pixels other than letters are under
    PLATE_FILL of the colour (none: a stroke of the scene) are cut; then rows and columns
    of which PLATE_FILL are of the colour or letters are added, a side at a time, up to
    the arrays' edge."""
    def share(y0: int, y1: int, x0: int, x1: int) -> float:
        others = ~letters[y0:y1, x0:x1]
        return float(near[y0:y1, x0:x1][others].mean()) if others.any() else 0.0

    left, top, right, bottom = box
    while right - left > 1 and share(top, bottom, left, left + 1) < PLATE_FILL:
        left += 1
    while right - left > 1 and share(top, bottom, right - 1, right) < PLATE_FILL:
        right -= 1
    while bottom - top > 1 and share(top, top + 1, left, right) < PLATE_FILL:
        top += 1
    while bottom - top > 1 and share(bottom - 1, bottom, left, right) < PLATE_FILL:
        bottom -= 1
    plate_like = near | letters
    rows, columns = plate_like.shape
    grew = True
    while grew:
        grew = False
        if left > 0 and plate_like[top:bottom, left - 1].mean() >= PLATE_FILL:
            left, grew = left - 1, True
        if right < columns and plate_like[top:bottom, right].mean() >= PLATE_FILL:
            right, grew = right + 1, True
        if top > 0 and plate_like[top - 1, left:right].mean() >= PLATE_FILL:
            top, grew = top - 1, True
        if bottom < rows and plate_like[bottom, left:right].mean() >= PLATE_FILL:
            bottom, grew = bottom + 1, True
    return left, top, right, bottom


def plate_around(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """`plate_under` for a mark the motion evidence found: its mask (a matte, tight on the
    letters of a bug) stands for the strokes, and its box for the line."""
    return plate_under(image, TextBox(*box_of(mask), 1.0), mask)
