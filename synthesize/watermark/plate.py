"""The plate a mark's text sits on: a channel bug's or a caption's box of one colour.

A channel bug is a word on a filled box ("HD 1" in white on red). The text evidence finds
the word, and a strip of the word alone leaves the box in the clip. `plate_under` finds the
box: the colour around the letters, where it is one colour, grown over the pixels of that
colour near the line, and kept only when it ends all round, close to the line. The
measurements that set each constant are in docs/watermarks.md.
"""

from __future__ import annotations

import numpy as np

from synthesize.watermark.frames import box_of, fill_holes, grow_box
from synthesize.watermark.look import robust_spread
from synthesize.watermark.text import TextBox

PLATE_SPREAD = 16.0  # grey levels: the letters' surround spreading more is the scene
PLATE_KEEP = 3.0  # plate spreads: how far from the plate's colour its pixels may lie
PLATE_COLOUR = 6.0  # grey levels (the channels' mean): the least such distance
PLATE_REACH = 1.0  # heights of the line's box (grown): a plate ends within this far of it


def plate_under(image: np.ndarray, line: TextBox, strokes: np.ndarray) -> np.ndarray | None:
    """The mask of the plate under a mark's line, its letters included, or None.

    The line's box less its strokes (the box grown by a quarter of its height, where it is
    tight on bold letters and holds little else) is the plate's colour when it spreads under
    PLATE_SPREAD (`robust_spread`); a word over the scene has the scene around its letters.
    The pixels within PLATE_KEEP spreads of that colour (PLATE_COLOUR grey levels at least)
    that join the box's make the plate. A plate ends: one that reaches PLATE_REACH heights
    of that box from it, or the frame's edge, is a stretch of the scene of the same colour,
    a sky or a wall, and is refused, as is one that adds nothing to the line's box.
    A bug sits a margin in from the frame's edges; a bar across the whole frame is refused
    with the scene.

    Args:
        image: RGB uint8 (H, W, 3), the frame the line was found on.
        line: the mark's line.
        strokes: (H, W) bool, the line's strokes.
    """
    import cv2

    height, width = image.shape[:2]
    pad = max(2, (line.y1 - line.y0) // 4)  # a box tight on bold letters holds little else
    x0, y0, x1, y1 = grow_box(line.box, (height, width), pad, pad)
    reach = max(2, round(PLATE_REACH * (y1 - y0)))
    wx0, wy0, wx1, wy1 = grow_box((x0, y0, x1, y1), (height, width), reach, reach)
    window = image[wy0:wy1, wx0:wx1].astype(np.float32)
    letters = cv2.dilate(strokes[wy0:wy1, wx0:wx1].astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    surround = np.zeros(letters.shape, bool)
    surround[line.y0 - wy0:line.y1 - wy0, line.x0 - wx0:line.x1 - wx0] = True
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
    near = (np.abs(window - np.median(colours, 0)).mean(2) <= tolerance) & ~letters
    _, labels = cv2.connectedComponents(near.astype(np.uint8), connectivity=4)
    joined = np.unique(labels[surround & near])
    plate = np.isin(labels, joined[joined > 0]) | letters
    plate = fill_holes(plate)
    rows, columns = np.nonzero(plate)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    if top == 0 or left == 0 or bottom == plate.shape[0] or right == plate.shape[1]:
        return None
    if (top >= line.y0 - wy0 and bottom <= line.y1 - wy0 and left >= line.x0 - wx0
            and right <= line.x1 - wx0):
        return None  # within the line's box: nothing to add
    mask = np.zeros((height, width), bool)
    mask[wy0:wy1, wx0:wx1] = plate
    return mask | strokes


def plate_around(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """`plate_under` for a mark the motion evidence found: its mask (a matte, tight on the
    letters of a bug) stands for the strokes, and its box for the line."""
    return plate_under(image, TextBox(*box_of(mask), 1.0), mask)
