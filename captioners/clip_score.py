"""CLIP caption-to-frames similarity (`datakit caption --score-clip DIR`), for filtering.

The score of a clip is the cosine similarity between its caption's CLIP text embedding and
the mean of its key frames' unit CLIP image embeddings:

    score = cos(t, mean_i(v_i / |v_i|)),  t = text embedding of the caption,
                                           v_i = image embedding of key frame i

It is CLIPScore (Hessel et al., 2021) on a clip instead of an image: the raw cosine in
[-1, 1], without CLIPScore's 2.5 weight or its clipping at zero, so thresholds read as plain
cosines (ViT-B/32 gives roughly 0.2-0.35 for a matching caption and photo). Averaging unit
vectors weighs each key frame equally, whatever its embedding's norm. Captions longer than
the text encoder's context (77 tokens for OpenAI's CLIPs) are truncated. Scores are for
ranking and thresholding within one CLIP model; they are not comparable across models.

`ClipScorer` is a plain callable class: it loads once and scores batches of clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captioners.base import (
    load_failure,
    model_location,
    resolve_device,
    resolve_dtype,
    resolved_revision,
)
from datakit.io.errors import UserError

OPTION = "--score-clip"
PROBE = "a photo of a cat"


class ClipScorer:
    """Caption-to-key-frames CLIP similarity for batches of clips.

    Args:
        model: hub id or local folder of a transformers `CLIPModel` with its processor
            (image processor and tokenizer), e.g. openai/clip-vit-base-patch32.
        device: auto (cuda if available, else cpu), cpu, cuda or cuda:N.
        dtype: auto (bf16/fp16 on CUDA, fp32 on CPU), float32, float16 or bfloat16; the
            similarity itself is always computed in float32.
        batch_size: captions per text-encoder call and key frames per image-encoder call.

    Raises:
        UserError: a model that cannot be loaded or is not a CLIP model.
    """

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 32):
        from transformers import AutoConfig, CLIPModel, CLIPProcessor

        if batch_size < 1:
            raise ValueError(f"batch_size: must be at least 1, got {batch_size}")
        location = model_location(model, OPTION)
        self.model_id = model
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        try:
            config = AutoConfig.from_pretrained(location)
        except (OSError, ValueError) as error:
            raise load_failure(model, "a model config", error, OPTION) from None
        if config.model_type != "clip":
            raise UserError(f"{OPTION} {model}: a {config.model_type!r} model is not a CLIP "
                            "model; pass a CLIP folder such as openai/clip-vit-base-patch32")
        try:
            self.processor = CLIPProcessor.from_pretrained(location)
        except (OSError, ValueError) as error:
            raise load_failure(model, "a CLIP processor", error, OPTION) from None
        # transformers builds an empty tokenizer when the files are missing: refuse it
        probe = self.processor.tokenizer(PROBE, add_special_tokens=False)["input_ids"]
        if all(token == self.processor.tokenizer.unk_token_id for token in probe):
            raise UserError(f"{OPTION} {model}: its tokenizer is missing or empty (it reads "
                            f"{PROBE!r} as unknown tokens only); the folder needs CLIP's "
                            "tokenizer files")
        try:
            self.model = CLIPModel.from_pretrained(location, dtype=self.dtype).to(self.device)
        except (OSError, ValueError) as error:
            raise load_failure(model, "the CLIP weights", error, OPTION) from None
        self.model.eval()
        self.revision = resolved_revision(model, None)
        self.max_tokens = config.text_config.max_position_embeddings

    def check_inputs(self, captions: Sequence[str], frames: Sequence[np.ndarray]) -> None:
        """One caption per clip; each clip uint8 (N>=1, H, W, 3). Raises ValueError."""
        if len(captions) != len(frames):
            raise ValueError(f"{len(captions)} captions for {len(frames)} clips of frames")
        for index, clip in enumerate(frames):
            clip = np.asarray(clip)
            if clip.ndim != 4 or clip.shape[-1] != 3 or len(clip) == 0 or clip.dtype != np.uint8:
                raise ValueError(f"clip {index}: expected uint8 frames (N>=1, H, W, 3), got "
                                 f"{clip.dtype} {clip.shape}")

    def embed_captions(self, captions: Sequence[str]):
        """Unit CLIP text embeddings, one row per caption (truncated to the context)."""
        import torch

        from datakit.models.clip import unit_features

        rows = []
        for start in range(0, len(captions), self.batch_size):
            tokens = self.processor.tokenizer(
                list(captions[start:start + self.batch_size]), padding=True, truncation=True,
                max_length=self.max_tokens, return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                rows.append(unit_features(self.model.get_text_features(**tokens)))
        return torch.cat(rows)

    def embed_frames(self, frames: Sequence[np.ndarray]):
        """Unit CLIP image embeddings of every key frame of every clip, in order."""
        import torch

        from datakit.models.clip import embed_images

        images = [frame for clip in frames for frame in np.asarray(clip)]
        return torch.cat([
            embed_images(self.model, self.processor.image_processor,
                         images[start:start + self.batch_size], self.device, self.dtype)
            for start in range(0, len(images), self.batch_size)
        ])

    def __call__(self, captions: Sequence[str], frames: Sequence[np.ndarray]) -> list[float]:
        """The score of each clip (see the module docstring), in [-1, 1].

        Args:
            captions: one caption per clip.
            frames: each clip's key frames, uint8 (N, H, W, 3), N >= 1.
        """
        import torch

        # 1. Check inputs
        self.check_inputs(captions, frames)
        if not captions:
            return []
        # 2. Embed the captions and every key frame
        texts = self.embed_captions(captions)
        images = self.embed_frames(frames)
        # 3. Mean of each clip's unit frame embeddings; cosine with its caption
        ends = np.cumsum([len(clip) for clip in frames])
        starts = ends - [len(clip) for clip in frames]
        means = torch.stack([images[a:b].mean(dim=0) for a, b in zip(starts, ends, strict=True)])
        return torch.nn.functional.cosine_similarity(texts, means, dim=-1).tolist()
