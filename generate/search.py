"""k-step initial-noise search (Zhang & Lim, "Towards Chunk-Wise Generation for Long Videos").

Before a chunk is denoised with the full schedule, `k` candidate initial noises each run a
short but complete trajectory of `s` steps; the previews are decoded and scored against the
chunk's conditioning (the previous chunk's last frame), and the best-scoring noise is then
denoised with all `S` steps. Cost: about k*s + S steps instead of S, plus k preview decodes.

Scorers take a preview (F, H, W, 3) uint8 and the conditioning frame (H, W, 3) uint8 and return
a float, higher is better; both use the minimum over the preview's frames, as the paper does,
so one bad frame sinks a candidate:
- `ContinuityScorer` (default, weights-free): 1 - mean absolute difference of 32x32 area
  thumbnails, in [0, 1].
- `ClipScorer` (`--search-clip DIR`): cosine similarity of CLIP image embeddings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

THUMB = 32


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class ContinuityScorer:
    """Weights-free: min over frames of 1 - mean |thumbnail(frame) - thumbnail(cond)| / 255."""

    name = "continuity"

    def __call__(self, preview: np.ndarray, condition: np.ndarray) -> float:
        target = _thumbnail(condition)
        return float(min(1 - np.abs(_thumbnail(f) - target).mean() / 255 for f in preview))


class ClipScorer:
    """Min over frames of the cosine similarity of CLIP image embeddings to the condition.

    Args:
        folder: a transformers `CLIPModel` folder (with its image processor config).
        device: where the model runs.
    """

    name = "clip"

    def __init__(self, folder: str | os.PathLike, device: str = "cpu"):
        from transformers import AutoImageProcessor, CLIPModel

        self.source = f"clip:{folder}"
        self.model = CLIPModel.from_pretrained(folder).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.device = device

    def _embed(self, frames: np.ndarray):
        import torch

        inputs = self.processor(images=list(frames), return_tensors="pt").to(self.device)
        with torch.no_grad():
            features = self.model.get_image_features(**inputs)
        if not isinstance(features, torch.Tensor):  # some versions return a model output
            features = features.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def __call__(self, preview: np.ndarray, condition: np.ndarray) -> float:
        similarity = self._embed(preview) @ self._embed(condition[None]).T
        return float(similarity.min())


def search_noise(
    candidates: Sequence,
    preview: Callable[[int, object], np.ndarray],
    score: Callable[[np.ndarray, np.ndarray], float],
    condition: np.ndarray,
) -> tuple[int, list[float]]:
    """Score each candidate noise's decoded preview; return the best index and all scores.

    Args:
        candidates: the candidate initial noises.
        preview: `preview(index, noise)` runs the short trajectory from candidate `index`
            and returns its decoded frames.
        score: a scorer (`ContinuityScorer`, `ClipScorer`), higher is better.
        condition: the frame the chunk must continue from.

    Ties go to the earliest candidate, so the result is deterministic.
    """
    if not candidates:
        raise ValueError("search_noise needs at least one candidate")
    scores = [score(preview(index, noise), condition) for index, noise in enumerate(candidates)]
    return int(np.argmax(scores)), scores


def default_search_steps(steps: int) -> int:
    """`--search-steps` when not given: 3 (the paper's k) where the schedule is long enough,
    else about half of `--steps` (at least 1), so any `--steps` runs with the defaults."""
    return max(1, min(3, steps // 2))
