"""k-step initial-noise search (Zhang & Lim, "Towards Chunk-Wise Generation for Long Videos").

Before a chunk is denoised with the full schedule, `k` candidate initial noises each run a
short but complete trajectory of `s` steps; the previews are decoded and scored against the
chunk's conditioning (the previous chunk's last frame), and the best-scoring noise is then
denoised with all `S` steps. Cost: about k*s + S steps instead of S, plus k preview decodes.

Scorers take a preview (the frames the video would keep, F x H x W x 3 uint8) and the
conditioning frame (H, W, 3) uint8 and return a float, higher is better:
- `ClipScorer` (default, the paper's): the minimum over the preview's frames of the cosine
  similarity of CLIP image embeddings to the condition (ViT-B/32, `DEFAULT_CLIP`, or any
  `CLIPModel` hub id or folder), so one bad frame sinks a candidate.
- `ContinuityScorer` (weights-free, `--search-scorer continuity`, and the fallback when no CLIP
  model can be had offline): 1 - mean absolute difference of 32x32 area thumbnails between the
  preview's first frame and the condition, in [0, 1]. It judges only how the chunk joins the
  previous one, so a candidate that moves later in the chunk scores as well as one that holds
  still (a min over all frames against the condition would reward stillness).

The json records the mean pairwise correlation of the candidate noises
(`candidate_correlation`): near 0 for fresh noise (`anchor`, `i2v`, `none`), about
alpha^2/(1+alpha^2) = 0.94 for VidRD's past-dependent noise (`reuse`), where the candidates
differ only in their fresh term.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

THUMB = 32
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
SCORERS = ("clip", "continuity")


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class ContinuityScorer:
    """Weights-free: 1 - mean |thumbnail(first frame) - thumbnail(cond)| / 255."""

    name = "continuity"

    def __call__(self, preview: np.ndarray, condition: np.ndarray) -> float:
        return float(1 - np.abs(_thumbnail(preview[0]) - _thumbnail(condition)).mean() / 255)


class ClipScorer:
    """Min over frames of the cosine similarity of CLIP image embeddings to the condition.

    Args:
        folder: a transformers `CLIPModel` hub id or folder (with its image processor config).
        device: where the model runs.
        local_files_only: do not ask the hub (a hub id must be in the local cache).
    """

    name = "clip"

    def __init__(self, folder: str | os.PathLike = DEFAULT_CLIP, device: str = "cpu",
                 local_files_only: bool = False):
        from transformers import AutoImageProcessor, CLIPModel

        self.source = f"clip:{folder}"
        self.model = CLIPModel.from_pretrained(folder, local_files_only=local_files_only)
        self.model = self.model.to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder,
                                                            local_files_only=local_files_only)
        self.device = device

    def _embed(self, frames: np.ndarray):
        from datakit.models.clip import embed_images

        return embed_images(self.model, self.processor, list(frames), self.device)

    def __call__(self, preview: np.ndarray, condition: np.ndarray) -> float:
        similarity = self._embed(preview) @ self._embed(condition[None]).T
        return float(similarity.min())


def load_scorer(kind: str = "clip", clip: str | None = None, device: str = "cpu"):
    """The search scorer a run asks for.

    Args:
        kind: `clip` (default) or `continuity` (weights-free).
        clip: CLIP hub id or folder; None: `DEFAULT_CLIP`. A model named here must load (a
            one-line `UserError` otherwise). The default one is read from the local hub cache
            when the hub cannot be reached, and where it cannot be had at all the run goes on
            with `ContinuityScorer` after a one-line warning saying so.
        device: where CLIP runs.
    """
    from generate.loading import hub_reachable

    if kind not in SCORERS:
        raise UserError(f"--search-scorer must be one of {', '.join(SCORERS)}, got {kind!r}")
    if kind == "continuity":
        return ContinuityScorer()
    source = clip or DEFAULT_CLIP
    offline = not Path(source).exists() and hub_reachable() is not None
    try:
        return ClipScorer(source, device, local_files_only=offline)
    except OSError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if clip is not None:
            raise UserError(f"--search-clip {clip}: not a CLIP model folder or reachable hub id "
                            f"({reason})") from None
        logger.warning("search: CLIP scorer %s is not available (%s); scoring candidates with "
                       "the weights-free continuity scorer instead", source,
                       "offline and not in the hub cache" if offline else reason)
        return ContinuityScorer()


def candidate_correlation(candidates: Sequence) -> float:
    """Mean Pearson correlation over all pairs of candidate noises (1.0 for one candidate)."""
    import torch

    flat = torch.stack([c.flatten().double() for c in candidates])
    if len(flat) < 2:
        return 1.0
    matrix = torch.corrcoef(flat)
    pairs = [float(matrix[i, j]) for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return float(np.mean(pairs))


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
