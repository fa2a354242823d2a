"""The look of a line of text: whether its strokes are an overlay's, one colour at one
alpha (`stroke_look`), and the whole of a mark's line where the text detector boxed a part of
it (`complete_line`). The measurements that set each constant are in docs/watermarks.md."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import NamedTuple

import numpy as np

from synthesize.watermark.text import (
    READS,
    TextBox,
    on_one_line,
    read_characters,
    read_line,
    union,
)

STROKE_KERNELS = (1.0, 0.35)  # the look's stroke kernels, as shares of the line's height
LOOK_SPREAD = 48.0  # grey levels: text strokes whose cores spread this much are not one colour
INK_SHARE = 0.7  # a mark's strokes over more of its line's box are the ground between letters
MIN_ALPHA = 0.3  # the faintest blend the look models (the least opacity of a mark)


def stroke_look(image: np.ndarray, box: tuple[int, int, int, int], ink_only: bool = False
                ) -> tuple[float, np.ndarray]:
    """How much the text in `box` looks like an overlay's, in [0, 1], and its strokes' mask
    at the image's size (`ink_only` as for `line_strokes`).

    Strokes are bright (top-hat) or dark (black-hat) structures thinner than a square
    kernel, as tall as the box or a share of it (STROKE_KERNELS); an overlay's are one colour
    at one alpha, so their cores (the stronger half of the response) spread little, once
    what shows through is allowed for (`_blend_spread`): look = 1 - spread / LOOK_SPREAD (0
    from LOOK_SPREAD grey levels on). Of the two polarities the more uniform one is the text
    (the other picks the gaps between letters, which show the varied scene). The box-tall
    kernel takes a bold word's whole strokes; under it the bright stones of gravel half the
    line's height pass as strokes too, and outnumber a thin serif word's, which the narrow
    kernel keeps alone. Printed scene text is one colour too, but lit, shaded and seen at an
    angle.
    """
    import cv2

    x0, y0, x1, y1 = box
    mask = np.zeros(image.shape[:2], bool)
    fit = line_strokes(image, box, ink_only)
    if fit is None:
        return 0.0, mask
    grown = cv2.dilate(fit.strokes.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    mask[y0:y1, x0:x1] = grown
    return max(0.0, fit.look), mask


class StrokeFit(NamedTuple):
    """The strokes `stroke_look` judged a line on: their look, mask (the box's size), the
    morphology that found them (kernel side, top-hat or black-hat, response level) and the
    median colour of their cores."""

    look: float
    strokes: np.ndarray
    side: int
    operation: int
    level: float
    colour: np.ndarray


def line_strokes(image: np.ndarray, box: tuple[int, int, int, int], ink_only: bool = False
                 ) -> StrokeFit | None:
    """The most uniform strokes in `box` over STROKE_KERNELS and both polarities (see
    `stroke_look`), or None when no response stands out. With `ink_only` (`letters_only`),
    strokes that are the ground between letters are passed over: those over INK_SHARE of
    the box, and over a scene of one colour around the box those whose cores are of its
    colour (`is_ground`)."""
    import cv2

    x0, y0, x1, y1 = box
    patch = image[y0:y1, x0:x1]
    if min(patch.shape[:2]) < 3:
        return None
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY)
    scene = uniform_surround(image, box) if ink_only else None
    best = None
    for share, operation in itertools.product(STROKE_KERNELS,
                                              (cv2.MORPH_TOPHAT, cv2.MORPH_BLACKHAT)):
        side = max(3, int(share * (y1 - y0)) // 2 * 2 + 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
        response = cv2.morphologyEx(grey, operation, kernel).astype(np.float32)
        level = stroke_level(response)
        strokes = response > level
        if strokes.sum() < 5 or (ink_only and strokes.mean() > INK_SHARE):
            continue
        cores = strokes & (response >= np.median(response[strokes]))
        colour = np.median(patch[cores].astype(np.float32), 0)
        if scene is not None and is_ground(colour, scene):
            continue
        look = 1.0 - _blend_spread(patch, strokes, cores) / LOOK_SPREAD
        if best is None or look > best.look:
            best = StrokeFit(look, strokes, side, operation, level, colour)
    return best


GROUND = 16.0  # grey levels (the channels' mean): cores this near a uniform scene's colour
SURROUND_SPREAD = 12.0  # grey levels: a surround spreading more is not one colour


def uniform_surround(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray | None:
    """The colour of the scene around `box` (a band a quarter of its height wide, 3 pixels
    at least, outside it), when that band is one colour (`robust_spread` under
    SURROUND_SPREAD); else None."""
    x0, y0, x1, y1 = box
    band = max(3, (y1 - y0) // 4)
    outer = image[max(0, y0 - band):y1 + band, max(0, x0 - band):x1 + band]
    inside = np.zeros(outer.shape[:2], bool)
    inside[y0 - max(0, y0 - band):y1 - max(0, y0 - band),
           x0 - max(0, x0 - band):x1 - max(0, x0 - band)] = True
    colours = outer[~inside].astype(np.float32)
    if len(colours) < 16 or robust_spread(colours) > SURROUND_SPREAD:
        return None
    return np.median(colours, 0)


def is_ground(colour: np.ndarray, scene: np.ndarray) -> bool:
    """Whether strokes' core `colour` is the surrounding scene's (within GROUND): the
    ground between letters, not the letters."""
    return float(np.abs(colour - scene).mean()) < GROUND


def stroke_level(response: np.ndarray) -> float:
    """The response a stroke's pixel stands above: half the 95th percentile of the
    morphology's response, 16 grey levels at least."""
    return max(16.0, 0.5 * float(np.percentile(response, 95)))


LINE_REACH = 1.0  # line heights: a gap in a line's strokes this wide ends the line
LINE_CUT = 0.5  # line heights: a piece this short running on from the box ends a cut letter
LINE_DOUBT = 0.05  # the recogniser's confidence a line may lose by a piece joining it
LINE_COLOUR = 24.0  # grey levels (the channels' mean) from the line's stroke colour


def complete_line(image: np.ndarray, line: TextBox, mask: np.ndarray
                  ) -> tuple[TextBox, np.ndarray]:
    """The whole of a mark's line, where the text detector boxed only part of it.

    Over a busy scene the detector boxes words of a line apart, or a piece of one word
    ("Harb" of "(c) Harbour Footage" in a thin serif over vtest's building), and a strip
    of that box would leave the rest of the mark. Along the line's rows, strokes found by
    the same morphology as the line's own (`line_strokes`) and of its colour (LINE_COLOUR)
    make pieces (runs of columns); the nearest piece on either side, no further than
    LINE_REACH line heights, joins the line when the line with it still reads on
    (`_reads_on`), and so on outwards. The scene's strokes of the mark's colour in those
    rows (window frames, a railing) do not read on. Returns the line and its strokes'
    mask, grown."""
    import cv2

    fit = line_strokes(image, line.box)
    if fit is None:
        return line, mask
    x0, y0, x1, y1 = line.box
    band = image[y0:y1]
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (fit.side, fit.side))
    response = cv2.morphologyEx(cv2.cvtColor(band, cv2.COLOR_RGB2GRAY), fit.operation, kernel)
    near = np.abs(band.astype(np.float32) - fit.colour).mean(2) <= LINE_COLOUR
    strokes = (response.astype(np.float32) > fit.level) & near
    reach = max(1, round(LINE_REACH * (y1 - y0)))
    cut = round(LINE_CUT * (y1 - y0))
    pieces = _pieces(strokes.sum(0) >= 2, max(1, reach // 3))
    read = _read(image, line.box)
    left, right = x0, x1
    for start, end in sorted((max(x1, a), b) for a, b in pieces if b > x1):
        if start - right > reach:
            break
        longer = _read(image, (left, y0, end, y1))
        if _reads_on(longer, read, start == x1 and end - start <= cut):
            right, read = end, longer
        elif start > x1:  # a piece apart from the box that does not read on ends the line
            break
    for start, end in sorted(((a, min(x0, b)) for a, b in pieces if a < x0), reverse=True):
        if left - end > reach:
            break
        longer = _read(image, (start, y0, right, y1))
        if _reads_on(longer, read, end == x0 and end - start <= cut):
            left, read = start, longer
        elif end < x0:
            break
    if (left, right) == (x0, x1):
        return line, mask
    grown = mask.copy()
    added = cv2.dilate(strokes[:, left:right].astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    grown[y0:y1, left:right] |= added
    return TextBox(left, y0, right, y1, line.score), grown


WIDENING_PAD = 0.25  # line heights of margin a widened line is read with (its end letters)
MOST_ADDED = 1.5  # a centred word's part is widened by this many times its width at most
PART_LETTERS = 3  # letters a centred word's part reads, at least (its pitch; see centred_word)


def centred_word(image: np.ndarray, line: TextBox) -> TextBox:
    """`line`, widened to the centred word it is a part of, when it is one.

    A large word centred on the frame runs over parts of the scene that differ: a white
    "PREVIEW" at 0.35 over bigbuckbunny's still shot is boxed "PRE" over the grey rabbit
    (the text detector's probability over "VIEW", over foliage, is 0), and `complete_line`
    cannot carry it on, as "VIEW"'s strokes take the foliage's colours.

    The line is read again from its outer end to that end's mirror image about the
    frame's centre line when it reads PART_LETTERS letters or more (two give no pitch to
    judge by) and the mirror adds two letter pitches or more, but no more than MOST_ADDED
    times its width (the part found holds 40% of the word or more: a corner's line is not
    read across the frame), and ends a pitch or more inside the frame. The line is the
    word's part when the wider box reads its letters on their side (but the one its box
    cut, which may read as another: "SAN" of "SAM") and, with no space, letters along the
    rest, one for every two pitches added, at READS or more on average (PaddleOCR's
    drop_score). Over a busy scene the recogniser reads a thin letter as nothing
    ("PREVEW") and the letter where the scene changes doubtfully ("SAMBLE", its "B" at
    0.36). The scene beside a word reads as a letter now and then (astronaut's suit as an
    "A" at 0.72 before an off-centre "STOCK"), as a run seldom, and mostly as a
    word apart (the brick photo's mortar as "HH" before "SAMPLE").
    """
    width = image.shape[1]
    x0, y0, x1, y1 = line.box
    left, right = max(0, min(x0, width - x1)), min(width, max(x1, width - x0))
    added = (right - left) - (x1 - x0)
    if added > MOST_ADDED * (x1 - x0):
        return line
    letters = [c for c in read_characters(image, line.box) if c[0].isalnum()]
    if len(letters) < PART_LETTERS:
        return line
    pitch = (letters[-1][2] - letters[0][2]) / (len(letters) - 1)
    if pitch <= 0 or added < 2 * pitch or left < pitch:  # a centred word ends inside the frame
        return line
    pad = round(WIDENING_PAD * (y1 - y0))
    wider = read_characters(image, (max(0, left - pad), y0, min(width, right + pad), y1))
    own = "".join(c[0] for c in letters)
    read = "".join(c[0] for c in wider if c[0].isalnum())
    # the line's letters, but the one its box cut, which may read as another ("SAN" of "SAM")
    kept = read[:len(own) - 1] == own[:-1] if left == x0 else read[-len(own) + 1:] == own[1:]
    if len(read) <= len(own) or not kept:
        return line
    alnum = [i for i, c in enumerate(wider) if c[0].isalnum()]
    new = wider[alnum[len(own) - 1] + 1:] if left == x0 else wider[:alnum[-len(own)]]
    added_letters = [p for c, p, _ in new if c.isalnum()]
    if (any(c.isspace() for c, _, _ in new) or len(added_letters) < added / (2 * pitch)
            or np.mean(added_letters) < READS):
        return line
    return replace(line, x0=left, x1=right)


CENTRED = 0.1  # a box whose centre lies this near the vertical centre line is centred


def centred(box: tuple[int, int, int, int], width: int) -> bool:
    """Whether `box`'s centre lies within CENTRED of the frame's width of its centre line."""
    return abs((box[0] + box[2]) / 2 / width - 0.5) < CENTRED


def centred_parts(image: np.ndarray, boxes: list[TextBox]) -> list[TextBox]:
    """`boxes`, with every pair of them that are two parts of one word centred on the frame
    joined into that word's line. Over a busy photo the detector boxes a large, faint centred
    word in pieces with nothing between them ("PR" and "EV" of "PREVIEW" at 0.3 over coffee
    cups, "WA" and "MAR" of "WATERMARK"), each too short or off the centre line to judge.

    Two boxes on one line, apart, whose joined box is centred (`centred`), are one word
    when the joined box reads, at READS or more on average, a letter at every pitch of the
    parts' between them but one (a thin letter over the scene is read as nothing:
    "PREVEW"). The scene between two pieces reads as letters now and then, not at a word's
    pace (the brick wall's mortar reads "HHH" across 4.8 pitches between a "TV" and an
    "HD"), and a space between two words is no letter."""
    width = image.shape[1]
    joined = []
    ordered = sorted(boxes, key=lambda b: b.x0)
    letters_of: dict[TextBox, int] = {}  # each box is read once, however many pairs it is in
    for i, left in enumerate(ordered):
        for right in ordered[i + 1:]:
            gap = right.x0 - left.x1
            whole = union([left, right])
            if gap <= 0 or not on_one_line(left, right) or not centred(whole.box, width):
                continue
            for box in (left, right):
                if box not in letters_of:
                    letters_of[box] = sum(c.isalnum() for c, _, _ in
                                          read_characters(image, box.box))
            parts = letters_of[left] + letters_of[right]
            if not parts:
                continue
            pitch = ((left.x1 - left.x0) + (right.x1 - right.x0)) / parts
            pad = round(WIDENING_PAD * (whole.y1 - whole.y0))
            read = read_characters(image, (max(0, whole.x0 - pad), whole.y0,
                                           min(width, whole.x1 + pad), whole.y1))
            letters = [p for c, p, _ in read if c.isalnum()]
            between = [x for c, _, x in read if c.isalnum() and left.x1 <= x < right.x0]
            if letters and len(between) >= gap / pitch - 1 and np.mean(letters) >= READS:
                joined.append(whole)
    return [*boxes, *joined]


STRETCH = 2.0  # line heights: the stretch of a found line whose strokes are levelled alone


def strokes_along(image: np.ndarray, box: tuple[int, int, int, int], ink_only: bool = False
                  ) -> np.ndarray | None:
    """The strokes of a found mark's line for its mask, at the image's size (None when
    `line_strokes` finds none), with the line's morphology but a level of its own in each
    stretch of STRETCH line heights. `line_strokes` levels the whole box on its strongest
    response, the part of a faint line over a flat, light part of the scene: "(c) Studio
    Nine Films" in white at 0.5 over bigbuckbunny's sky and grass had "Nine Films", over
    the grass, masked at 0.4 of its pixels, and the strip left it readable. The scene's
    strokes of the stretch (grass blades) join the mask too, and are filled. `ink_only` as
    for `line_strokes`."""
    import cv2

    fit = line_strokes(image, box, ink_only)
    if fit is None:
        return None
    x0, y0, x1, y1 = box
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (fit.side, fit.side))
    response = cv2.morphologyEx(grey, fit.operation, kernel).astype(np.float32)
    stretch = max(4, round(STRETCH * (y1 - y0)))
    strokes = np.zeros(response.shape, bool)
    for start in range(0, response.shape[1], stretch):
        part = response[:, start:start + stretch]
        strokes[:, start:start + stretch] = part > stroke_level(part)
    mask = np.zeros(image.shape[:2], bool)
    mask[y0:y1, x0:x1] = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return mask


def letters_only(image: np.ndarray, box: tuple[int, int, int, int], mask: np.ndarray
                 ) -> np.ndarray:
    """A found mark's mask for the strip: `mask` (the strokes its line was judged on),
    unless they are the ground between its letters; then the most uniform strokes that are
    not (`line_strokes` with `ink_only`), or `mask` when there are none. The ground: strokes
    over INK_SHARE of `box` (white letters with a black outline over a plain ground, a
    platform's handle over a floor: a box-tall top-hat opens the outlines away and keeps
    the whole ground as "bright strokes", as uniform as the letters, and the strip filled
    the whole box), or strokes of the colour of a scene of one colour around the box
    (`is_ground`: a white word over a dark film frame, once compressed, rings, and the
    dark between its letters is the more uniform; the strip filled that and spread the
    letters into a glow). The detection keeps the strokes it judged; only what is
    stripped changes (docs/watermarks.md)."""
    x0, y0, x1, y1 = box
    inside = mask[y0:y1, x0:x1]
    if inside.mean() <= INK_SHARE and not (inside.any() and strokes_are_ground(image, box,
                                                                              mask)):
        return mask
    letters = stroke_look(image, box, ink_only=True)[1]
    return letters if letters.any() else mask


def strokes_are_ground(image: np.ndarray, box: tuple[int, int, int, int],
                       mask: np.ndarray) -> bool:
    """Whether the strokes of `mask` in `box` are of the colour of a scene of one colour
    around the box (`uniform_surround`, `is_ground`)."""
    scene = uniform_surround(image, box)
    if scene is None:
        return False
    x0, y0, x1, y1 = box
    strokes = image[y0:y1, x0:x1][mask[y0:y1, x0:x1]].astype(np.float32)
    return is_ground(np.median(strokes, 0), scene)


def _pieces(columns: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs of True columns, [start, end), joined across gaps of `gap` columns or fewer."""
    pieces: list[tuple[int, int]] = []
    for column in np.flatnonzero(columns):
        if pieces and column - pieces[-1][1] <= gap:
            pieces[-1] = (pieces[-1][0], int(column) + 1)
        else:
            pieces.append((int(column), int(column) + 1))
    return pieces


def _read(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, float]:
    """The letters and digits the recogniser reads in `box`, and its confidence."""
    text, confidence = read_line(image, box)
    return sum(character.isalnum() for character in text), confidence


def _reads_on(longer: tuple[int, float], read: tuple[int, float], cut_letter: bool) -> bool:
    """Whether a line grown by a piece reads on: more letters (as many, for the rest of a
    letter the box cut: "Iarbour" becomes "Harbour"), at READS confidence and no more
    than LINE_DOUBT under the line's own (the scene's strokes read as letters only
    doubtfully: "dstocrreel" at 0.65 became "yaTdstecrreel" at 0.53 over tree-1's
    branches)."""
    more = longer[0] >= read[0] if cut_letter else longer[0] > read[0]
    return more and longer[1] >= max(READS, read[1] - LINE_DOUBT)


def _blend_spread(patch: np.ndarray, strokes: np.ndarray, cores: np.ndarray) -> float:
    """The colour spread of the strokes' cores (grey levels, the channels' mean), as one
    colour, or as one colour at one alpha over what lies beneath, whichever is the smaller.

    A mark blended at alpha a shows a * colour + (1 - a) * beneath: over brick or foliage its
    strokes spread as much as what is beneath, times 1 - a. What is beneath is estimated by
    inpainting the strokes from around them (Telea), and 1 - a fitted by least squares over
    the cores, one for all channels, in [0, 1 - MIN_ALPHA]; the spread is what the fit leaves.
    The spread is `robust_spread`'s: the line's box also holds the scene's own bright or dark
    structures (a white door, lit windows), which pass the stroke test beside the letters.
    """
    import cv2

    colours = patch[cores].astype(np.float32)
    spread = robust_spread(colours)
    grown = cv2.dilate(strokes.astype(np.uint8), np.ones((3, 3), np.uint8))
    beneath = cv2.inpaint(np.ascontiguousarray(patch), grown, 3, cv2.INPAINT_TELEA)
    under = beneath[cores].astype(np.float32)
    colours -= colours.mean(0)
    under -= under.mean(0)
    through = float((under * colours).sum() / max(1e-6, float((under * under).sum())))
    through = min(max(through, 0.0), 1.0 - MIN_ALPHA)
    return min(spread, robust_spread(colours - through * under))


def robust_spread(colours: np.ndarray) -> float:
    """The spread of (N, 3) colours, the channels' mean, as a standard deviation estimated
    from the median absolute deviation. The letters are most of the cores, and the scene's
    structures that share the box with them are outliers, which a standard deviation lets
    decide. On real footage a white word at opacity 0.8 beside vtest's white door and lit
    windows spreads 24.8 grey levels by the standard deviation (look 0.48) and 17.8 by this
    (0.63); `bench/watermark.py --parts real` then finds 2 more marked clips and 4 more
    marked photos, and flags no clean clip or photo. Scene text lit or shaded across its
    body still spreads."""
    deviation = np.abs(colours - np.median(colours, 0))
    return float((1.4826 * np.median(deviation, 0)).mean())
