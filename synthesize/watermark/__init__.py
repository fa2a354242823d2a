"""Watermarks: report a mark only with evidence that it lies over the content, then flag,
strip or drop it.

Contract. Frames are RGB uint8 arrays of shape (T, H, W, 3); a still is a clip of one frame.
A mark is an overlay added after capture: a logo, a channel bug, stock-site text, a URL, a
burned-in timestamp or subtitle. Text that is part of the scene (signs, shirts, screens) is
not a mark.

- `detect_video(frames, config, classifier)` reports a mark only with positive evidence
  (`detection`): motion under it (its edges stay put while the camera or the content moves,
  and under a still camera things pass behind it), text from a pretrained detector that stays
  put where marks are (`text`), or LAION's classifier. A clip without usable motion, or an
  image (`detect_image`), has only text and the classifier; without them it is clean, and
  `Detection.reason` says why ("no evidence: still camera, no text found").
- `remove_watermark(frames, detection, config)` uses ONE mask for every frame: a mark in a
  border band is cropped away, otherwise filled from frames that reveal the spot, inverted
  under a semi-transparent mark, inpainted where nothing else helps (`removal`). `strip`
  refuses a result whose change is not a mark's (`removal.strip_damage`).
- `apply_watermark_policy(frames, config, classifier)` is what a pipeline calls per sample:
  the frames to keep (None when dropped) and the fields for the manifest row and the json:
  `watermark_score` (float or None), `watermark_box` ([x0, y0, x1, y1] in pixels, end
  exclusive, or None), `watermark_action` ("kept" (not checked: `keep`), "clean" (checked,
  nothing found), "flagged", "stripped", "cropped" or "dropped") and `watermark_reason`
  (what decided, one line; None under `keep`). A refused strip keeps the clip and records
  "flagged" with the reason.
- `watermark_shards(src, out, config, options)` (`datakit watermark`) re-processes existing
  shards (`shards`).

Scores: without a classifier, `score` is the evidence's in [0, 1] and a mark is found at
`score >= config.threshold` (0.5). With a classifier, a still is found at
`pwatermark >= config.classifier_threshold` (0.8; 0.5 flags ordinary text) and its score is
`pwatermark`; a clip is found when either its own score or the largest `pwatermark` of its
sampled frames passes its threshold (the mean is kept in `details`).

Modules: `config` (settings, `Detection`), `frames` (shared helpers), `evidence` (static
edges, camera track, matte, change under a mark), `text` (the text detector and tracker),
`detection` (the detectors and priors), `removal`, `policy`, `videos` (a video
file in bounded memory), `shards`, `classifier` (LAION's network; imports torch, so loaded
only when a model is given).
"""

from synthesize.watermark.config import Detection, WatermarkAction, WatermarkConfig
from synthesize.watermark.detection import detect_image, detect_video
from synthesize.watermark.evidence import track_camera
from synthesize.watermark.frames import sample_indices
from synthesize.watermark.policy import (
    LazyClassifier,
    apply_watermark_policy,
    describe,
    load_classifier,
    show_detection,
)
from synthesize.watermark.removal import crop_window, remove_watermark, strip
from synthesize.watermark.shards import (
    ShardSample,
    WatermarkStage,
    read_shard_samples,
    watermark_shards,
)
from synthesize.watermark.videos import VideoVerdict, show_watermark, watermark_video

__all__ = [
    "Detection",
    "LazyClassifier",
    "ShardSample",
    "VideoVerdict",
    "WatermarkAction",
    "WatermarkConfig",
    "WatermarkStage",
    "apply_watermark_policy",
    "crop_window",
    "describe",
    "detect_image",
    "detect_video",
    "load_classifier",
    "read_shard_samples",
    "remove_watermark",
    "sample_indices",
    "show_detection",
    "show_watermark",
    "strip",
    "track_camera",
    "watermark_shards",
    "watermark_video",
]
