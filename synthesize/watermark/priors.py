"""Priors every mark follows, each set by a measurement (docs/watermarks.md): its size (the
whole frame is never a mark), its place (corners, edges, centred text) and that it lies over
content (a line alone on a plain frame is a title card's, the frame's own content)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthesize.watermark.evidence import EDGE_SLOPE, slopes
from synthesize.watermark.look import centred

WHOLE_FRAME = 0.5  # share of the frame's area: a box this large is never a mark
LARGE_AREA = 0.25  # share of the frame's area over which a box needs text evidence too
LARGE_SIDE = 0.55  # share of the frame's height over which a box needs text evidence too
NARROW = 0.6  # a box narrower than this share of its height (a pillar, a door frame, the edge
#               of a person) is no text line or compact logo: it needs text evidence too
EDGE_BAND = 0.25  # share of the frame from one edge: text inside such a band sits on an edge
CORNER = 0.3  # a box whose centre lies this near two edges sits in a corner
PLACE_ELSEWHERE = 0.5  # the place prior for text anywhere else
CENTRED_WIDE = 0.2  # share of the frame's width a centred line mid-frame spans to be placed
#                     as a mark's (a stock site's or a preview's word across the picture)
CARD_CONTENT = 0.005  # share of a frame's pixels on edges outside a line mid-frame, under which
#                       the line is all the frame shows: a title or end card's text


def size_class(box: tuple[int, int, int, int], shape: tuple[int, int]) -> str:
    """"whole" (never a mark), "large" or narrow (needs text evidence too), or "fits"."""
    height, width = shape
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0) / (height * width)
    if area >= WHOLE_FRAME:
        return "whole"
    if area > LARGE_AREA or (y1 - y0) > LARGE_SIDE * height or (x1 - x0) < NARROW * (y1 - y0):
        return "large"
    return "fits"


def place_prior(box: tuple[int, int, int, int], shape: tuple[int, int]) -> float:
    """1 for a box in a corner, in a band along an edge, or centred and wide (CENTRED_WIDE);
    PLACE_ELSEWHERE else. A short line mid-frame is more often the scene's than a mark's:
    photographers centre their subject, and the subject's shirt or mug carries a print
    ("LAS VEGAS NV" across 13% of a beach photo's width)."""
    if by_an_edge(box, shape):
        return 1.0
    wide = box[2] - box[0] >= CENTRED_WIDE * shape[1]
    return 1.0 if wide and centred(box, shape[1]) else PLACE_ELSEWHERE


def by_an_edge(box: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """Whether `box` lies in a corner (its centre within CORNER of two edges) or in a band
    along an edge (EDGE_BAND), where bugs, captions and credits sit."""
    height, width = shape
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    corner = min(cx, 1 - cx) < CORNER and min(cy, 1 - cy) < CORNER
    return corner or (y1 <= EDGE_BAND * height or y0 >= (1 - EDGE_BAND) * height
                      or x1 <= EDGE_BAND * width or x0 >= (1 - EDGE_BAND) * width)


def title_card(image: np.ndarray, box: tuple[int, int, int, int],
               text: Sequence[tuple[int, int, int, int]] = ()) -> bool:
    """Whether a line mid-frame (not by an edge) and the frame's other `text` (boxes of
    lines that read: a card's title and subtitle) are all the frame shows: under
    CARD_CONTENT of the pixels outside them (and half a line height round each) lie on edges
    steeper than EDGE_SLOPE. A mark is laid over content; text alone on a plain ground is
    the frame's content, a title or end card ("THANKS FOR WATCHING" on a flat grey in
    gradio's `a.mp4`: 0.2% of its pixels on edges; the sparsest real photo of the bench, a
    horse's silhouette, 3.2%). A line by an edge (a subtitle or a bug over a black frame)
    is judged as ever."""
    import cv2

    if by_an_edge(box, image.shape[:2]):
        return False
    gx, gy = slopes(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)[None])
    slope = np.hypot(gx[0], gy[0])
    outside = np.ones(slope.shape, bool)
    for x0, y0, x1, y1 in [box, *text]:
        pad = (y1 - y0) // 2
        outside[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = False
    return bool(outside.any()) and float((slope[outside] > EDGE_SLOPE).mean()) < CARD_CONTENT
