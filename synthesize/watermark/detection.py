"""Detection: a mark is reported only with positive evidence that it lies over the content.

Evidence, any of:
- (a) motion: the camera or the content moves under it. Its edges stay put on screen while
  the content's change (`evidence.static_edges`), its matte sits on the same pixels in every
  frame (`evidence.stays_put`), and, under a still camera, things pass behind it: its edges
  persist over pixels that change beside them (`evidence.passes_behind`);
- (b) text: a pretrained text detector's box that stays put over the clip (`text.fixed_text`,
  or read on the clip's median frame and passing the occlusion order there) where marks are
  (the place prior) and whose strokes look like an overlay's (one colour);
- (c) LAION's classifier, when the user passes one.

A still image has only (b) and (c); a clip without usable motion (a still scene) is judged
the same way on its frames. Without evidence a clip or an image is clean, and the reason
says so ("no evidence: still camera, no text found").

Priors every mark follows (`priors.py`), each set by a measurement (docs/watermarks.md):
- size: the whole frame is never a mark (a box over WHOLE_FRAME of its area), and a box over
  LARGE_AREA of it, or over LARGE_SIDE of its height, needs text evidence as well;
- place: text in a corner, in a band along an edge, or centred and wide (PLACE_ELSEWHERE
  elsewhere);
- look: strokes of one colour at one alpha (`look.stroke_look`);
- content: a mark lies over some; a line alone mid-frame on a plain ground is a title card's
  (`priors.title_card`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from synthesize.watermark.config import Detection, WatermarkConfig
from synthesize.watermark.evidence import (
    CHANGE,
    STATIC_SCENE,
    STAYS_PUT,
    StaticEdges,
    change_under,
    changing,
    held_while_carried,
    matte_mask,
    passes_behind,
    static_edges,
    stays_put,
)
from synthesize.watermark.frames import (
    box_of,
    check_frames,
    fill_holes,
    sample_indices,
    shrink,
    temporal_median,
    to_input_size,
)
from synthesize.watermark.look import (
    centred_parts,
    centred_word,
    complete_line,
    letters_only,
    stroke_look,
    strokes_along,
)
from synthesize.watermark.plate import plate_around, plate_under
from synthesize.watermark.priors import by_an_edge, place_prior, size_class, title_card
from synthesize.watermark.text import (
    TextBox,
    box_area,
    box_iou,
    fixed_text,
    image_text,
    inside_share,
    read_surety,
    reads_as_text,
)

CANDIDATES = 4  # blobs (or groups) judged on their mattes, best first (those refused before
#                 a matte, on their edges' crossing or the change under them, not counted)
JOIN = 0.9  # another candidate joins the best's mask when it scores this share of it (and passes)
ACROSS = 3.0  # analysis pixels: a static edge the camera moved the scene this far across
APERTURE = 0.45  # under a moving camera, this share of a mark's static edges must be crossed
OCCLUDED = 0.3  # under a still camera, this share of a mark's edges must persist over change
TEXT_HEIGHT = 0.03  # share of the frame's shorter side: smaller text is no legible mark
TEXT_ASPECT = 2.0  # a mark's text is a line of words, at least this much wider than tall
STUB_ASPECT = 1.0  # a box this much wider than tall, short of TEXT_ASPECT, may be a piece
STUBS = 2  # stubs read and carried on at most (`carry_on_stubs`), best detector score first
TEXT_LINES = 3  # a frame with more text lines than this is a document or a sign-filled scene
SCENE_TEXT = 3  # lines that read, a mark's line among them: the frame's text is the scene's
#                 (a book cover, a newspaper); a mark is one line, or two (a credit)
SCENE_TEXT_READS = 12  # other lines read at most, best first (each costs the recogniser's run)
MEDIAN_TEXT_SIDES = (480, 960)  # a clip's text, looked for again on the median frame
PASSES_OVER = 0.3  # share of a line's box changing in one frame, more than in its median
#                   frame: something passes over it
MATTE_AGREES = 0.5  # IoU of a text mark's matte box with its line's box, for the matte


def least_line_height(shape: tuple[int, int]) -> float:
    """Pixels: a line shorter than TEXT_HEIGHT of the frame's shorter side (8 at least) is
    no legible mark."""
    return max(8.0, TEXT_HEIGHT * min(shape))


def text_lines(boxes: list[TextBox], shape: tuple[int, int]) -> list[TextBox]:
    """The boxes that can be a mark's text: lines at least TEXT_ASPECT times wider than tall
    (or short words on a plate of their own: `carry_on_stubs`), and at least TEXT_HEIGHT of
    the frame's shorter side tall (8 pixels at least). None when there are more than
    TEXT_LINES of them: a page, a menu, a street full of signs."""
    least = least_line_height(shape)
    lines = [b for b in boxes if b.y1 - b.y0 >= least and (b.plated or wide_as_a_line(b))]
    return [] if len(lines) > TEXT_LINES else lines


def wide_as_a_line(box: TextBox) -> bool:
    """Whether `box` is at least TEXT_ASPECT times as wide as tall."""
    return box.x1 - box.x0 >= TEXT_ASPECT * (box.y1 - box.y0)


def carry_on_stubs(image: np.ndarray, boxes: list[TextBox]) -> list[TextBox]:
    """`boxes`, with stubs that read carried on along their lines. A stub is a box too
    short for a line (STUB_ASPECT to TEXT_ASPECT times as wide as tall, and tall enough
    for one): over a busy scene the detector may box a piece of a faint word ("DE" of a
    centred "DEMO" at 0.3 over city-3's towers, at 960 px), too short by the aspect rule
    and off-centre for the place prior, though the word is neither. The best STUBS stubs
    by the detector's score that read (`reads_as_text`) are carried on along their strokes
    (`look.complete_line`); a stub whose line grows to TEXT_ASPECT is a line. A stub that
    reads and sits on a plate of its own (`plate.plate_under`) is a channel bug's short word
    and is judged as a line too (`plated`): "TV 5" on a grey box at 0.85 over bigbuckbunny's
    still shot was boxed 96x49 px and never judged. A drawn logo's letters have no line to
    carry on, and stay stubs; a blob does not read. Used on a clip's median frame, not on
    photos: a stub of graffiti in a corner of OpenCV's graf1 grew into a line there, and
    the bench's marked photos gained nothing."""
    least = least_line_height(image.shape[:2])
    stubs = [b for b in boxes if b.y1 - b.y0 >= least
             and STUB_ASPECT * (b.y1 - b.y0) <= b.x1 - b.x0 and not wide_as_a_line(b)]
    carried = {}
    for stub in sorted(stubs, key=lambda b: -b.score)[:STUBS]:
        if reads_as_text(image, stub.box)[0]:
            strokes = stroke_look(image, stub.box)[1]
            line = complete_line(image, stub, strokes)[0]
            if not wide_as_a_line(line) and plate_under(image, stub, strokes) is not None:
                line = replace(line, plated=True)
            carried[stub] = line
    return [carried.get(b, b) for b in boxes]


class TextVerdict(NamedTuple):
    """`judge_text`'s answer: the best line's score, the line and its strokes' mask (None
    without one), how many lines read when the frame's text is the scene's (0 else), and
    whether the line was the scene's because what passes hid it (`hidden_by_passing`) and
    whether a line that read was a title card's (`priors.title_card`)."""

    score: float
    line: TextBox | None
    mask: np.ndarray | None
    scene_lines: int = 0
    hidden: bool = False
    card: bool = False


class ScoredLine(NamedTuple):
    """A line as `judge_text` scores it: score = detection x rest (the place prior x the
    look); `large` when its surety counts squared; `read` when the recogniser has read it."""

    score: float
    box: TextBox
    mask: np.ndarray
    rest: float
    large: bool
    read: bool = False


def sure_by_reading(image: np.ndarray, scored: list[ScoredLine], threshold: float
                    ) -> list[ScoredLine]:
    """Lines (best first) whose detector score alone keeps them under `threshold`, though
    their place and look would pass, read to see how surely they are text: the detector's
    score is the mean text probability in its box, low for a partial box over a busy scene,
    where the recogniser may still read the line surely (`text.read_surety`). Such a line's
    surety is the larger of the two. At most TEXT_LINES lines are scored (`text_lines`), so
    at most as many are read. Returns the lines, best first again."""
    rescored = []
    for line in scored:
        if line.score < threshold <= line.rest:
            surety = read_surety(image, line.box.box)
            if surety > line.box.score:
                sure = surety ** 2 if line.large else surety
                line = line._replace(score=sure * line.rest, read=True)
        rescored.append(line)
    return sorted(rescored, key=lambda line: -line.score)


def placed_as_centred_word(image: np.ndarray, scored: list[ScoredLine], threshold: float
                           ) -> list[ScoredLine]:
    """Lines (best first again) that only the place prior keeps under `threshold`, widened
    to the centred word they are a part of (`look.centred_word`) and placed as it: over a
    busy photo the detector boxes a part of a faint centred word, off the centre line
    ("MPLE" of "SAMPLE" at 0.4 over kivy's photo of a mug)."""
    shape = image.shape[:2]
    placed = []
    for line in scored:
        place = place_prior(line.box.box, shape)
        if place < 1.0 and line.score < threshold <= line.score / place:
            word = centred_word(image, line.box)
            if word != line.box:  # the word is centred: its box is symmetric about the middle
                line = line._replace(score=line.score / place, box=word, rest=line.rest / place)
        placed.append(line)
    return sorted(placed, key=lambda line: -line.score)


def judge_text(image: np.ndarray, boxes: list[TextBox], over: np.ndarray | None = None,
               threshold: float | None = None) -> TextVerdict:
    """The best text mark among `boxes` on `image` (a frame or the clip's median): of the
    lines that can be a mark's (`text_lines`), score = detector score x place prior x look.
    A line that stays put over content that moves (`over`: per box, the camera moved or
    OCCLUDED of its pixels change) is no part of the scene: its place prior is left out and
    its look counts as its square root (semi-transparent strokes take the colours of what
    moves under them). The whole frame is never a mark; a large box needs a surer detection
    (its score counts squared). A line scoring `threshold` or more must also read as text
    (`text.reads_as_text`): the detector fires on blobs that are no text. Lines are read
    best first, until one reads; with no `threshold`, none is read. A line the detector
    scores too weakly may pass on the recogniser's surety instead (`sure_by_reading`). A
    line that reads is still the scene's when SCENE_TEXT lines of the frame read
    (`scene_text_lines`), and no mark when it and those lines are all a plain frame shows
    (`title_card`): the next line that passes is judged instead."""
    scored = []
    for index, box in enumerate(text_lines(boxes, image.shape[:2])):
        size = size_class(box.box, image.shape[:2])
        if size == "whole":
            continue
        look, mask = stroke_look(image, box.box)
        moving = over is not None and bool(over[index])
        place = 1.0 if moving else place_prior(box.box, image.shape[:2])
        rest = place * (np.sqrt(look) if moving else look)
        sure = box.score ** 2 if size == "large" else box.score
        if mask.any():
            scored.append(ScoredLine(sure * rest, box, mask, rest, size == "large"))
    scored.sort(key=lambda line: -line.score)
    if threshold is not None:
        scored = sure_by_reading(image, placed_as_centred_word(image, scored, threshold),
                                 threshold)
    card = False
    for score, box, mask, _, _, read in scored:
        if threshold is None or score < threshold:
            return TextVerdict(score, box, mask, card=card)
        if read or reads_as_text(image, box.box)[0]:
            lines = scene_text_lines(image, boxes, box)
            if len(lines) >= SCENE_TEXT:
                return TextVerdict(0.0, None, None, len(lines))
            if title_card(image, box.box, [line.box for line in lines]):
                card = True
                continue
            return TextVerdict(score, box, mask)
    return TextVerdict(0.0, None, None, card=card)


def whole_line(image: np.ndarray, verdict: TextVerdict, threshold: float,
               letters: bool = True) -> TextVerdict:
    """A verdict that found a mark, with its line and mask carried on along the line where
    the text detector boxed only part of it (`look.complete_line`), its line widened to the
    centred word it is a part of unless it sits on a plate (`look.centred_word`), and the
    mask grown over the plate the line sits on, if any (`plate.plate_under`: a channel
    bug's box), else kept to the line's letters where its strokes took the ground between
    them (`look.letters_only`), and grown over the line's strokes levelled a stretch at a
    time (`look.strokes_along`). A box tight on a bug's bold letters takes the plate for
    its strokes: the plate is then looked for around the letters (`plate.plate_around`).
    Done once the line has passed every test, which judge the detector's own box. A plate
    is looked for by an edge only (`by_an_edge`), where bugs sit: in the frame's middle a
    line's surround of one colour is the scene's (a dark "DRAFT" at 0.4 centred over
    bigbuckbunny's white rabbit took the rabbit for its plate, and the strip filled it).
    `letters` False (a moving camera's line, whose mask is its matte, grown from these
    strokes: `matte_of_line`) keeps the strokes as judged."""
    if verdict.line is None or verdict.score < threshold:
        return verdict
    line, mask = complete_line(image, verdict.line, verdict.mask)
    by_edge = by_an_edge(line.box, image.shape[:2])
    plate = plate_under(image, line, mask) if by_edge else None
    letters = letters and plate is None  # a bug's plate is part of the mark
    if plate is None:
        line = centred_word(image, line)
    if letters:
        mask = letters_only(image, line.box, mask)
        if by_edge:  # bold letters that fill the detector's box: the plate is around them
            plate = plate_around(image, mask)
    along = strokes_along(image, line.box, ink_only=letters)
    mask = mask if plate is None else plate
    return verdict._replace(line=line, mask=mask if along is None else mask | along)


def scene_text_lines(image: np.ndarray, boxes: list[TextBox], line: TextBox
                     ) -> list[TextBox]:
    """Lines of `image` that read: `line` (which does) and those of the other `boxes`, any
    size, best first, that do; reading stops at SCENE_TEXT lines, or after SCENE_TEXT_READS
    others. A mark is one line, or two; a page, a cover or a shop front has more, and there
    a line in a corner is the scene's too."""
    lines = [line]
    others = [b for b in boxes if inside_share(b.box, line.box) < 0.5]  # not a piece of it
    for other in sorted(others, key=lambda b: -b.score)[:SCENE_TEXT_READS]:
        if len(lines) >= SCENE_TEXT:
            break
        if reads_as_text(image, other.box)[0]:
            lines.append(other)
    return lines


def hidden_by_passing(sampled: np.ndarray, median: np.ndarray,
                      box: tuple[int, int, int, int]) -> bool:
    """Occlusion order for a line found on a still camera's median frame, which shows the
    scene's text whole even when things pass in front of it. In the sampled frame where the
    most of the line's box changes (by more than CHANGE grey levels from the median, on
    PASSES_OVER of its pixels more than in the box's median frame: something passes), an
    overlay still reads: it stays on top of what passes. The scene's text is hidden there,
    and reads no more. A box that changes about as much in every frame has nothing passing
    over it: the scene drifts under it (city-3's towers under a faint centred word, 30-40%
    of the box changed in each of the 16 frames, and the word, which only the median's
    quiet shows whole, reads 2 letters in some frames and 1 in others)."""
    import cv2

    x0, y0, x1, y1 = box

    def grey(image: np.ndarray) -> np.ndarray:
        patch = np.ascontiguousarray(image[y0:y1, x0:x1])
        return cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float32)

    still = grey(median)
    changed = [float((np.abs(grey(frame) - still) > CHANGE).mean()) for frame in sampled]
    most = int(np.argmax(changed))
    passes = changed[most] - float(np.median(changed)) >= PASSES_OVER
    return passes and not reads_as_text(sampled[most], box)[0]


def _text_over_motion(boxes: list[TextBox], shape: tuple[int, int], camera_moved: bool,
                      changed: np.ndarray | None, scale: float) -> np.ndarray:
    """Per line of `text_lines(boxes)`: whether the content under it moves (the camera
    moved, or OCCLUDED of its pixels change: `changed`, at the analysis scale)."""
    lines = text_lines(boxes, shape)
    if camera_moved or changed is None:
        return np.full(len(lines), camera_moved)
    over = []
    for line in lines:
        x0, y0, x1, y1 = (round(v * scale) for v in line.box)
        patch = changed[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
        over.append(patch.size > 0 and float(patch.mean()) >= OCCLUDED)
    return np.array(over, bool)


# ---------------------------------------------------------------------------------------------
# Candidates from motion


def score_blobs(labels: np.ndarray, count: int, evidence: np.ndarray, support: np.ndarray,
                unit: float) -> np.ndarray:
    """Score blobs 1..count-1 of a label image: (share of their edge pixels that are evidence)
    x (1 - exp(-evidence pixels / unit)). Returns scores indexed by label (index 0, the
    background, scores 0)."""
    hits = np.bincount(labels[evidence], minlength=count).astype(float)
    edges = np.bincount(labels[support], minlength=count).astype(float)
    scores = hits / np.maximum(edges, 1.0) * (1.0 - np.exp(-hits / unit))
    scores[0] = 0.0
    return scores


def candidates_of(own: np.ndarray, grouped: np.ndarray, group_of: np.ndarray
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


def join_marks(judged: list[tuple[float, np.ndarray]], threshold: float
               ) -> tuple[float, np.ndarray | None]:
    """The best judged candidate's score and mask, with the masks of the others that pass
    `threshold` and score at least JOIN of the best (two marks in one clip) joined to it,
    unless the joined box is too large for a mark (see `size_class`)."""
    if not judged:
        return 0.0, None
    score, best = max(judged, key=lambda j: j[0])
    mask = best
    for other_score, other in judged:
        if other_score >= max(threshold, JOIN * score):
            mask = mask | other
    if size_class(box_of(mask), mask.shape) != "fits":
        return score, best  # marks far apart make a large box: keep the best alone
    return score, mask


def _blob_candidates(static: np.ndarray, edges: np.ndarray
                     ) -> tuple[np.ndarray, list[tuple[float, tuple[int, ...]]]]:
    """Close static edges into blobs (a word, a logo) and score each on its edges; a faint
    word breaks into letters, so each blob may instead take the score of its group (blobs
    a few closing radii apart), counted on the blobs' own pixels. Returns the blob labels
    and the candidates, best first."""
    import cv2

    height, width = static.shape
    radius = max(2, round(0.012 * max(height, width)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    blobs = cv2.morphologyEx(static.astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    blobs = cv2.morphologyEx(blobs, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)) > 0
    unit = max(12.0, 0.0015 * height * width)
    near = cv2.dilate(static.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    evidence, support = static & blobs, ((edges & near) | static) & blobs
    count, labels = cv2.connectedComponents(blobs.astype(np.uint8), connectivity=8)
    scores = score_blobs(labels, count, evidence, support, unit)
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (6 * radius + 1, 6 * radius + 1))
    groups_count, groups = cv2.connectedComponents(
        cv2.morphologyEx(blobs.astype(np.uint8), cv2.MORPH_CLOSE, wide), connectivity=8)
    group_scores = score_blobs(groups, groups_count, evidence, support, unit)
    group_of = np.zeros(count, int)
    group_of[labels[blobs]] = groups[blobs]
    return labels, candidates_of(scores, group_scores[group_of], group_of)


def across_share(region_edges: np.ndarray, across: np.ndarray) -> float:
    """The share of a candidate's static edge pixels that the camera moved the scene ACROSS
    analysis pixels or more across (`evidence.motion_across`). A mark's strokes run every
    way, so the camera crosses many of them; scene edges that merely run along the camera's
    motion (rows of windows under a pan, a horizon under a pan) stay put without being over
    the content, and are not crossed."""
    if not region_edges.any():
        return 0.0
    return float((across[region_edges] >= ACROSS).mean())


def _classify(frames: np.ndarray, classifier, details: dict[str, Any]) -> float | None:
    """Largest `pwatermark` over `frames` (mean and max recorded in details), or None."""
    if classifier is None:
        return None
    scores = classifier(list(frames))
    details.update(pwatermark_max=float(max(scores)), pwatermark_mean=float(np.mean(scores)))
    return float(max(scores))


def _by_classifier(pwatermark: float | None, config: WatermarkConfig) -> bool:
    return pwatermark is not None and pwatermark >= config.classifier_threshold


# ---------------------------------------------------------------------------------------------
# Detectors


def detect_image(image: np.ndarray, config: WatermarkConfig, classifier=None) -> Detection:
    """Find a mark in one image: text where marks are, that looks like an overlay's (see
    `judge_text`), or LAION's classifier when given (its `pwatermark` decides and the text
    gives the box). Without either, the image is clean.

    Args:
        image: RGB uint8 (H, W, 3).
        config: thresholds.
        classifier: a loaded `WatermarkClassifier`, or None.
    """
    image = check_frames(image)[0]
    boxes = centred_parts(image, fixed_text(image[None]))
    verdict = whole_line(image, judge_text(image, boxes, threshold=config.threshold),
                         config.threshold)
    score, mask = verdict.score, verdict.mask
    details: dict[str, Any] = {"text_score": score, "text_boxes": len(boxes)}
    pwatermark = _classify(image[None], classifier, details)
    box_xy = mark_box(mask, verdict)
    if pwatermark is not None:
        found = _by_classifier(pwatermark, config)
        reason = (f"classifier: pwatermark {pwatermark:.2f}" if found else
                  f"no evidence: still image, classifier pwatermark {pwatermark:.2f}")
        return Detection(pwatermark, found, mask, box_xy, "still", details, reason)
    found = score >= config.threshold
    return Detection(score, found, mask, box_xy, "still", details,
                     _text_reason(verdict, config.threshold, boxes, "still image"))


def mark_box(mask: np.ndarray | None, verdict: TextVerdict | None
             ) -> tuple[int, int, int, int] | None:
    """The mark's box: its mask's, grown to the text line when the mask is that line's
    strokes (`verdict.mask`; not a matte, nor a mask from motion). A faint line's strokes are
    masked where they stand out (a word at opacity 0.3 over a street and a dark railing: over
    the railing only); the line is where the mark is."""
    box = box_of(mask) if mask is not None else None
    line = verdict.line if verdict is not None and verdict.mask is mask else None
    if box is None or line is None:
        return box
    return min(box[0], line.x0), min(box[1], line.y0), max(box[2], line.x1), max(box[3], line.y1)


def _text_reason(verdict: TextVerdict, threshold: float, boxes: list[TextBox],
                 where: str) -> str:
    score = verdict.score
    if score >= threshold:
        return f"text that stays put, where marks are ({score:.2f})"
    if not boxes:
        return f"no evidence: {where}, no text found"
    if verdict.scene_lines:
        return (f"no evidence: {where}, the text is the scene's ({verdict.scene_lines} lines "
                "read)")
    if verdict.hidden and where.startswith("moving"):
        return f"no evidence: {where}, the text is the scene's (it moves with the camera)"
    if verdict.hidden:
        return f"no evidence: {where}, the text is the scene's (what passes in front hides it)"
    if verdict.card:
        return f"no evidence: {where}, the text is a title card's (alone on a plain frame)"
    return f"no evidence: {where}, no text where marks are that reads ({score:.2f})"


def detect_video(frames: np.ndarray, config: WatermarkConfig,
                 classifier=None) -> Detection:
    """Find a mark over a clip's content (see the module docstring for the evidence).

    Args:
        frames: RGB uint8 (T, H, W, 3); T = 1 is judged as a still.
        config: thresholds and sampling.
        classifier: a loaded `WatermarkClassifier`, or None.
    """
    # 1. Check inputs; one frame has no motion.
    frames = check_frames(frames)
    if len(frames) == 1:
        return detect_image(frames[0], config, classifier)
    indices = sample_indices(len(frames), config.sample_frames)
    sampled = frames[indices]
    grey, scale = shrink(sampled, config.analysis_size)
    # 2. Edges that stay put on screen while the content moves.
    edges = static_edges(grey)
    details: dict[str, Any] = {"frames_used": len(indices), "static_edge_share": edges.share,
                               "camera_moved": edges.camera_moved, "analysis_scale": scale}
    pwatermark = _classify(sampled, classifier, details)
    text = fixed_text(sampled)
    details["fixed_text_boxes"] = len(text)
    median = temporal_median(sampled).astype(np.uint8)
    changed = None if edges.camera_moved else changing(grey)
    # 3. No usable motion (a still scene, a tripod shot of a wall): only text can tell.
    if edges.share >= STATIC_SCENE:
        verdict, text = _judge_clip_text(sampled, median, text, edges, changed,
                                         scale, config)
        score, mask = verdict.score, verdict.mask
        found = score >= config.threshold or _by_classifier(pwatermark, config)
        where = "moving camera" if edges.camera_moved else "still camera"
        reason = _text_reason(verdict, config.threshold, text, where)
        if found and score < config.threshold:
            reason = f"classifier: pwatermark {pwatermark:.2f}"
        return Detection(score, found, mask, mark_box(mask, verdict), "still-scene",
                         {**details, "text_score": score}, reason)
    # 4. Candidates from motion, judged on their mattes, their size and, under a still
    #    camera, on the change under them.
    behind = None if edges.camera_moved else passes_behind(grey)
    score, mask, why = _judge_motion(sampled, edges, behind, text, config, details)
    reason, verdict = why, None
    if score >= config.threshold and mask is not None:
        plate = plate_around(median, mask)  # a bug's box, when its letters moved the matte
        mask = mask if plate is None else plate
    # 5. Without a mark from motion, text that stays put is the evidence.
    if score < config.threshold:
        verdict, text = _judge_clip_text(sampled, median, text, edges, changed,
                                         scale, config)
        text_score, text_mask = verdict.score, verdict.mask
        details["text_score"] = text_score
        if text_score >= config.threshold:
            if edges.camera_moved:  # the matte gives the mark's own pixels
                text_mask = matte_of_line(sampled, verdict)
            score, mask = text_score, text_mask
            reason = _text_reason(verdict, config.threshold, text, "")
        elif not why:
            where = "moving camera" if edges.camera_moved else "still camera"
            reason = _text_reason(verdict, config.threshold, text, where)
    found = score >= config.threshold or _by_classifier(pwatermark, config)
    if found and score < config.threshold:
        reason = f"classifier: pwatermark {pwatermark:.2f}"
    return Detection(score, found, mask, mark_box(mask, verdict), "static-overlay", details,
                     reason)


def _judge_clip_text(sampled: np.ndarray, median: np.ndarray, text: list[TextBox],
                     edges: StaticEdges, changed: np.ndarray | None, scale: float,
                     config: WatermarkConfig
                     ) -> tuple[TextVerdict, list[TextBox]]:
    """A clip's text judged on its median frame (`judge_text`), with whether content moves
    under each line. The detector on two frames at TEXT_SIDE misses much faint text: when
    no line passes (and the first look did not find the text to be the scene's), the
    detector looks again at the median frame, at each of MEDIAN_TEXT_SIDES until a line
    passes. There the median is the tracker: it holds what sits on the same pixels in most
    sampled frames (marks, and the scene's fixed text, which the priors judge), and it
    drops what passes by, people and cars, or the scene a moving camera carries under a
    mark, which hide a faint mark in any one frame. A line found there must pass the
    occlusion order too: under a still camera, what passes in front of the scene's text
    hides it (`hidden_by_passing`); under a moving camera, the line stays put in the
    frames where the camera carried the scene away (`held_while_carried`). Returns the
    best verdict and its lines."""
    shape = sampled.shape[1:3]
    over = _text_over_motion(text, shape, edges.camera_moved, changed, scale)
    best = judge_text(median, text, over, config.threshold)
    for side in MEDIAN_TEXT_SIDES:
        if best.score >= config.threshold or best.scene_lines or best.hidden or best.card:
            break
        lines = centred_parts(median, carry_on_stubs(median, image_text(median, side)))
        again = judge_text(median, lines,
                           _text_over_motion(lines, shape, edges.camera_moved, changed, scale),
                           config.threshold)
        if again.line is not None and again.score >= config.threshold:
            if edges.camera_moved:
                hidden = held_while_carried(sampled, again.mask, edges.transforms,
                                            scale) < STAYS_PUT
            else:
                hidden = hidden_by_passing(sampled, median, again.line.box)
            if hidden:
                again = TextVerdict(0.0, None, None, hidden=True)
        if again.score > best.score or again.scene_lines or again.hidden or again.card:
            best, text = again, lines
    return whole_line(median, best, config.threshold, letters=not edges.camera_moved), text


def matte_of_line(sampled: np.ndarray, verdict: TextVerdict) -> np.ndarray:
    """A moving camera's text mark as its matte (`matte_mask`: the mark's own pixels, where
    the strokes found on one frame are partly the scene's), unless the matte's box does not
    agree with the line's (MATTE_AGREES): over a faint line the matte follows the scene
    into a box many times the line's, or keeps a piece of it, and the strokes stay."""
    rough = fill_holes(verdict.mask) | verdict.mask
    matte = matte_mask(sampled, rough)
    box = box_of(matte)
    if box is None or box_iou(box, verdict.line.box) < MATTE_AGREES:
        return verdict.mask
    return matte


def _judge_motion(sampled: np.ndarray, edges, behind: np.ndarray | None,
                  text: list[TextBox], config: WatermarkConfig, details: dict[str, Any]
                  ) -> tuple[float, np.ndarray | None, str]:
    """The motion evidence (a): static edges closed into blobs, the best CANDIDATES that
    pass the edge tests judged on their mattes (an overlay sits on the same pixels in every
    frame: `stays_put` over STAYS_PUT scales the score, capped at 1). A candidate is refused
    when its box is the whole frame, or large without text over it; under a moving camera
    when the camera moves along its edges rather than across them (`across_share`); under a
    still camera when too few of its edges persist over change beside them (`behind`: things
    pass behind a mark and in front of the scene). Returns the score, the mask (None
    without a candidate) and why candidates were refused ("" when none was, or one passed)."""
    labels, candidates = _blob_candidates(edges.static, edges.edges)
    details["blobs"] = int(labels.max())
    shape = sampled.shape[1:3]
    judged, refused, matted = [], [], 0
    for pre_score, members in candidates:
        if matted == CANDIDATES or (judged and pre_score / STAYS_PUT < config.threshold):
            break  # could not pass even if it stayed put in every frame
        region = np.isin(labels, members)
        if edges.camera_moved:
            crossed = across_share(edges.static & region, edges.across)
            if crossed < APERTURE:
                refused.append(f"the camera moves along its edges ({crossed:.2f} crossed)")
                continue
        if behind is not None:
            under = change_under(edges.static & region, behind)
            if under < OCCLUDED:
                refused.append(f"nothing passes behind it ({under:.2f} of its edges)")
                continue
        rough = to_input_size(fill_holes(region), shape)
        matte = matte_mask(sampled, rough)
        matted += 1
        box = box_of(matte)
        size = size_class(box, shape) if box is not None else "whole"
        if (edges.camera_moved and size != "fits"
                and size_class(box_of(rough), shape) == "fits"):
            # under a moving camera the matte can grow over the scene (docs: limits); under
            # a still one a matte that grows is the static scene's, and the box decides
            matte, box, size = rough, box_of(rough), "fits"
        with_text = box is not None and any(box_iou(box, t.box) > 0.3 for t in text)
        if box is None:
            refused.append("nothing of it sits on the same pixels in every frame (an empty "
                           "matte)")
            continue
        if size == "whole" or (size == "large" and not with_text):
            refused.append(f"its box covers {box_area(box) / (shape[0] * shape[1]):.0%} of "
                           "the frame")
            continue
        held = stays_put(sampled, matte)
        judged.append((min(1.0, pre_score * held / STAYS_PUT), matte))
        details.setdefault("stays_put", held)
    details["refused"] = refused
    score, mask = join_marks(judged, config.threshold)
    if score >= config.threshold:
        where = "the camera moves" if edges.camera_moved else "content moves"
        return score, mask, f"static overlay: {where} under it ({score:.2f})"
    if refused and not judged:
        camera = "moving camera" if edges.camera_moved else "still camera"
        return score, mask, f"no evidence: {camera}, candidates refused: {refused[0]}"
    return score, mask, ""
