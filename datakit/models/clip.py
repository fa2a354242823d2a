"""CLIP embeddings shared by the caption score (`captioners.clip_score`) and the initial-noise
search (`generate.search`).

Both want unit-length float32 embeddings from a transformers `CLIPModel`. Its
`get_image_features`/`get_text_features` return the projected embeddings as a tensor in
transformers 4 and as a model output whose `pooler_output` holds them in transformers 5;
`unit_features` accepts either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def unit_features(features: Any):
    """L2-normalised float32 embeddings (rows) from a `get_*_features` result."""
    import torch

    if not isinstance(features, torch.Tensor):
        features = features.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1)


def embed_images(model: Any, image_processor: Any, images: Sequence[Any], device: str,
                 dtype: Any = None):
    """Unit CLIP image embeddings, one row per image.

    Args:
        model: a `CLIPModel`.
        image_processor: its image processor (resizes, crops, normalises).
        images: RGB images (uint8 arrays (H, W, 3) or PIL images).
        device: where the model runs.
        dtype: the model's floating dtype (pixel values are cast to it); None: float32.
    """
    import torch

    inputs = image_processor(images=list(images), return_tensors="pt")
    pixels = inputs["pixel_values"].to(device, dtype=dtype or torch.float32)
    with torch.inference_mode():
        return unit_features(model.get_image_features(pixel_values=pixels))
