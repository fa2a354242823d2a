"""The evidence ceiling of the real-footage bench: for a mark the detector missed, whether
any evidence the detector may use was there to be found at all.

Issue 17 lets a mark be reported only on positive evidence: (a) the camera or the content
moves under it, (b) a pretrained text detector sees it, (c) LAION's classifier (whose
weights cannot be fetched here). A mark with none of them is, by that rule, one no judging
can find. Each is measured generously, beyond what the detector spends:

- (a) the detector's own camera estimate, or the clean clip changing under the mark's
  edges: the share of the mark's edge pixels (full size) with a pixel nearby that differs
  from its temporal median by more than `evidence.CHANGE` in `evidence.CHANGE_FRAMES` of
  *all* frames, at least `detection.OCCLUDED` (the detector samples 16 frames at its
  analysis size, and counts an edge only where it outlasts the change: an overlay's
  always does, so nearness is enough here);
- (b) PP-OCRv5's detector on 4 frames spread over the marked clip at the clip's own size
  and at 960 px on the longer side (the detector itself: 2 frames at 320, then for a still
  camera the median frame at 480 and 960), any of its lines (or words) with an IoU of 0.3
  or more with the mark's box that PP-OCRv5's recogniser reads as text on its frame.

The ceiling is the marks found plus the missed ones with any such evidence: the recall a
perfect judge of the same evidence would reach.
"""

from __future__ import annotations

import numpy as np

TEXT_SIDES = (None, 960)  # None: the clip's own longer side
TEXT_FRAMES = 4
SEEN_IOU = 0.3


def mark_edges(alpha: np.ndarray) -> np.ndarray:
    """The mark's edge pixels: where its alpha (at its opacity) steps by 1/255 or more."""
    import cv2

    gx = cv2.Sobel(alpha, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(alpha, cv2.CV_32F, 0, 1, ksize=3) / 8
    return np.hypot(gx, gy) > 1.0 / 255


def change_under_mark(clean: np.ndarray, alpha: np.ndarray) -> float:
    """The share of the mark's edge pixels with content changing near them in the clean clip
    (all frames, full size; the detector's CHANGE, CHANGE_FRAMES and CHANGE_REACH)."""
    import cv2

    from synthesize.watermark.evidence import CHANGE_REACH, changing

    edges = mark_edges(alpha)
    if not edges.any() or len(clean) < 2:
        return 0.0
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in clean]).astype(np.float32)
    reach = np.ones((2 * CHANGE_REACH + 1,) * 2, np.uint8)
    near = cv2.dilate(changing(grey).astype(np.uint8), reach) > 0
    return float(near[edges].mean())


def text_seen(marked: np.ndarray, true_box: tuple[int, int, int, int]) -> float:
    """The best IoU with the mark's box of any text line (or word) that PP-OCRv5's detector
    finds in TEXT_FRAMES frames of the marked clip, at any of TEXT_SIDES, and that reads as
    text (`text.reads_as_text` on its frame: a logo with no letters is no text evidence)."""
    from synthesize.watermark.frames import sample_indices
    from synthesize.watermark.text import (
        box_iou,
        merge_lines,
        reads_as_text,
        text_boxes,
        text_probability,
    )

    chosen = marked[sample_indices(len(marked), TEXT_FRAMES)]
    best = 0.0
    for side in TEXT_SIDES:
        probability = text_probability(chosen, side or max(marked.shape[1:3]))
        for frame, map_ in zip(chosen, probability, strict=True):
            words = text_boxes(map_, marked.shape[1:3])
            for box in words + merge_lines(words):
                iou = box_iou(box.box, true_box)
                if iou > max(best, SEEN_IOU - 1e-9) and reads_as_text(frame, box.box)[0]:
                    best = iou
    return best


def evidence_there(marked: np.ndarray, clean: np.ndarray, overlay, camera_moved: bool) -> dict:
    """What a missed mark had to be found by: each kind of evidence, measured as above."""
    from synthesize.watermark.detection import OCCLUDED

    under = change_under_mark(clean, (overlay.alpha * overlay.opacity).astype(np.float32))
    seen = text_seen(marked, overlay.box)
    return {"camera_moved": camera_moved, "change_under_mark": round(under, 3),
            "text_seen_iou": round(seen, 3),
            "evidence": camera_moved or under >= OCCLUDED or seen >= SEEN_IOU}


def ceiling(marked: list[dict]) -> dict:
    """Found marks plus missed ones that had evidence, over the marks at opacity >= 0.3."""
    rows = [r for r in marked if r["opacity"] >= 0.3]
    found = sum(r["located"] for r in rows)
    missed = [r for r in rows if not r["located"]]
    with_evidence = [r["name"] for r in missed if r["evidence_there"]["evidence"]]
    return {"marks": len(rows), "found": found, "missed_with_evidence": with_evidence,
            "missed_without_evidence": [r["name"] for r in missed
                                        if not r["evidence_there"]["evidence"]],
            "ceiling": (found + len(with_evidence)) / len(rows) if rows else None}


def print_ceiling(bound: dict, rows: list[dict]) -> None:
    """The ceiling (`ceiling`'s answer) and, for each missed mark in `rows`, its evidence."""
    print(f"evidence ceiling (found, plus missed marks that moving content or the text "
          f"detector at any size could show): {bound['ceiling']:.3f} ({bound['found']} + "
          f"{len(bound['missed_with_evidence'])} of {bound['marks']}); missed with evidence: "
          f"{bound['missed_with_evidence']}; without: {len(bound['missed_without_evidence'])}")
    for row in rows:
        if "evidence_there" in row and row["opacity"] >= 0.3:
            there = row["evidence_there"]
            print(f"  missed {row['name']:32s} camera moved {there['camera_moved']!s:5s} "
                  f"change under its edges {there['change_under_mark']:.2f}, text seen (IoU) "
                  f"{there['text_seen_iou']:.2f}")
