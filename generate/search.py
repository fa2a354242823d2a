"""k-step initial-noise search (Zhang & Lim, "Towards Chunk-Wise Generation for Long Videos").

Before a chunk is denoised with the full schedule, `k` candidate initial noises each run a
short but complete trajectory of `s` steps; the previews are decoded and scored against the
chunk's conditioning (the previous chunk's last frame), and the best-scoring noise is then
denoised with all `S` steps. Cost: about k*s + S steps instead of S, plus k preview decodes.

Scorers take a preview (the frames the video would keep, F x H x W x 3 uint8), the
conditioning frame (H, W, 3) uint8 and the chunk's prompt, and return a float, higher is
better:
- `ClipScorer` (default): continuity and the prompt together, with CLIP (ViT-B/32,
  `DEFAULT_CLIP`, or any `CLIPModel` hub id or folder): the cosine similarity of the preview's
  first kept frame to the condition (how the chunk joins the previous one) plus
  `TEXT_WEIGHT` (2.5, CLIPScore's w) times the mean over the preview's frames of their
  similarity to the prompt. The paper's score, the minimum over frames of the similarity to
  the condition, picked the candidate that changed least and ignored a new chunk prompt.
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
from typing import Any

import numpy as np

from datakit.io.errors import UserError

logger = logging.getLogger(__name__)

THUMB = 32
TEXT_WEIGHT = 2.5
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
SCORERS = ("clip", "continuity")


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(frame, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


class ContinuityScorer:
    """Weights-free: 1 - mean |thumbnail(first frame) - thumbnail(cond)| / 255 (no text
    term: it has no text model)."""

    name = "continuity"

    def __call__(self, preview: np.ndarray, condition: np.ndarray, prompt: str = "") -> float:
        return float(1 - np.abs(_thumbnail(preview[0]) - _thumbnail(condition)).mean() / 255)


class ClipScorer:
    """cos(first kept frame, condition) + `TEXT_WEIGHT` * mean over frames of cos(frame,
    prompt), with CLIP embeddings.

    Args:
        folder: a transformers `CLIPModel` hub id or folder (with its image processor config).
        device: where the model runs.
        local_files_only: do not ask the hub (a hub id must be in the local cache).
    """

    name = "clip"

    def __init__(self, folder: str | os.PathLike = DEFAULT_CLIP, device: str = "cpu",
                 local_files_only: bool = False):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.source = f"clip:{folder}"
        self.model = CLIPModel.from_pretrained(folder, local_files_only=local_files_only)
        self.model = self.model.to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder,
                                                            local_files_only=local_files_only)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local_files_only)
        self.device = device
        self._texts: dict[str, Any] = {}

    def _embed(self, frames: np.ndarray):
        from datakit.models.clip import embed_images

        return embed_images(self.model, self.processor, list(frames), self.device)

    def embed_text(self, prompt: str):
        """The prompt's unit CLIP text embedding (computed once per prompt)."""
        import torch

        from datakit.models.clip import unit_features

        if prompt not in self._texts:
            tokens = self.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt",
                                    max_length=self.model.config.text_config
                                    .max_position_embeddings)
            with torch.inference_mode():
                self._texts[prompt] = unit_features(self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device)))
        return self._texts[prompt]

    def __call__(self, preview: np.ndarray, condition: np.ndarray, prompt: str = "") -> float:
        frames = self._embed(preview)
        continuity = float(frames[0] @ self._embed(condition[None])[0])
        text = float((frames @ self.embed_text(prompt)[0]).mean())
        return continuity + TEXT_WEIGHT * text


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
    score: Callable[[np.ndarray, np.ndarray, str], float],
    condition: np.ndarray,
    prompt: str = "",
) -> tuple[int, list[float]]:
    """Score each candidate noise's decoded preview; return the best index and all scores.

    Args:
        candidates: the candidate initial noises.
        preview: `preview(index, noise)` runs the short trajectory from candidate `index`
            and returns its decoded frames.
        score: a scorer (`ContinuityScorer`, `ClipScorer`), higher is better.
        condition: the frame the chunk must continue from.
        prompt: the chunk's prompt (for a scorer's text term).

    Ties go to the earliest candidate, so the result is deterministic.
    """
    if not candidates:
        raise ValueError("search_noise needs at least one candidate")
    scores = [score(preview(index, noise), condition, prompt)
              for index, noise in enumerate(candidates)]
    return int(np.argmax(scores)), scores


def default_search_steps(steps: int) -> int:
    """`--search-steps` when not given: 3 (the paper's k) where the schedule is long enough,
    else about half of `--steps` (at least 1), so any `--steps` runs with the defaults."""
    return max(1, min(3, steps // 2))
